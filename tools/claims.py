"""The evidence suite's metrics and verdict rules (results/PLAN.md), fixed before any result.

    python -m tools.claims compare --root runs/learning_check/batch8 \\
        --task dmc_cartpole_balance --methods lsp dreamer random_skills randskills_inp \\
        --random 300 --out results/c1/summary.json
    python -m tools.claims motion --root results/c3 --out results/c3/summary.json
    python -m tools.claims explore \\
        --run runs/learning_check/batch8/dmc_cartpole_reach_sparse/dreamer/0 \\
        --json results/c5/exploration_dreamer_0.json
    python -m tools.claims explore-compare --root results/c5 --out results/c5/summary.json

Runs are laid out `<root>/<task>/<method>/<seed>/`. Every command but `explore` scores exactly
the seeds it is given (`--seeds`): while any of them lacks its finished run (or its motion or
exploration report), it names what is missing and gives no verdict.

`compare` prints each seed's number, mean ± std over seeds (ddof 0, as every table of this
project) and, for every ordered pair of methods, whether the first *beats* the second (mean
difference larger than the larger of the two stds) and whether it is *at least as good* (mean no
lower than the other's minus that std). It also gives each seed's first evaluation, a diagnostic
outside every verdict: a transfer target's is taken before its first update, so it shows what
the source brings (C4). A method *learned* when it beats the random policy's return (`--random`,
taken with std 0). `--metric final` (default) is the mean evaluation return over the last 20% of
the run's steps; `--metric whole` the mean over all its evaluations (speed of adaptation, C4).
Seeds 0, 1 and 2 by default.

`motion` (C3) reads the motion reports `<root>/motion_<arm>_<seed>.json` written by
`python -m tools.skill_rollouts --json` for the arms `lsp` (`--seeds`) and `lsp_no_noise`
(`--no-noise-seeds`), both 0, 1 and 2 by default. C3a passes when the motion ratio exceeds 1.5
on every `lsp` seed, C3b when `lsp`'s ratio beats `lsp_no_noise`'s; `--no-noise-seeds` with no
seed reports C3b as not run (null in the JSON).

`drift --episodes DIR` prints the mean return and mean cart position of the last 10 episodes
(`--last`) of a directory of cartpole episodes: on a source's episodes relabeled for a transfer
target, what the target starts from (C4's diagnosis); `--json` also writes these figures, which
outlive the episodes.

`explore` reads a cartpole run's stored training episodes and prints the farthest cart position
reached with the pole upright (cos θ ≥ 0.995), over its episodes, and how many episodes earned
any reward; with `--json` it refuses an unfinished run and writes each episode's two figures, the
run's exploration report. Episodes are not committed and go with their machine, so C5's
`explore-compare` reads these reports, `<root>/exploration_<method>_<seed>.json`, for seeds 0 and
1 of `lsp_fixed_policy` and `dreamer` (by default): a run's exploration is its farthest position
averaged over its episodes, and it reaches the goal when any episode earned a reward. C5 passes
when the first method reaches the goal on more seeds than the second and its exploration beats
the second's.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from dreamer_lsp.replay import episode_files
from dreamer_lsp.rundir import RunDir, atomic_write_text
from tools import scores

FINAL_FRACTION = 0.2
UPRIGHT_COSINE = 0.995
METRICS = ('final', 'whole')
SEEDS = ('0', '1', '2')
MOTION_RATIO_THRESHOLD = 1.5
MOTION_ARMS = ('lsp', 'lsp_no_noise')
EXPLORATION_METHODS = ('lsp_fixed_policy', 'dreamer')
EXPLORATION_SEEDS = ('0', '1')


def evaluations(run):
    """Steps and returns [E] of a finished run's evaluations, and its budget (`steps` of its
    config.yaml). ScoreError for a run without evaluations or one whose final evaluation, at
    the end of its budget, is not logged yet: an unfinished run is never scored early."""
    steps, values = scores.metric_series(scores.read_metrics(RunDir(run).metrics), 'test/return')
    if not len(values):
        raise scores.ScoreError(f'{run} has no evaluation (test/return) yet')
    budget = scores.read_config(RunDir(run).config).get('steps')
    if not isinstance(budget, (int, float)) or budget <= 0:
        raise scores.ScoreError(f'{run}/config.yaml has no positive `steps`')
    if steps[-1] < budget:
        raise scores.ScoreError(
            f'{run} is unfinished: its last evaluation is at step {steps[-1]:.0f} of '
            f'{budget:.0f}; finish it with its command first'
        )
    return steps, values, budget


def final_return(run, fraction=FINAL_FRACTION):
    """Mean evaluation return over the last `fraction` of the run's step budget."""
    steps, values, budget = evaluations(run)
    return float(values[steps >= (1 - fraction) * budget].mean())


def whole_return(run):
    """Mean of all of a run's evaluation returns."""
    return float(evaluations(run)[1].mean())


def summary(values):
    """Mean, std (ddof 0) and count of per-seed values."""
    values = np.asarray(values, float)
    return dict(mean=float(values.mean()), std=float(values.std()), seeds=len(values))


def beats(a, b):
    """Whether group `a` beats `b`: its mean is higher by more than the larger std."""
    return a['mean'] - b['mean'] > max(a['std'], b['std'])


def at_least_as_good(a, b):
    """Whether `a`'s mean is no lower than `b`'s minus the larger std."""
    return a['mean'] >= b['mean'] - max(a['std'], b['std'])


def seed_list(seeds):
    """`seed 2` or `seeds 0, 1`, for messages."""
    return f'seed{"s" if len(seeds) > 1 else ""} {", ".join(seeds)}'


def seed_runs(root, task, methods, seeds):
    """The run directories `{method: {seed: path}}` of every method and seed on `task` under
    `root`; one ScoreError naming every method and seed that has no run (no metrics.jsonl)."""
    base = Path(root, task)
    runs = {method: {str(seed): base / method / str(seed) for seed in seeds} for method in methods}
    missing = []
    for method, by_seed in runs.items():
        absent = [seed for seed, run in by_seed.items() if not RunDir(run).metrics.is_file()]
        if absent:
            missing.append(f'{method} {seed_list(absent)}')
    if missing:
        raise scores.ScoreError(f'missing runs under {base}: {"; ".join(missing)}')
    return runs


def compare(root, task, methods, metric='final', random_return=None, seeds=SEEDS):
    """Per-seed values, summaries and pairwise verdicts of `methods` on `task` under `root`,
    over exactly `seeds`: every method needs a finished run of each."""
    score = final_return if metric == 'final' else whole_return
    groups = {}
    for method, by_seed in seed_runs(root, task, methods, seeds).items():
        per_seed = {seed: score(run) for seed, run in by_seed.items()}
        first = {seed: float(evaluations(run)[1][0]) for seed, run in by_seed.items()}
        groups[method] = dict(
            per_seed=per_seed, first_evaluation=first, **summary(list(per_seed.values()))
        )
    pairs = {
        f'{a} vs {b}': dict(
            beats=beats(groups[a], groups[b]),
            at_least_as_good=at_least_as_good(groups[a], groups[b]),
        )
        for a, b in itertools.permutations(methods, 2)
    }
    result = dict(task=task, metric=metric, groups=groups, pairs=pairs)
    if random_return is not None:
        chance = dict(mean=float(random_return), std=0.0)
        result['random_return'] = float(random_return)
        result['learned'] = {method: beats(groups[method], chance) for method in methods}
    return result


def collect(root, task, methods, out, seeds=SEEDS):
    """Copy the committed files of each finished run (`metrics.jsonl`, `config.yaml`) from
    `<root>/<task>/<method>/<seed>/` to the same place under `out`; returns the copies' paths.

    A claim's verdict is computed over these copies, so it reruns from the repository alone, and
    so the Dreamer arm can be the learning check's committed runs. Nothing is copied while any
    run is missing or unfinished.
    """
    runs = seed_runs(root, task, methods, seeds)
    for by_seed in runs.values():
        for run in by_seed.values():
            evaluations(run)  # refuses an unfinished run
    copies = []
    for method, by_seed in runs.items():
        for seed, run in by_seed.items():
            copy = RunDir(Path(out, task, method, seed))
            atomic_write_text(copy.metrics, RunDir(run).metrics.read_text())
            atomic_write_text(copy.config, RunDir(run).config.read_text())
            copies.append(copy.path)
    return copies


def report_paths(root, kind, seeds_of):
    """The reports `{arm: {seed: <root>/<kind>_<arm>_<seed>.json}}` of every arm and its seeds
    in `seeds_of` ({arm: seeds}), as the protocols' commands write them; one ScoreError naming
    every report that does not exist."""
    paths = {
        arm: {str(seed): Path(root, f'{kind}_{arm}_{seed}.json') for seed in seeds}
        for arm, seeds in seeds_of.items()
    }
    missing = [
        str(path) for by_seed in paths.values() for path in by_seed.values() if not path.is_file()
    ]
    if missing:
        raise scores.ScoreError(f'missing {kind} reports: {", ".join(missing)}')
    return paths


def motion_ratio(path):
    """The motion ratio (`ratio`) of a report written by `tools.skill_rollouts --json`."""
    try:
        return float(json.loads(Path(path).read_text())['ratio'])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise scores.ScoreError(f'cannot read the motion ratio of {path}: {error!r}') from None


def compare_motion(root, seeds=SEEDS, no_noise_seeds=SEEDS):
    """C3's verdicts from the motion reports under `root` of `lsp` (`seeds`) and `lsp_no_noise`
    (`no_noise_seeds`): C3a, every `lsp` ratio above MOTION_RATIO_THRESHOLD; C3b, `lsp`'s ratio
    beats `lsp_no_noise`'s, or None (not run) without `no_noise_seeds`."""
    seeds_of = dict(zip(MOTION_ARMS, (seeds, no_noise_seeds)))
    reports = report_paths(root, 'motion', {arm: s for arm, s in seeds_of.items() if s})
    groups = {}
    for arm, by_seed in reports.items():
        per_seed = {seed: motion_ratio(path) for seed, path in by_seed.items()}
        groups[arm] = dict(per_seed=per_seed, **summary(list(per_seed.values())))
    lsp, no_noise = (groups.get(arm) for arm in MOTION_ARMS)
    return dict(
        ratio_threshold=MOTION_RATIO_THRESHOLD,
        groups=groups,
        c3a_skills_differ=all(ratio > MOTION_RATIO_THRESHOLD for ratio in lsp['per_seed'].values()),
        c3b_collapse_without_noise=beats(lsp, no_noise) if no_noise else None,
    )


def upright_excursions(run, upright_cosine=UPRIGHT_COSINE):
    """Per stored training episode: farthest |cart position| with the pole upright, and rewarded.

    Reads `qpos` (slider, hinge) and `reward` of `<run>/train_episodes/*.npz`; an episode that is
    never upright scores 0.
    """
    files = episode_files(RunDir(run).episodes)
    if not files:
        raise scores.ScoreError(f'no training episodes in {RunDir(run).episodes}')
    farthest, rewarded = [], []
    for path in files:
        with np.load(path) as episode:
            cart, angle = episode['qpos'][:, 0], episode['qpos'][:, 1]
            upright = np.cos(angle) >= upright_cosine
            farthest.append(float(np.abs(cart[upright]).max()) if upright.any() else 0.0)
            rewarded.append(bool((episode['reward'] > 0).any()))
    return farthest, rewarded


def cart_drift(episodes, last=10):
    """Mean return and mean cart position (qpos[:, 0]) over the `last` episodes of a directory of
    cartpole episodes, e.g. a source's episodes relabeled with a target reward: what a transfer
    target is seeded with, and whether the source's cart already sits near the target's goal."""
    if last < 1:
        raise scores.ScoreError(f'--last must be at least 1, got {last}')
    files = episode_files(episodes)[-last:]
    if not files:
        raise scores.ScoreError(f'no episodes in {episodes}')
    returns, positions = [], []
    for path in files:
        with np.load(path) as episode:
            returns.append(float(episode['reward'].sum()))
            positions.append(float(episode['qpos'][:, 0].mean()))
    return float(np.mean(returns)), float(np.mean(positions)), len(files)


def exploration_report(run):
    """A finished run's exploration report: each stored episode's farthest upright |x| and
    whether it was rewarded (`upright_excursions`), what C5's verdict reads."""
    evaluations(run)  # refuses an unfinished run, whose episodes are not all stored
    farthest, rewarded = upright_excursions(run)
    return dict(run=str(run), farthest=farthest, rewarded=rewarded)


def read_exploration_report(path):
    """The episodes' farthest upright |x| and rewarded flags of a report from `explore --json`."""
    try:
        report = json.loads(Path(path).read_text())
        farthest = [float(value) for value in report['farthest']]
        rewarded = [bool(value) for value in report['rewarded']]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise scores.ScoreError(f'cannot read the exploration report {path}: {error!r}') from None
    if not farthest or len(farthest) != len(rewarded):
        raise scores.ScoreError(
            f'{path} has {len(farthest)} farthest and {len(rewarded)} '
            'rewarded entries; it needs one of each per episode'
        )
    return farthest, rewarded


def compare_exploration(root, methods=EXPLORATION_METHODS, seeds=EXPLORATION_SEEDS):
    """C5's verdict from the exploration reports under `root` of `methods`, an explorer and its
    baseline, over exactly `seeds`: the explorer passes when it reaches the goal on more seeds
    than the baseline and its exploration beats the baseline's."""
    groups = {}
    for method, by_seed in report_paths(root, 'exploration', {m: seeds for m in methods}).items():
        per_seed, reached_goal = {}, {}
        for seed, path in by_seed.items():
            farthest, rewarded = read_exploration_report(path)
            per_seed[seed], reached_goal[seed] = float(np.mean(farthest)), any(rewarded)
        groups[method] = dict(
            per_seed=per_seed,
            reached_goal=reached_goal,
            seeds_reaching_goal=sum(reached_goal.values()),
            **summary(list(per_seed.values())),
        )
    explorer, baseline = (groups[method] for method in methods)
    more_seeds_reach_goal = explorer['seeds_reaching_goal'] > baseline['seeds_reaching_goal']
    explores_farther = beats(explorer, baseline)
    return dict(
        groups=groups,
        more_seeds_reach_goal=more_seeds_reach_goal,
        explores_farther=explores_farther,
        passed=more_seeds_reach_goal and explores_farther,
    )


def outcome(passed):
    """A verdict as words: passed, failed, or not run (None)."""
    return 'not run' if passed is None else 'passed' if passed else 'failed'


def format_groups(groups, digits):
    """A markdown table: per group, its per-seed values and their mean ± std."""
    lines = ['| method | per seed | mean ± std |', '|---|---|---|']
    for name, group in groups.items():
        per_seed = ', '.join(
            f'{seed}: {value:.{digits}f}' for seed, value in group['per_seed'].items()
        )
        spread = f'{group["mean"]:.{digits}f} ± {group["std"]:.{digits}f}'
        lines.append(f'| {name} | {per_seed} | {spread} |')
    return lines


def format_compare(result):
    """The comparison as markdown: one row per method, then the verdicts."""
    lines = [f'{result["task"]}, {result["metric"]} return', '']
    lines += format_groups(result['groups'], 1)
    lines.append('')
    for method, group in result['groups'].items():
        first = ', '.join(
            f'{seed}: {value:.1f}' for seed, value in group['first_evaluation'].items()
        )
        lines.append(f'{method} first evaluation per seed: {first}')
    lines.append('')
    for pair, verdict in result['pairs'].items():
        lines.append(
            f'{pair}: beats {"yes" if verdict["beats"] else "no"}, '
            f'at least as good {"yes" if verdict["at_least_as_good"] else "no"}'
        )
    for method, learned in result.get('learned', {}).items():
        lines.append(
            f'{method} learned (beats the random return {result["random_return"]:.1f}): '
            f'{"yes" if learned else "no"}'
        )
    return '\n'.join(lines)


def format_motion(result):
    """C3 as markdown: the motion ratio of every seed of both arms, then the two verdicts."""
    lsp, no_noise = MOTION_ARMS
    lines = ['C3: motion ratio (final states of different skills vs repeats of one skill)', '']
    lines += format_groups(result['groups'], 2)
    lines += [
        '',
        f'C3a, the ratio exceeds {result["ratio_threshold"]} on every {lsp} seed: '
        f'{outcome(result["c3a_skills_differ"])}',
        f'C3b, {no_noise} below {lsp} by more than the larger std: '
        f'{outcome(result["c3b_collapse_without_noise"])}',
    ]
    return '\n'.join(lines)


def format_exploration(result):
    """C5 as markdown: every run's exploration, the seeds reaching the goal, then the verdict."""
    explorer, baseline = result['groups']
    lines = ["C5: farthest upright |x|, averaged over a run's episodes", '']
    lines += format_groups(result['groups'], 2)
    lines.append('')
    for method, group in result['groups'].items():
        lines.append(
            f'{method} reaches the goal on {group["seeds_reaching_goal"]} of {group["seeds"]} seeds'
        )
    lines += [
        f'{explorer} reaches the goal on more seeds than {baseline}: '
        f'{"yes" if result["more_seeds_reach_goal"] else "no"}',
        f'{explorer} explores farther ({explorer} beats {baseline}): '
        f'{"yes" if result["explores_farther"] else "no"}',
        f'C5: {outcome(result["passed"])}',
    ]
    return '\n'.join(lines)


def main(argv=None):
    """Command line: `collect`, `compare`, `motion`, `explore` or `explore-compare`; returns the
    exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    comparison = commands.add_parser('compare', help='per-seed returns and pairwise verdicts')
    comparison.add_argument(
        '--root', required=True, help='runs as <root>/<task>/<method>/<seed>, e.g. results/c1'
    )
    comparison.add_argument('--task', required=True, help='e.g. dmc_cartpole_balance')
    comparison.add_argument(
        '--methods', nargs='+', required=True, help='every ordered pair is judged'
    )
    comparison.add_argument(
        '--seeds', nargs='+', default=list(SEEDS), help='each needs a finished run of every method'
    )
    comparison.add_argument(
        '--metric',
        choices=METRICS,
        default='final',
        help='final: mean evaluation over the last 20%% of steps; whole: over the whole run',
    )
    comparison.add_argument('--random', type=float, help="the random policy's return")
    comparison.add_argument('--out', help='write the result as JSON here')
    collection = commands.add_parser(
        'collect', help="copy finished runs' metrics.jsonl and config.yaml into a results tree"
    )
    collection.add_argument('--root', required=True, help='runs as <root>/<task>/<method>/<seed>')
    collection.add_argument('--task', required=True, help='e.g. dmc_cartpole_balance')
    collection.add_argument('--methods', nargs='+', required=True)
    collection.add_argument('--seeds', nargs='+', default=list(SEEDS), help='finished runs only')
    collection.add_argument('--out', required=True, help='the results tree, e.g. results/c1')
    motion = commands.add_parser('motion', help="C3: the skills' motion ratios and verdicts")
    motion.add_argument('--root', required=True, help='the directory of motion_<arm>_<seed>.json')
    motion.add_argument('--seeds', nargs='+', default=list(SEEDS), help='seeds of lsp')
    motion.add_argument(
        '--no-noise-seeds',
        nargs='*',
        default=list(SEEDS),
        help='of lsp_no_noise; none: C3b not run',
    )
    motion.add_argument('--out', help='write the result as JSON here')
    exploration = commands.add_parser('explore', help='upright excursions of a cartpole run')
    exploration.add_argument('--run', required=True, help="a run's logdir, with its episodes")
    exploration.add_argument(
        '--json', help="write a finished run's exploration report here (what C5 reads)"
    )
    drift = commands.add_parser('drift', help='mean return and cart position of episodes')
    drift.add_argument('--episodes', required=True, help='a directory of cartpole episodes')
    drift.add_argument('--last', type=int, default=10, help='only the last N episodes')
    drift.add_argument('--json', help='also write the figures here (episodes are not committed)')
    explorations = commands.add_parser(
        'explore-compare', help='C5: exploration and goal reached per method, and the verdict'
    )
    explorations.add_argument(
        '--root', required=True, help='the directory of exploration_<method>_<seed>.json'
    )
    explorations.add_argument(
        '--methods',
        nargs=2,
        default=list(EXPLORATION_METHODS),
        metavar=('EXPLORER', 'BASELINE'),
    )
    explorations.add_argument('--seeds', nargs='+', default=list(EXPLORATION_SEEDS))
    explorations.add_argument('--out', help='write the result as JSON here')
    args = parser.parse_args(argv)
    try:
        if args.command == 'explore':
            if args.json:
                report = exploration_report(args.run)
                atomic_write_text(args.json, json.dumps(report, indent=1) + '\n')
                farthest, rewarded = report['farthest'], report['rewarded']
            else:
                farthest, rewarded = upright_excursions(args.run)
            print(
                f'{len(farthest)} episodes: farthest upright |x| mean {np.mean(farthest):.2f}, '
                f'max {np.max(farthest):.2f}; rewarded episodes {sum(rewarded)}'
            )
            return 0
        if args.command == 'drift':
            mean_return, mean_position, count = cart_drift(args.episodes, args.last)
            if args.json:
                report = dict(
                    episodes=str(args.episodes),
                    count=count,
                    mean_return=mean_return,
                    mean_cart_position=mean_position,
                )
                atomic_write_text(args.json, json.dumps(report, indent=1) + '\n')
            print(f'{count} episodes: return {mean_return:.1f}, cart position {mean_position:.2f}')
            return 0
        if args.command == 'collect':
            copies = collect(args.root, args.task, args.methods, args.out, args.seeds)
            print(f'copied the metrics and config of {len(copies)} runs to {args.out}')
            return 0
        if args.command == 'compare':
            result = compare(
                args.root, args.task, args.methods, args.metric, args.random, args.seeds
            )
            text = format_compare(result)
        elif args.command == 'motion':
            result = compare_motion(args.root, args.seeds, args.no_noise_seeds)
            text = format_motion(result)
        else:
            result = compare_exploration(args.root, args.methods, args.seeds)
            text = format_exploration(result)
    except scores.ScoreError as error:
        print(f'claims: error: {error}', file=sys.stderr)
        return 2
    print(text)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
