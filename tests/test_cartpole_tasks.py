"""Tests of the custom cartpole tasks, against hand-computed rewards and the suite's balance.

dm_control work runs in the `child` process (conftest.py).
"""

import math

import numpy as np
import pytest


def _rewards_at(name, states):
    """The task's reward with the cart at x and the pole at angle θ, for each (x, θ)."""
    from dreamer_lsp import cartpole_tasks

    env = cartpole_tasks.load(name, seed=0)
    env.reset()
    rewards = []
    for cart, angle in states:
        with env.physics.reset_context():
            env.physics.named.data.qpos['slider'] = cart
            env.physics.named.data.qpos['hinge_1'] = angle
            env.physics.data.qvel[:] = 0
        rewards.append(env.task.get_reward(env.physics))
    return rewards


def test_reach_reward_is_upright_times_gaussian_nearness_to_the_goal(child):
    states = [(1.0, 0.0), (1.2, 0.0), (0.0, 0.0), (1.0, 0.5), (-0.5, 0.0)]
    rewards = child(_rewards_at, 'reach', states)
    # Within 0.25 of the goal 1.0: 1. Beyond, 0.1 ** (d / margin) ** 2 with d the distance to
    # the goal's interval and margin 1: the centre is 0.75 away, -0.5 is 1.25 away.
    assert rewards[0] == pytest.approx(1.0)
    assert rewards[1] == pytest.approx(1.0)
    assert rewards[2] == pytest.approx(0.1**0.75**2)
    assert rewards[3] == pytest.approx((math.cos(0.5) + 1) / 2)
    assert rewards[4] == pytest.approx(0.1**1.25**2)


def test_reach_sparse_pays_only_at_the_far_goal_with_the_pole_upright(child):
    states = [(1.4, 0.0), (1.2, 0.0), (1.6, 0.05), (1.1, 0.0), (0.0, 0.0), (1.4, 0.2)]
    rewards = child(_rewards_at, 'reach_sparse', states)
    # Goal 1.4 ± 0.25; upright means cos θ >= 0.995 (cos 0.05 = 0.9988, cos 0.2 = 0.980).
    assert rewards == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def _episodes(seed, steps):
    """The same random actions in balance, reach and reach_sparse from the same seed."""
    from dreamer_lsp.envs import make_env

    out = {}
    for task in ('cartpole_balance', 'cartpole_reach', 'cartpole_reach_sparse'):
        env = make_env(task, 'features', action_repeat=2, seed=seed)
        random = np.random.RandomState(seed)
        obs = env.reset()
        episode = {key: [value] for key, value in obs.items()}
        episode['action'], episode['reward'] = [np.zeros(1, np.float32)], [0.0]
        for _ in range(steps):
            action = random.uniform(-1, 1, 1).astype(np.float32)
            obs, reward, _, _ = env.step(action)
            for key, value in obs.items():
                episode[key].append(value)
            episode['action'].append(action)
            episode['reward'].append(reward)
        env.close()
        out[task] = {key: np.asarray(value) for key, value in episode.items()}
    return out


def test_start_physics_and_observations_are_the_suite_balance(child):
    episodes = child(_episodes, 3, 40)
    balance = episodes['cartpole_balance']
    for task in ('cartpole_reach', 'cartpole_reach_sparse'):
        for key in ('features', 'qpos', 'qvel'):
            np.testing.assert_array_equal(episodes[task][key], balance[key])
    assert abs(balance['qpos'][0, 0]) <= 0.1
    assert not np.array_equal(episodes['cartpole_reach']['reward'], balance['reward'])


def _relabel(seed, steps):
    from dreamer_lsp.relabel import Relabeler

    episodes = _episodes(seed, steps)
    source = episodes['cartpole_balance']
    relabeled = {}
    for task in ('cartpole_reach', 'cartpole_reach_sparse'):
        relabeler = Relabeler(f'dmc_{task}', 'features', action_repeat=2, seed=seed)
        episode, deviation = relabeler.relabel(source, index=0)
        relabeled[task] = (episode['reward'], deviation, episodes[task]['reward'])
    return relabeled


def test_balance_episodes_relabel_to_the_rewards_the_goal_tasks_pay(child):
    for relabeled, deviation, paid in child(_relabel, 1, 30).values():
        assert deviation == 0.0
        # Stored episodes keep rewards in float32.
        np.testing.assert_array_equal(relabeled, paid.astype(np.float32))


def _errors():
    from dreamer_lsp import cartpole_tasks
    from dreamer_lsp.envs import DMCEnv

    messages = []
    for name, params in [('nope', {}), ('reach', {'gaol': 1.0}), ('reach', {'goal_radius': 0})]:
        try:
            cartpole_tasks.load(name, **params)
        except ValueError as error:
            messages.append(str(error))
    env = DMCEnv('cartpole_reach_sparse', task_params={'goal': -1.4})
    messages.append(env._env.task._goal)
    return messages


def test_unknown_tasks_and_parameters_are_refused_and_parameters_reach_the_task(child):
    unknown, misspelt, bad_radius, goal = child(_errors)
    assert unknown == "Unknown cartpole task 'nope'; valid tasks: reach, reach_sparse"
    assert misspelt == (
        "Unknown parameter(s) gaol for cartpole task 'reach'; valid: goal, goal_radius, margin"
    )
    assert bad_radius == 'goal_radius must be positive; got 0'
    assert goal == -1.4
