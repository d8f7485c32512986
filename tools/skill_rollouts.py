"""Fig. 7 / Fig. 10: rollouts of different skills from one initial state, in frames and in motion.

    .venv/bin/python -m tools.skill_rollouts --run runs/lsp_walker --out figures/fig7.png

Loads a skill run's checkpoint, resets its task to the same initial physics state for every
rollout, and runs the low-level actor with one skill z ~ N(0, I) held fixed in the real simulator
(not in imagination):

- the figure: the actor's mode (no noise) per skill, composited into a grid with one row per
  skill and one column every `--stride` agent steps;
- the motion report: `--repeats` rollouts per skill with actions sampled from q_φ(a | s, z) (the
  policy's own noise, without the extra exploration noise), and how far apart their final
  physics states (qpos: root position and joint angles) are for different skills against
  repeats of one skill. A ratio near 1 means the skills do not change the behaviour.

Environments run in worker processes that never import TensorFlow (`envs.ProcessEnv`).
"""

import argparse
import itertools
import json
import pathlib
import sys

import numpy as np

from dreamer_lsp import config as config_lib
from dreamer_lsp.config import ConfigError
from dreamer_lsp.envs import ProcessEnv
from dreamer_lsp.rundir import RunDir, atomic_write_text
from dreamer_lsp.train import env_kwargs

# Defaults of the figure and the motion report, for the command line and `skill_motion` alike.
SKILLS, REPEATS, STEPS, VIDEO_SIZE = 5, 4, 60, 128


def run_skill(agent, env, skill, steps, initial_state, sample):
    """One rollout of q_φ(a | s, z) with `skill` [D] fixed, from the task's `initial_state`.

    sample: draw actions from the actor (its own noise) instead of taking its mode.
    Returns frames [T + 1, H, W, 3] and physics positions qpos [T + 1, P].
    """
    from dreamer_lsp._tf import tf

    env.set_random_state(initial_state)
    obs = env.reset()
    key = 'image' if 'image' in obs else 'video'
    obs_key = agent.world_model.obs_key
    latent, action, _, _ = agent.initial_state()
    skill = tf.constant(np.asarray(skill, np.float32)[None])
    frames, qpos = [obs[key]], [obs['qpos']]
    for _ in range(steps):
        observation = {obs_key: obs[obs_key][None]}
        action, latent, _ = agent.step(observation, latent, action, skill, False, sample)
        obs, _, done, _ = env.step(action.numpy()[0])
        frames.append(obs[key])
        qpos.append(obs['qpos'])
        if done:
            break
    return np.stack(frames), np.stack(qpos)


def mean_distance(pairs):
    """Over pairs of [P] vectors: the mean absolute difference per coordinate [P] and the mean
    Euclidean distance."""
    differences = np.array([a - b for a, b in pairs])  # [pairs, P]
    return np.abs(differences).mean(0), np.linalg.norm(differences, axis=1).mean()


def motion_spread(final_qpos):
    """How far apart final states are for different skills vs repeats of one skill.

    final_qpos: [Z skills, R repeats, P]. Between: all pairs of rollouts of different skills;
    within: all pairs of repeats of the same skill. Returns a dict with both mean distances,
    their ratio, and the per-coordinate mean absolute differences.
    """
    skills, repeats = final_qpos.shape[:2]
    between = [
        (final_qpos[i, r], final_qpos[j, s])
        for i, j in itertools.combinations(range(skills), 2)
        for r in range(repeats)
        for s in range(repeats)
    ]
    within = [
        (final_qpos[i, r], final_qpos[i, s])
        for i in range(skills)
        for r, s in itertools.combinations(range(repeats), 2)
    ]
    between_coords, between_mean = mean_distance(between)
    within_coords, within_mean = mean_distance(within)
    return dict(
        between_skills=float(between_mean),
        within_skill=float(within_mean),
        ratio=float(between_mean / max(within_mean, 1e-12)),
        between_skills_per_coordinate=between_coords.tolist(),
        within_skill_per_coordinate=within_coords.tolist(),
    )


def checkpointed_run_config(run):
    """The saved config of a run that has a checkpoint; ConfigError if it has none."""
    config = config_lib.load_saved(RunDir(run).config)
    if RunDir(run).latest_name() is None:
        raise ConfigError(f'{run} holds no checkpoint')
    return config


def cem_run_config(run):
    """The saved config of a run that plans with CEM and has a checkpoint; ConfigError if not."""
    config = checkpointed_run_config(run)
    if config.skills.high_level != 'cem':
        raise ConfigError(f'{run} does not plan with CEM ({config.method})')
    return config


def load_agent(run, env, config):
    """The agent of `run`'s latest checkpoint, for `env`'s spaces."""
    from dreamer_lsp.agents import make_agent

    agent = make_agent(config, env.obs_space, env.action_size)
    agent.checkpoint().read(str(RunDir(run).latest_variables())).expect_partial()
    return agent


def load_agent_offline(run, config):
    """The agent of `run`'s latest checkpoint, for work without an environment: one is started
    in a worker only to read its spaces."""
    env = ProcessEnv(**env_kwargs(config, config.seed))
    try:
        return load_agent(run, env, config)
    finally:
        env.close()


def skill_motion(run, skills=SKILLS, repeats=REPEATS, steps=STEPS, seed=0, video_size=VIDEO_SIZE):
    """Roll out `skills` skills (N(0, I), seeded) of `run` from one initial physics state.

    Returns the motion report (`motion_spread` of the final qpos of `repeats` sampled rollouts
    per skill, plus the run, skills and steps) and the mode rollouts' frames, one array
    [T + 1, H, W, 3] per skill, for `composite`.
    """
    run = pathlib.Path(run)
    config = config_lib.load_saved(RunDir(run).config)
    if config.skills.high_level == 'none':
        raise ConfigError(f'{run} is a run without skills ({config.method})')
    # Actions sampled from the actor alone: its noise is the only one between repeats.
    config = config.update({'video_size': video_size, 'actor.expl_amount': 0.0})
    env = ProcessEnv(**env_kwargs(config, seed, render_video=True))
    try:
        agent = load_agent(run, env, config)
        initial_state = env.random_state()
        chosen = np.random.default_rng(seed).normal(size=(skills, config.skills.dim))
        rows = [run_skill(agent, env, z, steps, initial_state, False)[0] for z in chosen]
        final = np.array(
            [
                [
                    run_skill(agent, env, z, steps, initial_state, True)[1][-1]
                    for _ in range(repeats)
                ]
                for z in chosen
            ]
        )  # [Z, R, P]
    finally:
        env.close()
    report = dict(
        run=str(run), steps=steps, repeats=repeats, skills=chosen.tolist(), **motion_spread(final)
    )
    return report, rows


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
    """Render the skill grid of a run and print how far its skills move the robot apart."""
    parser = argparse.ArgumentParser(
        prog='python -m tools.skill_rollouts', description=__doc__.split('\n\n')[0]
    )
    parser.add_argument('--run', type=pathlib.Path, required=True, help='a skill run logdir')
    parser.add_argument('--out', type=pathlib.Path, required=True, help='PNG path')
    parser.add_argument(
        '--skills', type=int, default=SKILLS, help='rows: skills drawn from N(0, I)'
    )
    parser.add_argument('--repeats', type=int, default=REPEATS, help='sampled rollouts per skill')
    parser.add_argument('--steps', type=int, default=STEPS, help='agent steps per rollout')
    parser.add_argument('--stride', type=int, default=6, help='agent steps between columns')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--video-size', type=int, default=VIDEO_SIZE, help='frame side in pixels')
    parser.add_argument('--json', type=pathlib.Path, help='also write the motion report here')
    args = parser.parse_args(argv)
    if args.skills < 2 or args.repeats < 2:
        parser.error('--skills and --repeats must be at least 2 to compare distances')
    try:
        report, rows = skill_motion(
            args.run, args.skills, args.repeats, args.steps, args.seed, args.video_size
        )
    except (ConfigError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    import imageio

    args.out.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(args.out, composite(rows, args.stride))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
    print(f'wrote {args.out}: {args.skills} skills x {args.steps} steps from {args.run}')
    print(
        f'final qpos distance: {report["between_skills"]:.4f} between skills, '
        f'{report["within_skill"]:.4f} between repeats of one skill ({args.repeats} each): '
        f'ratio {report["ratio"]:.2f} (near 1: the skills do not change the behaviour)'
    )


if __name__ == '__main__':
    main()
