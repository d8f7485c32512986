"""Does scoring CEM in bfloat16 choose the same elites as float32? (`cem.precision`, issue 13)

    .venv/bin/python -m tools.cem_precision --run runs/lsp --batches 20 --starts 64 400

Loads a CEM skill run's latest checkpoint and draws `--batches` training batches from its
replay (the run's batch size and length). For each batch and each number of start states (a
random subset of `--starts` of the batch's posterior states), it runs CEM as training does, in
float32, and at every iteration scores the same proposals twice more: at `cem.precision` 16
(bfloat16 on a CPU, float16 on a GPU) from the same random state, so that both rollouts draw
the same noise, and in float32 with fresh noise, the disagreement CEM's ranking has anyway. For
each, it reports the share of scoring calls whose elite sets (the `cem.elites` best of
`cem.proposals`) equal the float32 ones, their mean overlap, and the score differences
relative to the spread of the float32 scores over the proposals.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

from dreamer_lsp.config import ConfigError
from dreamer_lsp.replay import Replay
from dreamer_lsp.rundir import RunDir, atomic_write_text
from tools.skill_rollouts import cem_run_config, load_agent_offline


def start_batches(agent, run, config, count):
    """Posterior states [B * T, ...] of `count` training batches of the run's replay."""
    from dreamer_lsp._tf import tf
    from dreamer_lsp.world_model import flatten_states

    replay = Replay(RunDir(run).episodes, seed=config.seed)
    replay.load()
    batches = iter(
        replay.dataset(
            config.batch_size, config.batch_length, prefetch=0, keys=agent.world_model.batch_keys
        )
    )
    starts = []
    for _ in range(count):
        replay.tick()
        _, post, _ = agent.world_model.loss(next(batches))
        starts.append(flatten_states({k: tf.stop_gradient(v) for k, v in post.items()}))
    replay.close()
    return starts


def compare_scoring(agent, start, low_dtype):
    """One float32 CEM from `start`. Per iteration, its proposals are scored three times: in
    float32, in `low_dtype` with the same random draws, and in float32 with fresh draws (the
    noise CEM's ranking has anyway). Returns per iteration the elite agreement of the first
    score with each of the other two."""
    from dreamer_lsp._tf import tf
    from dreamer_lsp.lsp import refit

    cem = agent.config.cem
    tiled = agent.tile_starts(start)
    shape = (agent.num_skills, agent.skill_dim)

    def agreement(reference, other):
        elites = [set(np.argsort(-values)[: cem.elites]) for values in (reference, other)]
        spread = reference.max() - reference.min()
        difference = np.abs(reference - other).max()
        return dict(
            identical=elites[0] == elites[1],
            overlap=len(elites[0] & elites[1]) / cem.elites,
            relative_difference=float(difference / spread) if spread else 0.0,
        )

    mean, std = tf.zeros(shape), tf.ones(shape)
    calls = []
    for _ in range(cem.iterations):
        proposals = mean + std * agent.rng.normal((cem.proposals, *shape))
        random_state = agent.rng.state.numpy()
        high = agent.proposal_scores(proposals, tiled, tf.float32)
        agent.rng.state.assign(random_state)
        low = agent.proposal_scores(proposals, tiled, low_dtype)
        # The generator has moved on: fresh draws.
        resampled = agent.proposal_scores(proposals, tiled, tf.float32)
        calls.append(
            dict(
                low=agreement(high.numpy(), low.numpy()),
                resampled=agreement(high.numpy(), resampled.numpy()),
            )
        )
        mean, std, _ = refit(proposals, high, cem.elites)
    return calls


def measure(agent, starts, counts, low_dtype):
    """Agreement figures per number of start states, over every batch and CEM iteration."""
    from dreamer_lsp._tf import tf

    rows, rng = [], np.random.default_rng(0)
    for count in counts:
        calls = []
        for start in starts:
            # A random subset, as `cem.train_starts` takes in training.
            indices = rng.permutation(int(start['deter'].shape[0]))[:count]
            subset = {k: tf.gather(v, indices) for k, v in start.items()}
            calls += compare_scoring(agent, subset, low_dtype)
        row = dict(starts=count, calls=len(calls))
        for kind in ('low', 'resampled'):
            figures = [call[kind] for call in calls]
            differences = [figure['relative_difference'] for figure in figures]
            row[kind] = dict(
                identical_elite_sets=float(np.mean([figure['identical'] for figure in figures])),
                mean_elite_overlap=float(np.mean([figure['overlap'] for figure in figures])),
                median_relative_difference=float(np.median(differences)),
                max_relative_difference=float(np.max(differences)),
            )
        rows.append(row)
    return rows


def main(argv=None):
    """Print (and optionally save) the elite agreement of float32 and lower-precision scoring."""
    parser = argparse.ArgumentParser(
        prog='python -m tools.cem_precision', description=__doc__.split('\n\n')[0]
    )
    parser.add_argument('--run', type=pathlib.Path, required=True, help='a CEM skill run logdir')
    parser.add_argument('--batches', type=int, default=20, help='training batches of its replay')
    parser.add_argument(
        '--starts', type=int, nargs='+', default=[64, 400], help='start states CEM scores'
    )
    parser.add_argument('--threads', type=int, default=0, help='TensorFlow intra-op threads')
    parser.add_argument('--json', type=pathlib.Path, help='also write the figures here')
    args = parser.parse_args(argv)
    try:
        config = cem_run_config(args.run)
    except (ConfigError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    from dreamer_lsp._tf import tf
    from dreamer_lsp.dreamer import scoring_dtype

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    config = config.update({'cem.precision': 32})
    agent = load_agent_offline(args.run, config)
    low_dtype = scoring_dtype(16, agent.dtype)
    starts = start_batches(agent, args.run, config, args.batches)
    rows = measure(agent, starts, args.starts, low_dtype)
    for row in rows:
        for kind, label in (('low', low_dtype.name), ('resampled', 'float32, fresh noise')):
            figures = row[kind]
            print(
                f'{row["starts"]} starts, {row["calls"]} scoring calls, {label}: identical elite '
                f'sets {100 * figures["identical_elite_sets"]:.0f}%, mean overlap '
                f'{100 * figures["mean_elite_overlap"]:.0f}%, score difference / spread: median '
                f'{figures["median_relative_difference"]:.3f}, '
                f'max {figures["max_relative_difference"]:.3f}'
            )
    if args.json:
        report = dict(run=str(args.run), low_dtype=low_dtype.name, rows=rows)
        atomic_write_text(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
