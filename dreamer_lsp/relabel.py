"""Reward relabeling: a run's stored episodes recomputed under another task (LSP §4.3).

The paper relabels the replay buffer of a Walk run with the Reach reward before transferring.
Every stored step keeps qpos and qvel, so each transition is replayed in the target task's
physics: from the stored state of entry t-1, action[t] (mapped to the actuator bounds by
`envs.rescale_action`, as in training) is applied for `action_repeat` control steps and the
target task's rewards are summed, which is what the target task would have paid for that
transition. The simulation then continues from the stored state of entry t, so errors never
accumulate, and the target's observation (features, or a re-rendered image that shows the goal)
is taken there. The actuator activations (the quadruped's filtered actuators) are not stored;
they follow the same action sequence from the same reset as in the source run, so they are
reproduced exactly.

Each episode gets its own arena (goal, obstacles), drawn deterministically from the seed and the
episode's index, and stored under 'arena'. Discounts and every other key are copied: none of the
locomotion tasks terminates. The source is only read; the output is a new episode directory
with the same file names plus `relabel.json`, written to a temporary sibling and renamed at the
end, so it is either complete or absent.

This module never imports TensorFlow (MuJoCo's EGL renderer and TensorFlow crash together).
"""

import dataclasses
import json
import os
import pathlib
import shutil
import sys
import uuid
import zipfile

import numpy as np

from dreamer_lsp import config as config_lib
from dreamer_lsp.envs import TASKS, DMCEnv, rescale_action, split_task
from dreamer_lsp.replay import (
    episode_files,
    load_episode,
    parse_episode_name,
    save_episode,
    warn_skip,
)
from dreamer_lsp.rundir import RunDir

REPORT_NAME = 'relabel.json'
OBS_KEYS = {'features': 'features', 'pixels': 'image'}
STATE_KEYS = ('qpos', 'qvel')
# Re-simulated states further than this from the stored ones get a warning: the target's
# physics (e.g. obstacles) or the action repeat differs from the source's.
DEVIATION_WARNING = 1e-6


class RelabelError(ValueError):
    """A refused relabeling; the message is one line meant for the user."""


def _suite():
    """dm_control's suite, imported after defaulting MUJOCO_GL to EGL (a user's value wins)."""
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from dm_control import suite

    return suite


def valid_tasks(domain: str | None = None) -> list[str]:
    """Task names `dmc_<domain>_<task>`, all of them or those of one robot domain."""
    names = [f'dmc_{name}' for name in TASKS]
    return [name for name in names if domain is None or task_domain(name) == domain]


def task_domain(task: str) -> str | None:
    """The robot domain of `dmc_<domain>_<task>` (e.g. 'quadruped'); None if unknown."""
    domains = _suite().TASKS_BY_DOMAIN
    domain, _ = split_task(task.removeprefix('dmc_'), domains)
    return domain if domain in domains else None


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the source episodes are and how they were recorded."""

    episode_dir: pathlib.Path
    action_repeat: int
    obs_type: str | None  # None: inferred from the episodes
    camera: int  # -1: camera 2 for quadruped, else 0 (as the config key)
    task: str | None  # None for a bare episode directory


def resolve_source(path, action_repeat=None, obs_type=None, camera=None) -> Source:
    """Describes `path`: a run logdir (has config.yaml) or a bare episode directory.

    A logdir's settings come from its config.yaml; flags given as well must agree with it. A bare
    episode directory needs `action_repeat`; the observation type defaults to what its episodes
    hold and the camera to -1.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise RelabelError(f'source {path} is not a directory')
    config_path = RunDir(path).config
    if not config_path.is_file():
        if action_repeat is None:
            raise RelabelError(
                f'source {path} has no config.yaml, so it is taken as an episode directory and '
                '--action-repeat is required (the action repeat the episodes were recorded with)'
            )
        camera = -1 if camera is None else camera
        return Source(path, _positive(action_repeat), obs_type, camera, None)
    try:
        saved = config_lib.load_blocks(config_path)
    except Exception as error:
        raise RelabelError(f'cannot read {config_path}: {_one_line(error)}') from None
    if not isinstance(saved, dict):
        raise RelabelError(f'{config_path} is not a run config (a mapping of keys)')
    defaults = config_lib.load_blocks()['defaults']
    keys = ('task', 'obs_type', 'action_repeat', 'camera')
    config = {key: saved.get(key, defaults[key]) for key in keys}
    for key, flag in (('action_repeat', action_repeat), ('obs_type', obs_type), ('camera', camera)):
        if flag is not None and flag != config[key]:
            raise RelabelError(
                f'--{key.replace("_", "-")} {flag} contradicts {config_path} ({key}: '
                f'{config[key]}); drop the flag or point --source at the episode directory'
            )
    return Source(
        RunDir(path).episodes,
        _positive(config['action_repeat']),
        config['obs_type'],
        config['camera'],
        config['task'],
    )


def _positive(action_repeat):
    if action_repeat < 1:
        raise RelabelError(f'action repeat must be at least 1, got {action_repeat}')
    return int(action_repeat)


def _one_line(error):
    """An exception's type and message on one line."""
    return ' '.join(f'{type(error).__name__}: {error}'.split())


class Relabeler:
    """Recomputes episodes under a target task: observations, rewards and arena."""

    def __init__(
        self,
        task: str,
        obs_type: str,
        action_repeat: int,
        seed: int = 0,
        task_params: dict | None = None,
        size=(64, 64),
        camera: int = -1,
    ):
        _suite()
        from dm_control.rl import control

        self.obs_key = OBS_KEYS[obs_type]
        self.action_repeat = action_repeat
        self.seed = seed
        camera = None if camera < 0 else camera
        try:
            self.env = DMCEnv(
                task.removeprefix('dmc_'), obs_type, size, camera, seed, task_params=task_params
            )
        except (ValueError, TypeError) as error:
            raise RelabelError(f'cannot build {task}: {_one_line(error)}') from None
        # DMCEnv keeps the dm_control Environment in `_env`; its physics is stepped here directly.
        self._dm_env = self.env._env
        self._physics = self._dm_env.physics
        self._n_sub_steps = control.compute_n_steps(
            self._dm_env.control_timestep(), self._physics.timestep()
        )
        self._low, self._high = self.env.action_bounds

    @property
    def sizes(self) -> dict[str, int]:
        """The target robot's action, qpos and qvel sizes."""
        model = self._physics.model
        return {'action': self.env.action_size, 'qpos': model.nq, 'qvel': model.nv}

    def relabel(self, episode: dict, index: int) -> tuple[dict, float]:
        """Returns the relabeled copy of `episode` and the largest state deviation of its replay."""
        physics, task = self._physics, self._dm_env.task
        qpos, qvel = episode['qpos'], episode['qvel']
        self.env.set_random_state(np.random.RandomState([self.seed, index]).get_state())
        self.env.reset()
        self._set_state(qpos[0], qvel[0])
        observations, rewards, deviation = [self._observe()], [0.0], 0.0
        for t in range(1, len(qpos)):
            action = rescale_action(episode['action'][t], self._low, self._high)
            reward = 0.0
            for _ in range(self.action_repeat):
                task.before_step(action, physics)
                physics.step(self._n_sub_steps)
                task.after_step(physics)
                reward += task.get_reward(physics)
            step_deviation = max(
                np.abs(physics.data.qpos - qpos[t]).max(), np.abs(physics.data.qvel - qvel[t]).max()
            )
            # An identical state is kept as simulated, so the acceleration-stage sensors (imu,
            # force_torque) read exactly what the target env would have reported.
            if step_deviation > 0:
                self._set_state(qpos[t], qvel[t])
            deviation = max(deviation, float(step_deviation))
            rewards.append(reward)
            observations.append(self._observe())
        relabeled = {key: value for key, value in episode.items() if key != 'arena'}
        relabeled[self.obs_key] = np.stack([obs[self.obs_key] for obs in observations])
        relabeled['reward'] = np.asarray(rewards, np.float32)
        if 'arena' in observations[0]:
            relabeled['arena'] = np.stack([obs['arena'] for obs in observations])
        return relabeled, deviation

    def close(self):
        """Releases the target environment."""
        self.env.close()

    def _set_state(self, qpos, qvel):
        self._physics.data.qpos[:] = qpos
        self._physics.data.qvel[:] = qvel
        self._physics.forward()

    def _observe(self):
        import dm_env

        observation = self._dm_env.task.get_observation(self._physics)
        return self.env._observation(dm_env.transition(0.0, observation))


def _check_output(output):
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RelabelError(f'output {output} exists and is not empty; choose a new directory')


def _check_target(task, source):
    domain = task_domain(task) if task.startswith('dmc_') else None
    source_domain = task_domain(source.task) if source.task else None
    if domain is None or task not in valid_tasks(domain):
        choices = valid_tasks(source_domain)
        label = f'{source_domain} ' if source_domain else ''
        raise RelabelError(
            f'unknown target task {task!r}; valid {label}tasks: {", ".join(choices)}'
        )
    if source_domain is not None and source_domain != domain:
        raise RelabelError(
            f"the target task's robot differs from the source's: the episodes were recorded "
            f'with the {source_domain} of {source.task}, {task} uses the {domain}'
        )


def _scan(episode_dir, obs_type, skipped):
    """Readable episode files as (path, index, (action, qpos, qvel) sizes), the observation key
    and the stored image size; the names of unreadable files are appended to `skipped`."""
    files, obs_key, size = [], OBS_KEYS.get(obs_type), (64, 64)
    for path in episode_files(episode_dir):
        parsed = parse_episode_name(path.stem)
        if parsed is None or not zipfile.is_zipfile(path):
            warn_skip(path, 'not an .npz archive' if parsed else 'name is not <index>-<steps>.npz')
            skipped.append(path.name)
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                shapes = [data['action'].shape]  # a KeyError here: not an episode
                shapes += [data[key].shape for key in STATE_KEYS if key in keys]
                if 'image' in keys and not files:
                    size = tuple(data['image'].shape[1:3])
        except Exception as error:
            warn_skip(path, error)
            skipped.append(path.name)
            continue
        if not set(STATE_KEYS) <= keys:
            raise RelabelError(
                f'episode {path} was recorded without physics state (no qpos/qvel); '
                're-record with this version'
            )
        obs_key = obs_key or next((key for key in OBS_KEYS.values() if key in keys), None)
        if obs_key not in keys:
            raise RelabelError(f'episode {path} has no {obs_key or "observation"!r} key')
        files.append((path, parsed[0], tuple(shape[-1] for shape in shapes)))
    return files, obs_key, size


def _check_robot(files, sizes, task):
    for path, _, stored in files:
        if stored != tuple(sizes.values()):
            described = ', '.join(f'{key} {size}' for key, size in zip(sizes, stored))
            needed = ', '.join(f'{key} {size}' for key, size in sizes.items())
            raise RelabelError(
                f"the target task's robot differs from the source's: episode {path.name} has "
                f'sizes {described}; {task} needs {needed}'
            )


def relabel_directory(
    source,
    task: str,
    output,
    task_params: dict | None = None,
    seed: int = 0,
    action_repeat: int | None = None,
    obs_type: str | None = None,
    camera: int | None = None,
) -> dict:
    """Writes the episodes of `source` relabeled for `task` to `output`; returns the report.

    `source` is a run logdir or an episode directory (see `resolve_source`). Raises RelabelError
    with one line when it refuses; unreadable episode files are skipped with a warning.
    """
    output = pathlib.Path(output)
    _check_output(output)
    if obs_type is not None and obs_type not in OBS_KEYS:
        raise RelabelError(f'obs type {obs_type!r} is invalid; valid: {", ".join(OBS_KEYS)}')
    info = resolve_source(source, action_repeat, obs_type, camera)
    _check_target(task, info)
    skipped = []
    files, obs_key, size = _scan(info.episode_dir, info.obs_type, skipped)
    if not files:
        raise RelabelError(f'source {info.episode_dir} has no readable episodes (*.npz)')
    obs_type = {key: name for name, key in OBS_KEYS.items()}[obs_key]
    relabeler = Relabeler(task, obs_type, info.action_repeat, seed, task_params, size, info.camera)
    temporary = output.parent / f'.{output.name}.tmp-{uuid.uuid4().hex}'
    try:
        _check_robot(files, relabeler.sizes, task)
        temporary.mkdir(parents=True)
        steps, deviation, returns = 0, 0.0, []
        for path, index, _ in files:
            try:
                episode = load_episode(path)
            except Exception as error:
                warn_skip(path, error)
                skipped.append(path.name)
                continue
            relabeled, episode_deviation = relabeler.relabel(episode, index)
            save_episode(temporary, relabeled, index)
            steps += len(episode['reward']) - 1
            deviation = max(deviation, episode_deviation)
            returns.append((float(episode['reward'].sum()), float(relabeled['reward'].sum())))
        if not returns:
            raise RelabelError(f'source {info.episode_dir} has no readable episodes (*.npz)')
        source_returns, target_returns = np.mean(returns, axis=0)
        report = {
            'source': str(pathlib.Path(source).resolve()),
            'source_episodes': str(info.episode_dir.resolve()),
            'source_task': info.task,
            'task': task,
            'task_params': task_params or {},
            'seed': seed,
            'action_repeat': info.action_repeat,
            'obs_type': obs_type,
            'episodes': len(returns),
            'steps': steps,
            'skipped_files': skipped,
            'mean_source_return': float(source_returns),
            'mean_return': float(target_returns),
            'max_state_deviation': deviation,
            'output': str(output.resolve()),
        }
        (temporary / REPORT_NAME).write_text(json.dumps(report, indent=2) + '\n')
        os.replace(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        relabeler.close()
    if deviation > DEVIATION_WARNING:
        print(
            f'Warning: re-simulated states deviate from the stored ones by up to {deviation:.3g}; '
            'the target physics or the action repeat differs from the source run, so the '
            'relabeled rewards are approximate',
            file=sys.stderr,
        )
    return report
