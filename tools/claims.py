"""The evidence suite's metrics and verdict rules (results/PLAN.md), fixed before any result.

    python -m tools.claims compare --root runs/learning_check/batch8 \\
        --task dmc_cartpole_balance --methods lsp dreamer random_skills --random 300 \\
        --out results/c1/summary.json
    python -m tools.claims explore --run runs/c5/dmc_cartpole_reach_sparse/dreamer/0

`compare` reads every seed of each method under `<root>/<task>/<method>/<seed>/` and prints
each seed's number, mean ± std over seeds (ddof 0, as every table of this project) and, for every
ordered pair of methods, whether the first *beats* the second (mean difference larger than the
larger of the two stds) and whether it is *at least as good* (mean no lower than the other's
minus that std). A method *learned* when it beats the random policy's return (`--random`, taken
with std 0). `--metric final` (default) is the mean evaluation return over the last 20% of the
run's steps; `--metric whole` the mean over all its evaluations (speed of adaptation, C4).

`explore` reads a cartpole run's stored training episodes and prints, per episode, the farthest
cart position reached with the pole upright (cos θ ≥ 0.995) and whether the episode earned any
reward (C5).
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


def compare(root, task, methods, metric='final', random_return=None):
    """Per-seed values, summaries and pairwise verdicts of `methods` on `task` under `root`."""
    score = final_return if metric == 'final' else whole_return
    for method in methods:
        if not list(Path(root, task, method).glob('*/metrics.jsonl')):
            raise scores.ScoreError(f'no runs of {method} under {Path(root, task)}')
    runs = scores.find_runs(root, tasks=[task], methods=methods)
    groups = {}
    for method in methods:
        per_seed = {run.seed: score(run.path) for run in runs if run.method == method}
        groups[method] = dict(per_seed=per_seed, **summary(list(per_seed.values())))
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


def format_compare(result):
    """The comparison as markdown: one row per method, then the verdicts."""
    lines = [f'{result["task"]}, {result["metric"]} return', '']
    lines += ['| method | per seed | mean ± std |', '|---|---|---|']
    for method, group in result['groups'].items():
        seeds = ', '.join(f'{seed}: {value:.1f}' for seed, value in group['per_seed'].items())
        lines.append(f'| {method} | {seeds} | {group["mean"]:.1f} ± {group["std"]:.1f} |')
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


def main(argv=None):
    """Command line: `compare` or `explore`; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    comparison = commands.add_parser('compare', help='per-seed returns and pairwise verdicts')
    comparison.add_argument('--root', required=True)
    comparison.add_argument('--task', required=True)
    comparison.add_argument('--methods', nargs='+', required=True)
    comparison.add_argument('--metric', choices=METRICS, default='final')
    comparison.add_argument('--random', type=float, help="the random policy's return")
    comparison.add_argument('--out', help='write the result as JSON here')
    exploration = commands.add_parser('explore', help='upright excursions of a cartpole run')
    exploration.add_argument('--run', required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == 'compare':
            result = compare(args.root, args.task, args.methods, args.metric, args.random)
            print(format_compare(result))
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(args.out, json.dumps(result, indent=1) + '\n')
        else:
            farthest, rewarded = upright_excursions(args.run)
            print(
                f'{len(farthest)} episodes: farthest upright |x| mean {np.mean(farthest):.2f}, '
                f'max {np.max(farthest):.2f}; rewarded episodes {sum(rewarded)}'
            )
    except scores.ScoreError as error:
        print(f'claims: error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
