"""Fig. 4 (LSP §4.2): single-task learning curves, 1M environment steps, three seeds.

Eight tasks with proprioceptive features and three with pixels; LSP against Dreamer, HIRO,
Random Skills and RandSkillsInp. HIRO has no pixel runs: the paper has no HIRO curves for the
image-based tasks (§4.2, "it cannot scale directly to work with image based observations").

    python scripts/experiments/fig4_single_tasks.py --dry-run
    python scripts/experiments/fig4_single_tasks.py --parallel 2 --gpus 0,1
    python -m tools.plot curves --root runs/fig4 --out figures/fig4

--smoke trains LSP on quadruped walk (features), seed 0, at a tiny budget.
"""

import sys
from pathlib import Path

# Run by path, which puts scripts/experiments/ on sys.path but not the root that holds tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools import sweep  # noqa: E402

FEATURE_TASKS = (
    'dmc_quadruped_walk',
    'dmc_quadruped_run',
    'dmc_quadruped_getup_walk',
    'dmc_quadruped_reach',
    'dmc_walker_walk',
    'dmc_walker_run',
    'dmc_cheetah_run',
    'dmc_hopper_hop',
)
PIXEL_TASKS = ('dmc_cheetah_run', 'dmc_quadruped_run', 'dmc_walker_run')
METHODS = ('lsp', 'dreamer', 'hiro', 'random_skills', 'randskills_inp')
PIXEL_METHODS = tuple(method for method in METHODS if method != 'hiro')
SEEDS = (0, 1, 2)


def grid(root):
    """Every run of Fig. 4."""
    runs = []
    for obs, tasks, methods in (
        ('dmc_proprio', FEATURE_TASKS, METHODS),
        ('dmc_vision', PIXEL_TASKS, PIXEL_METHODS),
    ):
        for task in tasks:
            for method in methods:
                for seed in SEEDS:
                    runs.append(sweep.train_run(root, task, method, seed, 'fig4', obs))
    return runs


def smoke_keep(run):
    """The run --smoke keeps."""
    return (
        run.blocks[0] == 'dmc_proprio'
        and run.task == FEATURE_TASKS[0]
        and run.method == 'lsp'
        and run.seed == 0
    )


if __name__ == '__main__':
    sys.exit(sweep.main('fig4', grid, smoke_keep, description=__doc__))
