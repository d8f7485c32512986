"""Start a run from another run's networks and, optionally, its (relabeled) replay [LSP §4.3].

The source's latest checkpoint is read variable by variable: every variable of the world model,
actor, value and skill predictor whose name and shape match is loaded in full. When the target
task's feature vector has more (or fewer) entries than the source's (every quadruped goal task
appends `goal_relative`: 78 -> 81), the feature encoder's first layer and the decoder's output
layer are loaded in part: the source's weights fill the rows (columns) of the shared leading
entries and only the new ones keep their fresh initialisation, so that with the new entries at
zero the target's encoder computes exactly the source's embedding and the latent space a frozen
low-level actor was trained on is kept. A network with any other variable that differs (e.g. the
skill predictor, whose input grows with the skill length K, A.2) keeps its fresh initialisation
whole. `transfer.json` lists what was loaded in full, in part and not at all. Optimizer states
are not transferred.
"""

import json

import numpy as np

from dreamer_lsp._tf import tf
from dreamer_lsp.config import ConfigError
from dreamer_lsp.dreamer import CHECKPOINT_ROOT
from dreamer_lsp.rundir import RunDir, atomic_write_text

# The networks a transfer loads, by their names in `saved_modules()`; not optimizers or RNG.
MODULES = ('world_model', 'actor', 'value', 'predictor', 'high_policy')

# Variables whose size along one axis is a number of observation entries, as (axis, blocks):
# the encoder's first kernel has one row per entry; the feature decoder's output layer has one
# column per entry for the mean, then one per entry for the log-std (networks.GaussianMLP).
OBSERVATION_SIZED = {
    'world_model/encoder/layers/0/kernel': (0, 1),
    'world_model/decoder/net/out/kernel': (1, 2),
    'world_model/decoder/net/out/bias': (0, 2),
}


def _checkpoint_key(module_name, path):
    return '/'.join(
        [CHECKPOINT_ROOT, module_name, *map(str, path), '.ATTRIBUTES', 'VARIABLE_VALUE']
    )


def shared_entries(source, target, axis, blocks):
    """`target` (a copy) with the source's values in the shared leading entries of every block.

    source, target: arrays equal in every axis but `axis`, which holds `blocks` consecutive
    blocks of one value per observation entry. New entries are appended by the goal tasks, so
    the shared ones are the first min(source, target) of each block. Returns the array and the
    (source, target) entry counts.
    """
    source_size, target_size = source.shape[axis] // blocks, target.shape[axis] // blocks
    shared = min(source_size, target_size)
    result = np.array(target)
    for block in range(blocks):
        into = [slice(None)] * target.ndim
        into[axis] = slice(block * target_size, block * target_size + shared)
        take = [slice(None)] * source.ndim
        take[axis] = slice(block * source_size, block * source_size + shared)
        result[tuple(into)] = source[tuple(take)]
    return result, (source_size, target_size)


def _loadable_in_part(label, source_shape, target_shape):
    """The (axis, blocks) of an observation-sized variable that can be loaded in part, or None."""
    if label not in OBSERVATION_SIZED or len(source_shape) != len(target_shape):
        return None
    axis, blocks = OBSERVATION_SIZED[label]
    others_match = all(
        s == t for i, (s, t) in enumerate(zip(source_shape, target_shape)) if i != axis
    )
    divisible = source_shape[axis] % blocks == 0 and target_shape[axis] % blocks == 0
    return (axis, blocks) if others_match and divisible else None


def _plan_module(name, module, shapes):
    """How one module's variables load: [(variable, key, label, layout)], {label: reason}.

    layout is None for a load in full, else the (axis, blocks) of a load in part; a variable
    that is absent from the source or differs in another way goes to the reasons instead.
    """
    plan, mismatched = [], {}
    variables = module._flatten(with_path=True, predicate=lambda x: isinstance(x, tf.Variable))
    for path, variable in variables:
        key = _checkpoint_key(name, path)
        label = '/'.join(map(str, (name, *path)))
        target_shape = variable.shape.as_list()
        if key not in shapes:
            mismatched[label] = 'absent in source'
            continue
        source_shape = list(shapes[key])
        if source_shape == target_shape:
            plan.append((variable, key, label, None))
            continue
        layout = _loadable_in_part(label, source_shape, target_shape)
        if layout is None:
            mismatched[label] = f'shape {source_shape} in source, {target_shape} here'
        else:
            plan.append((variable, key, label, layout))
    return plan, mismatched


def load_matching(agent, logdir):
    """Load the source run's variables of `MODULES` in full or in part; returns a report dict.

    A module with a variable that cannot be loaded (absent, or of another shape that is not an
    observation size) keeps its fresh initialisation whole: trained layers behind a fresh one
    would compute nothing the source learned.
    """
    source = RunDir(logdir)
    prefix = source.latest_variables()
    if prefix is None:
        raise ConfigError(f'transfer source {logdir} has no checkpoint')
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = reader.get_variable_to_shape_map()
    in_full, in_part, not_loaded = {}, {}, {}
    saved = agent.saved_modules()
    for name in MODULES:
        module = saved.get(name)
        if module is None:
            continue
        plan, mismatched = _plan_module(name, module, shapes)
        if mismatched:
            not_loaded.update(mismatched)
            first = next(iter(mismatched))
            for _, _, label, _ in plan:
                not_loaded[label] = f'kept fresh with its module ({first} differs)'
            continue
        for variable, key, label, layout in plan:
            if layout is None:
                variable.assign(reader.get_tensor(key))
                in_full[name] = in_full.get(name, 0) + 1
                continue
            value, (source_size, target_size) = shared_entries(
                reader.get_tensor(key), variable.numpy(), *layout
            )
            variable.assign(value)
            shared = min(source_size, target_size)
            in_part[label] = (
                f'shape {list(shapes[key])} in source, '
                f'{variable.shape.as_list()} here: the {shared} shared '
                f'observation entries loaded, {max(target_size - shared, 0)} new ones fresh'
            )
    if not in_full and not in_part:
        raise ConfigError(
            f'transfer source {logdir} shares no network with this agent (every one differs, e.g. '
            f'{next(iter(not_loaded), "no module in common")}); it would start from scratch'
        )
    return dict(
        source=str(source.path.resolve()),
        checkpoint=str(prefix.parent.name),
        loaded_in_full=in_full,
        loaded_in_part=in_part,
        not_loaded=not_loaded,
    )


def write_report(run_dir, report):
    """Save the transfer report to the run's `transfer.json` and print a summary line."""
    atomic_write_text(run_dir.transfer_report, json.dumps(report, indent=2))
    counts = ', '.join(f'{k} {v}' for k, v in report['loaded_in_full'].items())
    print(
        f'Transfer: started from {report["source"]} ({report["checkpoint"]}): loaded {counts} '
        f'variables in full, {len(report["loaded_in_part"])} in part (shared observation '
        f'entries); {len(report["not_loaded"])} kept fresh (see transfer.json).',
        flush=True,
    )
