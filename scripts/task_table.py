"""Print the custom tasks' observation and action sizes and random-policy returns.

    .venv/bin/python scripts/task_table.py [--seeds 0 1 2] [--time-limit 1000] [--domains cartpole]

Each task runs one episode per seed with uniform random actions (features, action repeat 2),
through the same wrappers as training. Never imports TensorFlow.
"""

import argparse
import os

import numpy as np

os.environ.setdefault('MUJOCO_GL', 'egl')

from dreamer_lsp.custom_tasks import MODULES  # noqa: E402
from dreamer_lsp.envs import CARTPOLE_TASKS, QUADRUPED_TASKS, make_env  # noqa: E402

CUSTOM_TASKS = QUADRUPED_TASKS + CARTPOLE_TASKS


def random_return(task, seed, time_limit):
    """The return of one uniform-random episode."""
    env = make_env(task, 'features', action_repeat=2, time_limit=time_limit, seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    total, done = 0.0, False
    while not done:
        _, reward, done, _ = env.step(rng.uniform(-1, 1, env.action_size))
        total += reward
    sizes = (env.obs_space['features'][0][0], env.action_size)
    env.close()
    return total, sizes


def main(argv=None):
    """Print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--time-limit', type=int, default=1000)
    parser.add_argument('--domains', nargs='+', choices=list(MODULES), default=list(MODULES))
    args = parser.parse_args(argv)
    print('| task | observation size | action size | random return (mean ± std) |')
    print('|---|---|---|---|')
    for task in CUSTOM_TASKS:
        if task.split('_')[0] not in args.domains:
            continue
        results = [random_return(task, seed, args.time_limit) for seed in args.seeds]
        returns = [r for r, _ in results]
        obs_size, action_size = results[0][1]
        print(
            f'| dmc_{task} | {obs_size} | {action_size} | '
            f'{np.mean(returns):.1f} ± {np.std(returns):.1f} |',
            flush=True,
        )


if __name__ == '__main__':
    main()
