"""Build, print and launch the runs of a paper experiment, on this machine or on SLURM.

Every script under ``scripts/experiments/`` writes its grid as data (a list of `Run`) and calls
`main`, which gives all of them the same flags::

    python scripts/experiments/fig4_single_tasks.py --dry-run          # every command, in order
    python scripts/experiments/fig4_single_tasks.py --parallel 2 --gpus 0,1
    python scripts/experiments/fig5_transfer.py --backend slurm --slurm-partition gpu
    python scripts/experiments/cove_transfer.py --smoke                # tiny, but every stage
    python scripts/experiments/fig4_single_tasks.py --debug --tasks dmc_walker_walk --seeds 0 1
    python scripts/experiments/learning_check.py --root results/learning_check/batch8 \
        --methods dreamer --report-only                              # a verdict from the files
    python scripts/experiments/learning_check.py --methods lsp --status  # how far each run is

Layout (SPEC, Logdir contract): a training run writes ``<root>/<task>/<method>/<seed>/``; runs
with pixels (``dmc_vision``) use the task directory ``<task>_pixels`` so that Fig. 4's feature
and pixel runs of one task never share a directory. A transfer target lives under its target
task, its source under the source task. A reward relabeling (LSP §4.3) writes its episodes to
``<root>/relabeled/<target task>/<source method>/<seed>/episodes/``. Each job's output goes to
``stdout.log`` in its directory (appended, one header line per start).

Finished (``RunDir.is_finished``): a training run is finished when its latest checkpoint is at
or past the run's ``steps`` (as its command resolves them, so a longer ``--steps`` reopens it)
*and* ``metrics.jsonl`` holds the final evaluation, a ``test/return`` line at or past ``steps``
(evaluations during training happen only before ``steps``). Together they are exactly the state
in which the program, started again, has nothing left to do; neither alone suffices: SIGTERM in
the last episode checkpoints past ``steps`` before the final evaluation, and SIGKILL between the
final evaluation and the final checkpoint leaves an older checkpoint. A relabeling is finished
when its output holds ``relabel.json`` (the script writes it atomically, last). Finished runs
are skipped; unfinished ones are started with the same command, which resumes them from their
checkpoint.

Local backend: ``--parallel N`` programs at a time, each in its own session (Ctrl-C reaches only the
launcher, which passes it on to every program as SIGTERM: they checkpoint and exit, and the next
launch resumes them; SIGUSR1 to the launcher pauses them at episode ends). With ``--gpus 0,1`` slot
*i* gets ``CUDA_VISIBLE_DEVICES`` = the *i*-th id (the rest of the environment is passed unchanged).
A run starts when everything it depends on has finished; if one of those fails, it is reported as
blocked. A free slot goes first to a run whose sources have finished (a relabeling or a transfer
target), then to the next independent run in the grid's order, so a finished source's targets never
wait behind other sources. A program that exits with code 3 diverged (a non-finite loss, gradient
norm or weight; its last checkpoint is untouched) and is reported as diverged, with its one-line
reason, rather than as failed. A lock file held by the program for its whole life keeps two
launchers from running the same logdir at once.

SLURM backend, through submitit (``pip install submitit==1.5.4``; imported only when used):
the runs are independent, long (days), single-GPU programs that checkpoint and resume
themselves, which is exactly a batch job. submitit needs nothing running on the cluster beyond
``sbatch`` itself, so it works on the common university SLURM clusters, and dependencies map
onto SLURM's own ``afterok`` (with ``kill-on-invalid-dep`` so that a failed source cancels its
targets instead of leaving them pending). Ray would need a head node and workers kept alive
for the whole multi-day sweep, or its own SLURM bootstrap, and adds nothing for jobs that never
talk to each other. A job that reaches its time limit or is preempted gets submitit's signal:
the program is sent SIGTERM, checkpoints, and submitit requeues the job, which resumes it.
A job requeued by SLURM itself (``scontrol requeue``, preemption by requeue) gets SLURM's SIGTERM
in every process: the program checkpoints (its environment workers ignore the signal and are
stopped by it), submitit lets the signal pass, and the job's next start resumes the run. A
run whose earlier job is still queued or running (``slurm_job_id`` in its logdir) is not
submitted twice; running the script again resubmits what failed.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dreamer_lsp import config as config_lib
from dreamer_lsp.config import ConfigError, check_task
from dreamer_lsp.durations import format_duration
from dreamer_lsp.relabel import REPORT_NAME
from dreamer_lsp.rundir import RunDir
from dreamer_lsp.train import DIVERGED_EXIT_CODE, check_saved_config
from tools import scores

REPO = Path(__file__).resolve().parent.parent
RELABEL_SCRIPT = REPO / 'scripts' / 'relabel_rewards.py'
RELABEL_OUTPUT = 'episodes'
LOG_NAME = 'stdout.log'
LOCK_NAME = '.sweep.lock'
JOB_ID_NAME = 'slurm_job_id'
PIXELS_SUFFIX = '_pixels'
# --smoke: tiny networks (the `debug` block) and a budget that still trains after the prefill.
SMOKE_BLOCK = 'debug'
SMOKE_ARGS = ('--steps', '400', '--prefill', '200')
SUBMITIT_MISSING = 'the slurm backend needs submitit: pip install submitit==1.5.4'
POLL_SECONDS = 0.2
# squeue states of a job that has ended; any other state it shows (pending, running, stopped,
# held, requeued, signalling, ...) means the job may still train in the run's logdir.
SLURM_ENDED = {
    'BOOT_FAIL',
    'CANCELLED',
    'COMPLETED',
    'DEADLINE',
    'FAILED',
    'NODE_FAIL',
    'OUT_OF_MEMORY',
    'PREEMPTED',
    'REVOKED',
    'TIMEOUT',
}

FINISHED = 'skip (finished)'
DONE = 'done'
FAILED = 'failed'
DIVERGED = 'diverged'
INCOMPLETE = 'incomplete'
BLOCKED = 'blocked'
BUSY = 'busy'
INTERRUPTED = 'interrupted'
NOT_STARTED = 'not started'
SUBMITTED = 'submitted'
QUEUED = 'queued'
OK = {FINISHED, DONE, SUBMITTED, QUEUED}


class SweepError(Exception):
    """A problem with a sweep's definition or backend, reported as one line (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One job of a sweep: a training run, or a reward relabeling (``kind='relabel'``).

    A training run is ``python -m dreamer_lsp --configs *blocks --task task --seed seed
    --logdir logdir *args``; a relabeling rewrites the episodes of the run it depends on with
    ``task``'s rewards into ``logdir/episodes``. ``depends_on`` holds the logdirs of the runs
    that must finish first; the experiment's block is the last of ``blocks``.
    """

    task: str
    method: str
    seed: int
    logdir: Path
    blocks: tuple = ()
    args: tuple = ()
    depends_on: tuple = ()
    kind: str = 'train'

    def program_args(self):
        """The training program's arguments (everything after ``python -m dreamer_lsp``)."""
        return [
            '--configs',
            *self.blocks,
            '--task',
            self.task,
            '--seed',
            str(self.seed),
            '--logdir',
            str(self.logdir),
            *self.args,
        ]

    def command(self, python=sys.executable):
        """The full command line as a list."""
        if self.kind == 'relabel':
            source, output = self.depends_on[0], self.logdir / RELABEL_OUTPUT
            return [
                python,
                str(RELABEL_SCRIPT),
                '--source',
                str(source),
                '--task',
                self.task,
                '--output',
                str(output),
                *self.args,
            ]
        return [python, '-m', 'dreamer_lsp', *self.program_args()]

    @property
    def layout(self):
        """The logdir's ``(task, method, seed)`` names (task with ``_pixels`` for pixel runs)."""
        return self.logdir.parts[-3:]

    @property
    def label(self):
        """The logdir's last parts: ``task/method/seed`` (``relabeled/...`` for relabelings)."""
        return '/'.join(self.logdir.parts[-4 if self.kind == 'relabel' else -3 :])


def train_run(
    root, task, method, seed, experiment, obs='dmc_proprio', args=(), depends_on=(), label=None
):
    """A training run of ``method`` on ``task`` with the experiment's config block.

    label: the run's name in the layout instead of the method's, for a variant of a method
    preset (e.g. ``lsp_no_noise``: ``lsp`` with ``--skills.predictor_noise 0`` in ``args``).
    """
    task_dir = task + PIXELS_SUFFIX if obs == 'dmc_vision' else task
    name = label or method
    logdir = Path(root) / task_dir / name / str(seed)
    return Run(task, name, seed, logdir, (obs, method, experiment), tuple(args), depends_on)


def relabel_run(root, source, task):
    """Relabel ``source``'s episodes with ``task``'s rewards (LSP §4.3, Walk -> Reach)."""
    logdir = Path(root) / 'relabeled' / task / source.method / str(source.seed)
    args = ('--seed', str(source.seed))
    return Run(task, source.method, source.seed, logdir, (), args, (source.logdir,), 'relabel')


def transfer_run(root, task, method, seed, experiment, source, replay=None, args=()):
    """A target run starting from ``source``'s networks and, given a relabeling, its episodes.

    args: further flags of the target run.
    """
    args = [*args, '--transfer.checkpoint', str(source.logdir)]
    depends_on = [source.logdir]
    if replay is not None:
        args += ['--transfer.replay', str(replay.logdir / RELABEL_OUTPUT)]
        depends_on.append(replay.logdir)
    obs = source.blocks[0]
    return train_run(root, task, method, seed, experiment, obs, args, tuple(depends_on))


def with_dependencies(runs, keep):
    """The runs ``keep`` selects plus everything they depend on, in the grid's order."""
    by_logdir = {run.logdir: run for run in runs}
    wanted, stack = set(), [run.logdir for run in runs if keep(run)]
    while stack:
        logdir = stack.pop()
        if logdir not in wanted:
            wanted.add(logdir)
            stack.extend(by_logdir[logdir].depends_on)
    return [run for run in runs if run.logdir in wanted]


def shrink(runs):
    """Every training run at a tiny budget; relabelings unchanged.

    Training runs get the ``debug`` block before the experiment's own block, so the
    experiment's keys (e.g. K = 30 and H = 120 of ``cove_target``) still apply, and
    `SMOKE_ARGS`.
    """
    tiny = []
    for run in runs:
        if run.kind == 'train':
            blocks = run.blocks[:-1] + (SMOKE_BLOCK,) + run.blocks[-1:]
            run = dataclasses.replace(run, blocks=blocks, args=run.args + SMOKE_ARGS)
        tiny.append(run)
    return tiny


def smoke(runs, keep):
    """The runs ``keep`` selects plus everything they depend on, each at a tiny budget."""
    return shrink(with_dependencies(runs, keep))


def select(runs, tasks=None, methods=None, seeds=None):
    """The runs matching every given filter (None: any), plus what they depend on.

    Filters match `Run.layout`, so ``dmc_cheetah_run_pixels`` selects the pixel runs of
    cheetah run.
    """
    filters = (('task', tasks), ('method', methods), ('seed', seeds))
    for index, (field, values) in enumerate(filters):
        known = {run.layout[index] for run in runs}
        unknown = sorted(set(values or ()) - known)
        if unknown:
            raise SweepError(
                f'no run has {field} {", ".join(unknown)}; valid: {", ".join(sorted(known))}'
            )

    def keep(run):
        return all(
            values is None or run.layout[index] in values
            for index, (_, values) in enumerate(filters)
        )

    return with_dependencies(runs, keep)


def resolved_config(run):
    """The config a training run's command resolves to (configs.yaml blocks and flags)."""
    try:
        config = _resolve(run.blocks, run.args)
        return config.update({'task': run.task, 'seed': run.seed, 'logdir': str(run.logdir)})
    except ConfigError as error:
        raise SweepError(f'{run.label}: {error}') from None


@functools.cache
def _resolve(blocks, args):
    """The blocks and flags shared by many runs, parsed once."""
    return config_lib.parse_args(['--configs', *blocks, *args])


def validate(runs):
    """Check unique logdirs, dependencies on earlier runs, task names and every training run's
    config, also against the config its logdir already holds (`train.check_saved_config`)."""
    seen = set()
    for run in runs:
        if run.logdir in seen:
            raise SweepError(f'two runs share the logdir {run.logdir}')
        for dependency in run.depends_on:
            if dependency not in seen:
                raise SweepError(
                    f'{run.label} depends on {dependency}, which is not listed before it'
                )
        seen.add(run.logdir)
        try:
            check_task(run.task)
        except ConfigError as error:
            raise SweepError(f'{run.label}: {error}') from None
        if run.kind == 'train':
            try:
                check_saved_config(resolved_config(run), RunDir(run.logdir))
            except ConfigError as error:
                raise SweepError(f'{run.label}: {error}') from None


def is_finished(run):
    """Whether the run has nothing left to do (see the module docstring)."""
    return _finished(run, resolved_config(run).steps if run.kind == 'train' else None)


def _finished(run, steps):
    """`is_finished` given the training run's resolved ``steps``."""
    if run.kind == 'relabel':
        return (run.logdir / RELABEL_OUTPUT / REPORT_NAME).is_file()
    return RunDir(run.logdir).is_finished(steps)


def check_reportable(run):
    """Refuse to report a training run from its files alone (``--report-only``) unless its
    ``config.yaml`` is what its command resolves to (its ``logdir`` aside, so a committed copy
    elsewhere counts) and ``metrics.jsonl`` holds the final evaluation of that budget."""
    if run.kind != 'train':
        raise SweepError(f'{run.label}: --report-only reports training runs only')
    run_dir = RunDir(run.logdir)
    missing = [path.name for path in (run_dir.config, run_dir.metrics) if not path.is_file()]
    if missing:
        raise SweepError(f'{run.label}: no {", ".join(missing)} in {run.logdir}')
    config = resolved_config(run)
    try:
        differences = config_lib.load_saved(run_dir.config).diff(config, ignore=('logdir',))
    except ConfigError as error:
        raise SweepError(f'{run.label}: {error}') from None
    if differences:
        raise SweepError(
            f"{run.label}: {run_dir.config} is not this command's run. Differences (saved -> "
            f'requested): {"; ".join(differences)}'
        )
    if not run_dir.final_evaluation_logged(config.steps):
        raise SweepError(
            f'{run.label}: unfinished, no final evaluation at step {config.steps} in '
            f'{run_dir.metrics}'
        )


def slot_env(slot, gpus):
    """The environment of a local slot: the launcher's, with the slot's GPU if ``gpus``."""
    env = dict(os.environ)
    if gpus:
        env['CUDA_VISIBLE_DEVICES'] = str(gpus[slot % len(gpus)])
    return env


def _spawn(run, command, env=None, pass_fds=(), new_session=False):
    """Start ``command`` with its output appended to the run's stdout.log."""
    run.logdir.mkdir(parents=True, exist_ok=True)
    with open(run.logdir / LOG_NAME, 'a') as log:
        log.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} {shlex.join(command)}\n')
        log.flush()
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=pass_fds,
            start_new_session=new_session,
        )


def _last_line(path):
    """The last non-empty line of a text file ('' if none)."""
    try:
        lines = [line for line in Path(path).read_text(errors='replace').splitlines() if line]
    except OSError:
        return ''
    return lines[-1] if lines else ''


def _say(status, run, detail=''):
    print(f'{status:<16} {run.label}{"  " + detail if detail else ""}', flush=True)


@contextlib.contextmanager
def _signal_handler(signum, handler):
    """Within the block, ``handler`` handles ``signum`` (main thread only, else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@dataclasses.dataclass
class _Running:
    run: Run
    process: subprocess.Popen
    slot: int
    start: float


def _start_local(run, slot, gpus):
    """Start a run in a slot; None if another launcher holds its lock."""
    run.logdir.mkdir(parents=True, exist_ok=True)
    with open(run.logdir / LOCK_NAME, 'w') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        # The program inherits the locked descriptor and holds the lock until it exits.
        process = _spawn(
            run, run.command(), slot_env(slot, gpus), pass_fds=(lock.fileno(),), new_session=True
        )
    return _Running(run, process, slot, time.time())


def run_local(runs, parallel=1, gpus=()):
    """Run the sweep on this machine, ``parallel`` programs at a time; returns {logdir: status}.

    Ctrl-C or SIGTERM asks every running program to checkpoint, waits for them and returns;
    SIGUSR1 pauses: no run starts any more and every running program stops at the end of its
    current episode, to resume exactly. The same call later resumes them.
    """
    if parallel < 1:
        raise SweepError(f'--parallel must be at least 1, got {parallel}')
    validate(runs)
    status = {}
    for run in runs:
        if is_finished(run):
            status[run.logdir] = FINISHED
            _say(FINISHED, run)
    # Runs with dependencies first, each group in the grid's order (a stable sort), so a free
    # slot takes a finished source's relabeling or target before the next source.
    pending = sorted(
        (run for run in runs if run.logdir not in status), key=lambda run: not run.depends_on
    )
    running, free = {}, list(range(parallel))
    # The signals forwarded to every program since the sweep was asked to stop. The handler
    # only records and forwards, so a stop that arrives while a program starts cannot orphan
    # it: the loop forwards the signals to each program it registers, and starts no other.
    forwarded = []

    def stop(signum, frame):
        if signum == signal.SIGUSR1:
            forward = signal.SIGUSR1
            print('Pausing: the running programs stop at their next episode end.', flush=True)
        else:
            forward = signal.SIGTERM
            print('Interrupted: the running programs checkpoint and exit.', flush=True)
        forwarded.append(forward)
        for item in running.values():
            item.process.send_signal(forward)

    with (
        _signal_handler(signal.SIGUSR1, stop),
        _signal_handler(signal.SIGTERM, stop),
        _signal_handler(signal.SIGINT, stop),
    ):
        while (pending and not forwarded) or running:
            for run in list(pending):
                if forwarded:
                    break
                states = [status.get(logdir) for logdir in run.depends_on]
                if any(state is not None and state not in OK for state in states):
                    pending.remove(run)
                    status[run.logdir] = BLOCKED
                    _say(BLOCKED, run, 'a run it depends on did not finish')
                elif free and all(state in OK for state in states):
                    pending.remove(run)
                    slot = free.pop(0)
                    started = _start_local(run, slot, gpus)
                    if started is None:
                        free.insert(0, slot)
                        status[run.logdir] = BUSY
                        _say(BUSY, run, 'another launcher is running it')
                        continue
                    running[run.logdir] = started
                    for forward in forwarded:
                        started.process.send_signal(forward)
                    step = RunDir(run.logdir).checkpoint_step()
                    where = f'from step {step}' if step is not None else 'new'
                    gpu = f', gpu {gpus[slot % len(gpus)]}' if gpus else ''
                    _say('resume' if step is not None else 'start', run, f'({where}{gpu})')
            if not running:
                break
            logdir = _wait_any(running)
            item = running.pop(logdir)
            free.append(item.slot)
            status[logdir] = _report_exit(item, forwarded)
    for run in pending:
        status.setdefault(run.logdir, NOT_STARTED)
    print_summary(runs, status)
    return status


def _wait_any(running):
    """Block until one of the running programs exits; returns its logdir."""
    while True:
        for logdir, item in running.items():
            if item.process.poll() is not None:
                return logdir
        time.sleep(POLL_SECONDS)


def _report_exit(item, forwarded=()):
    """The status of a program that exited, printed with its duration; ``forwarded`` are the
    signals it was sent to stop (SIGUSR1: pause, SIGTERM: interrupt)."""
    code, run = item.process.returncode, item.run
    took = format_duration(time.time() - item.start)
    if code == 0 and is_finished(run):
        _say(DONE, run, took)
        return DONE
    log = run.logdir / LOG_NAME
    # A program signalled before it could install its handler dies of it, SIGKILL-safe.
    if forwarded and code in (0, *(-signum for signum in forwarded)):
        how = 'interrupted' if signal.SIGTERM in forwarded else 'paused at an episode end'
        _say(INTERRUPTED, run, f'{took}; {how}, rerun to resume')
        return INTERRUPTED
    if code == 0:
        _say(INCOMPLETE, run, f'{took}; exited before its last step (log {log})')
        return INCOMPLETE
    if code == DIVERGED_EXIT_CODE and run.kind == 'train':
        _say(DIVERGED, run, f'{took}; {_last_line(log).removeprefix("error: ")} (log {log})')
        return DIVERGED
    _say(FAILED, run, f'{took}; exit {code}: {_last_line(log)} (log {log})')
    return FAILED


def print_summary(runs, status):
    """One line of counts per status, then every run that did not end well."""
    counts = {}
    for run in runs:
        counts[status[run.logdir]] = counts.get(status[run.logdir], 0) + 1
    listed = ', '.join(f'{count} {name}' for name, count in counts.items())
    print(f'Summary: {len(runs)} runs: {listed}', flush=True)
    for run in runs:
        if status[run.logdir] not in OK:
            print(f'  {status[run.logdir]:<14} {run.logdir / LOG_NAME}', flush=True)


def print_status(runs):
    """One line per run from its files alone (``--status``): finished, training (with the
    trainer's pid), stopped (started, not running, not finished) or not started; for a training
    run also its step, newest evaluation and the rate and time left of its newest log interval.
    """
    for run in runs:
        run_dir = RunDir(run.logdir)
        steps = resolved_config(run).steps if run.kind == 'train' else None
        if _finished(run, steps):
            _say('finished', run)
            continue
        if run.kind != 'train' or not run_dir.metrics.is_file():
            _say(NOT_STARTED if not run.logdir.exists() else 'stopped', run)
            continue
        records = scores.read_metrics(run_dir.metrics)
        step = int(records[-1]['step']) if records else 0
        parts = [f'{step:,}/{steps:,} steps']
        evaluations = [record for record in records if 'test/return' in record]
        if evaluations:
            newest = evaluations[-1]
            parts.append(f'evaluation {newest["test/return"]:.1f} at {int(newest["step"]):,}')
        intervals = [record for record in records if record.get('fps')]
        if intervals:
            newest = intervals[-1]
            left = format_duration((steps - step) / newest['fps'])
            parts.append(f'{newest.get("updates_per_second", 0):.2f} updates/s, {left} left')
        pid = run_dir.training_pid()
        if pid is not None:
            parts.append(f'pid {pid}')
        _say('training' if pid is not None else 'stopped', run, ', '.join(parts))


class SlurmCommand:
    """What a SLURM job runs: one run's command, its output appended to the run's log.

    At the time limit or on preemption submitit calls `checkpoint`: the program gets SIGTERM,
    writes its checkpoint and exits, and submitit requeues this job, which resumes the run.
    """

    def __init__(self, run, command, steps):
        self.run = run
        self.command = command
        self.steps = steps
        self._process = None

    def __call__(self):
        """Run the command; raise (failing the job, so ``afterok`` fails) unless finished."""
        # SLURM signals every process of the job; the program must only see our SIGTERM.
        previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        try:
            self._process = _spawn(self.run, self.command)
        finally:
            signal.signal(signal.SIGUSR2, previous)
        while self._process.poll() is None:
            time.sleep(1)
        code = self._process.returncode
        log = self.run.logdir / LOG_NAME
        if code == DIVERGED_EXIT_CODE and self.run.kind == 'train':
            raise RuntimeError(f'{self.run.label} {_last_line(log).removeprefix("error: ")}')
        if code != 0:
            raise RuntimeError(f'{self.run.label} exited with {code}; see {log}')
        if not _finished(self.run, self.steps):
            raise RuntimeError(f'{self.run.label} stopped before its last step; see {log}')

    def checkpoint(self, *args, **kwargs):
        """Stop the program (it checkpoints) and return this job again for the requeue."""
        import submitit

        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            deadline = time.time() + 60
            while process.poll() is None and time.time() < deadline:
                time.sleep(0.5)
        return submitit.helpers.DelayedSubmission(SlurmCommand(self.run, self.command, self.steps))


def _queued_job_id(run):
    """The id of the run's earlier SLURM job if it is still queued or running, else None."""
    path = run.logdir / JOB_ID_NAME
    if not path.is_file():
        return None
    job_id = path.read_text().strip()
    try:
        result = subprocess.run(
            ['squeue', '-h', '-j', job_id, '-o', '%T'], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise SweepError(
            f'{run.label}: cannot ask SLURM whether its job {job_id} still runs ({error}); '
            'nothing submitted, try again'
        ) from None
    active = job_active(result.returncode, result.stdout, result.stderr)
    if active is None:
        reason = ' '.join(result.stderr.split())[:200]
        raise SweepError(
            f'{run.label}: squeue failed for its job {job_id} ({reason}); nothing submitted, '
            'try again'
        )
    return job_id if active else None


def job_active(returncode, stdout, stderr):
    """Whether squeue's answer about one job says it has not ended; None if squeue failed.

    A job gone from squeue (empty answer, or "Invalid job id" once SLURM forgot it) has ended.
    """
    if returncode != 0:
        return False if 'invalid job id' in stderr.lower() else None
    state = stdout.strip()
    return bool(state) and state not in SLURM_ENDED


def run_slurm(runs, folder, partition=None, time_min=1440, gpus=1, cpus=8, mem_gb=32, extra=None):
    """Submit every unfinished run as a SLURM job through submitit; returns {logdir: status}.

    Dependencies become ``afterok`` on the jobs submitted (or still queued) for them;
    relabelings ask for no GPU. ``extra`` holds further sbatch options (e.g. account, qos).
    """
    try:
        import cloudpickle
        import submitit
    except ImportError:
        raise SweepError(SUBMITIT_MISSING) from None
    if __name__ != '__main__':
        # The job unpickles this module by value: the compute node needs no tools/ on its path.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    validate(runs)
    status, job_ids = {}, {}
    for run in runs:
        if is_finished(run):
            status[run.logdir] = FINISHED
            _say(FINISHED, run)
            continue
        queued = _queued_job_id(run)
        if queued:
            status[run.logdir], job_ids[run.logdir] = QUEUED, queued
            _say(QUEUED, run, f'job {queued}')
            continue
        parameters = dict(extra or {})
        dependencies = [job_ids[logdir] for logdir in run.depends_on if logdir in job_ids]
        if dependencies:
            parameters['dependency'] = 'afterok:' + ':'.join(dependencies)
            parameters['kill-on-invalid-dep'] = 'yes'
        steps = resolved_config(run).steps if run.kind == 'train' else None
        try:
            executor = submitit.AutoExecutor(folder=Path(folder) / '%j', cluster='slurm')
            executor.update_parameters(
                name=run.label.replace('/', '-'),
                timeout_min=time_min,
                cpus_per_task=cpus,
                mem_gb=mem_gb,
                slurm_additional_parameters=parameters,
                **({'gpus_per_node': gpus} if run.kind == 'train' and gpus else {}),
                **({'slurm_partition': partition} if partition else {}),
            )
            job = executor.submit(SlurmCommand(run, run.command(), steps))
        except (OSError, RuntimeError) as error:
            raise SweepError(f'could not submit {run.label}: {error}') from None
        run.logdir.mkdir(parents=True, exist_ok=True)
        (run.logdir / JOB_ID_NAME).write_text(f'{job.job_id}\n')
        status[run.logdir], job_ids[run.logdir] = SUBMITTED, job.job_id
        _say(SUBMITTED, run, f'job {job.job_id}')
    print_summary(runs, status)
    return status


def build_parser(default_root, description=None, parents=()):
    """The flags every experiment script shares, after the script's own (``parents``)."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )
    parser.add_argument(
        '--root',
        help=f'sweep directory (default {default_root}, {default_root}-smoke or -debug)',
    )
    parser.add_argument(
        '--dry-run', action='store_true', help='print every command, one per line, in order'
    )
    parser.add_argument(
        '--status',
        action='store_true',
        help='train nothing: one line per run from its files (finished, training, stopped or '
        'not started; its step, newest evaluation, rate and time left)',
    )
    parser.add_argument(
        '--report-only',
        action='store_true',
        help="train nothing: report from the selected runs' config.yaml and metrics.jsonl under "
        '--root (e.g. the committed copies in results/), each checked against its command',
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        '--smoke',
        action='store_true',
        help='one task and seed, the fewest runs that cover every stage, tiny networks and steps',
    )
    size.add_argument(
        '--debug',
        action='store_true',
        help='every selected run with tiny networks and steps (a debug sweep)',
    )
    parser.add_argument(
        '--tasks', nargs='+', help='only the runs of these tasks (and their sources)'
    )
    parser.add_argument('--methods', nargs='+', help='only the runs of these methods')
    parser.add_argument('--seeds', nargs='+', help='only the runs of these seeds')
    parser.add_argument('--backend', choices=('local', 'slurm'), default='local')
    local = parser.add_argument_group('local backend')
    local.add_argument(
        '--parallel', type=int, help='programs at a time (default: one per --gpus id, else 1)'
    )
    local.add_argument('--gpus', help='comma-separated GPU ids, one per slot, e.g. 0,1')
    slurm = parser.add_argument_group('slurm backend')
    slurm.add_argument('--slurm-partition')
    slurm.add_argument(
        '--slurm-time', type=int, default=1440, help='minutes per job; then requeued (resumes)'
    )
    slurm.add_argument('--slurm-gpus', type=int, default=1, help='GPUs per training run')
    slurm.add_argument('--slurm-cpus', type=int, default=8, help='CPUs per job')
    slurm.add_argument('--slurm-mem', type=int, default=32, help='memory per job (GB)')
    slurm.add_argument(
        '--slurm-option',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='another sbatch option, e.g. account=abc (repeatable)',
    )
    return parser


def main(
    experiment,
    grid,
    smoke_keep,
    argv=None,
    description=None,
    report=None,
    default_root=None,
    parents=(),
):
    """Command line of an experiment script; returns the exit code.

    ``grid(root)`` lists the experiment's runs; ``smoke_keep(run)`` selects the runs ``--smoke``
    keeps (with everything they depend on). ``report(runs, root)``, if given, runs after a local
    sweep (not a dry run or a SLURM submission), or alone with ``--report-only``, and returns the
    exit code instead, e.g. a check's verdict over the runs. Runs go to ``--root``, else to
    ``default_root`` (default ``runs/<experiment>``) with a ``-smoke`` or ``-debug`` suffix for
    those sizes, so a tiny sweep never shares a directory with a real one. ``parents``: argparse
    parsers (built with ``add_help=False``) of the script's own flags, listed in ``--help`` and
    accepted here.
    """
    default_root = default_root or f'runs/{experiment}'
    args = build_parser(default_root, description, parents).parse_args(argv)
    suffix = '-smoke' if args.smoke else '-debug' if args.debug else ''
    root = Path(args.root or f'{default_root}{suffix}').absolute()
    runs = grid(root)
    try:
        runs = select(runs, args.tasks, args.methods, args.seeds)
        if args.smoke:
            runs = smoke(runs, smoke_keep)
        elif args.debug:
            runs = shrink(runs)
        if args.dry_run:
            validate(runs)
            for run in runs:
                print(shlex.join(run.command()))
            return 0
        if args.status:
            validate(runs)
            print_status(runs)
            return 0
        if args.report_only:
            if report is None:
                raise SweepError(f'{experiment} has no report; --report-only needs one')
            for run in runs:
                check_reportable(run)
            return report(runs, root)
        print(f'{experiment}: {len(runs)} runs under {root}', flush=True)
        if args.backend == 'slurm':
            options = dict(option.partition('=')[::2] for option in args.slurm_option)
            status = run_slurm(
                runs,
                root / 'slurm',
                args.slurm_partition,
                args.slurm_time,
                args.slurm_gpus,
                args.slurm_cpus,
                args.slurm_mem,
                options,
            )
        else:
            gpus = tuple(gpu.strip() for gpu in args.gpus.split(',')) if args.gpus else ()
            status = run_local(runs, args.parallel or max(len(gpus), 1), gpus)
            if report is not None and all(state in OK for state in status.values()):
                return report(runs, root)
    except SweepError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0 if all(state in OK for state in status.values()) else 1
