"""The run directory: one owner of its layout, its checkpoints and what makes a run finished.

    <logdir>/config.yaml        the resolved config (a resumed run must match it)
    <logdir>/metrics.jsonl      one JSON line per log interval, episode and evaluation
    <logdir>/tensorboard/       the same scalars for TensorBoard
    <logdir>/train_episodes/    every episode, <index:06d>-<steps>.npz
    <logdir>/videos/            evaluation videos
    <logdir>/checkpoint/        ckpt-<step:09d>-<updates:08d>/{variables.*, state.json} and
                                `latest`, the name of the newest complete one
    <logdir>/env_errors.log     tracebacks of failed environment workers
    <logdir>/transfer.json      what a transferred run loaded from its source
    <logdir>/.train.lock        held by the process training in it (pid inside)

Used by the trainer, by transfer (reading a source run) and by the sweep launcher (deciding
what is finished), and `atomic_write_text`, through which the project writes its small files
(config, `latest`, reports). It never imports TensorFlow: the checkpoint's variables are
written and read by callables the caller passes.
"""

import fcntl
import json
import os
import pathlib
import shutil
import uuid

VARIABLES = 'variables'
STATE = 'state.json'
LATEST = 'latest'


def atomic_write_text(path, text):
    """Write `text` to `path` through a temporary file and a rename; the umask sets its mode."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are 0600 whatever the umask, unreadable to a group.
    temporary = path.parent / f'.{path.name}.{uuid.uuid4().hex}'
    try:
        with open(temporary, 'x') as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def checkpoint_name(step, updates):
    """The directory name of the checkpoint at `step` after `updates`; names sort by step."""
    return f'ckpt-{step:09d}-{updates:08d}'


def checkpoint_name_step(name):
    """The environment step in a checkpoint's name; ValueError for any other name."""
    parts = name.split('-')
    if len(parts) != 3 or parts[0] != 'ckpt' or not all(part.isdigit() for part in parts[1:]):
        raise ValueError(f'{name!r} is not a checkpoint name (ckpt-<step>-<updates>)')
    return int(parts[1])


class CheckpointError(Exception):
    """A run's checkpoints exist but none can be read; the message is one line."""


class RunBusyError(Exception):
    """Another process is training in the run directory; the message is one line."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint of another agent (e.g. written by other code): it stays in place."""


class RunDir:
    """The directory of one training run."""

    def __init__(self, path):
        self.path = pathlib.Path(path).expanduser()

    def __str__(self):
        return str(self.path)

    config = property(lambda self: self.path / 'config.yaml', doc='The saved config.')
    metrics = property(lambda self: self.path / 'metrics.jsonl', doc='The metrics log.')
    tensorboard = property(lambda self: self.path / 'tensorboard', doc='TensorBoard events.')
    episodes = property(lambda self: self.path / 'train_episodes', doc='Episode files.')
    videos = property(lambda self: self.path / 'videos', doc='Evaluation videos.')
    checkpoints = property(lambda self: self.path / 'checkpoint', doc='Checkpoint directory.')
    env_errors = property(lambda self: self.path / 'env_errors.log', doc='Worker tracebacks.')
    transfer_report = property(lambda self: self.path / 'transfer.json', doc='Transfer report.')
    train_lock = property(lambda self: self.path / '.train.lock', doc='The training lock.')

    def lock_for_training(self):
        """Hold the run's lock while this process lives (the open file is returned); RunBusyError
        if another process holds it, so that two trainers never write one run."""
        self.path.mkdir(parents=True, exist_ok=True)
        file = open(self.train_lock, 'a+')
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or 'unknown'
            file.close()
            raise RunBusyError(
                f'{self.path} is being trained by another process (pid {holder}); '
                'wait for it to end or stop it first'
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f'{os.getpid()}\n')
        file.flush()
        return file

    def training_pid(self):
        """The pid of the process training in the run, or None when none holds its lock.

        Read from Linux's lock table rather than by trying the lock, which a trainer starting
        at that moment would find taken. A holder counts when its lock is on the lock file's
        inode and its pid is the one the file holds (overlay filesystems may show another
        device number in the table than `stat` does).
        """
        try:
            inode = os.stat(self.train_lock).st_ino
            written = int(self.train_lock.read_text().strip())
            table = pathlib.Path('/proc/locks').read_text()
        except (OSError, ValueError):
            return None
        for line in table.splitlines():
            # `<n>: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`; a process waiting
            # for a lock has a line with `->` after the number, and holds nothing.
            fields = line.split()
            if fields[1:2] == ['FLOCK'] and len(fields) > 5:
                pid, lock_inode = fields[4], fields[5].rpartition(':')[2]
                if lock_inode == str(inode) and pid == str(written):
                    return written
        return None

    # Checkpoints -------------------------------------------------------------------------

    def latest_name(self):
        """The name of the newest complete checkpoint, or None without one."""
        try:
            return (self.checkpoints / LATEST).read_text().strip()
        except OSError:
            return None

    def latest_variables(self):
        """The variables prefix of the newest checkpoint, or None without one."""
        name = self.latest_name()
        return None if name is None else self.checkpoints / name / VARIABLES

    def checkpoint_state(self):
        """The loop state saved with the newest checkpoint, or None if there is none readable."""
        name = self.latest_name()
        try:
            return json.loads((self.checkpoints / name / STATE).read_text()) if name else None
        except (OSError, ValueError):
            return None

    def checkpoint_step(self):
        """The environment step of the newest checkpoint, or None without a readable one."""
        state = self.checkpoint_state()
        return None if state is None else state.get('step')

    def save_checkpoint(self, name, write_variables, state, keep):
        """Write checkpoint `name` atomically and keep only the newest `keep`.

        write_variables(prefix) writes the weights; `state` (JSON) is the loop's state. The
        checkpoint is written to a hidden temporary directory and renamed, then `latest` is
        replaced atomically, so an interruption leaves the previous checkpoint current.
        """
        root = self.checkpoints
        target, temporary = root / name, root / f'.{name}.tmp'
        for stale in (target, temporary):
            if stale.exists():
                shutil.rmtree(stale)
        temporary.mkdir(parents=True)
        write_variables(str(temporary / VARIABLES))
        (temporary / STATE).write_text(json.dumps(state))
        temporary.rename(target)
        atomic_write_text(root / LATEST, name)
        checkpoints = sorted(path for path in root.glob('ckpt-*') if path.is_dir())
        for old in checkpoints[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for leftover in root.glob('.*'):  # temporaries of interrupted writes
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()

    def load_checkpoint(self, read_variables, read_errors=()):
        """Read the newest readable checkpoint; its saved state, or None without a checkpoint.

        read_variables(prefix) restores the weights and raises CheckpointMismatchError when they
        belong to another agent, which stops the resume and leaves every checkpoint in place. A
        checkpoint that cannot be read (truncated, corrupted; `read_errors` and the usual I/O
        and format errors) is moved aside to `unreadable-<name>` with a one-line warning and the
        one before it is tried; CheckpointError when none is left.
        """
        name = self.latest_name()
        if name is None:
            return None
        errors = (OSError, ValueError, LookupError, AssertionError, *read_errors)
        candidates = sorted(
            (p for p in self.checkpoints.glob('ckpt-*') if p.is_dir() and p.name <= name),
            reverse=True,
        )
        for directory in candidates:
            try:
                state = json.loads((directory / STATE).read_text())
                read_variables(str(directory / VARIABLES))
            except errors as error:
                reason = ' '.join(f'{type(error).__name__}: {error}'.split())[:200]
                directory.rename(directory.with_name(f'unreadable-{directory.name}'))
                print(
                    f'Warning: checkpoint {directory.name} cannot be read ({reason}); '
                    'trying the one before it.',
                    flush=True,
                )
                continue
            atomic_write_text(self.checkpoints / LATEST, directory.name)
            return state
        raise CheckpointError(
            f'{self.checkpoints} holds no readable checkpoint (latest: {name}); '
            'move it aside to start over'
        )

    # Progress ----------------------------------------------------------------------------

    def final_evaluation_logged(self, steps):
        """Whether metrics.jsonl has a `test/return` line at or past `steps`."""
        try:
            lines = self.metrics.read_text().splitlines()
        except OSError:
            return False
        for line in reversed(lines):
            try:
                record = json.loads(line)
                step = record['step']
            except (ValueError, KeyError, TypeError):
                continue
            if step < steps:
                return False
            if 'test/return' in record:
                return True
        return False

    def is_finished(self, steps):
        """Whether a run of `steps` has nothing left to do.

        Its newest checkpoint is at or past `steps` and its final evaluation is logged: SIGTERM
        in the last episode checkpoints past `steps` before the final evaluation, and SIGKILL
        between the final evaluation and the final checkpoint leaves an older checkpoint.
        """
        step = self.checkpoint_step()
        return step is not None and step >= steps and self.final_evaluation_logged(steps)
