"""The evidence suite's metrics and verdict rules on real run directories, by hand."""

import json
import math
import shutil

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
    methods = ['lsp', 'dreamer', 'random_skills']
    result = claims.compare(root, TASK, methods, random_return=300, seeds=['0', '1'])
    lsp, dreamer, random_skills = (result['groups'][m] for m in ('lsp', 'dreamer', 'random_skills'))
    assert lsp['per_seed'] == {'0': 800.0, '1': 600.0}
    assert lsp['first_evaluation'] == {'0': 100.0, '1': 50.0}
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
    args = ['compare', '--root', str(root), '--task', TASK, '--seeds', '0', '1', '--methods']
    assert claims.main(args + ['lsp', 'dreamer', '--out', str(out)]) == 0
    assert json.loads(out.read_text())['groups']['lsp']['mean'] == 700.0
    printed = capsys.readouterr().out
    assert '| lsp | 0: 800.0, 1: 600.0 | 700.0 ± 100.0 |' in printed
    assert 'dreamer first evaluation per seed: 0: 300.0, 1: 900.0' in printed
    assert claims.main(args + ['lsp', 'no_mi']) == 2
    assert capsys.readouterr().err == (
        f'claims: error: missing runs under {root / TASK}: no_mi seeds 0, 1\n'
    )


def test_every_listed_seed_needs_a_run_and_only_those_are_scored(root, capsys):
    (root / TASK / 'lsp' / '2').mkdir()  # started, nothing logged yet: missing too
    write_run(root / TASK / 'dreamer' / '2', {8000: 600, 10000: 600})
    write_run(root / TASK / 'dreamer' / '3', {8000: 0, 10000: 0})
    # The default seeds are 0, 1 and 2.
    args = ['compare', '--root', str(root), '--task', TASK, '--methods']
    assert claims.main(args + ['lsp', 'dreamer', 'random_skills']) == 2
    assert capsys.readouterr().err == (
        f'claims: error: missing runs under {root / TASK}: lsp seed 2; random_skills seed 2\n'
    )
    # Seed 3 is not listed: its return of 0 does not enter the mean.
    dreamer = claims.compare(root, TASK, ['dreamer'])['groups']['dreamer']
    assert dreamer['per_seed'] == {'0': 610.0, '1': 590.0, '2': 600.0}
    assert (dreamer['mean'], dreamer['seeds']) == (600.0, 3)


def test_collect_copies_finished_runs_and_the_copies_score_the_same(root, tmp_path, capsys):
    results = tmp_path / 'results'
    args = ['collect', '--root', str(root), '--task', TASK, '--seeds', '0', '1', '--methods']
    assert claims.main(args + ['lsp', 'dreamer', '--out', str(results)]) == 0
    assert 'copied the metrics and config of 4 runs' in capsys.readouterr().out
    copied = sorted(p.relative_to(results).as_posix() for p in results.rglob('*') if p.is_file())
    assert copied == [
        f'{TASK}/{method}/{seed}/{name}'
        for method in ('dreamer', 'lsp')
        for seed in '01'
        for name in ('config.yaml', 'metrics.jsonl')
    ]
    verdict = claims.compare(results, TASK, ['lsp', 'dreamer'], seeds=['0', '1'])
    assert verdict == claims.compare(root, TASK, ['lsp', 'dreamer'], seeds=['0', '1'])
    # An unfinished run is refused, and nothing of the request is copied.
    write_run(root / TASK / 'random_skills' / '2', {4000: 100})
    out = tmp_path / 'partial'
    assert claims.main(args + ['random_skills', '--seeds', '1', '2', '--out', str(out)]) == 2
    assert 'unfinished' in capsys.readouterr().err and not out.exists()


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


def write_motion_report(root, arm, seed, ratio):
    """A report with the keys tools.skill_rollouts --json writes (per-coordinate ones left out)."""
    report = dict(
        run=f'runs/learning_check/batch8/{TASK}/{arm}/{seed}',
        steps=60,
        repeats=4,
        skills=[[0.0] * 3] * 5,
        between_skills=0.1 * ratio,
        within_skill=0.1,
        ratio=ratio,
    )
    (root / f'motion_{arm}_{seed}.json').write_text(json.dumps(report))


@pytest.mark.parametrize(
    'lsp, no_noise, means, stds, skills_differ, collapse',
    [
        # Every lsp ratio exceeds 1.5, but 2.0 - 1.7 = 0.3 is not more than the larger std,
        # sqrt(0.32 / 3) = 0.327.
        ([1.6, 2.0, 2.4], [1.6, 1.8, 1.7], (2.0, 1.7), (0.3266, 0.0816), True, False),
        # No noise on seeds 0 and 1 only. Seed 0 of lsp is 1.5, not above it; 2.5 - 1.1 = 1.4
        # is more than sqrt(1.5 / 3) = 0.707.
        ([1.5, 3.0, 3.0], [1.0, 1.2], (2.5, 1.1), (0.7071, 0.1), False, True),
    ],
)
def test_motion_verdicts_by_hand(
    tmp_path, capsys, lsp, no_noise, means, stds, skills_differ, collapse
):
    for arm, ratios in (('lsp', lsp), ('lsp_no_noise', no_noise)):
        for seed, ratio in enumerate(ratios):
            write_motion_report(tmp_path, arm, seed, ratio)
    out = tmp_path / 'summary.json'
    no_noise_seeds = [str(seed) for seed in range(len(no_noise))]
    args = ['motion', '--root', str(tmp_path), '--no-noise-seeds', *no_noise_seeds]
    assert claims.main(args + ['--out', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['ratio_threshold'] == 1.5
    assert result['groups']['lsp']['per_seed'] == {'0': lsp[0], '1': lsp[1], '2': lsp[2]}
    groups = [result['groups'][arm] for arm in ('lsp', 'lsp_no_noise')]
    assert [group['mean'] for group in groups] == pytest.approx(means)
    assert [group['std'] for group in groups] == pytest.approx(stds, abs=1e-4)
    assert [group['seeds'] for group in groups] == [3, len(no_noise)]
    assert result['c3a_skills_differ'] is skills_differ
    assert result['c3b_collapse_without_noise'] is collapse
    printed = capsys.readouterr().out
    assert (
        f'C3a, the ratio exceeds 1.5 on every lsp seed: {"passed" if skills_differ else "failed"}'
        in printed
    )
    assert f'by more than the larger std: {"passed" if collapse else "failed"}' in printed


def test_motion_without_the_no_noise_arm_reports_c3b_not_run(tmp_path, capsys):
    for seed, ratio in enumerate([1.1, 5.5, 1.6]):
        write_motion_report(tmp_path, 'lsp', seed, ratio)
    out = tmp_path / 'summary.json'
    args = ['motion', '--root', str(tmp_path), '--no-noise-seeds', '--out', str(out)]
    assert claims.main(args) == 0
    result = json.loads(out.read_text())
    assert list(result['groups']) == ['lsp']
    assert result['groups']['lsp']['mean'] == pytest.approx(8.2 / 3)
    assert result['c3a_skills_differ'] is False  # seed 0's 1.1
    assert result['c3b_collapse_without_noise'] is None
    printed = capsys.readouterr().out
    assert 'on every lsp seed: failed' in printed
    assert 'by more than the larger std: not run' in printed


def test_motion_refuses_missing_or_unreadable_reports(tmp_path, capsys):
    for seed in range(3):
        write_motion_report(tmp_path, 'lsp', seed, 2.0)
    write_motion_report(tmp_path, 'lsp_no_noise', 0, 1.0)
    assert claims.main(['motion', '--root', str(tmp_path)]) == 2
    missing = ', '.join(str(tmp_path / f'motion_lsp_no_noise_{seed}.json') for seed in (1, 2))
    assert capsys.readouterr().err == f'claims: error: missing motion reports: {missing}\n'
    for seed in (1, 2):
        (tmp_path / f'motion_lsp_no_noise_{seed}.json').write_text('{}')
    assert claims.main(['motion', '--root', str(tmp_path)]) == 2
    unreadable = tmp_path / 'motion_lsp_no_noise_1.json'
    assert capsys.readouterr().err == (
        f"claims: error: cannot read the motion ratio of {unreadable}: KeyError('ratio')\n"
    )


SPARSE = 'dmc_cartpole_reach_sparse'


def write_exploring_run(path, episodes):
    """A finished run whose stored episodes go upright as far as `episodes`' (|x|, rewarded)."""
    write_run(path, {BUDGET: 0.0})
    (path / 'train_episodes').mkdir()
    for index, (farthest, rewarded) in enumerate(episodes):
        # Upright at the centre and at -farthest, then fallen farther out: that step never counts.
        qpos = np.array([[0.0, 0.0], [-farthest, 0.05], [farthest + 0.3, math.pi]])
        reward = np.array([0.0, float(rewarded), 0.0])
        np.savez(path / 'train_episodes' / f'{index:06d}-2.npz', qpos=qpos, reward=reward)


# Per method, per seed: the episodes' (farthest upright |x|, rewarded).
EXPLORES_AND_REACHES = {
    # 1.0 and 1.2 (1.1 ± 0.1), the goal on both seeds.
    'lsp_fixed_policy': [[(1.4, True), (0.6, False)], [(1.5, True), (0.9, False)]],
    # 0.2 and 0.4 (0.3 ± 0.1), the goal on none.
    'dreamer': [[(0.1, False), (0.3, False)], [(0.4, False), (0.4, False)]],
}
# As above, but LSP reaches the goal on seed 0 only (0.8 and 0.2: 0.5 ± 0.3), and 0.5 - 0.3
# is not more than 0.3.
REACHES_ONLY = dict(
    EXPLORES_AND_REACHES,
    lsp_fixed_policy=[[(1.4, True), (0.2, False)], [(0.2, False), (0.2, False)]],
)
# As the first, but LSP misses the goal on seed 1 (1.2) and Dreamer reaches it on seed 0
# ((1.3 + 0.1 + 0.1 + 0.1) / 4 = 0.4, and 0.4: 0.4 ± 0): one seed each; 1.1 - 0.4 > 0.1.
EXPLORES_ONLY = dict(
    lsp_fixed_policy=[[(1.4, True), (0.6, False)], [(1.2, False), (1.2, False)]],
    dreamer=[[(1.3, True), (0.1, False), (0.1, False), (0.1, False)], [(0.4, False)] * 2],
)


@pytest.mark.parametrize(
    'runs, reached, more_seeds, farther, means, stds',
    [
        (EXPLORES_AND_REACHES, (2, 0), True, True, (1.1, 0.3), (0.1, 0.1)),
        (REACHES_ONLY, (1, 0), True, False, (0.5, 0.3), (0.3, 0.1)),
        (EXPLORES_ONLY, (1, 1), False, True, (1.1, 0.4), (0.1, 0.0)),
    ],
)
def test_exploration_verdict_by_hand(
    tmp_path, capsys, runs, reached, more_seeds, farther, means, stds
):
    reports = tmp_path / 'results'
    listed = [
        (method, str(seed), episodes)
        for method in runs
        for seed, episodes in enumerate(runs[method])
    ]
    for method, seed, episodes in listed + [('dreamer', '2', [(1.8, True)])]:  # seed 2: not listed
        run = tmp_path / SPARSE / method / seed
        write_exploring_run(run, episodes)
        report = reports / f'exploration_{method}_{seed}.json'
        assert claims.main(['explore', '--run', str(run), '--json', str(report)]) == 0
    # The verdict reads only the reports: the episodes may have gone with their machine.
    shutil.rmtree(tmp_path / SPARSE)
    out = reports / 'summary.json'
    assert claims.main(['explore-compare', '--root', str(reports), '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    groups = [result['groups'][method] for method in ('lsp_fixed_policy', 'dreamer')]
    assert tuple(group['seeds_reaching_goal'] for group in groups) == reached
    assert [group['mean'] for group in groups] == pytest.approx(means)
    assert [group['std'] for group in groups] == pytest.approx(stds, abs=1e-12)
    assert groups[1]['seeds'] == 2
    assert result['more_seeds_reach_goal'] is more_seeds
    assert result['explores_farther'] is farther
    assert result['passed'] is (more_seeds and farther)
    assert f'C5: {"passed" if more_seeds and farther else "failed"}' in capsys.readouterr().out


def test_exploration_refuses_unfinished_runs_and_missing_or_unreadable_reports(tmp_path, capsys):
    unfinished = tmp_path / SPARSE / 'dreamer' / '1'
    write_exploring_run(unfinished, [(0.2, False)])
    (unfinished / 'metrics.jsonl').write_text(json.dumps({'step': 8000, 'test/return': 0.0}))
    report = tmp_path / 'exploration_dreamer_1.json'
    assert claims.main(['explore', '--run', str(unfinished), '--json', str(report)]) == 2
    assert 'is unfinished: its last evaluation is at step 8000' in capsys.readouterr().err
    assert not report.exists()
    # One run on its own is still read as it goes, finished or not.
    assert claims.main(['explore', '--run', str(unfinished)]) == 0
    assert capsys.readouterr().out == (
        '1 episodes: farthest upright |x| mean 0.20, max 0.20; rewarded episodes 0\n'
    )
    for method, seed in (('lsp_fixed_policy', 0), ('lsp_fixed_policy', 1), ('dreamer', 0)):
        payload = dict(run='r', farthest=[1.4], rewarded=[True])
        (tmp_path / f'exploration_{method}_{seed}.json').write_text(json.dumps(payload))
    args = ['explore-compare', '--root', str(tmp_path)]
    assert claims.main(args) == 2
    assert capsys.readouterr().err == f'claims: error: missing exploration reports: {report}\n'
    report.write_text(json.dumps(dict(run='r', farthest=[0.2, 0.3], rewarded=[False])))
    assert claims.main(args) == 2
    assert capsys.readouterr().err == (
        f'claims: error: {report} has 2 farthest and 1 rewarded entries; '
        'it needs one of each per episode\n'
    )
    report.write_text('{}')
    assert claims.main(args) == 2
    assert capsys.readouterr().err == (
        f"claims: error: cannot read the exploration report {report}: KeyError('farthest')\n"
    )


def test_cart_drift_by_hand(tmp_path, capsys):
    # Three episodes; with --last 2 only the last two count: returns 3 and 5, cart at 0.5 and 1.0.
    for name, cart, reward in (('0', 9.0, 100.0), ('1', 0.5, 1.5), ('2', 1.0, 2.5)):
        qpos = np.stack([np.full(3, cart), np.zeros(3)], axis=1)
        np.savez(tmp_path / f'{name}.npz', qpos=qpos, reward=np.full(2, reward))
    assert claims.cart_drift(tmp_path, last=2) == (4.0, 0.75, 2)
    assert claims.main(['drift', '--episodes', str(tmp_path), '--last', '2']) == 0
    assert capsys.readouterr().out == '2 episodes: return 4.0, cart position 0.75\n'
    report = tmp_path / 'drift.json'
    assert claims.main(['drift', '--episodes', str(tmp_path), '--json', str(report)]) == 0
    # All three: returns 200, 3 and 5; cart at 9, 0.5 and 1.
    assert json.loads(report.read_text()) == dict(
        episodes=str(tmp_path), count=3, mean_return=pytest.approx(208 / 3), mean_cart_position=3.5
    )
    # [-0:] would silently take every episode.
    assert claims.main(['drift', '--episodes', str(tmp_path), '--last', '0']) == 2
    assert '--last must be at least 1, got 0' in capsys.readouterr().err
