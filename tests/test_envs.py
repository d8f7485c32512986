import importlib.util
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dreamer_lsp.envs import (
    CARTPOLE_TASKS,
    QUADRUPED_TASKS,
    SUITE_TASKS,
    ActionRepeat,
    NormalizeActions,
    ProcessEnv,
    TimeLimit,
    WorkerError,
)


class FakeEnv:
    """Pure-numpy env: the k-th raw step gives reward k and observation k; terminal at `length`."""

    def __init__(self, length=100, low=(-1.0,), high=(1.0,)):
        self.length = length
        self.low = np.array(low, np.float32)
        self.high = np.array(high, np.float32)
        self.actions = []
        self.rng_state = 'initial'
        self.closed = False
        self.t = 0
        self.drawn = []

    obs_space = {'x': ((1,), np.dtype(np.float32))}

    @property
    def action_size(self):
        return len(self.low)

    @property
    def action_bounds(self):
        return self.low, self.high

    def reset(self):
        self.t = 0
        return {'x': np.zeros(1, np.float32)}

    def step(self, action, render=True):
        self.actions.append(np.array(action))
        self.t += 1
        done = self.t >= self.length
        obs = {'x': np.array([self.t], np.float32), **(self.render() if render else {})}
        return obs, float(self.t), done, {'discount': float(not done)}

    def render(self):
        """A drawn key: the step it was drawn at."""
        self.drawn.append(self.t)
        return {'frame': self.t}

    def random_state(self):
        return self.rng_state

    def set_random_state(self, state):
        self.rng_state = state

    def close(self):
        self.closed = True


def test_action_repeat_sums_rewards_and_stops_at_done():
    fake = FakeEnv(length=5)
    env = ActionRepeat(fake, 2)
    env.reset()
    obs, reward, done, info = env.step([0.0])
    assert (obs['x'][0], reward, done, info['discount']) == (2.0, 1.0 + 2.0, False, 1.0)
    obs, reward, done, _ = env.step([0.0])
    assert (obs['x'][0], reward, done) == (4.0, 3.0 + 4.0, False)
    obs, reward, done, info = env.step([0.0])
    assert (obs['x'][0], reward, done, info['discount']) == (5.0, 5.0, True, 0.0)
    assert fake.t == 5
    # Only the returned observations are drawn, the early end's too: once per agent step.
    assert fake.drawn == [2, 4, 5] and obs['frame'] == 5


def test_time_limit_truncates_with_discount_one():
    env = TimeLimit(FakeEnv(), 3)
    with pytest.raises(RuntimeError, match='reset'):
        env.step([0.0])
    for _ in range(2):
        env.reset()
        assert [env.step([0.0])[2] for _ in range(2)] == [False, False]
        _, _, done, info = env.step([0.0])
        assert done and info['discount'] == 1.0
        with pytest.raises(RuntimeError, match='finished'):
            env.step([0.0])


def test_time_limit_keeps_termination_discount():
    env = TimeLimit(FakeEnv(length=2), 2)
    env.reset()
    env.step([0.0])
    _, _, done, info = env.step([0.0])
    assert done and info['discount'] == 0.0


def test_normalize_actions_maps_to_asymmetric_bounds():
    fake = FakeEnv(low=(-1.0, 0.0), high=(1.0, 2.0))
    env = NormalizeActions(fake)
    low, high = env.action_bounds
    np.testing.assert_array_equal(low, [-1.0, -1.0])
    np.testing.assert_array_equal(high, [1.0, 1.0])
    env.reset()
    for action in ([-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [5.0, -5.0]):
        env.step(np.array(action, np.float32))
    np.testing.assert_allclose(fake.actions, [[-1.0, 0.0], [0.0, 1.0], [1.0, 2.0], [1.0, 0.0]])


def test_wrappers_forward_the_interface():
    fake = FakeEnv()
    env = TimeLimit(NormalizeActions(ActionRepeat(fake, 2)), 10)
    assert env.obs_space == fake.obs_space
    assert env.action_size == 1
    env.set_random_state('saved')
    assert env.random_state() == 'saved' == fake.rng_state
    env.close()
    assert fake.closed


@pytest.fixture(scope='module')
def cartpole():
    env = ProcessEnv(task='cartpole_balance', seed=0)
    yield env
    env.close()


def test_cartpole_features(cartpole):
    assert cartpole.obs_space == {
        'features': ((5,), np.dtype(np.float32)),
        'qpos': ((2,), np.dtype(np.float64)),
        'qvel': ((2,), np.dtype(np.float64)),
    }
    assert cartpole.action_size == 1
    np.testing.assert_array_equal(cartpole.action_bounds[0], [-1.0])
    np.testing.assert_array_equal(cartpole.action_bounds[1], [1.0])
    obs = cartpole.reset()
    for key, (shape, dtype) in cartpole.obs_space.items():
        assert obs[key].shape == shape and obs[key].dtype == dtype
    # MuJoCo must stay out of the test process, which also imports TensorFlow.
    assert 'dm_control' not in sys.modules and 'mujoco' not in sys.modules


def test_cartpole_episode_has_500_agent_steps(cartpole):
    cartpole.reset()
    steps, done = 0, False
    while not done:
        obs, reward, done, info = cartpole.step(np.array([1.0 if steps % 2 else -1.0]))
        assert isinstance(reward, float) and 0.0 <= reward <= 2.0
        steps += 1
    assert steps == 500 and info['discount'] == 1.0
    assert obs['features'].shape == (5,)


def test_step_async_and_wait(cartpole):
    cartpole.reset()
    cartpole.step_async(np.zeros(1))
    with pytest.raises(RuntimeError, match='step_wait'):
        cartpole.reset()
    obs, reward, done, info = cartpole.step_wait()
    assert obs['qpos'].shape == (2,) and not done and info['discount'] == 1.0
    with pytest.raises(RuntimeError, match='without a pending'):
        cartpole.step_wait()


def test_worker_exception_is_raised_with_its_message(cartpole):
    cartpole.reset()
    with pytest.raises(RuntimeError, match=r'Expected an action of shape \(1,\)'):
        cartpole.step(np.zeros(3))
    assert cartpole.step(np.zeros(1))[0]['features'].shape == (5,)


def test_random_state_round_trip(cartpole):
    state = cartpole.random_state()
    first = cartpole.reset()
    second = cartpole.reset()
    assert not np.array_equal(first['qpos'], second['qpos'])
    cartpole.set_random_state(state)
    again = cartpole.reset()
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])


def test_seeding():
    envs = [ProcessEnv(task='cartpole_swingup', seed=seed) for seed in (1, 1, 2)]
    try:
        first = [env.reset() for env in envs]
        np.testing.assert_array_equal(first[0]['features'], first[1]['features'])
        assert not np.array_equal(first[0]['qpos'], first[2]['qpos'])
        actions = np.random.default_rng(0).uniform(-1, 1, (20, 1))
        for action in actions:
            same = [env.step(action)[0] for env in envs[:2]]
        np.testing.assert_array_equal(same[0]['qpos'], same[1]['qpos'])
    finally:
        for env in envs:
            env.close()


def test_walker_pixels():
    env = ProcessEnv(task='walker_walk', obs_type='pixels')
    try:
        assert env.obs_space['image'] == ((64, 64, 3), np.dtype(np.uint8))
        assert 'features' not in env.obs_space and 'video' not in env.obs_space
        env.reset()
        image = env.step(np.zeros(6))[0]['image']
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert image.std() > 0
    finally:
        env.close()


def _count_draws(physics):
    """A list that grows by one at every `physics.render` call (the real renderer still draws)."""
    draws, render = [], physics.render

    def counted(*args, **kwargs):
        draws.append(1)
        return render(*args, **kwargs)

    physics.render = counted
    return draws


def _draw_once_per_agent_step():
    """Pixels and video through `make_env` against a DMCEnv drawing every physics step."""
    from dreamer_lsp.envs import DMCEnv, make_env

    actions = np.random.default_rng(0).uniform(-1, 1, (6, 1))
    results = {}
    for obs_type, key in (('pixels', 'image'), ('features', 'video')):
        env = make_env('cartpole_balance', obs_type, action_repeat=2, render_video=True)
        reference = DMCEnv('cartpole_balance', obs_type, render_video=True)
        draws = _count_draws(env._env._env._env._env.physics)
        frames, expected = [env.reset()[key]], [reference.reset()[key]]
        for action in actions:
            frames.append(env.step(action)[0][key])
            # The reference draws at both physics steps of an agent step; the second is kept.
            expected.append([reference.step(action)[0] for _ in range(2)][-1][key])
        results[obs_type] = (np.array(frames), np.array(expected), len(draws))
        env.close()
        reference.close()
    env = make_env('cartpole_balance', render_video=True)
    env.reset()
    env.set_render_video(False)
    undrawn = env.step(np.zeros(1))[0]
    env.set_render_video(True)
    drawn = env.step(np.zeros(1))[0]
    results['switch'] = ('video' in undrawn, 'video' in drawn, 'video' in env.obs_space)
    env.close()
    return results


def test_each_agent_step_is_drawn_once_and_the_video_can_pause(child):
    results = child(_draw_once_per_agent_step)
    for obs_type in ('pixels', 'features'):
        frames, expected, draws = results[obs_type]
        assert frames.shape == (7, 64, 64, 3) and frames.std() > 0
        np.testing.assert_array_equal(frames, expected)  # the same images as before
        assert draws == 7  # the reset and one per agent step, not per physics step
    assert results['switch'] == (False, True, True)


def test_quadruped_default_camera_and_video():
    default = ProcessEnv(task='quadruped_walk', obs_type='pixels')
    front = ProcessEnv(task='quadruped_walk', obs_type='pixels', camera=0)
    video = ProcessEnv(task='quadruped_walk', render_video=True, camera=2, video_size=(64, 64))
    try:
        assert video.obs_space['video'] == ((64, 64, 3), np.dtype(np.uint8))
        assert video.obs_space['features'][0] == (78,)
        default_image = default.reset()['image']
        assert not np.array_equal(default_image, front.reset()['image'])
        np.testing.assert_array_equal(default_image, video.reset()['video'])
    finally:
        for env in (default, front, video):
            env.close()


def test_custom_quadruped_task_has_arena():
    env = ProcessEnv(task='quadruped_reach', task_params={'goal_radius': 0.4})
    try:
        assert env.obs_space['arena'] == ((2,), np.dtype(np.float32))
        assert env.reset()['arena'].shape == (2,)
    finally:
        env.close()


def test_bad_arguments_name_valid_values():
    with pytest.raises(RuntimeError, match=r"Unknown task 'walker_fly'.*walker_walk"):
        ProcessEnv(task='walker_fly')
    with pytest.raises(RuntimeError, match='obs_type must be one of features, pixels'):
        ProcessEnv(task='walker_walk', obs_type='rgb')


def test_dead_worker_raises_and_close_is_idempotent():
    env = ProcessEnv(task='ball_in_cup_catch')
    assert env.obs_space['features'][0] == (8,)
    os.kill(env._process.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match='died with exit code -9'):
        env.reset()
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match='closed'):
        env.reset()


@pytest.mark.skipif(importlib.util.find_spec('tensorflow') is None, reason='needs TensorFlow')
def test_worker_survives_a_main_script_that_imports_tensorflow(tmp_path):
    script = tmp_path / 'train.py'
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import tensorflow as tf

            from dreamer_lsp.envs import ProcessEnv

            if __name__ == '__main__':
                env = ProcessEnv(task='walker_walk', obs_type='pixels')
                env.reset()
                image = env.step(np.zeros(6))[0]['image']
                env.close()
                print('mean', float(tf.reduce_mean(tf.cast(image, tf.float32))))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'mean' in result.stdout


def test_a_worker_exception_is_one_line_naming_task_and_step(cartpole):
    cartpole.reset()
    cartpole.step(np.zeros(1))
    with pytest.raises(WorkerError) as raised:
        cartpole.step(np.full(1, np.nan))  # MuJoCo refuses a NaN control
    error = raised.value
    assert str(error) == (
        'environment cartpole_balance failed at step 2 of its episode: '
        'dm_control.rl.control.PhysicsError: Physics state is invalid. '
        'Warning(s) raised: mjWARN_BADCTRL'
    )
    assert error.worker_traceback.startswith('Traceback') and 'check_invalid_state' in (
        error.worker_traceback
    )
    cartpole.reset()
    assert cartpole.step(np.zeros(1))[0]['features'].shape == (5,)


def test_the_task_list_matches_the_installed_packages():
    script = (
        'from dm_control import suite; from dreamer_lsp import custom_tasks; '
        'print(*sorted("_".join(pair) for pair in suite.ALL_TASKS)); '
        'print(*sorted(f"{domain}_{name}" for domain in custom_tasks.MODULES '
        'for name in custom_tasks.module(domain).TASKS))'
    )
    result = subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    suite_tasks, custom = (line.split() for line in result.stdout.splitlines())
    assert sorted(SUITE_TASKS) == suite_tasks
    assert sorted(QUADRUPED_TASKS + CARTPOLE_TASKS) == custom
