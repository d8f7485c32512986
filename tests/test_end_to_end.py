"""The whole program with the `debug` block: logdir artifacts, SIGKILL resume, bad configs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp import train
from dreamer_lsp._tf import nvidia_driver_present
from dreamer_lsp.rundir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(logdir, *extra, preset='dreamer'):
    return [
        sys.executable,
        '-m',
        'dreamer_lsp',
        '--configs',
        'debug',
        'dmc_proprio',
        preset,
        '--logdir',
        str(logdir),
        *extra,
    ]


def run(logdir, *extra, timeout=600, preset='dreamer'):
    result = subprocess.run(
        command(logdir, *extra, preset=preset),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def metrics(logdir):
    return [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]


def episode_files(logdir):
    return sorted((logdir / 'train_episodes').glob('*.npz'))


def wait_for(condition, process, timeout, what):
    """Poll `condition()` until it holds; fail with the run's output if `process` ends first,
    or clearly after `timeout` seconds."""
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f'run ended before {what}:\n' + process.stdout.read()[-3000:])
        if time.time() > deadline:
            process.kill()
            pytest.fail(f'no {what} within {timeout} s')
        time.sleep(0.1)


@pytest.fixture(scope='module')
def finished_run(built_once):
    """A finished 1,200-step Dreamer run (this worker's copy) and its program's output."""

    def build(logdir):
        result = run(logdir)
        return {'stdout': result.stdout, 'stderr': result.stderr}

    logdir, output = built_once('run', build)
    return logdir, types.SimpleNamespace(**output)


def test_a_run_writes_every_logdir_artifact(finished_run):
    logdir, result = finished_run
    assert (logdir / 'config.yaml').exists()
    assert (logdir / 'checkpoint' / 'latest').exists()
    # The two newest checkpoints are kept (checkpoint_keep): the periodic one of step 800
    # (every 400 steps, at episode ends) and the final one.
    kept = sorted(path.name[:14] for path in (logdir / 'checkpoint').glob('ckpt-*'))
    assert kept == ['ckpt-000000800', 'ckpt-000001200']
    assert list((logdir / 'tensorboard').glob('events.out.tfevents.*'))
    assert list((logdir / 'videos').glob('eval_*.mp4'))
    lines = metrics(logdir)
    steps = [line['step'] for line in lines]
    assert steps == sorted(steps) and steps[-1] >= 1200
    keys = set().union(*lines)
    for key in (
        'train/return',
        'train/length',
        'test/return',
        'test/length',
        'test/seconds',
        'fps',
        'wall_seconds',
        'train/model_loss',
        'train/actor_loss',
        'train/value_loss',
        'train/kl',
        'train/model_grad_norm',
        'train/action_ent',
    ):
        assert key in keys, key
    # 1200 steps of 200-step episodes (100 agent steps with repeat 2): 6 episodes.
    files = episode_files(logdir)
    assert len(files) == 6
    episode = np.load(files[0])
    assert episode['features'].shape == (101, 5) and episode['qpos'].shape == (101, 2)
    assert episode['action'][0].tolist() == [0.0] and episode['reward'][0] == 0.0
    assert '[' in result.stdout and 'env steps/s' in result.stdout and 'ETA' in result.stdout
    assert 'nan' not in result.stdout.lower()
    if not nvidia_driver_present():
        assert 'cuInit' not in result.stderr and 'cuda' not in result.stderr.lower()
    assert 'I0000' not in result.stderr and 'WARNING:tensorflow' not in result.stderr


def test_rerunning_a_finished_run_does_nothing_new(finished_run):
    logdir, _ = finished_run
    before = len(episode_files(logdir)), (logdir / 'metrics.jsonl').read_text()
    latest = (logdir / 'checkpoint' / 'latest').read_text()
    result = run(logdir)
    assert 'Resumed' in result.stdout and 'Already finished 1200 steps' in result.stdout
    assert 'Prefilled' not in result.stdout
    assert (len(episode_files(logdir)), (logdir / 'metrics.jsonl').read_text()) == before
    assert (logdir / 'checkpoint' / 'latest').read_text() == latest


# Logged values that measure time, not what the run computed.
TIMING_KEYS = ('fps', 'updates_per_second', 'wall_seconds', 'train/acting/step_ms', 'test/seconds')


def test_a_paused_run_resumes_as_if_it_had_not_stopped(finished_run, tmp_path):
    reference, _ = finished_run
    logdir = tmp_path / 'paused'
    process = subprocess.Popen(
        command(logdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    # Pause while training, past the prefill's two episodes.
    wait_for(lambda: len(episode_files(logdir)) >= 3, process, 300, 'a third stored episode')
    process.send_signal(signal.SIGUSR1)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert 'Paused at the end of an episode' in output
    state = RunDir(logdir).checkpoint_state()
    # At an episode end: every counted step is in a stored episode (200 steps each).
    assert 400 < state['step'] < 1200 and state['step'] == 200 * state['episodes']
    assert len(episode_files(logdir)) == state['episodes']
    result = run(logdir)
    assert f'Resumed {logdir} at step {state["step"]}' in result.stdout
    paused_files, reference_files = episode_files(logdir), episode_files(reference)
    assert [f.name for f in paused_files] == [f.name for f in reference_files]
    for paused_file, reference_file in zip(paused_files, reference_files):
        with np.load(paused_file) as paused, np.load(reference_file) as uninterrupted:
            np.testing.assert_allclose(paused['action'], uninterrupted['action'], atol=1e-5)
            np.testing.assert_allclose(paused['reward'], uninterrupted['reward'], atol=1e-5)
    paused_lines = metrics(logdir)
    # The fixture run may have been extended by another test: compare the same steps.
    reference_lines = [line for line in metrics(reference) if line['step'] <= 1200]
    assert len(paused_lines) == len(reference_lines)
    # The resumed run counts its wall time on from the paused one's.
    walls = [line['wall_seconds'] for line in paused_lines if 'wall_seconds' in line]
    assert len(walls) > 2 and walls == sorted(walls)
    for paused_line, reference_line in zip(paused_lines, reference_lines):
        for key in TIMING_KEYS:
            paused_line.pop(key, None), reference_line.pop(key, None)
        assert paused_line.keys() == reference_line.keys()
        for key, value in reference_line.items():
            assert paused_line[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_changed_config_is_refused(finished_run):
    logdir, _ = finished_run
    result = subprocess.run(
        command(logdir, '--seed', '5'), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 2
    assert 'seed: 0 -> 5' in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_run_does_not_resume_in_other_arithmetic(finished_run, tmp_path):
    # As a `precision: 16` run moved from a GPU machine to a CPU one would (float16 -> float32).
    logdir, _ = finished_run
    moved = tmp_path / 'moved'
    shutil.copytree(logdir, moved)
    state_path = moved / 'checkpoint' / (moved / 'checkpoint' / 'latest').read_text().strip()
    state = json.loads((state_path / 'state.json').read_text())
    assert state['compute_dtype'] == 'float32'
    state['compute_dtype'] = 'float16'
    (state_path / 'state.json').write_text(json.dumps(state))
    result = subprocess.run(command(moved), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert 'trained in float16 and would continue in float32' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_longer_run_length_continues(finished_run):
    logdir, _ = finished_run
    result = run(logdir, '--steps', '1600')
    assert 'Resumed' in result.stdout
    steps = [line['step'] for line in metrics(logdir)]
    assert steps == sorted(steps) and steps[-1] >= 1600
    assert len(episode_files(logdir)) == 8


# One preset per checkpoint layout: random_skills, randskills_inp, no_mi and lsp_fixed_policy
# save exactly lsp's variables (test_invariance pins every preset's layout), so their resume is
# lsp's. lsp_fixed_policy needs a source run; test_transfer runs it end to end from one.
PRESETS = ['dreamer', 'lsp', 'hiro']


def test_an_agent_prefill_collects_with_the_agents_policy(tmp_path):
    # LSP acting stores its skill with every step; uniform random actions store none.
    run(tmp_path, '--steps', '400', '--prefill_policy', 'agent', preset='lsp')
    files = episode_files(tmp_path)
    assert len(files) == 2  # the prefill's 400 environment steps: 2 episodes of 100 agent steps
    for path in files:
        with np.load(path) as episode:
            assert np.abs(episode['skill'][1:]).min() > 0


@pytest.mark.slow
@pytest.mark.parametrize('preset', PRESETS)
def test_sigkill_resumes_without_losing_or_repeating(tmp_path, preset):
    logdir = tmp_path / preset
    process = subprocess.Popen(
        command(logdir, '--steps', '1400', preset=preset),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    # Kill after a checkpoint past the prefill's (step 400) and one more stored episode.
    latest = logdir / 'checkpoint' / 'latest'
    wait_for(
        lambda: (
            latest.exists()
            and 'ckpt-000000400' not in latest.read_text()
            and len(episode_files(logdir)) >= 5
        ),
        process,
        400,
        "a checkpoint past the prefill's and a fifth stored episode",
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = sorted((logdir / 'checkpoint').glob('ckpt-*'))
    assert [path.name for path in checkpoints][-1] == latest.read_text().strip()
    if preset == 'dreamer':
        # The latest checkpoint's weights are truncated: the run resumes from the one before.
        data = checkpoints[-1] / 'variables.data-00000-of-00001'
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        checkpoints.pop()
    state = json.loads((checkpoints[-1] / 'state.json').read_text())
    result = run(logdir, '--steps', '1400', preset=preset)
    assert f'Resumed {logdir} at step {state["step"]}' in result.stdout
    warnings = [line for line in result.stdout.splitlines() if line.startswith('Warning: ')]
    if preset == 'dreamer':
        assert len(warnings) == 1 and 'cannot be read' in warnings[0], result.stdout[-3000:]
        assert 'trying the one before it' in warnings[0]
        assert len(list((logdir / 'checkpoint').glob('unreadable-ckpt-*'))) == 1
    else:
        assert not warnings
    assert 'Prefilled' not in result.stdout
    files = episode_files(logdir)
    # Every stored episode has 100 steps, and their count matches the final step counter exactly.
    assert [f.name for f in files] == [f'{i:06d}-100.npz' for i in range(len(files))]
    assert len(files) == 7
    lines = metrics(logdir)
    train_lines = [line for line in lines if 'train/return' in line]
    assert [line['episodes'] for line in train_lines] == list(range(1, len(files) + 1))
    assert [line['step'] for line in train_lines] == [200 * i for i in range(1, len(files) + 1)]
    steps = [line['step'] for line in lines]
    assert steps == sorted(steps) and steps[-1] >= 1400
    for artifact in ('config.yaml', 'tensorboard', 'videos', 'checkpoint/latest'):
        assert (logdir / artifact).exists(), artifact
    episode = np.load(files[-1])
    if preset != 'dreamer':
        skills = episode['skill']
        assert skills.shape == (101, 3)
        # Skills are held for K = 2 agent steps (debug block), chosen at steps 0, 2, 4, ...
        assert np.array_equal(skills[1], skills[2]) and np.array_equal(skills[3], skills[4])
        keys = set().union(*lines)
        assert 'train/acting/plan_step_ms' in keys and 'train/acting/step_ms' in keys
        if preset in ('lsp', 'random_skills', 'hiro', 'lsp_fixed_policy'):
            assert 'train/intrinsic_reward' in keys and 'train/predictor_log_likelihood' in keys
        if preset in ('lsp', 'no_mi', 'lsp_fixed_policy'):
            assert {'train/cem_elite_value', 'train/cem_std', 'train/skill_entropy'} <= keys
    else:
        assert 'skill' not in episode


def test_sigterm_mid_update_checkpoints_and_resumes(tmp_path):
    logdir = tmp_path / 'terminated'
    process = subprocess.Popen(
        command(logdir, '--steps', '1000'),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    # Terminate while the agent trains, between an action sent and its result collected.
    wait_for(lambda: len(episode_files(logdir)) >= 3, process, 300, 'a third stored episode')
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]
    assert 'Interrupted: writing a checkpoint' in output
    state = json.loads(
        (
            logdir
            / 'checkpoint'
            / (logdir / 'checkpoint' / 'latest').read_text().strip()
            / 'state.json'
        ).read_text()
    )
    assert state['step'] > 400
    result = run(logdir, '--steps', '1000')
    assert f'Resumed {logdir} at step {state["step"]}' in result.stdout
    steps = [line['step'] for line in metrics(logdir)]
    assert steps == sorted(steps) and steps[-1] >= 1000


def test_an_environment_error_is_one_line_with_the_traceback_in_the_logdir(tmp_path):
    # Cartpole has two cameras: the evaluation worker's video render fails as it starts.
    logdir = tmp_path / 'camera'
    result = subprocess.run(
        command(logdir, '--camera', '7'), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert errors == [
        'error: environment cartpole_balance failed while starting: ValueError: model has 2 '
        f'fixed cameras. camera_id=7 is invalid. (run step 0; worker traceback in '
        f'{logdir / "env_errors.log"})'
    ]
    assert 'Traceback' not in result.stderr
    log = (logdir / 'env_errors.log').read_text()
    assert 'Traceback (most recent call last)' in log and 'camera_id=7 is invalid' in log
    # It stopped before its first checkpoint, so the corrected command is not refused.
    corrected = config_lib.parse_args(['--configs', 'debug', 'dmc_proprio', 'dreamer'])
    train.check_saved_config(corrected.update({'logdir': str(logdir)}), RunDir(logdir))
