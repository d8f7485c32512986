"""Which task and budget make `make run` visibly learn (issue 13; results/quickstart/PROTOCOL.md).

Dreamer with the `quickstart` block (features, batch 8, 15,000 steps, an evaluation every
2,000) on each candidate task, one thread per run. A seed *rises at* an evaluation step B when
that evaluation beats the first return a user sees, the larger of the random prefill's mean
episode return and the first evaluation (the untrained actor), by at least
max(100, 0.3 x that baseline). The report lists, per task, every seed's numbers and the budgets
at which every seed rises, and writes ``<root>/summary.json``, which keeps the seeds of
earlier stages.

    python scripts/experiments/quickstart_screen.py --seeds 0 --parallel 2     # stage 1
    python scripts/experiments/quickstart_screen.py --tasks dmc_walker_stand --seeds 1 2 \\
        --parallel 2                                                           # stage 2

The same command resumes interrupted runs and, once all are finished, prints the report again.
"""

import json
import sys
from pathlib import Path

# Run by path, which puts scripts/experiments/ on sys.path but not the root that holds tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dreamer_lsp.rundir import RunDir, atomic_write_text  # noqa: E402
from tools import scores, sweep  # noqa: E402

CANDIDATES = ('dmc_walker_stand', 'dmc_walker_walk', 'dmc_cheetah_run', 'dmc_reacher_easy')
SEEDS = (0, 1, 2)
MIN_RISE = 100.0
RELATIVE_RISE = 0.3


def grid(root):
    """Dreamer with the quickstart block on every candidate, three seeds, one thread each."""
    return [
        sweep.train_run(root, task, 'dreamer', seed, 'quickstart', args=('--threads', '1'))
        for task in CANDIDATES
        for seed in SEEDS
    ]


def smoke_keep(run):
    """The run --smoke keeps."""
    return run.task == CANDIDATES[0] and run.seed == 0


def seed_result(logdir):
    """One run's prefill return, evaluations, baseline and the evaluation steps it rises at."""
    records = scores.read_metrics(RunDir(logdir).metrics)
    eval_steps, eval_returns = scores.metric_series(records, 'test/return')
    episode_steps, episode_returns = scores.metric_series(records, 'train/return')
    # The first evaluation comes when the prefill ends; the episodes up to it are random.
    prefill = episode_returns[episode_steps <= eval_steps[0]]
    prefill_return = float(prefill.mean()) if len(prefill) else None  # no episode ended yet
    first_return = float(eval_returns[0])
    baseline = first_return if prefill_return is None else max(first_return, prefill_return)
    needed = baseline + max(MIN_RISE, RELATIVE_RISE * baseline)
    evaluations = [(int(step), float(value)) for step, value in zip(eval_steps, eval_returns)]
    return dict(
        prefill_return=prefill_return,
        first_evaluation=first_return,
        baseline=baseline,
        needed=needed,
        evaluations=evaluations,
        rises_at=[step for step, value in evaluations[1:] if value >= needed],
    )


def report(runs, root):
    """Print each task's seeds and the budgets at which all of them rise; write summary.json.

    summary.json accumulates seeds over the protocol's stages (seed 0 first, then seeds 1 and 2
    of the tasks that rose): a task's `every_seed_rises_at` is decided only once all three
    seeds are recorded, and is null before.
    """
    path = Path(root) / 'summary.json'
    summary = json.loads(path.read_text()) if path.is_file() else {}
    for task in dict.fromkeys(run.task for run in runs):
        seeds = {
            int(seed): result for seed, result in summary.get(task, {}).get('seeds', {}).items()
        }
        seeds.update({run.seed: seed_result(run.logdir) for run in runs if run.task == task})
        seeds = dict(sorted(seeds.items()))
        missing = [seed for seed in SEEDS if seed not in seeds]
        budgets = None
        if not missing:
            budgets = sorted(set.intersection(*(set(seed['rises_at']) for seed in seeds.values())))
        summary[task] = dict(seeds=seeds, every_seed_rises_at=budgets)
        if missing:
            print(f'{task}: seeds {", ".join(map(str, missing))} not run yet')
        else:
            print(f'{task}: every seed rises at {budgets or "no evaluation"}')
        print('  seed  prefill  first  needed  evaluations')
        for seed, result in seeds.items():
            values = ' '.join(
                f'{value:.0f}@{step / 1000:g}k' for step, value in result['evaluations']
            )
            prefill = result['prefill_return']
            print(
                f'  {seed:>4} {"-" if prefill is None else f"{prefill:.0f}":>8} '
                f'{result["first_evaluation"]:6.0f} '
                f'{result["needed"]:7.0f}  {values}'
            )
    atomic_write_text(path, json.dumps(summary, indent=2))
    print(f'summary in {path}')
    return 0


if __name__ == '__main__':
    sys.exit(sweep.main('quickstart_screen', grid, smoke_keep, description=__doc__, report=report))
