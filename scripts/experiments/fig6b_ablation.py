"""Fig. 6b (LSP §4.4): the mutual-information ablation on Quadruped GetUp Walk.

LSP, LSP without the MI intrinsic reward (no_MI) and Dreamer, features, 1M steps, three seeds.

    python scripts/experiments/fig6b_ablation.py --dry-run
    python scripts/experiments/fig6b_ablation.py --parallel 3 --gpus 0,1,2
    python -m tools.plot ablation --root runs/fig6b --out figures/fig6b

--smoke trains no_MI, seed 0, at a tiny budget.
"""

import sys
from pathlib import Path

# Run by path, which puts scripts/experiments/ on sys.path but not the root that holds tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools import sweep  # noqa: E402

TASK = 'dmc_quadruped_getup_walk'
METHODS = ('lsp', 'no_mi', 'dreamer')
SEEDS = (0, 1, 2)


def grid(root):
    """Every run of Fig. 6b."""
    return [
        sweep.train_run(root, TASK, method, seed, 'fig6b') for method in METHODS for seed in SEEDS
    ]


def smoke_keep(run):
    """The run --smoke keeps."""
    return run.method == 'no_mi' and run.seed == 0


if __name__ == '__main__':
    sys.exit(sweep.main('fig6b', grid, smoke_keep, description=__doc__))
