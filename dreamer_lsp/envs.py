"""DeepMind Control environments, Dreamer's wrappers, and a worker process that isolates MuJoCo.

TensorFlow and MuJoCo's EGL renderer crash when they share a process, so this module never imports
TensorFlow and imports dm_control only inside `DMCEnv`. The training process steps environments
through `ProcessEnv`, which runs `make_env` in a spawned worker process.
"""

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import traceback
import types
import weakref

import numpy as np

from dreamer_lsp import custom_tasks

OBS_TYPES = ('features', 'pixels')
# dm_control 1.0.50's suite.ALL_TASKS as '<domain>_<task>', then the custom tasks:
# listed here so that a task name is checked before anything imports dm_control or TensorFlow
# (tests/test_envs.py keeps the list equal to what the installed packages provide).
SUITE_TASKS = tuple(
    """
    acrobot_swingup acrobot_swingup_sparse ball_in_cup_catch cartpole_balance
    cartpole_balance_sparse cartpole_swingup cartpole_swingup_sparse cartpole_three_poles
    cartpole_two_poles cheetah_run dog_fetch dog_run dog_stand dog_trot dog_walk finger_spin
    finger_turn_easy finger_turn_hard fish_swim fish_upright hopper_hop hopper_stand
    humanoid_CMU_run humanoid_CMU_stand humanoid_CMU_walk humanoid_run humanoid_run_pure_state
    humanoid_stand humanoid_walk lqr_lqr_2_1 lqr_lqr_6_2 manipulator_bring_ball
    manipulator_bring_peg manipulator_insert_ball manipulator_insert_peg pendulum_swingup
    point_mass_easy point_mass_hard quadruped_escape quadruped_fetch quadruped_run quadruped_walk
    reacher_easy reacher_hard stacker_stack_2 stacker_stack_4 swimmer_swimmer15 swimmer_swimmer6
    walker_run walker_stand walker_walk
""".split()
)
QUADRUPED_TASKS = tuple(
    f'quadruped_{name}' for name in ('getup_walk', 'reach', 'getup_reach', 'obstacles', 'cove')
)
CARTPOLE_TASKS = ('cartpole_reach', 'cartpole_reach_sparse')
TASKS = SUITE_TASKS + QUADRUPED_TASKS + CARTPOLE_TASKS

_CLOSE_TIMEOUT = 5.0
_START_LOCK = threading.Lock()


def split_task(task, domains):
    """Splits '<domain>_<task>', preferring the longest known domain (some contain '_')."""
    for domain in sorted(domains, key=len, reverse=True):
        if task.startswith(domain + '_'):
            return domain, task[len(domain) + 1 :]
    domain, _, name = task.partition('_')
    return domain, name


class _EnvSpec:
    """The spaces an environment reports, set by its constructor as `_obs_space`,
    `_action_size` and `_action_bounds`."""

    @property
    def obs_space(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Maps every observation key to its (shape, dtype)."""
        return dict(self._obs_space)

    @property
    def action_size(self) -> int:
        """The number of action dimensions."""
        return self._action_size

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The (low, high) float32 bounds of the action."""
        return self._action_bounds


class DMCEnv(_EnvSpec):
    """A DeepMind Control task with proprioceptive features or pixels, plus the physics state."""

    def __init__(
        self,
        task: str,
        obs_type: str = 'features',
        size=(64, 64),
        camera: int | None = None,
        seed: int = 0,
        render_video: bool = False,
        video_size=(64, 64),
        task_params: dict | None = None,
    ):
        if obs_type not in OBS_TYPES:
            raise ValueError(f'obs_type must be one of {", ".join(OBS_TYPES)}; got {obs_type!r}')
        from dm_control import suite

        domain, name = split_task(task, suite.TASKS_BY_DOMAIN)
        custom = custom_tasks.module(domain) if domain in custom_tasks.MODULES else None
        if custom and name in custom.TASKS:
            self._env = custom.load(name, seed=seed, **(task_params or {}))
        elif (domain, name) in suite.ALL_TASKS:
            if task_params:
                raise ValueError(f'task_params only apply to custom tasks, not {task!r}')
            self._env = suite.load(domain, name, task_kwargs={'random': seed})
        else:
            raise ValueError(f'Unknown task {task!r}; valid tasks: {", ".join(TASKS)}')
        self._obs_type = obs_type
        self._size = tuple(size)
        self._camera = (2 if domain == 'quadruped' else 0) if camera is None else camera
        self._render_video = render_video and obs_type == 'features'
        self._video_size = tuple(video_size)
        spec = self._env.action_spec()
        self._action_size = int(np.prod(spec.shape))
        self._action_bounds = (
            np.broadcast_to(spec.minimum, spec.shape).astype(np.float32),
            np.broadcast_to(spec.maximum, spec.shape).astype(np.float32),
        )
        # A probe reset gives the exact keys and shapes (the arena size depends on the episode);
        # rewinding the RNG afterwards keeps the first real episode identical to an unprobed one.
        state = self.random_state()
        self._obs_space = {key: (value.shape, value.dtype) for key, value in self.reset().items()}
        self.set_random_state(state)

    def reset(self) -> dict:
        """Starts an episode and returns its first observation."""
        return self._observation(self._env.reset())

    def step(self, action, render=True) -> tuple[dict, float, bool, dict]:
        """Applies one action; returns (obs, reward, done, {'discount': float}).

        render=False leaves the drawn keys ('image', 'video') out of obs, for a step whose
        observation is discarded (`ActionRepeat`); `render()` draws them afterwards.
        """
        action = np.asarray(action)
        if action.shape != (self._action_size,):
            raise ValueError(
                f'Expected an action of shape ({self._action_size},); got {action.shape}'
            )
        time_step = self._env.step(action)
        reward = 0.0 if time_step.reward is None else float(time_step.reward)
        discount = 1.0 if time_step.discount is None else float(time_step.discount)
        observation = self._observation(time_step, render)
        return observation, reward, bool(time_step.last()), {'discount': discount}

    def render(self) -> dict:
        """The drawn keys of the current state's observation: 'image' (pixels), 'video'."""
        physics, frames = self._env.physics, {}
        if self._obs_type == 'pixels':
            frames['image'] = physics.render(*self._size, camera_id=self._camera)
        if self._render_video:
            frames['video'] = physics.render(*self._video_size, camera_id=self._camera)
        return frames

    def set_render_video(self, enabled: bool):
        """Draw 'video' frames (features only) from the next observation on, or stop drawing them.

        Episodes drawn without them lack the key; `obs_space` still lists it.
        """
        self._render_video = enabled and self._obs_type == 'features'

    def random_state(self):
        """Returns the picklable state of the task's random number generator."""
        return self._env.task.random.get_state()

    def set_random_state(self, state):
        """Restores a state returned by `random_state`."""
        self._env.task.random.set_state(state)

    def close(self):
        """Releases the environment."""
        self._env.close()

    def _observation(self, time_step, render=True):
        physics = self._env.physics
        obs = {}
        if self._obs_type == 'features':
            obs['features'] = np.concatenate(
                [np.asarray(value, np.float32).ravel() for value in time_step.observation.values()]
            )
        obs['qpos'] = physics.data.qpos.copy()
        obs['qvel'] = physics.data.qvel.copy()
        if hasattr(self._env.task, 'arena_params'):
            obs['arena'] = np.asarray(self._env.task.arena_params(), np.float32)
        if render:
            obs.update(self.render())
        return obs


class _Wrapper:
    """Forwards the environment interface to a wrapped environment."""

    def __init__(self, env):
        self._env = env

    @property
    def obs_space(self):
        return self._env.obs_space

    @property
    def action_size(self):
        return self._env.action_size

    @property
    def action_bounds(self):
        return self._env.action_bounds

    def reset(self):
        return self._env.reset()

    def step(self, action):
        return self._env.step(action)

    def random_state(self):
        return self._env.random_state()

    def set_random_state(self, state):
        self._env.set_random_state(state)

    def set_render_video(self, enabled):
        self._env.set_render_video(enabled)

    def close(self):
        self._env.close()


class ActionRepeat(_Wrapper):
    """Repeats every action `amount` times, summing the rewards and stopping early when done."""

    def __init__(self, env, amount: int):
        if amount < 1:
            raise ValueError(f'ActionRepeat amount must be at least 1; got {amount}')
        super().__init__(env)
        self._amount = amount

    def step(self, action):
        """Steps the wrapped environment up to `amount` times with the same action.

        Only the returned observation is drawn (pixels, video): one render per agent step.
        """
        total = 0.0
        for repeat in range(self._amount):
            last = repeat == self._amount - 1
            obs, reward, done, info = self._env.step(action, render=last)
            total += reward
            if done:
                break
        if not last:
            obs.update(self._env.render())  # the episode ended early, in an undrawn state
        return obs, total, done, info


def rescale_action(action, low, high):
    """An action in [-1, 1] (clipped to it) mapped linearly to the bounds [low, high]."""
    action = np.clip(action, -1.0, 1.0)
    return low + (action + 1.0) / 2.0 * (high - low)


class NormalizeActions(_Wrapper):
    """Takes actions in [-1, 1] (clipped) and maps them linearly to the wrapped env's bounds."""

    def __init__(self, env):
        super().__init__(env)
        self._low, self._high = (np.asarray(bound) for bound in env.action_bounds)
        if not (np.isfinite(self._low).all() and np.isfinite(self._high).all()):
            raise ValueError('NormalizeActions needs finite action bounds')

    @property
    def action_bounds(self):
        """The (-1, 1) bounds of the normalized action."""
        return -np.ones_like(self._low), np.ones_like(self._high)

    def step(self, action):
        """Clips the action to [-1, 1], rescales it to the wrapped bounds and steps."""
        return self._env.step(rescale_action(action, self._low, self._high))


class TimeLimit(_Wrapper):
    """Ends episodes after `duration` steps as a truncation (discount 1), not a termination."""

    def __init__(self, env, duration: int):
        if duration < 1:
            raise ValueError(f'TimeLimit duration must be at least 1; got {duration}')
        super().__init__(env)
        self._duration = duration
        self._step = None

    def reset(self):
        """Starts an episode and restarts the step counter."""
        self._step = 0
        return self._env.reset()

    def step(self, action):
        """Steps the wrapped environment; done once `duration` steps have passed."""
        if self._step is None:
            raise RuntimeError('step() called on a finished (or never reset) episode; call reset()')
        obs, reward, done, info = self._env.step(action)
        self._step += 1
        if self._step >= self._duration and not done:
            done = True
            info = dict(info, discount=1.0)
        if done:
            self._step = None
        return obs, reward, done, info


def make_env(
    task,
    obs_type='features',
    action_repeat=2,
    time_limit=1000,
    seed=0,
    size=(64, 64),
    camera=None,
    render_video=False,
    video_size=(64, 64),
    task_params=None,
):
    """Builds a DMCEnv with normalized, repeated actions and a limit of `time_limit` env steps."""
    env = DMCEnv(
        task,
        obs_type=obs_type,
        size=size,
        camera=camera,
        seed=seed,
        render_video=render_video,
        video_size=video_size,
        task_params=task_params,
    )
    env = NormalizeActions(ActionRepeat(env, action_repeat))
    return TimeLimit(env, time_limit // action_repeat)


@contextlib.contextmanager
def _main_module_hidden():
    """Keeps spawn from re-importing the parent's main module in a worker started meanwhile.

    A training script typically imports TensorFlow at top level, and TensorFlow next to dm_control
    crashes the worker.
    """
    with _START_LOCK:
        main = sys.modules['__main__']
        sys.modules['__main__'] = types.ModuleType('__main__')
        try:
            yield
        finally:
            sys.modules['__main__'] = main


class WorkerError(RuntimeError):
    """An exception raised inside an environment worker.

    Its message is one line naming the task, the step and the exception; `worker_traceback`
    holds the worker's traceback. `step` counts the agent steps of the current episode (None
    while the worker starts).
    """

    def __init__(self, task, step, error, worker_traceback):
        where = 'while starting' if step is None else f'at step {step} of its episode'
        super().__init__(f'environment {task} failed {where}: {error}')
        self.task, self.step, self.error = task, step, error
        self.worker_traceback = worker_traceback


def _error_reply():
    """The ('error', (one line, traceback)) reply for the exception being handled."""
    error = sys.exc_info()[1]
    line = ' '.join(''.join(traceback.format_exception_only(error)).split())
    return 'error', (line, traceback.format_exc())


def _worker(conn, make_env_kwargs):
    """Serves one `make_env` environment over `conn` until told to close or the parent is gone."""
    # Ctrl-C reaches the whole process group, and a batch system's SIGTERM every process of the
    # job; the parent decides when its workers stop (it checkpoints first, which needs them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault('MUJOCO_GL', 'egl')
    try:
        env = make_env(**make_env_kwargs)
    except Exception:
        conn.send(_error_reply())
        return
    try:
        conn.send(('ok', (env.obs_space, env.action_size, env.action_bounds)))
        while True:
            method, args = conn.recv()
            if method == 'close':
                break
            try:
                reply = ('ok', getattr(env, method)(*args))
            except Exception:
                reply = _error_reply()
            conn.send(reply)
    except (EOFError, ConnectionError):
        pass  # The parent is gone.
    finally:
        env.close()
        conn.close()


def _shutdown(process, conn):
    """Asks the worker to exit and terminates it if it has not within a few seconds."""
    if process.is_alive():
        with contextlib.suppress(OSError):
            conn.send(('close', ()))
        process.join(_CLOSE_TIMEOUT)
        if process.is_alive():
            process.kill()  # it ignores SIGTERM
            process.join(_CLOSE_TIMEOUT)
    conn.close()


class ProcessEnv(_EnvSpec):
    """A `make_env(**make_env_kwargs)` environment running in a spawned worker process.

    Besides the synchronous interface, `step_async` and `step_wait` let the caller overlap its own
    work with the physics. An exception in the worker is raised here as `WorkerError` (one line;
    the worker's traceback attached); a dead worker raises RuntimeError instead of hanging.
    """

    def __init__(self, **make_env_kwargs):
        context = multiprocessing.get_context('spawn')
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_worker,
            args=(child_conn, make_env_kwargs),
            name=f'env-{make_env_kwargs.get("task")}',
            daemon=True,
        )
        with _main_module_hidden():
            self._process.start()
        child_conn.close()
        # Runs at most once: on close(), on garbage collection, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._process, self._conn)
        self._awaiting = False  # a request was sent and its answer not yet received
        self._task = make_env_kwargs.get('task')
        self._episode_step = None  # agent steps of the current episode; None before the first
        try:
            self._obs_space, self._action_size, self._action_bounds = self._receive()
        except BaseException:
            self.close()
            raise

    def reset(self) -> dict:
        """Starts an episode and returns its first observation."""
        self._episode_step = 0
        return self._call('reset')

    def step(self, action) -> tuple[dict, float, bool, dict]:
        """Applies one action; returns (obs, reward, done, info)."""
        self.step_async(action)
        return self.step_wait()

    def step_async(self, action):
        """Sends an action to the worker without waiting for the result."""
        self._send('step', np.asarray(action))
        self._episode_step = (self._episode_step or 0) + 1

    def step_wait(self) -> tuple[dict, float, bool, dict]:
        """Waits for the result of the last `step_async`."""
        if not self._awaiting:
            raise RuntimeError('step_wait() called without a pending step_async()')
        return self._receive()

    def random_state(self):
        """Returns the picklable state of the task's random number generator."""
        return self._call('random_state')

    def set_random_state(self, state):
        """Restores a state returned by `random_state`."""
        self._call('set_random_state', state)

    def set_render_video(self, enabled: bool):
        """Draw 'video' frames (features only) from the next observation on, or stop."""
        self._call('set_render_video', enabled)

    def close(self):
        """Stops the worker; safe to call more than once."""
        self._finalizer()

    def _call(self, method, *args):
        self._send(method, *args)
        return self._receive()

    def _send(self, method, *args):
        if not self._finalizer.alive:
            raise RuntimeError('environment is closed')
        if self._awaiting:
            raise RuntimeError(f'{method}() called before step_wait() collected the pending step')
        try:
            self._conn.send((method, args))
        except ConnectionError:
            self._raise_died()
        self._awaiting = True

    def _receive(self):
        multiprocessing.connection.wait([self._conn, self._process.sentinel])
        if not self._conn.poll():
            self._raise_died()
        try:
            status, payload = self._conn.recv()
        except (EOFError, ConnectionError):
            self._raise_died()
        self._awaiting = False
        if status == 'error':
            error, worker_traceback = payload
            raise WorkerError(self._task, self._episode_step, error, worker_traceback)
        return payload

    def _raise_died(self):
        self._process.join(_CLOSE_TIMEOUT)
        raise RuntimeError(f'environment worker died with exit code {self._process.exitcode}')
