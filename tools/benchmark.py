"""Benchmark the agent at paper size and in the small regime, and print (and save) the figures.

    .venv/bin/python -m tools.benchmark                    # everything, paper size
    .venv/bin/python -m tools.benchmark --only update_dreamer_features cem --repeats 3
    .venv/bin/python -m tools.benchmark --json runs/benchmark_before.json
    .venv/bin/python -m tools.benchmark --only memory --memory-updates 1000
    .venv/bin/python -m tools.benchmark --only update_dreamer_pixels --profile runs/profile

Figures are medians (min-max) over `--repeats` timed runs after `--warmup` untimed ones:
seconds per train update (Dreamer and LSP, features and pixels, batch 50x50), the CEM call alone
(training size: every start state of a batch; acting size: one state), agent steps per second
while acting (with and without environment time), peak resident memory, the floating-point
operations of each compiled function (counted by TensorFlow's profiler on the graph as traced and
after Grappler's optimisations; GFLOP/s use the latter) and the achieved GFLOP/s next to a
matrix-product peak measured in the same run. `memory` follows the peak resident memory over
`--memory-updates` updates (it is not part of the default run: 1,000 paper-size updates take
about 20 minutes; `--only memory`). `--profile DIR` profiles one more update of each update case,
prints the op types that took the most time and leaves the trace for TensorBoard's profile tab.

The `small_*` cases measure the regime every result on a small machine comes from: the
`learning_check` block (cartpole balance with features, batch 8 x 50, one update per 5
environment steps). `small_update_lsp` scores CEM on all B*T = 400 start states as the paper,
`small_update_lsp_subset` on `--cem-subset` of them (the deviation slow machines use);
`small_cem` times the CEM call alone at those sizes and at acting size; `small_end_to_end` runs
the real training program (physics, acting, replay and updates) for `--end-to-end-steps` after
its prefill and reports environment steps and updates per second over the log intervals after
the first one past the prefill (so tracing, pretraining and the first evaluation do not count),
where an agent step's time goes, and the wall time of its final evaluation (2 episodes with a
video; the learning check evaluates every 4,000 steps).
"""

import argparse
import collections
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from dreamer_lsp import config as config_lib
from dreamer_lsp._tf import tf
from dreamer_lsp.agents import make_agent
from dreamer_lsp.dreamer import compute_dtype
from dreamer_lsp.envs import ProcessEnv
from dreamer_lsp.rundir import atomic_write_text
from dreamer_lsp.world_model import flatten_states

FEATURE_SIZE = 78  # quadruped walk
ACTION_SIZE = 12
# The small regime: the learning check's block and task (cartpole balance: 5 features, 1 action).
SMALL_BLOCKS = ('learning_check',)
SMALL_TASK, SMALL_FEATURE_SIZE, SMALL_ACTION_SIZE = 'dmc_cartpole_balance', 5, 1

CASES = (
    'matmul_peak',
    'update_dreamer_features',
    'update_dreamer_pixels',
    'update_lsp_features',
    'update_lsp_pixels',
    'cem',
    'acting',
    'small_update_dreamer',
    'small_update_lsp',
    'small_update_lsp_subset',
    'small_cem',
    'small_end_to_end',
    'memory',
)


def summary(times):
    """Median (min-max) of a list of seconds."""
    return dict(median=statistics.median(times), min=min(times), max=max(times), runs=len(times))


def format_stats(stats, unit='s', scale=1.0):
    """'median (min-max) unit'."""
    return (
        f'{stats["median"] * scale:.3f} ({stats["min"] * scale:.3f}-{stats["max"] * scale:.3f})'
        f' {unit}'
    )


def timed(function, warmup, repeats):
    """Run `function` warmup + repeats times; returns the timed seconds."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return times


def count_flops(concrete_function):
    """Floating-point operations of a traced function, counted by TF's profiler.

    Returns (traced, executed): the count on the graph as traced, and on the graph after
    Grappler's optimisations (dead and duplicate ops pruned, as TensorFlow runs it). The
    remapper is left out because its fused ops (e.g. matmul + bias + activation) do the same
    work but have no FLOP statistics registered.
    """
    from tensorflow.python.grappler import tf_optimizer  # after dreamer_lsp._tf set up TF

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    graph = concrete_function.graph
    traced = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    meta_graph = tf.compat.v1.train.export_meta_graph(
        graph_def=graph.as_graph_def(add_shapes=True), graph=graph
    )
    fetches = meta_graph.collection_def['train_op'].node_list.value
    fetches.extend(tensor.op.name for tensor in concrete_function.outputs)
    session_config = tf.compat.v1.ConfigProto()
    rewrite = session_config.graph_options.rewrite_options
    rewrite.remapping = rewrite.OFF
    rewrite.min_graph_nodes = -1
    optimized = tf_optimizer.OptimizeGraph(session_config, meta_graph, verbose=False)
    # Variables arrive as resource handles without shapes; read them as shaped placeholders so
    # that shape inference (and so the FLOP statistics) reaches every op.
    read_shapes = {
        op.name: op.outputs[0].shape for op in graph.get_operations() if op.type == 'ReadVariableOp'
    }
    for node in optimized.node:
        if node.op == 'ReadVariableOp' and node.name in read_shapes:
            dtype = node.attr['dtype']
            node.op = 'Placeholder'
            del node.input[:]
            node.attr.clear()
            node.attr['dtype'].CopyFrom(dtype)
            node.attr['shape'].shape.CopyFrom(read_shapes[node.name].as_proto())
    executed_graph = tf.Graph()
    with executed_graph.as_default():
        tf.graph_util.import_graph_def(optimized, name='')
    executed = tf.compat.v1.profiler.profile(executed_graph, options=options).total_float_ops
    return int(traced), int(executed)


def profile_ops(function, directory, top):
    """Run `function` once under TensorFlow's profiler; the `top` op types by time.

    The trace is written to `directory` (TensorBoard's profile tab reads it). Times are summed
    over the executor's threads, so ops that ran concurrently both count.
    """
    # Here, not at the top: TensorFlow must load through dreamer_lsp._tf (its settings) first.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(str(directory))
    try:
        function()
    finally:
        tf.profiler.experimental.stop()
    latest = max(pathlib.Path(directory).rglob('*.xplane.pb'), key=lambda p: p.stat().st_mtime)
    space = xplane_pb2.XSpace.FromString(latest.read_bytes())
    seconds = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith('tf_Compute'):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # 'op_name:OpType'
                if ':' in name and '::' not in name:
                    seconds[name.rsplit(':', 1)[1]] += event.duration_ps / 1e12
    total = sum(seconds.values())
    return [
        dict(op=op, seconds=value, share=value / total) for op, value in seconds.most_common(top)
    ]


def build(preset, obs_type, args, overrides=None, small=False):
    """An agent and a synthetic batch: paper size, or the small regime with `small` (either
    shrunk further by `args.blocks`)."""
    observation = 'dmc_proprio' if obs_type == 'features' else 'dmc_vision'
    regime = SMALL_BLOCKS if small else ()
    blocks = [*regime, *args.blocks, observation, preset]
    base = {'precision': args.precision, 'cem.precision': args.cem_precision}
    config = config_lib.build(blocks, {**base, **(overrides or {})})
    feature_size, action_size = (
        (SMALL_FEATURE_SIZE, SMALL_ACTION_SIZE) if small else (FEATURE_SIZE, ACTION_SIZE)
    )
    space = (
        {'features': ((feature_size,), np.float32)}
        if obs_type == 'features'
        else {'image': ((64, 64, 3), np.uint8)}
    )
    agent = make_agent(config, space, action_size)
    rng = np.random.default_rng(0)
    shape = (config.batch_size, config.batch_length)
    data = {
        'action': tf.constant(rng.uniform(-1, 1, (*shape, action_size)), tf.float32),
        'reward': tf.constant(rng.normal(size=shape), tf.float32),
    }
    if obs_type == 'features':
        data['features'] = tf.constant(rng.normal(size=(*shape, feature_size)), tf.float32)
    else:
        data['image'] = tf.constant(rng.integers(0, 256, (*shape, 64, 64, 3)), tf.uint8)
    return agent, data


def bench_matmul(args):
    """GFLOP/s of a 2048x2048 float32 matrix product (the machine's practical peak)."""
    size = 2048
    a = tf.Variable(tf.random.normal((size, size)))  # variables: nothing to constant-fold
    b = tf.Variable(tf.random.normal((size, size)))
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    times = timed(lambda: product().numpy(), 3, max(args.repeats, 10))
    flops = 2 * size**3
    return dict(seconds=summary(times), gflops=flops / statistics.median(times) / 1e9)


def bench_update(preset, obs_type, args, small=False, train_starts=None):
    """Seconds per compiled train update and its achieved GFLOP/s."""
    starts = args.cem_train_starts if train_starts is None else train_starts
    agent, data = build(preset, obs_type, args, {'cem.train_starts': starts}, small)
    traced, executed = count_flops(agent.train.get_concrete_function(data))

    def update():
        agent.train(data)['model_loss'].numpy()

    times = timed(update, args.warmup, args.repeats)
    result = dict(
        seconds=summary(times),
        flops=executed,
        flops_traced=traced,
        gflops=executed / statistics.median(times) / 1e9,
    )
    if args.profile:
        regime = 'small_' if small else ''
        subset = f'_{starts}' if starts else ''
        directory = args.profile / f'{regime}update_{preset}_{obs_type}{subset}'
        result['profile'] = profile_ops(update, directory, args.profile_top)
    return result


def bench_update_case(case, args):
    """`update_<preset>_<observation>` at paper size, or one of the `small_update_*` cases."""
    if case == 'small_update_dreamer':
        return bench_update('dreamer', 'features', args, small=True)
    if case == 'small_update_lsp':
        return bench_update('lsp', 'features', args, small=True, train_starts=0)
    if case == 'small_update_lsp_subset':
        return bench_update('lsp', 'features', args, small=True, train_starts=args.cem_subset)
    _, preset, obs_type = case.split('_')
    return bench_update(preset, obs_type, args)


def bench_cem(args, small=False):
    """The CEM call alone at training size (all B*T starts; with `small` also the subset of
    `--cem-subset`) and acting size (one state)."""
    agent, data = build('lsp', 'features', args, small=small)
    _, post, _ = agent.world_model.loss(data)
    starts = flatten_states(post)
    sizes = {'train': starts}
    if small:
        sizes['train_subset'] = {k: v[: args.cem_subset] for k, v in starts.items()}
    sizes['acting'] = {k: v[:1] for k, v in starts.items()}
    results = {}
    for name, state in sizes.items():
        cem = tf.function(agent.cem)
        traced, executed = count_flops(cem.get_concrete_function(state))
        times = timed(lambda s=state, c=cem: c(s)[0].numpy(), args.warmup, args.repeats)
        results[name] = dict(
            starts=int(state['deter'].shape[0]),
            seconds=summary(times),
            flops=executed,
            flops_traced=traced,
            gflops=executed / statistics.median(times) / 1e9,
        )
    return results


def bench_acting(args):
    """Agent steps per second while acting, with and without the environment's time."""
    results = {}
    env = ProcessEnv(task='quadruped_walk', obs_type='features', seed=0)
    try:
        for preset in ('dreamer', 'lsp'):
            agent, _ = build(preset, 'features', args)
            obs = env.reset()
            state = agent.initial_state()
            steps = args.acting_steps
            for _ in range(20):  # trace every function
                agent.act({'features': obs['features'][None]}, state, True)
            agent.timings.pop()
            state = agent.initial_state()
            begin = time.perf_counter()
            agent_seconds = 0.0
            for _ in range(steps):
                start = time.perf_counter()
                action, state, _ = agent.act({'features': obs['features'][None]}, state, True)
                agent_seconds += time.perf_counter() - start
                obs, _, done, _ = env.step(action)
                if done:
                    obs = env.reset()
            total = time.perf_counter() - begin
            results[preset] = dict(
                steps_per_second_with_env=steps / total,
                steps_per_second_agent_only=steps / agent_seconds,
                timings_ms=agent.timings.pop(),
            )
    finally:
        env.close()
    return results


def bench_end_to_end(args):
    """Environment steps and updates per second of the real training program, small regime."""
    results = {}
    for name, preset, extra in (
        ('dreamer', 'dreamer', ()),
        ('lsp_subset', 'lsp', ('--cem.train_starts', str(args.cem_subset))),
    ):
        blocks = [*SMALL_BLOCKS, *args.blocks]
        config = config_lib.build(['dmc_proprio', preset, *blocks])
        with tempfile.TemporaryDirectory() as directory:
            command = [
                sys.executable,
                '-m',
                'dreamer_lsp',
                '--configs',
                'dmc_proprio',
                preset,
                *blocks,
                '--task',
                SMALL_TASK,
                '--steps',
                str(config.prefill + args.end_to_end_steps),
                '--eval_every',
                str(10**9),  # only the evaluations at the prefill's end and the run's end
                '--threads',
                str(args.threads),
                '--cem.precision',
                str(args.cem_precision),
                '--logdir',
                directory,
                *extra,
            ]
            begin = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - begin
            lines = pathlib.Path(directory, 'metrics.jsonl').read_text().splitlines()
        records = [json.loads(line) for line in lines]
        logged = [record for record in records if 'fps' in record]
        # The last evaluation, at the run's end, is the one without tracing.
        evaluations = [record['test/seconds'] for record in records if 'test/seconds' in record]
        results[name] = dict(
            steady_state(logged, config.prefill + config.log_every),
            evaluation_seconds=evaluations[-1],
            wall_seconds=wall,
        )
    return results


def steady_state(logged, after):
    """Rates over the log intervals that end after step `after` (each line's `fps` and
    `updates_per_second` cover the steps since the line before it): environment steps and
    updates per second, and the mean acting milliseconds."""
    intervals, steps, seconds, updates = [], 0, 0.0, 0.0
    for previous, line in zip(logged, logged[1:]):
        interval = line['step'] - previous['step']
        if line['step'] <= after or interval <= 0 or line['fps'] <= 0:
            continue  # the final line after the last evaluation covers no steps
        intervals.append(line)
        steps += interval
        seconds += interval / line['fps']
        updates += interval / line['fps'] * line['updates_per_second']
    if not intervals:
        return dict(env_steps_per_second=None, updates_per_second=None, intervals=0)
    acting = {
        key.removeprefix('train/'): statistics.mean(line[key] for line in intervals)
        for key in intervals[-1]
        if key.startswith('train/acting/')
    }
    return dict(
        env_steps_per_second=steps / seconds,
        updates_per_second=updates / seconds,
        intervals=len(intervals),
        acting_ms=acting,
    )


def peak_rss_mib():
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_memory(args):
    """Peak resident memory over `--memory-updates` updates of `--memory-case`.

    The peak after the first tenth of the updates (everything traced and allocated) is the
    baseline; growth is the change from it to the peak at the end.
    """
    _, preset, obs_type = args.memory_case.split('_')
    agent, data = build(preset, obs_type, args)
    interval = max(1, args.memory_updates // 10)
    trace = []
    for update in range(1, args.memory_updates + 1):
        agent.train(data)['model_loss'].numpy()
        if update % interval == 0:
            trace.append((update, peak_rss_mib()))
    baseline, final = trace[0][1], trace[-1][1]
    return dict(
        case=args.memory_case,
        updates=args.memory_updates,
        peak_rss_mib=trace,
        growth_percent=100 * (final - baseline) / baseline,
    )


def main(argv=None):
    """Run the selected benchmarks, print a table and write JSON."""
    parser = argparse.ArgumentParser(
        prog='python -m tools.benchmark', description=__doc__.split('\n\n')[0]
    )
    parser.add_argument(
        '--only', nargs='+', choices=CASES, default=[case for case in CASES if case != 'memory']
    )
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--acting-steps', type=int, default=500)
    parser.add_argument(
        '--cem-train-starts', type=int, default=0, help='cem.train_starts for LSP (0 = all)'
    )
    parser.add_argument(
        '--cem-subset',
        type=int,
        default=64,
        help='start states CEM scores in the small_*_subset cases (the learning check uses 64)',
    )
    parser.add_argument(
        '--end-to-end-steps',
        type=int,
        default=3000,
        help='environment steps small_end_to_end trains after the prefill',
    )
    parser.add_argument(
        '--precision',
        type=int,
        default=32,
        choices=(16, 32),
        help='32: float32 (default, as the reference figures); 16: what precision 16 picks here',
    )
    parser.add_argument(
        '--cem-precision',
        type=int,
        default=32,
        choices=(16, 32),
        help="cem.precision of LSP's CEM scoring: 32 the agent's own, 16 bfloat16 on a CPU",
    )
    parser.add_argument(
        '--threads',
        type=int,
        default=0,
        help='intra-op threads, also of the small_end_to_end runs (0 = one per core; the'
        ' learning check runs two 1-thread runs side by side)',
    )
    parser.add_argument('--memory-updates', type=int, default=1000)
    parser.add_argument(
        '--memory-case',
        default='update_dreamer_features',
        choices=[case for case in CASES if case.startswith('update_')],
        help='the update whose memory is followed by the memory case',
    )
    parser.add_argument(
        '--json',
        type=pathlib.Path,
        default=pathlib.Path('runs/benchmark.json'),
        help='where the figures are saved (default: runs/, which git ignores)',
    )
    parser.add_argument(
        '--profile',
        type=pathlib.Path,
        help='profile one more update of each update case into this directory (TensorBoard)',
    )
    parser.add_argument(
        '--profile-top', type=int, default=12, help='op types listed per profiled update'
    )
    parser.add_argument(
        '--blocks', nargs='*', default=[], help='extra config blocks, e.g. debug for a smoke run'
    )
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    results = dict(
        tensorflow=tf.__version__,
        compute_dtype=compute_dtype(args.precision).name,
        cem_precision=args.cem_precision,
        onednn_opts=os.environ.get('TF_ENABLE_ONEDNN_OPTS'),
        threads=dict(
            intra=tf.config.threading.get_intra_op_parallelism_threads(),
            inter=tf.config.threading.get_inter_op_parallelism_threads(),
        ),
    )
    print(
        f'TensorFlow {results["tensorflow"]}, TF_ENABLE_ONEDNN_OPTS={results["onednn_opts"]}, '
        f'compute dtype {results["compute_dtype"]}, cem.precision {args.cem_precision}, '
        f'threads {results["threads"]}',
        flush=True,
    )
    peak = None
    for case in args.only:
        begin = time.time()
        if case == 'matmul_peak':
            results[case] = bench_matmul(args)
            peak = results[case]['gflops']
            print(f'matmul peak (float32): {peak:.1f} GFLOP/s', flush=True)
        elif case.startswith(('update_', 'small_update_')):
            result = results[case] = bench_update_case(case, args)
            share = f' = {100 * result["gflops"] / peak:.0f}% of peak' if peak else ''
            print(
                f'{case}: {format_stats(result["seconds"])} per update, '
                f'{result["flops"] / 1e9:.1f} GFLOP, '
                f'{result["gflops"]:.1f} GFLOP/s{share}',
                flush=True,
            )
            for row in result.get('profile', []):
                print(f'  {row["op"]:<40} {row["seconds"]:7.3f} s  {100 * row["share"]:4.1f}%')
        elif case in ('cem', 'small_cem'):
            results[case] = bench_cem(args, small=case == 'small_cem')
            for name, result in results[case].items():
                print(
                    f'{case} ({name}, {result["starts"]} starts): '
                    f'{format_stats(result["seconds"], "ms", 1e3)}'
                    f', {result["flops"] / 1e9:.2f} GFLOP, {result["gflops"]:.1f} GFLOP/s',
                    flush=True,
                )
        elif case == 'acting':
            results[case] = bench_acting(args)
            for preset, result in results[case].items():
                timings = ', '.join(f'{k} {v:.1f}' for k, v in result['timings_ms'].items())
                print(
                    f'acting {preset}: {result["steps_per_second_with_env"]:.1f} steps/s with env,'
                    f' {result["steps_per_second_agent_only"]:.1f} steps/s agent only ({timings})',
                    flush=True,
                )
        elif case == 'small_end_to_end':
            results[case] = bench_end_to_end(args)
            for name, result in results[case].items():
                rates = (
                    f'{result["env_steps_per_second"]:.1f} env steps/s, '
                    f'{result["updates_per_second"]:.2f} updates/s'
                    if result['intervals']
                    else 'too short for a steady-state interval'
                )
                acting = ', '.join(f'{k} {v:.1f}' for k, v in result.get('acting_ms', {}).items())
                print(
                    f'small_end_to_end {name}: {rates} ({acting}); an evaluation '
                    f'{result["evaluation_seconds"]:.1f} s; wall {result["wall_seconds"]:.0f} s',
                    flush=True,
                )
        elif case == 'memory':
            result = results[case] = bench_memory(args)
            trace = ', '.join(f'{update}: {rss:.0f}' for update, rss in result['peak_rss_mib'])
            print(
                f'memory over {result["updates"]} updates of {result["case"]}: peak RSS MiB '
                f'({trace}), growth {result["growth_percent"]:+.1f}% after update '
                f'{result["peak_rss_mib"][0][0]}',
                flush=True,
            )
        results.setdefault('wall_seconds', {})[case] = time.time() - begin
    results['peak_rss_mib'] = peak_rss_mib()
    print(f'peak resident memory: {results["peak_rss_mib"]:.0f} MiB')
    atomic_write_text(args.json, json.dumps(results, indent=2))
    print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
