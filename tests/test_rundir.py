"""The run directory and the loop's record, with real files (no TensorFlow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp.rundir import (
    CheckpointError,
    RunBusyError,
    RunDir,
    atomic_write_text,
    checkpoint_name,
    checkpoint_name_step,
)
from dreamer_lsp.train import Every, LoopState


def write_variables(prefix):
    with open(f'{prefix}.data', 'w') as file:
        file.write('weights')


def read_variables(prefix):
    with open(f'{prefix}.data') as file:
        if file.read() != 'weights':
            raise ValueError('corrupted')


def test_every_is_due_once_per_interval_at_the_first_step_past_it():
    every = Every(5)
    due = [step for step in (0, 3, 4, 7, 9, 10, 24, 25) if every(step)]
    assert due == [0, 7, 10, 24, 25]
    assert every.next == 30


def test_loop_state_round_trips_in_the_checkpoint_format():
    config = config_lib.build(['debug'])
    loop = LoopState.start(config)
    loop.step, loop.updates, loop.episodes, loop.prefill_end = 1200, 42, 7, 400
    loop.eval(1200)
    record = loop.to_json()
    # The keys of checkpoints written before the loop state was one record.
    assert set(record) == {
        'step',
        'updates',
        'episodes',
        'prefill_end',
        'next_eval',
        'next_log',
        'next_checkpoint',
    }
    assert record['next_eval'] == 1200 + config.eval_every
    restored = LoopState.start(config)
    restored.restore(json.loads(json.dumps(record)))
    assert restored == loop


def test_checkpoints_are_kept_newest_first_and_an_unreadable_one_is_moved_aside(tmp_path, capsys):
    run = RunDir(tmp_path / 'run')
    assert run.load_checkpoint(read_variables) is None and run.checkpoint_state() is None
    for step in (100, 200, 300):
        run.save_checkpoint(f'ckpt-{step:09d}', write_variables, {'step': step}, keep=2)
    names = sorted(path.name for path in run.checkpoints.iterdir())
    assert names == ['ckpt-000000200', 'ckpt-000000300', 'latest']
    assert run.latest_name() == 'ckpt-000000300' and run.checkpoint_state() == {'step': 300}
    (run.checkpoints / 'ckpt-000000300' / 'variables.data').write_text('truncat')
    assert run.load_checkpoint(read_variables) == {'step': 200}
    assert 'ckpt-000000300 cannot be read (ValueError: corrupted)' in capsys.readouterr().out
    assert run.latest_name() == 'ckpt-000000200'
    assert (run.checkpoints / 'unreadable-ckpt-000000300').is_dir()
    (run.checkpoints / 'ckpt-000000200' / 'variables.data').unlink()
    with pytest.raises(CheckpointError, match='holds no readable checkpoint'):
        run.load_checkpoint(read_variables)


def test_a_run_is_finished_with_its_checkpoint_and_final_evaluation_past_steps(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint('ckpt-a', write_variables, {'step': 1000}, keep=1)
    lines = [{'step': 900, 'test/return': 1.0}, {'step': 1000, 'train/return': 2.0}]
    run.metrics.write_text(''.join(json.dumps(line) + '\n' for line in lines))
    assert not run.is_finished(1000)  # the last evaluation is before `steps`
    with run.metrics.open('a') as file:
        file.write(json.dumps({'step': 1000, 'test/return': 3.0}) + '\n')
    assert run.is_finished(1000) and not run.is_finished(1200)


def test_one_process_at_a_time_trains_a_run(tmp_path):
    run = RunDir(tmp_path / 'run')
    held = run.lock_for_training()
    with pytest.raises(RunBusyError, match=f'another process \\(pid {os.getpid()}\\)'):
        run.lock_for_training()
    # The program itself: one line, exit code 2, before TensorFlow loads or anything is written.
    result = subprocess.run(
        [sys.executable, '-m', 'dreamer_lsp', '--configs', 'debug', '--logdir', str(run.path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert 'is being trained by another process' in result.stderr
    assert not run.config.exists()
    held.close()
    run.lock_for_training().close()


def test_the_training_pid_is_the_lock_holders_and_asking_takes_no_lock(tmp_path):
    run = RunDir(tmp_path / 'run')
    assert run.training_pid() is None  # no lock file
    held = run.lock_for_training()
    assert run.training_pid() == os.getpid()
    assert run.training_pid() == os.getpid()  # asking again finds it still held
    held.close()
    # The file keeps the last trainer's pid after it exits; nobody holds the lock.
    assert run.train_lock.read_text() == f'{os.getpid()}\n'
    assert run.training_pid() is None
    run.lock_for_training().close()


def test_an_atomic_write_replaces_the_file_with_the_umasks_mode_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'reports' / 'summary.json'
    previous = os.umask(0o022)
    try:
        atomic_write_text(path, 'first')
        atomic_write_text(path, 'second')
    finally:
        os.umask(previous)
    assert path.read_text() == 'second'
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ['summary.json']


def test_a_checkpoint_name_sorts_by_step_and_gives_its_step_back():
    names = [checkpoint_name(step, updates) for step, updates in ((9000, 900), (10000, 1100))]
    assert names == sorted(names) == ['ckpt-000009000-00000900', 'ckpt-000010000-00001100']
    assert [checkpoint_name_step(name) for name in names] == [9000, 10000]
    for bad in ('latest', 'ckpt-000009000', 'ckpt-x-00000900', 'unreadable-ckpt-1-2'):
        with pytest.raises(ValueError, match='not a checkpoint name'):
            checkpoint_name_step(bad)
