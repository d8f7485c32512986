"""The evidence suite at this machine's scale (results/PLAN.md): claims C1 to C5 on cartpole.

Every run uses the learning check's regime (batch 8 at 100k steps, unless `--regime` or
`--steps` say otherwise) and root (`runs/learning_check/<regime>`), so the check's Dreamer and LSP
seeds are C1's arms and C4's sources, and one command resumes everything. Pick a claim's runs
with `--tasks` and `--methods` (a transfer target brings its source and relabeling along):

    python scripts/experiments/evidence_suite.py --dry-run
    # C1 (and C2 with no_mi, C3 with lsp_no_noise, the horizon confound with dreamer_h10)
    python scripts/experiments/evidence_suite.py --tasks dmc_cartpole_balance \\
        --methods lsp dreamer random_skills randskills_inp --parallel 2
    # C4: the balance runs' networks and relabeled episodes, then cartpole reach
    python scripts/experiments/evidence_suite.py --tasks dmc_cartpole_reach --parallel 2
    # C5: the balance runs' networks, then the sparse far goal
    python scripts/experiments/evidence_suite.py --tasks dmc_cartpole_reach_sparse \\
        --seeds 0 1 --parallel 2

Each claim's verdict is `tools.claims` over the committed copies of its runs; the protocols in
`results/c1` ... `results/c5` give the commands in full.

Single-task arms on cartpole balance (`learning_check` block): the presets `lsp`, `dreamer`,
`random_skills`, `randskills_inp` and `no_mi`, and two variants: `lsp_no_noise` (no noise on the
skill predictor's input, A.7 and Fig. 10) and `dreamer_h10` (Dreamer imagining 10 steps, as the
skill presets do). Methods that run CEM score it on 64 start states, as the LSP check does.
C4 targets (`small_reach` block): `lsp` and `lsp_fixed_policy` from the LSP sources, `dreamer`
from the Dreamer sources, each seeded with its source's episodes relabeled to cartpole reach.
C5 targets (`small_reach_sparse` block): `lsp_fixed_policy` and `dreamer` from their sources'
networks, collecting their own prefill (K = 30, H = 120 as in A.2).

--smoke runs the C4 chain of Dreamer, seed 0, at a tiny budget.
"""

import sys
from pathlib import Path

# Run by path, which puts scripts/experiments/ on sys.path but not the root that holds tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.experiments import learning_check  # noqa: E402
from tools import sweep  # noqa: E402

SOURCE_TASK = learning_check.TASK
TARGET_TASK = 'dmc_cartpole_reach'
SPARSE_TASK = 'dmc_cartpole_reach_sparse'
# Single-task arm -> (method preset, the variant's flags).
SINGLE_TASK = {
    'lsp': ('lsp', ()),
    'dreamer': ('dreamer', ()),
    'random_skills': ('random_skills', ()),
    'randskills_inp': ('randskills_inp', ()),
    'no_mi': ('no_mi', ()),
    'lsp_no_noise': ('lsp', ('--skills.predictor_noise', '0')),
    'dreamer_h10': ('dreamer', ('--horizon', '10')),
}
# Target method -> the single-task arm it starts from.
TARGET_SOURCES = {'lsp': 'lsp', 'lsp_fixed_policy': 'lsp', 'dreamer': 'dreamer'}
SPARSE_SOURCES = {'lsp_fixed_policy': 'lsp', 'dreamer': 'dreamer'}


def grid(root, regime='batch8', steps=None):
    """Every run of the suite: single-task arms first, then relabelings and transfer targets."""
    sources = {
        (label, seed): sweep.train_run(
            root,
            SOURCE_TASK,
            preset,
            seed,
            'learning_check',
            args=learning_check.run_args(preset, regime, steps) + variant,
            label=label,
        )
        for label, (preset, variant) in SINGLE_TASK.items()
        for seed in learning_check.SEEDS
    }
    runs = list(sources.values())
    relabeled = {
        (label, seed): sweep.relabel_run(root, sources[label, seed], TARGET_TASK)
        for label in dict.fromkeys(TARGET_SOURCES.values())
        for seed in learning_check.SEEDS
    }
    runs += relabeled.values()
    runs += [
        sweep.transfer_run(
            root,
            TARGET_TASK,
            method,
            seed,
            'small_reach',
            sources[label, seed],
            relabeled[label, seed],
            learning_check.run_args(method, regime),
        )
        for method, label in TARGET_SOURCES.items()
        for seed in learning_check.SEEDS
    ]
    runs += [
        sweep.transfer_run(
            root,
            SPARSE_TASK,
            method,
            seed,
            'small_reach_sparse',
            sources[label, seed],
            args=learning_check.run_args(method, regime),
        )
        for method, label in SPARSE_SOURCES.items()
        for seed in learning_check.SEEDS
    ]
    return runs


def smoke_keep(run):
    """The C4 target --smoke keeps (its source and relabeling come with it): Dreamer's, the
    cheapest chain; fig5_transfer's smoke runs an LSP transfer."""
    return (
        run.task == TARGET_TASK
        and run.kind == 'train'
        and run.method == 'dreamer'
        and run.seed == 0
    )


if __name__ == '__main__':
    regime, steps, default_root = learning_check.parse_regime(sys.argv[1:])
    sys.exit(
        sweep.main(
            'evidence_suite',
            lambda root: grid(root, regime, steps),
            smoke_keep,
            description=__doc__,
            default_root=default_root,
            parents=[learning_check.regime_flags()],
        )
    )
