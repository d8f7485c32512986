"""The learning check: cartpole balance with features, three seeds, a pass rate.

Each seed trains with the `learning_check` block and passes when one of its evaluations
exceeds 800 (the random prefill policy scores about 300, the constant saturated action about
136). The check passes only when every seed passes. It prints, per seed, the best and final
evaluation returns, the health metrics of its last log interval (action entropy, imagined
value, actor gradient norm) next to the largest imagined value of the run, and its wall time
over all its starts (runs of code that did not log it show none), and writes them to
``<root>/summary.json``.

    python scripts/experiments/learning_check.py --methods dreamer --parallel 2
    python scripts/experiments/learning_check.py --methods lsp --parallel 2
    python scripts/experiments/learning_check.py --regime batch50 --methods dreamer --parallel 2

The same command resumes interrupted seeds and, once all are finished, prints the summary
again; with `--report-only` it trains nothing and reports the runs' files under `--root` (the
committed copies in results/learning_check/<regime>/, checked against the command).
`--regime` picks the batch: `batch8` (the `learning_check` block) or `batch50` (the paper's
batch, otherwise the same); runs go to `runs/learning_check/<regime>/` (with `-smoke`
or `-debug` for those sizes) unless `--root` says otherwise. `--steps N` replaces the block's
100,000 steps with the same logdirs: a finished run resumes exactly where it stopped and
continues to a longer N (how the regime study extended its 36k runs to 100k,
results/learning_check/PROTOCOL.md; `--steps 36000` reports the study's 36k arms). LSP scores CEM
proposals on 64 of the batch's start states (`cem.train_starts`, the documented deviation for
slow machines).
"""

import argparse
import json
import sys
from pathlib import Path

# Run by path, which puts scripts/experiments/ on sys.path but not the root that holds tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dreamer_lsp.rundir import RunDir, atomic_write_text  # noqa: E402
from tools import scores, sweep  # noqa: E402

TASK = 'dmc_cartpole_balance'
METHODS = ('dreamer', 'lsp')
SEEDS = (0, 1, 2)
# Presets that run CEM score it on a subset of the batch's start states (docs/performance.md).
CEM_PRESETS = ('lsp', 'no_mi', 'lsp_fixed_policy')
CEM_ARGS = ('--cem.train_starts', '64')
REGIME_ARGS = {'batch8': (), 'batch50': ('--batch_size', '50')}
PASS_RETURN = 800.0
HEALTH = ('train/action_ent', 'train/imag_value', 'train/actor_grad_norm')


def run_args(preset, regime='batch8', steps=None):
    """A run's flags in a regime: CEM's start-state subset, the batch, and another budget.

    steps: a budget other than the block's 100,000 (the same runs, resumed to a longer one),
    or None.
    """
    cem = CEM_ARGS if preset in CEM_PRESETS else ()
    budget = ('--steps', str(steps)) if steps else ()
    return cem + REGIME_ARGS[regime] + budget


def grid(root, regime='batch8', steps=None):
    """Every run of the check in a regime: each method on cartpole balance, three seeds."""
    return [
        sweep.train_run(
            root, TASK, method, seed, 'learning_check', args=run_args(method, regime, steps)
        )
        for method in METHODS
        for seed in SEEDS
    ]


def positive_steps(text):
    """`--steps` as a positive int."""
    steps = int(text)
    if steps <= 0:
        raise argparse.ArgumentTypeError(f'must be a positive number of steps, got {text}')
    return steps


def regime_flags():
    """The `--regime` and `--steps` flags, as a parser the sweep launcher takes as a parent."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = parser.add_argument_group('regime')
    group.add_argument(
        '--regime',
        choices=REGIME_ARGS,
        default='batch8',
        help="batch8 (the learning_check block) or batch50 (the paper's batch); default batch8",
    )
    group.add_argument(
        '--steps',
        type=positive_steps,
        help="train to N environment steps instead of the block's 100,000 (resumes the runs)",
    )
    return parser


def parse_regime(argv):
    """The regime, the budget (None: the block's) and the regime's default sweep directory."""
    args, _ = regime_flags().parse_known_args(argv)
    return args.regime, args.steps, f'runs/learning_check/{args.regime}'


def smoke_keep(run):
    """The run --smoke keeps."""
    return run.method == 'dreamer' and run.seed == 0


def seed_result(logdir):
    """Best and final evaluation, pass, the health metrics and the wall time of one finished
    run."""
    lines = scores.read_metrics(RunDir(logdir).metrics)
    steps, returns = scores.metric_series(lines, 'test/return')
    evaluations = [(int(step), float(value)) for step, value in zip(steps, returns)]
    training = [line for line in lines if 'train/imag_value' in line]
    best = max(value for _, value in evaluations)
    result = dict(
        evaluations=evaluations,
        best_return=best,
        final_return=evaluations[-1][1],
        passed=best > PASS_RETURN,
        max_imag_value=max((line['train/imag_value'] for line in training), default=None),
        wall_seconds=next(
            (line['wall_seconds'] for line in reversed(lines) if 'wall_seconds' in line), None
        ),
    )
    result.update({key: training[-1][key] for key in HEALTH if training})
    return result


def report(runs, root):
    """Print the per-seed table and pass rate; exit code 0 when all pass.

    summary.json keeps one entry per method, written only when every seed of the method was
    selected (a `--seeds` subset is printed, not recorded as the check's result).
    """
    path = Path(root) / 'summary.json'
    summary, code = json.loads(path.read_text()) if path.is_file() else {}, 0
    for method in dict.fromkeys(run.method for run in runs):
        seeds = {run.seed: seed_result(run.logdir) for run in runs if run.method == method}
        passed = sum(result['passed'] for result in seeds.values())
        if sorted(seeds) == sorted(SEEDS):
            summary[method] = dict(pass_rate=passed / len(seeds), seeds=seeds)
        else:
            print(f'{method}: seeds {", ".join(map(str, seeds))} only, not written to {path}')
        print(f'{method}: {passed}/{len(seeds)} seeds pass (best evaluation > {PASS_RETURN:.0f})')
        print(
            '  seed   best  final  action_ent  imag_value  max imag_value  actor_grad_norm  hours'
        )
        for seed, result in seeds.items():
            wall = result['wall_seconds']
            hours = '      -' if wall is None else f'{wall / 3600:7.2f}'
            print(
                f'  {seed:>4} {result["best_return"]:6.0f} {result["final_return"]:6.0f} '
                f'{result.get("train/action_ent", float("nan")):11.2f} '
                f'{result.get("train/imag_value", float("nan")):11.1f} '
                f'{result["max_imag_value"] or float("nan"):15.1f} '
                f'{result.get("train/actor_grad_norm", float("nan")):16.3f}'
                + hours
                + ('' if result['passed'] else '  FAIL')
            )
        code = code or int(passed < len(seeds))
    verdict = f'learning check: {"PASS" if code == 0 else "FAIL"}'
    if summary:
        atomic_write_text(path, json.dumps(summary, indent=2))
        verdict += f'; summary in {path}'
    print(verdict)
    return code


if __name__ == '__main__':
    regime, steps, default_root = parse_regime(sys.argv[1:])
    sys.exit(
        sweep.main(
            'learning_check',
            lambda root: grid(root, regime, steps),
            smoke_keep,
            description=__doc__,
            report=report,
            default_root=default_root,
            parents=[regime_flags()],
        )
    )
