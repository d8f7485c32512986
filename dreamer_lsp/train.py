"""The training loop: prefill, collect with the agent, train on the paper's cadence, evaluate,
log and checkpoint; the same command on an existing logdir resumes the run. After a pause
(SIGUSR1: checkpoint at the next episode end) or a SIGKILL (back to the last checkpoint, written
at an episode end) it continues as if it had not stopped; SIGTERM or Ctrl-C checkpoint at once,
discarding the unfinished episode.

    python -m dreamer_lsp --configs dmc_proprio dreamer --task dmc_walker_walk --logdir runs/x
"""

import dataclasses
import pathlib
import signal
import sys
import threading
import time

import numpy as np

from dreamer_lsp import config as config_lib
from dreamer_lsp.config import ConfigError
from dreamer_lsp.envs import ProcessEnv, WorkerError
from dreamer_lsp.replay import episode_files
from dreamer_lsp.rundir import (
    CheckpointError,
    CheckpointMismatchError,
    RunBusyError,
    RunDir,
    checkpoint_name,
)

# Exit codes: a bad config (before anything is written), a diverged run.
CONFIG_EXIT_CODE = 2
DIVERGED_EXIT_CODE = 3


STOP_REQUESTED = threading.Event()
PAUSE_REQUESTED = threading.Event()


class RunInterruptedError(Exception):
    """Raised at the next agent step after SIGTERM/SIGINT, so the run checkpoints and exits."""


class RunPausedError(Exception):
    """Raised at the next episode end after SIGUSR1, so the run checkpoints there and exits."""


class DivergedError(Exception):
    """A loss, gradient norm or weight became non-finite; the message is one line."""


def env_kwargs(config, seed, render_video=False):
    """Arguments of `envs.make_env` for this config."""
    return dict(
        task=config.task.removeprefix('dmc_'),
        obs_type=config.obs_type,
        action_repeat=config.action_repeat,
        time_limit=config.time_limit,
        seed=seed,
        camera=None if config.camera < 0 else config.camera,
        render_video=render_video,
        video_size=(config.video_size, config.video_size),
    )


def check_saved_config(config, run_dir):
    """Refuse to continue a logdir whose saved config differs in anything but run length.

    Only a run with a checkpoint binds its logdir: one that stopped before its first checkpoint
    starts over, so its saved config is replaced.
    """
    if not run_dir.config.exists() or run_dir.latest_name() is None:
        return
    saved = config_lib.load_saved(run_dir.config)
    differences = saved.diff(config, ignore=('steps', 'logdir'))
    if differences:
        raise ConfigError(
            f'{run_dir} holds a run with a different config; use another --logdir or the same '
            f'settings. Differences (saved -> requested): {"; ".join(differences)}'
        )
    # A run extended past the requested budget would otherwise count as finished at it, its
    # later evaluations mixed into the shorter run's results.
    step = run_dir.checkpoint_step()
    if config.steps < saved.steps and step is not None and step > config.steps:
        raise ConfigError(
            f'{run_dir} was extended to {saved.steps} steps and is at step {step}, past the '
            f'{config.steps} requested; pass --steps {saved.steps} to continue it'
        )


@dataclasses.dataclass
class Every:
    """A cadence: due once at the first step at or past `next`, which then moves on by
    `interval` past that step [ref tools.Every]."""

    interval: int
    next: int = 0

    def __call__(self, step):
        """Whether the cadence is due at `step` (and, if so, moves it on)."""
        if step < self.next:
            return False
        while self.next <= step:
            self.next += self.interval
        return True


@dataclasses.dataclass
class LoopState:
    """The training loop's counters and cadences, saved and restored as one record."""

    step: int
    updates: int
    episodes: int
    prefill_end: int | None  # the step training started at; None while prefilling
    eval: Every
    log: Every
    checkpoint: Every

    @classmethod
    def start(cls, config):
        """A new run: evaluation is due when training starts, a log line at once."""
        return cls(
            step=0,
            updates=0,
            episodes=0,
            prefill_end=None,
            eval=Every(config.eval_every),
            log=Every(config.log_every),
            checkpoint=Every(config.checkpoint_every, config.checkpoint_every),
        )

    def to_json(self):
        """The record as a checkpoint's state.json holds it (a cadence as `next_<name>`)."""
        record = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Every):
                record[f'next_{field.name}'] = value.next
            else:
                record[field.name] = value
        return record

    def restore(self, record):
        """Take every counter and cadence from a saved record (`to_json`)."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Every):
                value.next = record[f'next_{field.name}']
            else:
                setattr(self, field.name, record[field.name])


class Trainer:
    """Owns the environments, replay, agent, logger and checkpoint of one run."""

    def __init__(self, config):
        self.run_dir = RunDir(config.logdir)
        # Checked before TensorFlow loads, so a refused run costs nothing.
        check_saved_config(config, self.run_dir)
        self._lock = self.run_dir.lock_for_training()

        from dreamer_lsp import agents
        from dreamer_lsp._tf import tf
        from dreamer_lsp.logger import Logger
        from dreamer_lsp.replay import Replay

        self.config = config
        config.save(self.run_dir.config)
        if config.threads:
            tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.random.set_seed(config.seed)
        self.train_env = ProcessEnv(**env_kwargs(config, config.seed))
        self.eval_env = ProcessEnv(**env_kwargs(config, config.seed + 1_000_000, render_video=True))
        capacity = config.replay_capacity or None
        self.replay = Replay(self.run_dir.episodes, capacity, config.seed)
        self.agent = agents.make_agent(config, self.train_env.obs_space, self.train_env.action_size)
        self.obs_key = self.agent.world_model.obs_key
        self.logger = Logger(self.run_dir, config.steps)
        self.loop = LoopState.start(config)
        self.checkpoint = self.agent.checkpoint()
        self.dataset = None
        self._loss_scaling = self.agent.model_opt.loss_scaling
        weights = self.agent.trainable_variables
        self._weights_finite = tf.function(
            lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in weights]),
            autograph=False,
        )
        if not self._restore():
            self._start_transfer()

    def _start_transfer(self):
        """Load a source run's networks and seed the replay, as `transfer` asks [LSP §4.3]."""
        from dreamer_lsp import transfer
        from dreamer_lsp.replay import load_episode

        if self.config.transfer.checkpoint:
            report = transfer.load_matching(self.agent, self.config.transfer.checkpoint)
            transfer.write_report(self.run_dir, report)
        if self.config.transfer.replay:
            files = episode_files(pathlib.Path(self.config.transfer.replay).expanduser())
            for path in files:
                self.replay.add(load_episode(path))
            # The seeded replay replaces the random prefill; training starts at step 0.
            self.loop.prefill_end = self.loop.eval.next = 0
            print(
                f'Seeded the replay with {len(files)} episodes from {self.config.transfer.replay}.'
            )

    # Checkpoints -------------------------------------------------------------------------

    def _checkpoint_name(self):
        return checkpoint_name(self.loop.step, self.loop.updates)

    def save_checkpoint(self):
        """Write weights, optimizer and RNG state plus the loop's state, atomically."""
        state = dict(
            self.loop.to_json(),
            replay=self.replay.state(),
            train_env=_rng_state_to_json(self.train_env.random_state()),
            eval_env=_rng_state_to_json(self.eval_env.random_state()),
            logger_recent=self.logger.recent,
            logger_pending=self.logger.pending(),
            logger_wall_seconds=self.logger.wall_seconds(),
            compute_dtype=self.agent.dtype.name,
        )
        self.run_dir.save_checkpoint(
            self._checkpoint_name(),
            self.checkpoint.write,
            state,
            self.config.checkpoint_keep,
        )

    def _restore(self):
        """Load the latest readable checkpoint; False if there is none (a new run)."""
        from dreamer_lsp._tf import tf

        state = self.run_dir.load_checkpoint(
            lambda prefix: read_agent_checkpoint(self.checkpoint, prefix), (tf.errors.OpError,)
        )
        if state is None:
            if episode_files(self.run_dir.episodes):
                # Killed before its first checkpoint: start over, keeping the old episodes aside.
                self.replay.restore({'clock': 0, 'episodes': []})
            self.logger.truncate_after(-1)
            return False
        # `precision: 16` computes in float16 only where a GPU is found: a run moved between a
        # GPU and a CPU machine would change its arithmetic halfway (older checkpoints lack it).
        saved_dtype = state.get('compute_dtype', self.agent.dtype.name)
        if saved_dtype != self.agent.dtype.name:
            raise ConfigError(
                f'{self.run_dir} trained in {saved_dtype} and would continue in '
                f'{self.agent.dtype.name} on this machine (precision 16 is float16 only on a '
                'GPU); resume it where it can compute as before'
            )
        self.loop.restore(state)
        self.replay.restore(state['replay'])
        self.train_env.set_random_state(_rng_state_from_json(state['train_env']))
        self.eval_env.set_random_state(_rng_state_from_json(state['eval_env']))
        self.logger.recent.update(state['logger_recent'])
        # Checkpoints written before the pending averages and the wall time were saved lack them.
        self.logger.restore_pending(state.get('logger_pending', {}))
        self.logger.restore_wall_seconds(state.get('logger_wall_seconds', 0.0))
        self.logger.truncate_after(self.loop.step)
        loop = self.loop
        print(
            f'Resumed {self.run_dir} at step {loop.step} '
            f'({loop.updates} updates, {loop.episodes} episodes).'
        )
        return True

    # Acting ------------------------------------------------------------------------------

    def _agent_obs(self, obs):
        return {self.obs_key: obs[self.obs_key][None]}

    def run_episode(self, env, mode, on_step=None):
        """Run one episode; mode is 'random', 'train' or 'eval'. Returns the episode dict.

        Entry t holds the observation at t, the action that led to it and the reward received
        on arriving (action[0] = 0, reward[0] = 0), as the reference stores episodes.
        """
        obs = first_obs = env.reset()
        action_size = env.action_size
        state = self.agent.initial_state() if mode != 'random' else None
        random = (
            np.random.default_rng([self.config.seed, self.loop.episodes])
            if mode == 'random'
            else None
        )
        steps, done = [], False
        while not done:
            if mode == 'random':
                action, extras = random.uniform(-1, 1, action_size).astype(np.float32), {}
            else:
                action, state, extras = self.agent.act(
                    self._agent_obs(obs), state, explore=mode == 'train'
                )
            env.step_async(action)
            if on_step:
                on_step()
            obs, reward, done, info = env.step_wait()
            if STOP_REQUESTED.is_set():
                raise RunInterruptedError()  # checked here, where no request is in flight
            steps.append(
                dict(obs, action=action, reward=reward, discount=info['discount'], **extras)
            )
        # Entry 0: the reset observation with zero action, reward and agent extras.
        first = {k: np.zeros_like(v) for k, v in steps[0].items()}
        first.update(first_obs, discount=1.0)
        episode = {k: np.stack([first[k]] + [s[k] for s in steps]) for k in steps[0]}
        for key in ('action', 'reward', 'discount'):
            episode[key] = episode[key].astype(np.float32)
        return episode

    def _store(self, episode, prefix):
        steps = len(episode['reward']) - 1
        self.replay.add({k: v for k, v in episode.items() if k != 'video'})
        self.loop.episodes += 1
        values = {
            f'{prefix}/return': episode['reward'].sum(),
            f'{prefix}/length': steps,
            'episodes': self.loop.episodes,
        }
        for key in self.agent.episode_extras:
            if key in episode:  # not in the random prefill's episodes
                # The spread over the episode of what the agent chose (entry 0 is the reset's).
                values[f'{prefix}/acting_{key}_spread'] = episode[key][1:].std(0).mean()
        self.logger.scalars(self.loop.step, values)

    def evaluate(self):
        """Run `eval_episodes` episodes with the actor's mode; log returns, save a video.

        Also logs the evaluation's wall time (`test/seconds`: acting, physics and the video).
        """
        begin = time.perf_counter()
        returns = []
        for index in range(self.config.eval_episodes):
            # Only the first episode's frames are saved, so only it draws them.
            self.eval_env.set_render_video(index == 0)
            episode = self.run_episode(self.eval_env, 'eval')
            returns.append(episode['reward'].sum())
            if index == 0:
                self._save_video(episode)
        length = len(episode['reward']) - 1
        step = self.loop.step
        seconds = time.perf_counter() - begin
        values = {'test/return': np.mean(returns), 'test/length': length, 'test/seconds': seconds}
        self.logger.scalars(step, values)
        print(
            f'Evaluation at step {step}: return {np.mean(returns):.1f} ({seconds:.0f} s)',
            flush=True,
        )

    def _save_video(self, episode):
        import imageio

        frames = episode['image' if 'image' in episode else 'video']
        directory = self.run_dir.videos
        directory.mkdir(exist_ok=True)
        target = directory / f'eval_{self.loop.step:09d}.mp4'
        temporary = directory / f'.tmp_{self.loop.step:09d}.mp4'
        imageio.mimwrite(temporary, list(frames), fps=30, macro_block_size=1)
        temporary.replace(target)

    # Training ----------------------------------------------------------------------------

    def updates_due(self):
        """Updates owed now: `pretrain` after the prefill, then one per `train_every` env steps."""
        loop = self.loop
        if loop.prefill_end is None:
            return 0
        return self.config.pretrain + (loop.step - loop.prefill_end) // self.config.train_every

    def train_until_due(self):
        """Run every update owed so far and add their metrics to the log interval's averages."""
        # A stop request ends training here; owed updates run after the resume.
        while self.loop.updates < self.updates_due() and not STOP_REQUESTED.is_set():
            if self.dataset is None:
                self.dataset = iter(
                    self.replay.dataset(
                        self.config.batch_size,
                        self.config.batch_length,
                        self.loop.updates,
                        self.config.prefetch,
                        keys=self.agent.world_model.batch_keys,
                    )
                )
            self.replay.tick()
            metrics = {k: v.numpy() for k, v in self.agent.train(next(self.dataset)).items()}
            self.loop.updates += 1
            self._check_finite(metrics)
            self.logger.average(metrics)

    def _check_finite(self, metrics):
        """Raise DivergedError naming the first non-finite metric or weight of this update.

        With float16, dynamic loss scaling skips updates whose gradients overflow, so gradient
        norms may be infinite there by design; losses and weights are checked always.
        """
        for key, value in metrics.items():
            if self._loss_scaling and key.endswith('grad_norm'):
                continue
            if not np.all(np.isfinite(value)):
                self._diverged(f'train/{key}', value)
        if not self._weights_finite():
            variable = next(
                v for v in self.agent.trainable_variables if not np.isfinite(v.numpy()).all()
            )
            self._diverged(f'weight {variable.name}', 'non-finite')

    def _diverged(self, what, value):
        latest = self.run_dir.latest_name()
        kept = f'checkpoint {latest} kept' if latest else 'no checkpoint'
        raise DivergedError(
            f'diverged: {what} is {value} at update {self.loop.updates} (step {self.loop.step}); '
            f'stopped without writing a checkpoint ({kept})'
        )

    def _after_env_step(self):
        loop = self.loop
        loop.step += self.config.action_repeat
        self.train_until_due()
        if loop.log(loop.step):
            self.logger.average(self.agent.timings.pop())
            self.logger.write(loop.step, loop.updates)

    def run(self):
        """Prefill, then alternate evaluation and training episodes until `steps`."""
        config, loop = self.config, self.loop
        try:
            if self.run_dir.is_finished(config.steps):
                print(f'Already finished {loop.step} steps; logdir {self.run_dir}', flush=True)
                return
            while loop.prefill_end is None:
                mode = 'random' if config.prefill_policy == 'random' else 'train'
                episode = self.run_episode(self.train_env, mode, self._count_prefill_step)
                self._store(episode, 'train')
                if loop.step >= config.prefill:
                    loop.prefill_end = loop.eval.next = loop.step
                    print(
                        f'Prefilled {loop.episodes} episodes ({loop.step} steps); training.',
                        flush=True,
                    )
                self._pause_if_requested()
            while loop.step < config.steps:
                if loop.eval(loop.step):
                    self.evaluate()
                episode = self.run_episode(self.train_env, 'train', self._after_env_step)
                self._store(episode, 'train')
                if loop.checkpoint(loop.step):
                    self.save_checkpoint()
                if loop.step < config.steps:
                    self._pause_if_requested()
            self.evaluate()
            self.logger.write(loop.step, loop.updates)
            self.save_checkpoint()
            print(f'Finished {loop.step} steps; logdir {self.run_dir}', flush=True)
        except RunInterruptedError:
            print(
                'Interrupted: writing a checkpoint; the same command resumes the run.', flush=True
            )
            # The unfinished episode is discarded, while its steps and updates count.
            self.save_checkpoint()
        except RunPausedError:
            print(
                f'Paused at the end of an episode (step {loop.step}): the same command resumes '
                'the run as if it had not stopped.',
                flush=True,
            )
        finally:
            self.close()

    def _pause_if_requested(self):
        """At an episode end: after SIGUSR1, checkpoint (unless just done) and stop."""
        if not PAUSE_REQUESTED.is_set():
            return
        if self.run_dir.latest_name() != self._checkpoint_name():
            self.save_checkpoint()
        raise RunPausedError()

    def _count_prefill_step(self):
        self.loop.step += self.config.action_repeat

    def close(self):
        """Stop the environment workers and the replay's sampler; release the run's lock."""
        self.replay.close()
        self.train_env.close()
        self.eval_env.close()
        self.logger.close()
        self._lock.close()


def read_agent_checkpoint(checkpoint, prefix):
    """Restore `checkpoint` (a `tf.train.Checkpoint`) from `prefix`, every variable matched.

    CheckpointMismatchError when the file is readable but holds another agent: variables
    missing, unexpected or of another shape, as after a change to the code.
    """
    try:
        checkpoint.read(prefix).assert_consumed()
    except (AssertionError, ValueError) as error:
        reason = ' '.join(str(error).split())
        # TensorFlow's ValueError for a variable of another shape; others mean a damaged file.
        if isinstance(error, ValueError) and 'incompatible tensor with shape' not in reason:
            raise
        name = pathlib.Path(prefix).parent.name
        raise CheckpointMismatchError(
            f'checkpoint {name} holds another agent than this code builds ({reason[:160]}); '
            'resume it with the code that wrote it, or use another --logdir'
        ) from None


def _rng_state_to_json(state):
    kind, keys, position, has_gauss, cached = state
    return [kind, np.asarray(keys).tolist(), int(position), int(has_gauss), float(cached)]


def _rng_state_from_json(state):
    kind, keys, position, has_gauss, cached = state
    return (kind, np.asarray(keys, np.uint32), position, has_gauss, cached)


def _request_stop(signum, frame):
    STOP_REQUESTED.set()


def _request_pause(signum, frame):
    PAUSE_REQUESTED.set()


def _report_worker_error(error, run_dir, step):
    """Keep the worker's traceback in the logdir; return the one line for the terminal."""
    log = run_dir.env_errors
    with log.open('a') as file:
        file.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} step {step}: {error}\n')
        file.write(error.worker_traceback)
    return f'{error} (run step {step}; worker traceback in {log})'


def main(argv=None):
    """Command-line entry point.

    Exit codes: 0 finished, interrupted or paused (resumable), 2 bad config (nothing written), 3
    diverged (nothing written over the last checkpoint), 1 any other error, an environment
    worker's in one line with its traceback in the logdir.
    """
    argv = sys.argv[1:] if argv is None else argv
    # SIGUSR1 (e.g. from a pausing sweep launcher) stops at the next episode end, exactly.
    signal.signal(signal.SIGUSR1, _request_pause)
    try:
        config = config_lib.parse_args(argv)
        config_lib.check(config)
        trainer = Trainer(config)
    except (ConfigError, RunBusyError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(CONFIG_EXIT_CODE)
    except CheckpointError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(1)
    except WorkerError as error:
        line = _report_worker_error(error, RunDir(config.logdir), 0)
        print(f'error: {line}', file=sys.stderr)
        sys.exit(1)
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    start = time.time()
    try:
        trainer.run()
    except DivergedError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(DIVERGED_EXIT_CODE)
    except WorkerError as error:
        print(
            f'error: {_report_worker_error(error, trainer.run_dir, trainer.loop.step)}',
            file=sys.stderr,
        )
        sys.exit(1)
    print(f'Wall time {time.time() - start:.0f} s')
