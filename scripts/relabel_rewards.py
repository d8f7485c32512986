"""Relabel a run's stored episodes with another task's rewards (LSP §4.3, Walk -> Reach).

Usage:
    python scripts/relabel_rewards.py --source RUN_LOGDIR --task dmc_quadruped_reach \\
        --output OUT_DIR [--task-params JSON] [--seed N]
    python scripts/relabel_rewards.py --source EPISODE_DIR --action-repeat 2 \\
        --task dmc_quadruped_reach --output OUT_DIR

With a run logdir (it has config.yaml) the episodes are read from RUN_LOGDIR/train_episodes and
the action repeat, observation type and camera from its config. A directory without config.yaml
is taken as a bare episode directory: --action-repeat is then required, the observation type is
read from the episodes and the camera defaults to -1 (camera 2 for quadruped, else 0).

OUT_DIR becomes an episode directory with the source's file names, the target task's
observations, rewards and arena, and relabel.json (the report); it must not exist or be empty.
Each episode's arena (goal, obstacles) is drawn from --seed and the episode index. The source
is only read. Refusals print one line on stderr and exit with code 2. Never imports TensorFlow.
"""

import argparse
import json
import sys


def main(argv=None):
    """Runs the relabeling and prints a summary line."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--source', required=True, help='run logdir or episode directory')
    parser.add_argument('--task', required=True, help='target task, e.g. dmc_quadruped_reach')
    parser.add_argument('--output', required=True, help='new episode directory to write')
    parser.add_argument('--task-params', default='{}', help='JSON object of target task parameters')
    parser.add_argument('--seed', type=int, default=0, help='seed of the per-episode arenas')
    parser.add_argument('--action-repeat', type=int, help='required for an episode directory')
    parser.add_argument('--obs-type', choices=('features', 'pixels'), help='default: as stored')
    parser.add_argument('--camera', type=int, help='-1: camera 2 for quadruped, else 0')
    args = parser.parse_args(argv)

    from dreamer_lsp.relabel import RelabelError, relabel_directory

    try:
        task_params = json.loads(args.task_params)
        if not isinstance(task_params, dict):
            raise RelabelError(f'--task-params must be a JSON object, got {args.task_params!r}')
        report = relabel_directory(
            args.source,
            args.task,
            args.output,
            task_params=task_params,
            seed=args.seed,
            action_repeat=args.action_repeat,
            obs_type=args.obs_type,
            camera=args.camera,
        )
    except json.JSONDecodeError as error:
        parser.exit(2, f'relabel_rewards: error: --task-params is not valid JSON: {error}\n')
    except RelabelError as error:
        parser.exit(2, f'relabel_rewards: error: {error}\n')
    print(
        f'Relabeled {report["steps"]} steps in {report["episodes"]} episodes from {args.source} '
        f'for {args.task} -> {args.output} (max state deviation '
        f'{report["max_state_deviation"]:.3g})',
        flush=True,
    )


if __name__ == '__main__':
    sys.exit(main())
