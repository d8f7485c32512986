"""Fig. 8 and 9 (LSP A.2): transfer from random obstacles to the sparse-reward cove.

Source runs walk forward among random obstacles for 500k steps (``cove_source``); target runs
on the cove load the source's networks and hold skills for K = 30 steps with a plan horizon
H = 120 (``cove_target``). LSP with a fixed low-level policy (from the LSP source) against
Dreamer (from the Dreamer source), three seeds, features.

    python scripts/experiments/cove_transfer.py --dry-run
    python scripts/experiments/cove_transfer.py --parallel 2 --gpus 0,1
    python -m tools.plot transfer --root runs/cove --tasks dmc_quadruped_cove --out figures/fig9
    python -m tools.plot trajectories --run runs/cove/dmc_quadruped_cove/dreamer/0 \\
        runs/cove/dmc_quadruped_cove/lsp_fixed_policy/0 --steps 40000 --out figures/fig8

--smoke runs the LSP source and the fixed-policy target, seed 0, at a tiny budget.
"""

import sys
from pathlib import Path

# Run by path, which puts scripts/experiments/ on sys.path but not the root that holds tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools import sweep  # noqa: E402

SOURCE_TASK = 'dmc_quadruped_obstacles'
TARGET_TASK = 'dmc_quadruped_cove'
# Target method -> the method of the source it starts from.
TARGET_SOURCES = {'lsp_fixed_policy': 'lsp', 'dreamer': 'dreamer'}
SEEDS = (0, 1, 2)


def grid(root):
    """Every run of the cove experiment, sources first."""
    sources = {
        (method, seed): sweep.train_run(root, SOURCE_TASK, method, seed, 'cove_source')
        for method in dict.fromkeys(TARGET_SOURCES.values())
        for seed in SEEDS
    }
    targets = [
        sweep.transfer_run(
            root, TARGET_TASK, method, seed, 'cove_target', sources[source_method, seed]
        )
        for method, source_method in TARGET_SOURCES.items()
        for seed in SEEDS
    ]
    return [*sources.values(), *targets]


def smoke_keep(run):
    """The target --smoke keeps (its source comes with it)."""
    return run.task == TARGET_TASK and run.method == 'lsp_fixed_policy' and run.seed == 0


if __name__ == '__main__':
    sys.exit(sweep.main('cove', grid, smoke_keep, description=__doc__))
