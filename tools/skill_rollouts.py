"""Fig. 7 / Fig. 10: rollouts of different skills from the same initial state.

    .venv/bin/python tools/skill_rollouts.py --run runs/lsp_walker --out figures/fig7.png

Loads a skill run's checkpoint, resets its task to the same initial state once per skill, runs
the low-level actor (mode, no noise) with that skill held fixed, and composites the frames into
a grid: one row per skill, one column every `--stride` agent steps.
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from dreamer_lsp import config as config_lib  # noqa: E402
from dreamer_lsp.config import ConfigError  # noqa: E402
from dreamer_lsp.envs import ProcessEnv  # noqa: E402
from dreamer_lsp.train import env_kwargs  # noqa: E402


def rollout_frames(agent, env, skill, steps, initial_state):
    """Frames [steps + 1, H, W, 3] of the actor's mode with `skill` fixed, from one start."""
    from dreamer_lsp._tf import tf

    env.set_random_state(initial_state)
    obs = env.reset()
    key = 'image' if 'image' in obs else 'video'
    obs_key = 'image' if 'image' in obs else 'features'
    latent, action, _, _ = agent.initial_state()
    skill = tf.constant(skill[None], tf.float32)
    frames = [obs[key]]
    for _ in range(steps):
        observation = {obs_key: obs[obs_key][None]}
        action, latent, _ = agent.step(observation, latent, action, skill, False, False)
        obs, _, done, _ = env.step(action.numpy()[0])
        frames.append(obs[key])
        if done:
            break
    return np.stack(frames)


def composite(rows, stride):
    """One image: row i holds every `stride`-th frame of rollout i, separated by white lines."""
    picked = [frames[::stride] for frames in rows]
    columns = min(len(frames) for frames in picked)
    height, width = picked[0].shape[1:3]
    grid = np.full(((height + 2) * len(rows), (width + 2) * columns, 3), 255, np.uint8)
    for i, frames in enumerate(picked):
        for j in range(columns):
            top, left = i * (height + 2), j * (width + 2)
            grid[top : top + height, left : left + width] = frames[j]
    return grid


def main(argv=None):
    """Render the skill grid of a run."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--run', type=pathlib.Path, required=True, help='a skill run logdir')
    parser.add_argument('--out', type=pathlib.Path, required=True, help='PNG path')
    parser.add_argument('--skills', type=int, default=5, help='rows: skills drawn from N(0, I)')
    parser.add_argument('--steps', type=int, default=60, help='agent steps per rollout')
    parser.add_argument('--stride', type=int, default=6, help='agent steps between columns')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--video-size', type=int, default=128)
    args = parser.parse_args(argv)
    try:
        config = config_lib.load_saved(args.run / 'config.yaml')
        if config.skills.high_level == 'none':
            raise ConfigError(f'{args.run} is a run without skills ({config.method})')
        from dreamer_lsp import transfer
        from dreamer_lsp._tf import tf
        from dreamer_lsp.agents import make_agent

        prefix = transfer.latest_checkpoint(args.run)
    except (ConfigError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    config = config.update({'video_size': args.video_size})
    env = ProcessEnv(**env_kwargs(config, args.seed, render_video=True))
    try:
        agent = make_agent(config, env.obs_space, env.action_size)
        tf.train.Checkpoint(agent=agent).read(str(prefix)).expect_partial()
        initial_state = env.random_state()
        skills = np.random.default_rng(args.seed).normal(size=(args.skills, config.skills.dim))
        rows = [
            rollout_frames(agent, env, skill.astype(np.float32), args.steps, initial_state)
            for skill in skills
        ]
    finally:
        env.close()
    import imageio

    args.out.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(args.out, composite(rows, args.stride))
    print(f'wrote {args.out}: {args.skills} skills x {args.steps} steps from {args.run}')


if __name__ == '__main__':
    main()
