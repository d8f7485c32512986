"""Tests of the custom quadruped tasks.

MuJoCo's EGL renderer and TensorFlow crash when they share a process, and other test modules
import TensorFlow, so all dm_control work runs in the `child` process (conftest.py).
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TASK_NAMES = ['getup_walk', 'reach', 'getup_reach', 'obstacles', 'cove']
GOAL_TASKS = ['reach', 'getup_reach', 'cove']
BASE_FEATURES = 44 + 3 + 1 + 6 + 24
SUBPROCESS_TIMEOUT = 120


def _set_state(physics, xy=None, state=None):
    """Sets an upright pose at `xy` (or a full `state`) and recomputes derived quantities."""
    with physics.reset_context():
        if state is None:
            physics.named.data.qpos['root'] = [xy[0], xy[1], 0.6, 1, 0, 0, 0]
        else:
            physics.set_state(state)


def _build_and_step(name):
    from dreamer_lsp import quadruped_tasks

    env = quadruped_tasks.load(name, seed=0)
    step = env.reset()
    random = np.random.RandomState(0)
    rewards = []
    for _ in range(10):
        step = env.step(random.uniform(-1, 1, env.action_spec().shape))
        rewards.append(step.reward)
    features = np.concatenate(
        [np.asarray(v, np.float32).ravel() for v in step.observation.values()]
    )
    image = env.physics.render(64, 64, camera_id=2)
    return {
        'keys': list(step.observation),
        'features': features,
        'action_shape': env.action_spec().shape,
        'image': image,
        'rewards': rewards,
        'control_timestep': env.control_timestep(),
        'arena': env.task.arena_params(),
    }


@pytest.mark.parametrize('name', TASK_NAMES)
def test_task_builds_resets_and_steps(child, name):
    out = child(_build_and_step, name)
    assert out['action_shape'] == (12,)
    assert out['control_timestep'] == pytest.approx(0.02)
    has_goal = name in GOAL_TASKS
    assert ('goal_relative' in out['keys']) == has_goal
    assert out['features'].shape == (BASE_FEATURES + 3 * has_goal,)
    assert np.all(np.isfinite(out['features']))
    assert out['image'].shape == (64, 64, 3) and out['image'].std() > 0
    assert all(0 <= r <= 1 for r in out['rewards'])
    assert out['arena'].dtype == np.float32 and out['arena'].ndim == 1


def _arenas(name, seeds, params):
    from dreamer_lsp import quadruped_tasks

    result = []
    for seed in seeds:
        env = quadruped_tasks.load(name, seed=seed, **params)
        env.reset()
        result.append((env.task.arena_params(), env.physics.data.qpos.copy()))
    return result


@pytest.mark.parametrize(
    'name, params',
    [('reach', {}), ('getup_reach', {}), ('obstacles', {}), ('cove', {'rotation_range': 1.0})],
)
def test_arena_is_deterministic_given_seed(child, name, params):
    (arena_a, qpos_a), (arena_b, qpos_b), (arena_c, _) = child(_arenas, name, [0, 0, 1], params)
    np.testing.assert_array_equal(arena_a, arena_b)
    np.testing.assert_array_equal(qpos_a, qpos_b)
    assert not np.allclose(arena_a, arena_c)


def test_default_cove_layout_is_fixed_and_blocks_the_straight_line(child):
    (arena, _), (other, _) = child(_arenas, 'cove', [0, 1], {})
    np.testing.assert_array_equal(arena, other)
    goal, obstacles = arena[:2], arena[2:].reshape(-1, 3)
    # Distance of each cylinder from the start-goal segment, and its position along it.
    along = np.clip(obstacles[:, :2] @ goal / (goal @ goal), 0, 1)
    gap = np.linalg.norm(obstacles[:, :2] - along[:, None] * goal, axis=1)
    blocking = gap < obstacles[:, 2]
    assert blocking.any() and np.all(along[blocking] < 1)
    # The U opens away from the start: no cylinder crosses the line beyond the goal.
    assert not np.any((obstacles[:, :2] @ goal > goal @ goal) & (np.abs(obstacles[:, 1]) < 0.5))


def _reach_rewards(name, fractions):
    from dreamer_lsp import quadruped_tasks

    env = quadruped_tasks.load(name, seed=0)
    env.reset()
    goal = env.task.arena_params()[:2]
    rewards, distances = [], []
    for fraction in fractions:
        _set_state(env.physics, xy=fraction * goal)
        rewards.append(env.task.get_reward(env.physics))
        distances.append(env.physics.goal_distance())
    return np.array(rewards), np.array(distances)


@pytest.mark.parametrize('name', ['reach', 'getup_reach'])
def test_reach_reward_rises_towards_goal(child, name):
    rewards, distances = child(_reach_rewards, name, np.linspace(0, 1, 15))
    outside = distances > 0.5
    assert outside[0] and not outside[-1]
    assert np.all(np.diff(rewards[outside]) > 0)
    assert np.all(np.diff(rewards) >= 0)
    assert rewards[0] > 0 and rewards[-1] == pytest.approx(1.0)


def _cove_rewards(points):
    from dreamer_lsp import quadruped_tasks

    env = quadruped_tasks.load('cove', seed=0)
    env.reset()
    start_reward = env.task.get_reward(env.physics)
    rewards = []
    for xy in points:
        _set_state(env.physics, xy=xy)
        rewards.append(env.task.get_reward(env.physics))
    return start_reward, env.task.arena_params()[:2], np.array(rewards)


def test_cove_reward_is_sparse(child):
    random = np.random.RandomState(0)
    goal = np.array([4.0, 0.0])
    angles = random.uniform(0, 2 * np.pi, 30)
    inside = goal + random.uniform(0, 0.45, (30, 1)) * np.stack([np.cos(angles), np.sin(angles)], 1)
    around = random.uniform([-3, -5], [9, 5], (300, 2))
    points = np.concatenate([inside, around])
    start_reward, arena_goal, rewards = child(_cove_rewards, points)
    np.testing.assert_allclose(arena_goal, goal)
    assert start_reward == 0
    distances = np.linalg.norm(points - goal, axis=1)
    far, near = distances > 0.55, distances < 0.45
    assert far.sum() > 250 and near.sum() >= 30
    assert np.all(rewards[far] == 0) and np.all(rewards[near] == 1)
    assert set(np.unique(rewards)) <= {0.0, 1.0}


def _start_uprightness(name, seeds):
    from dreamer_lsp import quadruped_tasks

    values = []
    for seed in seeds:
        env = quadruped_tasks.load(name, seed=seed)
        values.append(float(env.reset().observation['torso_upright']))
    return np.array(values)


def test_getup_walk_sometimes_starts_upside_down(child):
    upright = child(_start_uprightness, 'getup_walk', range(20))
    assert upright.min() < 0 < upright.max()


@pytest.mark.parametrize('name', ['reach', 'obstacles', 'cove'])
def test_upright_tasks_start_upright(child, name):
    assert child(_start_uprightness, name, range(5)).min() > 0.99


def _compare_with_suite_walk(seed):
    from dm_control import suite

    from dreamer_lsp import quadruped_tasks

    ours = quadruped_tasks.load('getup_walk', seed=seed)
    theirs = suite.load('quadruped', 'walk', task_kwargs={'random': seed})
    a, b = ours.reset(), theirs.reset()
    same = all(np.allclose(a.observation[k], b.observation[k]) for k in b.observation)
    random = np.random.RandomState(seed)
    for _ in range(20):
        action = random.uniform(-1, 1, 12)
        a, b = ours.step(action), theirs.step(action)
        same = same and np.isclose(a.reward, b.reward)
    return same


def test_getup_walk_matches_suite_walk(child):
    assert child(_compare_with_suite_walk, 3)


def _obstacle_geometry():
    import mujoco

    from dreamer_lsp import quadruped_tasks

    env = quadruped_tasks.load('obstacles', seed=0)
    env.reset()
    physics, task = env.physics, env.task
    model = physics.model
    ids = [model.name2id(f'obstacle_{i:02d}', 'geom') for i in range(20)]
    geoms = {
        'cylinder': model.geom_type[ids] == mujoco.mjtGeom.mjGEOM_CYLINDER,
        'contype': model.geom_contype[ids].copy(),
        'conaffinity': model.geom_conaffinity[ids].copy(),
    }
    arena = task.arena_params()
    torso = physics.named.data.xpos['torso'][:2].copy()
    state = physics.get_state()

    in_view = arena.copy()
    in_view[:2] = torso + [0.0, -1.5]
    task.set_arena_params(physics, in_view)
    physics.forward()
    with_obstacles = physics.render(64, 64, camera_id=2).astype(np.float32)

    away = arena.copy().reshape(-1, 3)
    away[:, :2] = 100.0
    task.set_arena_params(physics, away.ravel())
    physics.forward()
    without_obstacles = physics.render(64, 64, camera_id=2).astype(np.float32)

    touching = arena.copy()
    touching[:2] = torso
    task.set_arena_params(physics, touching)
    _set_state(physics, state=state)
    contacts = physics.data.contact[: physics.data.ncon]
    obstacle_contacts = int(np.sum(np.isin(contacts.geom1, ids) | np.isin(contacts.geom2, ids)))
    return geoms, arena, torso, with_obstacles, without_obstacles, obstacle_contacts


def test_obstacles_are_real_geometry(child):
    geoms, arena, torso, with_obstacles, without_obstacles, contacts = child(_obstacle_geometry)
    assert np.all(geoms['cylinder'])
    assert np.all(geoms['contype'] > 0) and np.all(geoms['conaffinity'] > 0)
    obstacles = arena.reshape(-1, 3)
    assert obstacles.shape == (20, 3)
    assert np.all(np.linalg.norm(obstacles[:, :2] - torso, axis=1) > obstacles[:, 2] + 0.9)
    assert np.abs(with_obstacles - without_obstacles).mean() > 1.0
    assert contacts > 0


def _reward_at(env, qpos, qvel):
    """The task's reward at a stored qpos/qvel, as reward relabeling computes it."""
    with env.physics.reset_context():
        env.physics.data.qpos[:] = qpos
        env.physics.data.qvel[:] = qvel
    return env.task.get_reward(env.physics)


def _round_trip(name, params):
    from dreamer_lsp import quadruped_tasks

    source = quadruped_tasks.load(name, seed=0, **params)
    source.reset()
    random = np.random.RandomState(0)
    for _ in range(15):
        step = source.step(random.uniform(-1, 1, 12))
    physics = source.physics
    arena = source.task.arena_params()
    stored = [(physics.data.qpos.copy(), physics.data.qvel.copy(), step.reward)]
    goal_relative = None
    if source.task.has_goal:
        # Also a state next to the goal, where the reward depends on the arena.
        _set_state(physics, xy=arena[:2] + 0.2)
        reward = source.task.get_reward(physics)
        stored.append((physics.data.qpos.copy(), physics.data.qvel.copy(), reward))
        goal_relative = physics.goal_relative()

    target = quadruped_tasks.load(name, seed=1, **params)
    target.reset()
    before = [_reward_at(target, qpos, qvel) for qpos, qvel, _ in stored]
    target.task.set_arena_params(target.physics, arena)
    after = [_reward_at(target, qpos, qvel) for qpos, qvel, _ in stored]
    restored_goal = target.physics.goal_relative() if goal_relative is not None else None
    try:
        target.task.set_arena_params(target.physics, np.zeros(arena.size + 1, np.float32))
        rejects_bad_size = False
    except ValueError:
        rejects_bad_size = True
    return {
        'expected': [reward for _, _, reward in stored],
        'before': before,
        'after': after,
        'goal_relative': (goal_relative, restored_goal),
        'arena': (arena, target.task.arena_params()),
        'rejects_bad_size': rejects_bad_size,
    }


@pytest.mark.parametrize(
    'name, params',
    [('reach', {}), ('getup_reach', {}), ('obstacles', {}), ('cove', {'rotation_range': 1.0})],
)
def test_set_arena_params_round_trip(child, name, params):
    out = child(_round_trip, name, params)
    assert out['after'] == pytest.approx(out['expected'], rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(*out['arena'])
    assert out['rejects_bad_size']
    if name in GOAL_TASKS:
        np.testing.assert_array_equal(*out['goal_relative'])
        assert out['before'][1] != out['expected'][1]
    if name == 'cove':
        assert out['expected'][1] == 1.0


def _load_errors():
    from dreamer_lsp import quadruped_tasks

    messages = []
    for name, params in [('nope', {}), ('reach', {'goal_distanc': 3})]:
        try:
            quadruped_tasks.load(name, **params)
        except ValueError as error:
            messages.append(str(error))
    return messages


def test_load_rejects_unknown_names(child):
    unknown_task, unknown_param = child(_load_errors)
    assert 'getup_walk' in unknown_task and 'cove' in unknown_task
    assert 'goal_distanc' in unknown_param and 'goal_radius' in unknown_param


def test_preview_script_writes_pngs(tmp_path):
    import imageio.v3 as iio

    env = dict(os.environ)
    env.setdefault('MUJOCO_GL', 'egl')
    result = subprocess.run(
        [sys.executable, str(REPO / 'scripts' / 'preview_tasks.py'), '--outdir', str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT,
        check=True,
    )
    printed = result.stdout.split()
    for name in TASK_NAMES:
        for view in ('top', 'camera2'):
            path = tmp_path / f'{name}_{view}.png'
            assert str(path) in printed
            image = iio.imread(path)
            assert image.shape == (256, 256, 3) and image.std() > 0


def test_process_env_serves_custom_tasks():
    from dreamer_lsp.envs import ProcessEnv

    kwargs = dict(task='quadruped_cove', obs_type='pixels', action_repeat=2, time_limit=1000)
    envs = [ProcessEnv(seed=seed, task_params={'rotation_range': 0.5}, **kwargs) for seed in (4, 4)]
    envs.append(ProcessEnv(task='quadruped_getup_reach', seed=4))
    try:
        first, second = (env.reset() for env in envs[:2])
        assert first['image'].shape == (64, 64, 3) and first['arena'].shape == (35,)
        np.testing.assert_array_equal(first['arena'], second['arena'])
        obs, reward, done, _ = envs[0].step(np.zeros(envs[0].action_size))
        assert envs[0].action_size == 12 and reward == 0.0 and not done
        features = envs[2].reset()
        assert features['features'].shape == (BASE_FEATURES + 3,) and features['arena'].shape == (
            2,
        )
    finally:
        for env in envs:
            env.close()
