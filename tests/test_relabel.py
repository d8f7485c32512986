"""Tests of reward relabeling (scripts/relabel_rewards.py, dreamer_lsp.relabel; LSP §4.3).

Other test modules import TensorFlow, which crashes next to MuJoCo's EGL renderer, so all
dm_control work runs in a spawned child process and the script in subprocesses.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dreamer_lsp.replay import episode_files, load_episode, save_episode

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'relabel_rewards.py'
SUBPROCESS_TIMEOUT = 120
ACTION_REPEAT = 2
WALK_FEATURES, REACH_FEATURES = 78, 81
CLOSE_GOAL = {'goal_distance': [1.0, 1.5]}  # close enough to show in camera 2


def _record(logdir, task, time_limit, num_episodes, obs_type='features'):
    """Records random-action episodes into `logdir` as the trainer stores them."""
    from ruamel.yaml import YAML

    from dreamer_lsp.envs import make_env

    logdir = pathlib.Path(logdir)
    env = make_env(task, obs_type, action_repeat=ACTION_REPEAT, time_limit=time_limit, seed=0)
    random = np.random.default_rng(0)
    for index in range(num_episodes):
        first, steps, done = env.reset(), [], False
        while not done:
            action = random.uniform(-1, 1, env.action_size).astype(np.float32)
            obs, reward, done, info = env.step(action)
            steps.append(dict(obs, action=action, reward=reward, discount=info['discount']))
        entry = {key: np.zeros_like(value) for key, value in steps[0].items()}
        entry.update(first, discount=1.0)
        episode = {key: np.stack([entry[key]] + [s[key] for s in steps]) for key in steps[0]}
        for key in ('action', 'reward', 'discount'):
            episode[key] = episode[key].astype(np.float32)
        save_episode(logdir / 'train_episodes', episode, index)
    config = dict(
        task=f'dmc_{task}',
        obs_type=obs_type,
        action_repeat=ACTION_REPEAT,
        time_limit=time_limit,
        seed=0,
        camera=-1,
    )
    YAML(typ='safe').dump(config, logdir / 'config.yaml')


def _replay_in_target(source, arena, obs_type='features', task_params=None):
    """Rewards and observations of the source's actions replayed from its first state directly
    in the target env (Reach, through the training wrappers) with the relabeled arena."""
    from dreamer_lsp.envs import ActionRepeat, DMCEnv, NormalizeActions, TimeLimit

    key = 'features' if obs_type == 'features' else 'image'
    dmc = DMCEnv('quadruped_reach', obs_type, seed=12345, task_params=task_params)
    steps = len(source['action']) - 1
    env = TimeLimit(NormalizeActions(ActionRepeat(dmc, ACTION_REPEAT)), steps)
    env.reset()
    task, physics = dmc._env.task, dmc._env.physics
    task.set_arena_params(physics, arena)
    physics.data.qpos[:] = source['qpos'][0]
    physics.data.qvel[:] = source['qvel'][0]
    physics.forward()
    if key == 'features':
        first = np.concatenate(
            [np.asarray(v, np.float32).ravel() for v in task.get_observation(physics).values()]
        )
    else:
        first = physics.render(64, 64, camera_id=2)
    rewards, observations = [0.0], [first]
    for action in source['action'][1:]:
        obs, reward, _, _ = env.step(action)
        rewards.append(reward)
        observations.append(obs[key])
    return np.array(rewards), np.stack(observations)


def _relabel(source, output, seed, task='dmc_quadruped_reach'):
    from dreamer_lsp.relabel import relabel_directory

    return relabel_directory(source, task, output, seed=seed)


def _run(*args):
    env = dict(os.environ)
    env.setdefault('MUJOCO_GL', 'egl')
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT,
    )


def _snapshot(directory):
    return {path.name: path.read_bytes() for path in sorted(pathlib.Path(directory).iterdir())}


@pytest.fixture(scope='module')
def walk_run(tmp_path_factory, child):
    logdir = tmp_path_factory.mktemp('walk') / 'run'
    child(_record, logdir, 'quadruped_walk', 40, 2)
    return logdir


@pytest.fixture(scope='module')
def relabeled(walk_run, tmp_path_factory):
    before = _snapshot(walk_run / 'train_episodes')
    output = tmp_path_factory.mktemp('out') / 'reach'
    result = _run('--source', walk_run, '--task', 'dmc_quadruped_reach', '--output', output)
    assert result.returncode == 0, result.stderr
    assert _snapshot(walk_run / 'train_episodes') == before  # the source is only read
    return result, output


def test_rewards_match_direct_replay_in_target_task(walk_run, relabeled, child):
    _, output = relabeled
    sources = episode_files(walk_run / 'train_episodes')
    assert [p.name for p in episode_files(output)] == [p.name for p in sources]
    goals = []
    for path in sources:
        source, target = load_episode(path), load_episode(output / path.name)
        assert source['features'].shape == (21, WALK_FEATURES)
        assert target['features'].shape == (21, REACH_FEATURES)
        assert target['arena'].shape == (21, 2) and np.all(target['arena'] == target['arena'][0])
        goals.append(target['arena'][0])
        for key in ('action', 'qpos', 'qvel', 'discount'):
            np.testing.assert_array_equal(target[key], source[key])
        rewards, features = child(_replay_in_target, source, target['arena'][0])
        np.testing.assert_allclose(target['reward'], rewards, atol=1e-6)
        np.testing.assert_allclose(target['features'], features, atol=1e-6)
        assert target['reward'][0] == 0 and not np.allclose(target['reward'], source['reward'])
    assert 3.0 <= np.linalg.norm(goals[0]) <= 6.0
    assert not np.allclose(goals[0], goals[1])  # every episode gets its own arena


def test_report_and_summary_line(walk_run, relabeled):
    result, output = relabeled
    assert result.stdout.strip().splitlines() == [
        f'Relabeled 40 steps in 2 episodes from {walk_run} for dmc_quadruped_reach -> {output} '
        '(max state deviation 0)'
    ]
    assert result.stderr == ''
    report = json.loads((output / 'relabel.json').read_text())
    assert report['source'] == str(walk_run.resolve())
    assert report['source_task'] == 'dmc_quadruped_walk'
    assert (report['task'], report['episodes'], report['steps']) == ('dmc_quadruped_reach', 2, 40)
    assert report['max_state_deviation'] == 0.0
    assert report['skipped_files'] == [] and report['action_repeat'] == ACTION_REPEAT


def test_arenas_are_deterministic_given_the_seed(walk_run, relabeled, child, tmp_path):
    _, output = relabeled
    child(_relabel, walk_run, tmp_path / 'same', 0)
    child(_relabel, walk_run, tmp_path / 'other', 1)
    for path in episode_files(output):
        first, same = load_episode(path), load_episode(tmp_path / 'same' / path.name)
        other = load_episode(tmp_path / 'other' / path.name)
        assert same.keys() == first.keys()
        for key in first:
            np.testing.assert_array_equal(same[key], first[key])
        assert not np.allclose(other['arena'], first['arena'])


def test_same_reward_function_reproduces_the_stored_episode(walk_run, child, tmp_path):
    # GetUp-Walk pays and observes exactly what the suite's walk does.
    report = child(_relabel, walk_run, tmp_path / 'getup', 0, 'dmc_quadruped_getup_walk')
    assert report['mean_return'] == report['mean_source_return']
    for path in episode_files(walk_run / 'train_episodes'):
        source, target = load_episode(path), load_episode(tmp_path / 'getup' / path.name)
        np.testing.assert_array_equal(target['reward'], source['reward'])
        np.testing.assert_array_equal(target['features'], source['features'])
        assert target['arena'].shape == (21, 0)


def test_pixels_are_rerendered_with_the_goal(tmp_path, child):
    child(_record, tmp_path / 'run', 'quadruped_walk', 8, 1, 'pixels')
    output = tmp_path / 'out'
    params = json.dumps(CLOSE_GOAL)
    result = _run(
        '--source',
        tmp_path / 'run',
        '--task',
        'dmc_quadruped_reach',
        '--output',
        output,
        '--task-params',
        params,
    )
    assert result.returncode == 0, result.stderr
    (path,) = episode_files(tmp_path / 'run' / 'train_episodes')
    source, target = load_episode(path), load_episode(output / path.name)
    assert target['image'].shape == source['image'].shape == (5, 64, 64, 3)
    rewards, images = child(_replay_in_target, source, target['arena'][0], 'pixels', CLOSE_GOAL)
    np.testing.assert_allclose(target['reward'], rewards, atol=1e-6)
    np.testing.assert_array_equal(target['image'], images)

    def red(image):
        return ((image[..., 0] > 150) & (image[..., 1] < 60)).mean()

    assert red(target['image'][0]) > 0.01 and red(source['image'][0]) == 0


@pytest.fixture(scope='module')
def sources(walk_run, tmp_path_factory, child):
    root = tmp_path_factory.mktemp('bad')
    child(_record, root / 'walker', 'walker_walk', 20, 1)
    episode = load_episode(episode_files(walk_run / 'train_episodes')[0])
    del episode['qpos'], episode['qvel']
    save_episode(root / 'stateless', episode, 0)
    (root / 'empty' / 'train_episodes').mkdir(parents=True)
    shutil.copy(walk_run / 'config.yaml', root / 'empty')
    (root / 'full').mkdir()
    (root / 'full' / 'keep.txt').write_text('keep')
    return {
        'walk': walk_run,
        'walk_episodes': walk_run / 'train_episodes',
        'walker': root / 'walker',
        'walker_episodes': root / 'walker' / 'train_episodes',
        'stateless': root / 'stateless',
        'empty': root / 'empty',
        'full': root / 'full',
        'new': root / 'new',
    }


@pytest.mark.parametrize(
    'source, extra, message',
    [
        (
            'walker',
            [],
            "robot differs from the source's: the episodes were recorded with the walker",
        ),
        ('walker_episodes', ['--action-repeat', 2], 'has sizes action 6, qpos 9, qvel 9'),
        ('stateless', ['--action-repeat', 2], 'recorded without physics state'),
        ('walk', ['--task', 'dmc_quadruped_fly'], 'valid quadruped tasks: dmc_quadruped_escape'),
        ('walk', ['--output', 'full'], 'exists and is not empty'),
        ('walk_episodes', [], '--action-repeat is required'),
        ('walk', ['--action-repeat', 4], '--action-repeat 4 contradicts'),
        ('empty', [], 'has no readable episodes'),
        ('walk', ['--task-params', '{"goal_distanc": 1}'], 'valid: goal_distance, goal_radius'),
    ],
)
def test_refusals_exit_2_with_one_line(sources, source, extra, message):
    args = {'--source': sources[source], '--task': 'dmc_quadruped_reach', '--output': 'new'}
    args.update(zip(extra[::2], extra[1::2]))
    args['--output'] = sources[args['--output']]
    before = _snapshot(sources['full'])
    result = _run(*[value for item in args.items() for value in item])
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert not sources['new'].exists() and _snapshot(sources['full']) == before


def test_corrupt_episode_is_skipped_with_one_warning(walk_run, tmp_path):
    source = tmp_path / 'episodes'
    shutil.copytree(walk_run / 'train_episodes', source)
    (source / '000007-3.npz').write_bytes(b'not an archive')
    result = _run(
        '--source',
        source,
        '--action-repeat',
        2,
        '--task',
        'dmc_quadruped_reach',
        '--output',
        tmp_path / 'out',
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f'Warning: skipping episode file {source / "000007-3.npz"}: not an .npz archive'
    ]
    report = json.loads((tmp_path / 'out' / 'relabel.json').read_text())
    assert (report['episodes'], report['skipped_files']) == (2, ['000007-3.npz'])
    assert report['source_task'] is None
