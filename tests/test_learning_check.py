"""The learning diagnostics (tools.diagnose_learning) and the multi-seed learning check."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamer_lsp.replay import load_episode
from dreamer_lsp.rundir import RunDir
from tools import diagnose_learning, sweep

ROOT = Path(__file__).resolve().parent.parent


def load_script(name):
    path = ROOT / 'scripts' / 'experiments' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_discounted_returns_match_a_hand_computation():
    reward = np.array([1.0, 0.0, 2.0, 1.0])
    # t=3: 1; t=2: 2 + 0.5 * 1 = 2.5; t=1: 0 + 0.5 * 2.5 = 1.25; t=0: 1 + 0.5 * 1.25 = 1.625
    np.testing.assert_allclose(
        diagnose_learning.discounted_returns(reward, 0.5), [1.625, 1.25, 2.5, 1.0]
    )


DEBUG_RUN = ('--configs', 'dmc_proprio', 'dreamer', 'debug', '--steps', '600')


def run_program(*command):
    env = dict(os.environ, MUJOCO_GL=os.environ.get('MUJOCO_GL', 'egl'))
    result = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def train_lines(logdir):
    lines = (logdir / 'metrics.jsonl').read_text().splitlines()
    return [line for line in map(json.loads, lines) if 'train/model_loss' in line]


@pytest.fixture(scope='module')
def diagnosed_run(built_once):
    def build(logdir):
        run_program(
            '-m',
            'tools.diagnose_learning',
            *DEBUG_RUN,
            '--logdir',
            str(logdir),
            '--probe-every',
            '3',
        )

    logdir, _ = built_once('diagnose', build)
    lines = (logdir / 'diagnostics.jsonl').read_text().splitlines()
    return logdir, [json.loads(line) for line in lines]


def test_probes_are_written_on_the_cadence_with_finite_values(diagnosed_run):
    _, probes = diagnosed_run
    updates = [probe['updates'] for probe in probes]
    assert updates[0] == 1 and all(u % 3 == 0 for u in updates[1:]) and len(updates) >= 3
    keys = ('value_pred', 'imag_value', 'open_loop_reward_error', 'actor_std', 'train/kl')
    for probe in probes:
        assert all(np.isfinite(probe[key]) for key in keys)
        assert 0.0 <= probe['actor_saturated'] <= 1.0


def test_the_real_value_is_the_discounted_return_of_the_newest_episode(diagnosed_run):
    logdir, probes = diagnosed_run
    last = probes[-1]
    episodes = sorted((logdir / 'train_episodes').glob('*.npz'))
    # The newest episode stored before the last probe has this probe's return.
    matching = [
        load_episode(path)
        for path in episodes
        if np.isclose(load_episode(path)['reward'].sum(), last['episode_return'])
    ]
    assert matching
    reward = matching[0]['reward'].astype(np.float64)
    real = diagnose_learning.discounted_returns(reward, 0.99)[: len(reward) // 2].mean()
    assert last['value_real'] == pytest.approx(real)
    assert last['reward_real'] == pytest.approx(reward.mean())


def test_probes_leave_training_on_the_random_stream_of_an_unprobed_run(diagnosed_run, tmp_path):
    logdir, _ = diagnosed_run
    run_program('-m', 'dreamer_lsp', *DEBUG_RUN, '--logdir', str(tmp_path / 'plain'))
    probed, plain = train_lines(logdir), train_lines(tmp_path / 'plain')
    assert len(probed) == len(plain) >= 2
    for a, b in zip(probed, plain):
        assert a['train/model_loss'] == pytest.approx(b['train/model_loss'], rel=1e-4)
        assert a['train/actor_loss'] == pytest.approx(b['train/actor_loss'], rel=1e-4, abs=1e-6)


def test_the_check_reports_every_seed_and_fails_unless_all_pass(tmp_path, capsys):
    check = load_script('learning_check')
    runs = check.grid(tmp_path)
    dreamer = [run for run in runs if run.method == 'dreamer']
    assert [run.seed for run in dreamer] == [0, 1, 2]
    for run, best in zip(dreamer, (815.0, 136.0, 900.0)):
        run.logdir.mkdir(parents=True)
        lines = [
            {'step': 5000, 'test/return': 279.0},
            {'step': 6000, 'train/imag_value': 205.0, 'train/action_ent': -15.0},
            {
                'step': 8000,
                'train/imag_value': 30.0,
                'train/action_ent': -16.0,
                'train/actor_grad_norm': 0.02,
            },
            {'step': 9000, 'test/return': best},
            {'step': 100000, 'test/return': 120.0},
            {'step': 100000, 'updates': 19100, 'wall_seconds': 5400.0},
        ]
        (run.logdir / 'metrics.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    assert check.report(dreamer, tmp_path) == 1
    summary = json.loads((tmp_path / 'summary.json').read_text())['dreamer']
    assert summary['pass_rate'] == pytest.approx(2 / 3)
    seed = summary['seeds']['1']
    assert seed['best_return'] == 279.0 and seed['final_return'] == 120.0
    assert not seed['passed'] and seed['max_imag_value'] == 205.0
    assert seed['train/actor_grad_norm'] == 0.02 and seed['wall_seconds'] == 5400.0
    output = capsys.readouterr().out
    assert 'FAIL' in output and '1.50' in output  # hours
    passing = dreamer[::2]
    with (passing[0].logdir / 'metrics.jsonl').open('a') as file:
        file.write('{"step": 10')  # a line cut short by a kill is skipped
    assert check.report(passing, tmp_path) == 0
    # Two of three seeds are not the check's result: the summary keeps the whole check's.
    assert 'seeds 0, 2 only, not written' in capsys.readouterr().out
    summary = json.loads((tmp_path / 'summary.json').read_text())['dreamer']
    assert summary['pass_rate'] == pytest.approx(2 / 3)


def test_report_only_scores_committed_copies_and_refuses_the_wrong_runs(tmp_path, capsys):
    """The arm's verdict reruns from the repository alone: config.yaml and metrics.jsonl,
    without checkpoints, each checked against the command before anything is reported."""
    check = load_script('learning_check')
    argv = ['--regime', 'batch50', '--methods', 'dreamer', '--root', str(tmp_path)]
    runs = [run for run in check.grid(tmp_path, 'batch50') if run.method == 'dreamer']

    def write_copy(run, final_step, config):
        run.logdir.mkdir(parents=True, exist_ok=True)
        config.update({'logdir': '/elsewhere/lost/machine'}).save(run.logdir / 'config.yaml')
        lines = [{'step': 5000, 'test/return': 279.0}, {'step': final_step, 'test/return': 900.0}]
        (run.logdir / 'metrics.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))

    for run in runs:
        write_copy(run, 100000, sweep.resolved_config(run))

    def main():
        return sweep.main(
            'learning_check',
            lambda root: check.grid(root, 'batch50'),
            check.smoke_keep,
            argv=argv + ['--report-only'],
            report=check.report,
            parents=[check.regime_flags()],
        )

    assert main() == 0
    summary = json.loads((tmp_path / 'summary.json').read_text())['dreamer']
    assert summary['pass_rate'] == 1.0 and summary['seeds']['2']['final_return'] == 900.0
    assert not any(RunDir(run.logdir).checkpoints.exists() for run in runs)  # nothing trained

    write_copy(runs[1], 24000, sweep.resolved_config(runs[1]))
    assert main() == 2
    assert 'dreamer/1: unfinished, no final evaluation at step 100000' in capsys.readouterr().err
    batch8 = [run for run in check.grid(tmp_path, 'batch8') if run.method == 'dreamer']
    write_copy(runs[1], 100000, sweep.resolved_config(batch8[1]))
    assert main() == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and 'batch_size: 8 -> 50' in error


def test_the_regime_picks_the_batch_and_the_default_root(tmp_path):
    check = load_script('learning_check')
    regime, steps, root = check.parse_regime(['--methods', 'dreamer', '--regime', 'batch50'])
    assert (regime, steps, root) == ('batch50', None, 'runs/learning_check/batch50')
    assert all(run.args[-2:] == ('--batch_size', '50') for run in check.grid(tmp_path, regime))
    assert check.parse_regime([]) == ('batch8', None, 'runs/learning_check/batch8')
    for bad in (['--regime', 'batch9'], ['--steps', '0'], ['--steps', 'many']):
        with pytest.raises(SystemExit) as exit_info:
            check.parse_regime(bad)
        assert exit_info.value.code == 2


@pytest.mark.parametrize('script', ['learning_check', 'evidence_suite'])
def test_smoke_and_debug_sweeps_never_write_into_the_regime_directory(script, tmp_path):
    """A tiny sweep resuming a real run's logdir would mix debug settings into the study."""
    for size, root in (
        ((), 'runs/learning_check/batch50/'),
        (('--smoke',), 'runs/learning_check/batch50-smoke/'),
        (('--debug',), 'runs/learning_check/batch50-debug/'),
    ):
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / 'scripts' / 'experiments' / f'{script}.py'),
                '--regime',
                'batch50',
                '--dry-run',
            ]
            + list(size),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        logdirs = [
            line.split('--logdir ')[1].split()[0]
            for line in result.stdout.splitlines()
            if '--logdir' in line
        ]
        assert logdirs and all(logdir.startswith(str(tmp_path / root)) for logdir in logdirs)
    usage = subprocess.run(
        [sys.executable, str(ROOT / 'scripts' / 'experiments' / f'{script}.py'), '--help'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '--regime {batch8,batch50}' in usage and '--steps STEPS' in usage


def test_another_budget_names_the_same_runs(tmp_path):
    check = load_script('learning_check')
    assert sweep.resolved_config(check.grid(tmp_path)[0]).steps == 100000  # the study's regime
    regime, steps, _ = check.parse_regime(['--regime', 'batch8', '--steps', '36000'])
    runs = check.grid(tmp_path, regime, steps)
    assert all(run.args[-2:] == ('--steps', '36000') for run in runs)
    # Same logdirs as the block's budget, so a longer budget resumes the shorter runs (how the
    # study extended its 36k runs) and --steps 36000 reports the study's 36k copies.
    assert [run.logdir for run in runs] == [run.logdir for run in check.grid(tmp_path, regime)]
    assert sweep.resolved_config(runs[0]).steps == 36000


def test_the_plot_draws_every_run_as_a_png(diagnosed_run, tmp_path):
    logdir, _ = diagnosed_run
    out = tmp_path / 'diagnosis.png'
    diagnose_learning.main(['--plot', str(logdir), str(logdir), '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(SystemExit) as exit_info:
        diagnose_learning.main(['--plot', str(logdir)])
    assert exit_info.value.code == 2


def test_the_quickstart_screen_finds_the_budgets_at_which_every_seed_rises(tmp_path, capsys):
    screen = load_script('quickstart_screen')
    runs = [run for run in screen.grid(tmp_path) if run.task == 'dmc_walker_stand']
    assert [run.seed for run in runs] == [0, 1, 2]
    assert all(run.args == ('--threads', '1') and run.blocks[-1] == 'quickstart' for run in runs)
    # seed: (prefill episode returns, evaluations at 5k, 7k, 9k and 11k steps)
    numbers = {
        0: ((200.0, 300.0), (100.0, 360.0, 340.0, 500.0)),  # baseline 250, needs 350
        1: ((20.0, 40.0), (50.0, 100.0, 200.0, 160.0)),  # baseline 50, needs 150
        2: ((400.0, 400.0), (500.0, 650.0, 600.0, 700.0)),  # baseline 500, needs 650
    }
    for run in runs:
        prefill, evaluations = numbers[run.seed]
        lines = [{'step': 1000, 'train/return': prefill[0]}]
        lines += [{'step': 5000, 'train/return': prefill[1]}]
        lines += [
            {'step': 5000 + 2000 * i, 'test/return': value} for i, value in enumerate(evaluations)
        ]
        lines.insert(3, {'step': 6000, 'train/return': 9999.0})  # a trained episode
        run.logdir.mkdir(parents=True)
        (run.logdir / 'metrics.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    # The protocol's stages: seed 0 alone, then seeds 1 and 2 with seed 0's result kept.
    assert screen.report(runs[:1], tmp_path) == 0
    summary = json.loads((tmp_path / 'summary.json').read_text())['dmc_walker_stand']
    assert summary['every_seed_rises_at'] is None and list(summary['seeds']) == ['0']
    assert 'seeds 1, 2 not run yet' in capsys.readouterr().out
    assert screen.report(runs[1:], tmp_path) == 0
    summary = json.loads((tmp_path / 'summary.json').read_text())['dmc_walker_stand']
    assert list(summary['seeds']) == ['0', '1', '2']
    assert summary['every_seed_rises_at'] == [11000]
    seeds = summary['seeds']
    assert seeds['0']['prefill_return'] == 250.0 and seeds['0']['needed'] == 350.0
    assert seeds['0']['rises_at'] == [7000, 11000]
    assert seeds['1']['baseline'] == 50.0 and seeds['1']['rises_at'] == [9000, 11000]
    assert seeds['2']['needed'] == 650.0 and seeds['2']['rises_at'] == [7000, 11000]
    assert 'every seed rises at [11000]' in capsys.readouterr().out
