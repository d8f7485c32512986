"""The evidence suite's metrics and verdict rules on real run directories, by hand."""

import json
import math

import numpy as np
import pytest

from tools import claims

TASK = 'dmc_cartpole_balance'
BUDGET = 10000
# test/return per seed as {step: value}; the last 20% of 10,000 steps starts at 8,000.
RUNS = {
    'lsp': {'0': {4000: 100, 8000: 700, 10000: 900}, '1': {4000: 50, 9000: 500, 10000: 700}},
    'dreamer': {'0': {4000: 300, 8000: 610, 10000: 610}, '1': {4000: 900, 10000: 590}},
    'random_skills': {'0': {8000: 200, 10000: 300}, '1': {8000: 250, 10000: 250}},
}


def write_run(path, evaluations, budget=BUDGET):
    path.mkdir(parents=True)
    (path / 'config.yaml').write_text(f'steps: {budget}\ntask: {TASK}\n')
    lines = [json.dumps({'step': 2000, 'train/return': 1.0})]
    lines += [
        json.dumps({'step': step, 'test/return': value}) for step, value in evaluations.items()
    ]
    (path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


@pytest.fixture
def root(tmp_path):
    for method, seeds in RUNS.items():
        for seed, evaluations in seeds.items():
            write_run(tmp_path / TASK / method / seed, evaluations)
    return tmp_path


def test_final_and_whole_returns_by_hand(root):
    assert claims.final_return(root / TASK / 'lsp' / '0') == 800.0  # (700 + 900) / 2
    assert claims.final_return(root / TASK / 'lsp' / '1') == 600.0  # (500 + 700) / 2
    assert claims.final_return(root / TASK / 'dreamer' / '1') == 590.0
    assert claims.whole_return(root / TASK / 'dreamer' / '1') == 745.0  # (900 + 590) / 2


def test_verdicts_by_hand(root):
    result = claims.compare(root, TASK, ['lsp', 'dreamer', 'random_skills'], random_return=300)
    lsp, dreamer, random_skills = (result['groups'][m] for m in ('lsp', 'dreamer', 'random_skills'))
    assert lsp['per_seed'] == {'0': 800.0, '1': 600.0}
    assert (lsp['mean'], lsp['std'], lsp['seeds']) == (700.0, 100.0, 2)
    assert (dreamer['mean'], dreamer['std']) == (600.0, 10.0)
    assert (random_skills['mean'], random_skills['std']) == (250.0, 0.0)
    pairs = result['pairs']
    # 700 - 600 = 100 is not more than the larger std 100; 700 >= 600 - 100.
    assert pairs['lsp vs dreamer'] == {'beats': False, 'at_least_as_good': True}
    # 600 >= 700 - 100, so Dreamer too is at least as good as LSP.
    assert pairs['dreamer vs lsp'] == {'beats': False, 'at_least_as_good': True}
    assert pairs['lsp vs random_skills'] == {'beats': True, 'at_least_as_good': True}
    assert pairs['random_skills vs dreamer'] == {'beats': False, 'at_least_as_good': False}
    assert result['learned'] == {'lsp': True, 'dreamer': True, 'random_skills': False}


def test_an_unfinished_run_is_refused_not_scored_early(tmp_path):
    # Stopped at 9,000 of 10,000 steps: it has evaluations in the last 20%, but not the final one.
    write_run(tmp_path / 'run', {4000: 100, 8000: 150, 9000: 200})
    for score in (claims.final_return, claims.whole_return):
        with pytest.raises(claims.scores.ScoreError, match='unfinished: .* at step 9000 of 10000'):
            score(tmp_path / 'run')


def test_compare_command_writes_the_summary_and_refuses_missing_methods(root, capsys):
    out = root / 'summary.json'
    args = ['compare', '--root', str(root), '--task', TASK, '--methods', 'lsp', 'dreamer']
    assert claims.main(args + ['--out', str(out)]) == 0
    assert json.loads(out.read_text())['groups']['lsp']['mean'] == 700.0
    assert '| lsp | 0: 800.0, 1: 600.0 | 700.0 ± 100.0 |' in capsys.readouterr().out
    assert claims.main(args[:-1] + ['no_mi']) == 2
    error = capsys.readouterr().err
    assert error.startswith('claims: error: no runs of no_mi') and error.count('\n') == 1


def test_upright_excursions_by_hand(tmp_path):
    directory = tmp_path / 'run' / 'train_episodes'
    directory.mkdir(parents=True)
    cart = np.array([0.0, 0.5, 1.2, 1.5, -1.7])
    # Upright below 0.1 rad (cos 0.1 = 0.995004); 0.2 rad is not upright.
    first = np.stack([cart, [0.0, 0.05, 0.09, 0.2, 0.0]], -1)
    second = np.stack([cart, np.full(5, math.pi)], -1)  # pole down throughout
    np.savez(directory / '000000-4.npz', qpos=first, reward=np.array([0, 0, 1, 0, 0.0]))
    np.savez(directory / '000001-4.npz', qpos=second, reward=np.zeros(5))
    farthest, rewarded = claims.upright_excursions(tmp_path / 'run')
    assert farthest == [1.7, 0.0]
    assert rewarded == [True, False]
