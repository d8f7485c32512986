"""Fig. 5 (LSP §4.3): transfer between quadruped tasks, three seeds, features.

GetUp-Walk -> Reach: source runs on getup_walk, then target runs on getup_reach (random,
sometimes upside-down start) that load the source's networks (``--transfer.checkpoint``).
Walk -> Reach: source runs on walk; their replay is relabeled with the reach reward
(scripts/relabel_rewards.py); target runs on reach (upright start) load the source's networks
and start from the relabeled replay (``--transfer.replay``) instead of a random prefill.

Targets are LSP, LSP with a fixed low-level policy, Dreamer and HIRO; both LSP targets start
from the LSP source of the same seed, Dreamer's from the Dreamer source, HIRO's from the HIRO
source. Relabeled are the replays of every source (the paper names Dreamer's and LSP's; HIRO's
target is relabeled alike so that the targets differ only in the method).

    python scripts/experiments/fig5_transfer.py --dry-run
    python scripts/experiments/fig5_transfer.py --parallel 2 --gpus 0,1
    python -m tools.plot transfer --root runs/fig5 \\
        --tasks dmc_quadruped_getup_reach dmc_quadruped_reach --out figures/fig5

--smoke runs the Walk -> Reach chain of LSP with a fixed policy, seed 0: the LSP source, the
relabeling and the target, at a tiny budget.
"""

import sys
from pathlib import Path

# Run by path, which puts scripts/experiments/ on sys.path but not the root that holds tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools import sweep  # noqa: E402

# (source task, target task, relabel the source's replay for the target)
PAIRS = (
    ('dmc_quadruped_getup_walk', 'dmc_quadruped_getup_reach', False),
    ('dmc_quadruped_walk', 'dmc_quadruped_reach', True),
)
SOURCE_METHODS = ('lsp', 'dreamer', 'hiro')
# Target method -> the method of the source it starts from.
TARGET_SOURCES = {'lsp': 'lsp', 'lsp_fixed_policy': 'lsp', 'dreamer': 'dreamer', 'hiro': 'hiro'}
SEEDS = (0, 1, 2)


def grid(root):
    """Every run of Fig. 5, each source (and relabeling) before the targets using it."""
    runs = []
    for source_task, target_task, relabel in PAIRS:
        sources = {
            (method, seed): sweep.train_run(root, source_task, method, seed, 'fig5_source')
            for method in SOURCE_METHODS
            for seed in SEEDS
        }
        runs.extend(sources.values())
        relabeled = {}
        if relabel:
            relabeled = {
                key: sweep.relabel_run(root, source, target_task) for key, source in sources.items()
            }
            runs.extend(relabeled.values())
        for method, source_method in TARGET_SOURCES.items():
            for seed in SEEDS:
                source = sources[source_method, seed]
                replay = relabeled.get((source_method, seed))
                runs.append(
                    sweep.transfer_run(
                        root, target_task, method, seed, 'fig5_target', source, replay
                    )
                )
    return runs


def smoke_keep(run):
    """The target --smoke keeps (its source and relabeling come with it)."""
    return (
        run.task == 'dmc_quadruped_reach'
        and run.kind == 'train'
        and run.method == 'lsp_fixed_policy'
        and run.seed == 0
    )


if __name__ == '__main__':
    sys.exit(sweep.main('fig5', grid, smoke_keep, description=__doc__))
