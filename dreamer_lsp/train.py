"""The training loop: prefill, collect with the agent, train on the paper's cadence, evaluate,
log and checkpoint; the same command on an existing logdir resumes the run exactly.

    python -m dreamer_lsp --configs dmc_proprio dreamer --task dmc_walker_walk --logdir runs/x
"""

import json
import pathlib
import shutil
import signal
import sys
import threading
import time

import numpy as np

from dreamer_lsp import config as config_lib
from dreamer_lsp.config import ConfigError, atomic_write_text, closest_names
from dreamer_lsp.envs import OBS_TYPES, TASKS, ProcessEnv, WorkerError
from dreamer_lsp.replay import episode_files

CHECKPOINT_DIR = 'checkpoint'
ENV_ERROR_LOG = 'env_errors.log'
# Exit codes: a bad config (before anything is written), a diverged run.
CONFIG_EXIT_CODE = 2
DIVERGED_EXIT_CODE = 3


STOP_REQUESTED = threading.Event()


class RunInterruptedError(Exception):
    """Raised at the next agent step after SIGTERM/SIGINT, so the run checkpoints and exits."""


class CheckpointError(Exception):
    """A run's checkpoints exist but none can be read; the message is one line."""


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


def check_task(task):
    """Raise ConfigError naming the closest valid tasks unless `task` is a known dmc_ task."""
    if task.removeprefix('dmc_') not in TASKS or not task.startswith('dmc_'):
        valid = [f'dmc_{name}' for name in TASKS]
        raise ConfigError(f'unknown task {task!r}; {closest_names(task, valid)}')


def check_config(config):
    """Validate what the type check cannot; raises ConfigError with one line."""
    if not config.logdir:
        raise ConfigError('--logdir is required: the directory the run writes everything to')
    check_task(config.task)
    if config.precision not in (16, 32):
        raise ConfigError(f'precision must be 16 or 32, got {config.precision}')
    if config.obs_type not in OBS_TYPES:
        raise ConfigError(
            f'obs_type {config.obs_type!r} is invalid; {closest_names(config.obs_type, OBS_TYPES)}'
        )
    for key in (
        'action_repeat',
        'batch_size',
        'batch_length',
        'horizon',
        'train_every',
        'checkpoint_keep',
    ):
        if config[key] < 1:
            raise ConfigError(f'{key} must be at least 1, got {config[key]}')
    high_levels = ('none', 'cem', 'random', 'policy')
    if config.skills.high_level not in high_levels:
        raise ConfigError(
            f'skills.high_level {config.skills.high_level!r} is invalid; '
            f'valid: {", ".join(high_levels)}'
        )
    if config.skills.high_level != 'none':
        skills, cem = config.skills, config.cem
        if skills.length < 1 or skills.horizon < 2 or skills.horizon % skills.length:
            raise ConfigError(
                f'skills.horizon ({skills.horizon}) must be at least 2 and a multiple of '
                f'skills.length ({skills.length})'
            )
        if not 1 <= cem.elites <= cem.proposals:
            raise ConfigError(
                f'cem.elites ({cem.elites}) must be between 1 and cem.proposals ({cem.proposals})'
            )
    for key in ('checkpoint', 'replay'):
        source = config.transfer[key]
        if source and not pathlib.Path(source).expanduser().is_dir():
            raise ConfigError(f'transfer.{key} {source!r} is not a directory')
    source = config.transfer.checkpoint
    if source and not (pathlib.Path(source).expanduser() / CHECKPOINT_DIR / 'latest').is_file():
        raise ConfigError(f"transfer.checkpoint {source!r} holds no checkpoint (a run's logdir)")
    if config.transfer.replay and not episode_files(
        pathlib.Path(config.transfer.replay).expanduser()
    ):
        raise ConfigError(f'transfer.replay {config.transfer.replay!r} holds no episodes (*.npz)')
    if config.horizon < 2:
        raise ConfigError(
            f'horizon must be at least 2 (λ-returns need a bootstrap), got {config.horizon}'
        )


def check_saved_config(config, logdir):
    """Refuse to continue a logdir whose saved config differs in anything but run length.

    Only a run with a checkpoint binds its logdir: one that stopped before its first checkpoint
    starts over, so its saved config is replaced.
    """
    path = logdir / 'config.yaml'
    if not path.exists() or not (logdir / CHECKPOINT_DIR / 'latest').exists():
        return
    saved = config_lib.load_saved(path)
    differences = saved.diff(config, ignore=('steps', 'logdir'))
    if differences:
        raise ConfigError(
            f'{logdir} holds a run with a different config; use another --logdir or the same '
            f'settings. Differences (saved -> requested): {"; ".join(differences)}'
        )


class Trainer:
    """Owns the environments, replay, agent, logger and checkpoint of one run."""

    def __init__(self, config):
        self.logdir = pathlib.Path(config.logdir).expanduser()
        # Checked before TensorFlow loads, so a refused run costs nothing.
        check_saved_config(config, self.logdir)

        from dreamer_lsp import agents
        from dreamer_lsp._tf import tf
        from dreamer_lsp.logger import Logger
        from dreamer_lsp.replay import Replay

        self.config = config
        self.logdir.mkdir(parents=True, exist_ok=True)
        config.save(self.logdir / 'config.yaml')
        if config.threads:
            tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.random.set_seed(config.seed)
        self.train_env = ProcessEnv(**env_kwargs(config, config.seed))
        self.eval_env = ProcessEnv(**env_kwargs(config, config.seed + 1_000_000, render_video=True))
        self.obs_key = 'image' if config.obs_type == 'pixels' else 'features'
        capacity = config.replay_capacity or None
        self.replay = Replay(self.logdir / 'train_episodes', capacity, config.seed)
        self.agent = agents.make_agent(config, self.train_env.obs_space, self.train_env.action_size)
        self.logger = Logger(self.logdir, config.steps)
        self.step = 0
        self.updates = 0
        self.episodes = 0
        self.prefill_end = None
        self.next_eval = 0
        self.next_log = 0
        self.next_checkpoint = config.checkpoint_every
        self.checkpoint = tf.train.Checkpoint(agent=self.agent)
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
            transfer.write_report(self.logdir, report)
        if self.config.transfer.replay:
            files = episode_files(pathlib.Path(self.config.transfer.replay).expanduser())
            for path in files:
                self.replay.add(load_episode(path))
            # The seeded replay replaces the random prefill; training starts at step 0.
            self.prefill_end = self.next_eval = 0
            print(
                f'Seeded the replay with {len(files)} episodes from {self.config.transfer.replay}.'
            )

    # Checkpoints -------------------------------------------------------------------------

    def _checkpoint_root(self):
        return self.logdir / CHECKPOINT_DIR

    def save_checkpoint(self):
        """Write weights, optimizer and RNG state plus the loop's state, atomically."""
        root = self._checkpoint_root()
        name = f'ckpt-{self.step:09d}-{self.updates:08d}'
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        temporary = root / f'.{name}.tmp'
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir(parents=True)
        self.checkpoint.write(str(temporary / 'variables'))
        state = dict(
            step=self.step,
            updates=self.updates,
            episodes=self.episodes,
            prefill_end=self.prefill_end,
            next_eval=self.next_eval,
            next_log=self.next_log,
            next_checkpoint=self.next_checkpoint,
            replay=self.replay.state(),
            train_env=_rng_state_to_json(self.train_env.random_state()),
            eval_env=_rng_state_to_json(self.eval_env.random_state()),
            logger_recent=self.logger.recent,
        )
        (temporary / 'state.json').write_text(json.dumps(state))
        temporary.rename(target)
        atomic_write_text(root / 'latest', name)
        checkpoints = sorted(path for path in root.glob('ckpt-*') if path.is_dir())
        for old in checkpoints[: -self.config.checkpoint_keep]:
            shutil.rmtree(old, ignore_errors=True)
        for leftover in root.glob('.*'):  # temporaries of interrupted writes
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()

    def _restore(self):
        """Load the latest readable checkpoint; False if there is none (a new run).

        An unreadable checkpoint (truncated, corrupted) is moved aside to `unreadable-<name>`
        with a one-line warning and the one before it is tried.
        """
        from dreamer_lsp._tf import tf

        root = self._checkpoint_root()
        latest = root / 'latest'
        if not latest.exists():
            if any((self.logdir / 'train_episodes').glob('*.npz')):
                # Killed before its first checkpoint: start over, keeping the old episodes aside.
                self.replay.restore({'clock': 0, 'episodes': []})
            self.logger.truncate_after(-1)
            return False
        name = latest.read_text().strip()
        candidates = sorted(
            (path for path in root.glob('ckpt-*') if path.is_dir() and path.name <= name),
            reverse=True,
        )
        for directory in candidates:
            try:
                state = json.loads((directory / 'state.json').read_text())
                self.checkpoint.read(str(directory / 'variables')).assert_consumed()
                break
            except (OSError, ValueError, LookupError, AssertionError, tf.errors.OpError) as error:
                reason = ' '.join(f'{type(error).__name__}: {error}'.split())[:200]
                directory.rename(directory.with_name(f'unreadable-{directory.name}'))
                print(
                    f'Warning: checkpoint {directory.name} cannot be read ({reason}); '
                    'trying the one before it.',
                    flush=True,
                )
        else:
            raise CheckpointError(
                f'{root} holds no readable checkpoint (latest: {name}); move it aside to start over'
            )
        atomic_write_text(latest, directory.name)
        self.step, self.updates, self.episodes = state['step'], state['updates'], state['episodes']
        self.prefill_end = state['prefill_end']
        self.next_eval, self.next_log = state['next_eval'], state['next_log']
        self.next_checkpoint = state['next_checkpoint']
        self.replay.restore(state['replay'])
        self.train_env.set_random_state(_rng_state_from_json(state['train_env']))
        self.eval_env.set_random_state(_rng_state_from_json(state['eval_env']))
        self.logger.recent.update(state['logger_recent'])
        self.logger.truncate_after(self.step)
        print(
            f'Resumed {self.logdir} at step {self.step} '
            f'({self.updates} updates, {self.episodes} episodes).'
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
            np.random.default_rng([self.config.seed, self.episodes]) if mode == 'random' else None
        )
        steps, done = [], False
        while not done:
            if mode == 'random':
                action = random.uniform(-1, 1, action_size).astype(np.float32)
                extras = self.agent.idle_extras()
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
        self.episodes += 1
        values = {
            f'{prefix}/return': episode['reward'].sum(),
            f'{prefix}/length': steps,
            'episodes': self.episodes,
        }
        if 'skill' in episode and self.prefill_end is not None:
            # Spread of the skills the agent chose (entry 0 is the reset's zero skill).
            values[f'{prefix}/acting_skill_spread'] = episode['skill'][1:].std(0).mean()
        self.logger.scalars(self.step, values)

    def evaluate(self):
        """Run `eval_episodes` episodes with the actor's mode; log returns, save a video."""
        returns = []
        for index in range(self.config.eval_episodes):
            episode = self.run_episode(self.eval_env, 'eval')
            returns.append(episode['reward'].sum())
            if index == 0:
                self._save_video(episode)
        length = len(episode['reward']) - 1
        self.logger.scalars(self.step, {'test/return': np.mean(returns), 'test/length': length})
        print(f'Evaluation at step {self.step}: return {np.mean(returns):.1f}', flush=True)

    def _save_video(self, episode):
        import imageio

        frames = episode['image' if 'image' in episode else 'video']
        directory = self.logdir / 'videos'
        directory.mkdir(exist_ok=True)
        target = directory / f'eval_{self.step:09d}.mp4'
        temporary = directory / f'.tmp_{self.step:09d}.mp4'
        imageio.mimwrite(temporary, list(frames), fps=30, macro_block_size=1)
        temporary.replace(target)

    # Training ----------------------------------------------------------------------------

    def updates_due(self):
        """Updates owed now: `pretrain` after the prefill, then one per `train_every` env steps."""
        if self.prefill_end is None:
            return 0
        return self.config.pretrain + (self.step - self.prefill_end) // self.config.train_every

    def train_until_due(self):
        """Run every update owed so far; log when a log interval has passed."""
        # A stop request ends training here; owed updates run after the resume.
        while self.updates < self.updates_due() and not STOP_REQUESTED.is_set():
            if self.dataset is None:
                self.dataset = iter(
                    self.replay.dataset(
                        self.config.batch_size,
                        self.config.batch_length,
                        self.updates,
                        self.config.prefetch,
                    )
                )
            self.replay.tick()
            metrics = {k: v.numpy() for k, v in self.agent.train(next(self.dataset)).items()}
            self.updates += 1
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
        latest = self._checkpoint_root() / 'latest'
        kept = (
            f'checkpoint {latest.read_text().strip()} kept' if latest.exists() else 'no checkpoint'
        )
        raise DivergedError(
            f'diverged: {what} is {value} at update {self.updates} (step {self.step}); '
            f'stopped without writing a checkpoint ({kept})'
        )

    def _after_env_step(self):
        self.step += self.config.action_repeat
        self.train_until_due()
        if self.step >= self.next_log:
            self.logger.average(self.agent.timings.pop())
            self.logger.write(self.step, self.updates)
            while self.next_log <= self.step:
                self.next_log += self.config.log_every

    def run(self):
        """Prefill, then alternate evaluation and training episodes until `steps`."""
        config = self.config
        try:
            while self.prefill_end is None:
                episode = self.run_episode(self.train_env, 'random', self._count_prefill_step)
                self._store(episode, 'train')
                if self.step >= config.prefill:
                    self.prefill_end = self.step
                    self.next_eval = self.step
                    print(
                        f'Prefilled {self.episodes} episodes ({self.step} steps); training.',
                        flush=True,
                    )
            while self.step < config.steps:
                if self.step >= self.next_eval:
                    self.evaluate()
                    while self.next_eval <= self.step:
                        self.next_eval += config.eval_every
                episode = self.run_episode(self.train_env, 'train', self._after_env_step)
                self._store(episode, 'train')
                if self.step >= self.next_checkpoint:
                    self.save_checkpoint()
                    while self.next_checkpoint <= self.step:
                        self.next_checkpoint += config.checkpoint_every
            self.evaluate()
            self.logger.write(self.step, self.updates)
            self.save_checkpoint()
            print(f'Finished {self.step} steps; logdir {self.logdir}', flush=True)
        except RunInterruptedError:
            print(
                'Interrupted: writing a checkpoint; the same command resumes the run.', flush=True
            )
            # The unfinished episode is discarded.
            self.save_checkpoint()
        finally:
            self.close()

    def _count_prefill_step(self):
        self.step += self.config.action_repeat

    def close(self):
        """Stop the environment workers and the replay's sampler."""
        self.replay.close()
        self.train_env.close()
        self.eval_env.close()
        self.logger.close()


def _rng_state_to_json(state):
    kind, keys, position, has_gauss, cached = state
    return [kind, np.asarray(keys).tolist(), int(position), int(has_gauss), float(cached)]


def _rng_state_from_json(state):
    kind, keys, position, has_gauss, cached = state
    return (kind, np.asarray(keys, np.uint32), position, has_gauss, cached)


def _request_stop(signum, frame):
    STOP_REQUESTED.set()


def _report_worker_error(error, logdir, step):
    """Keep the worker's traceback in the logdir; return the one line for the terminal."""
    log = logdir / ENV_ERROR_LOG
    with log.open('a') as file:
        file.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} step {step}: {error}\n')
        file.write(error.worker_traceback)
    return f'{error} (run step {step}; worker traceback in {log})'


def main(argv=None):
    """Command-line entry point.

    Exit codes: 0 finished or interrupted (resumable), 2 bad config (nothing written), 3
    diverged (nothing written over the last checkpoint), 1 any other error, an environment
    worker's in one line with its traceback in the logdir.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = config_lib.parse_args(argv)
        check_config(config)
        trainer = Trainer(config)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(CONFIG_EXIT_CODE)
    except CheckpointError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(1)
    except WorkerError as error:
        line = _report_worker_error(error, pathlib.Path(config.logdir).expanduser(), 0)
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
            f'error: {_report_worker_error(error, trainer.logdir, trainer.step)}', file=sys.stderr
        )
        sys.exit(1)
    print(f'Wall time {time.time() - start:.0f} s')
