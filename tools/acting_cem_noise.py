"""How noisy acting-time CEM is with 1 or several imagined rollouts (particles) per proposal.

    .venv/bin/python -m tools.acting_cem_noise --run runs/lsp --particles 1 4 16

Loads a skill run's checkpoint, filters `--warmup` real observations of its task (actions from
the low-level actor with a fixed skill) to get one current latent state, and from that state,
for every particle count P:

- score noise: the std, over `--repeats` evaluations, of one fixed plan's value (the λ-return
  estimate CEM ranks proposals by) averaged over P imagined rollouts;
- elite value: mean and std over `--repeats` CEM runs of the elites' mean score (CEM's own
  estimate of its plan's value), and the value of the plans it chose, re-scored on
  `--reference` particles: the gap between the two is the optimism of selecting on noise;
- time: milliseconds per CEM call (on a shared machine, say so when quoting it).
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from dreamer_lsp.config import ConfigError
from dreamer_lsp.envs import ProcessEnv
from dreamer_lsp.rundir import atomic_write_text
from dreamer_lsp.train import env_kwargs
from tools.skill_rollouts import cem_run_config, load_agent


def current_latent(agent, env, steps, seed):
    """The latent state [1] after filtering `steps` real observations (actor, fixed skill)."""
    from dreamer_lsp._tf import tf

    obs_key = agent.world_model.obs_key
    obs = env.reset()
    latent, action, _, _ = agent.initial_state()
    skill = tf.constant(np.random.default_rng(seed).normal(size=(1, agent.skill_dim)), tf.float32)
    for _ in range(steps):
        action, latent, _ = agent.step(
            {obs_key: obs[obs_key][None]}, latent, action, skill, False, True
        )
        obs, _, _, _ = env.step(action.numpy()[0])
    return latent


def measure(agent, latent, particles, repeats, reference):
    """The noise and timing figures of acting CEM with `particles` rollouts per proposal."""
    from dreamer_lsp._tf import tf

    def tiled(count):
        return {k: tf.repeat(v, count, 0) for k, v in latent.items()}

    @tf.function
    def plan_value(plan, count):  # plan [S, D]: its value averaged over `count` rollouts
        return tf.reduce_mean(agent.plan_value(tf.repeat(plan[None], count, 0), tiled(count)))

    cem = tf.function(lambda: agent.cem(tiled(particles)))
    cem()  # trace
    elite_values, chosen_values, plans, milliseconds = [], [], [], []
    for _ in range(repeats):
        begin = time.perf_counter()
        mean, _, elite_value = cem()
        milliseconds.append(1000 * (time.perf_counter() - begin))
        elite_values.append(float(elite_value))
        chosen_values.append(float(plan_value(mean, reference)))
        plans.append(mean.numpy())
    fixed = tf.zeros((agent.num_skills, agent.skill_dim))
    scores = [float(plan_value(fixed, particles)) for _ in range(repeats)]
    return dict(
        particles=particles,
        score_noise=float(np.std(scores)),
        elite_value_mean=float(np.mean(elite_values)),
        elite_value_std=float(np.std(elite_values)),
        chosen_plan_value_mean=float(np.mean(chosen_values)),
        chosen_plan_value_std=float(np.std(chosen_values)),
        optimism=float(np.mean(elite_values) - np.mean(chosen_values)),
        first_skill_spread=float(np.std(np.array(plans)[:, 0], 0).mean()),
        cem_ms_median=float(np.median(milliseconds)),
    )


def main(argv=None):
    """Print (and optionally save) the acting-CEM figures for each particle count."""
    parser = argparse.ArgumentParser(
        prog='python -m tools.acting_cem_noise', description=__doc__.split('\n\n')[0]
    )
    parser.add_argument('--run', type=pathlib.Path, required=True, help='a CEM skill run logdir')
    parser.add_argument('--particles', type=int, nargs='+', default=[1, 4, 16])
    parser.add_argument('--repeats', type=int, default=20, help='CEM runs per particle count')
    parser.add_argument('--reference', type=int, default=256, help='particles to re-score plans')
    parser.add_argument('--warmup', type=int, default=20, help='real steps before the state')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=0, help='TensorFlow intra-op threads')
    parser.add_argument('--json', type=pathlib.Path, help='also write the figures here')
    args = parser.parse_args(argv)
    try:
        config = cem_run_config(args.run)
    except (ConfigError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    from dreamer_lsp._tf import tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    env = ProcessEnv(**env_kwargs(config, args.seed))
    try:
        agent = load_agent(args.run, env, config)
        latent = current_latent(agent, env, args.warmup, args.seed)
    finally:
        env.close()
    rows = [measure(agent, latent, p, args.repeats, args.reference) for p in args.particles]
    for row in rows:
        print(
            f'particles {row["particles"]:3d}: score noise {row["score_noise"]:.3f}, '
            f'elite value {row["elite_value_mean"]:.3f} ± {row["elite_value_std"]:.3f}, '
            f'chosen plan value {row["chosen_plan_value_mean"]:.3f} '
            f'± {row["chosen_plan_value_std"]:.3f} (optimism {row["optimism"]:.3f}), '
            f'first-skill spread {row["first_skill_spread"]:.3f}, '
            f'CEM {row["cem_ms_median"]:.0f} ms'
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(dict(run=str(args.run), rows=rows), indent=2))


if __name__ == '__main__':
    main()
