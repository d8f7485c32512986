"""Start a run from another run's networks and, optionally, its (relabeled) replay [LSP §4.3].

The source's latest checkpoint is read variable by variable: every variable of the world model,
actor, value and skill predictor whose name and shape match is loaded, the rest keep their fresh
initialisation and are reported (e.g. the feature encoder's first layer when the target task
adds goal observations, or the skill predictor when the skill length K changes, A.2).
Optimizer states are not transferred.
"""

import json
import pathlib

from dreamer_lsp._tf import tf
from dreamer_lsp.config import ConfigError, atomic_write_text

MODULES = ('world_model', 'actor', 'value', 'predictor', 'high_policy')


def latest_checkpoint(logdir):
    """The variables prefix of a run's latest checkpoint; ConfigError if it has none."""
    root = pathlib.Path(logdir).expanduser() / 'checkpoint'
    latest = root / 'latest'
    if not latest.exists():
        raise ConfigError(f'transfer source {logdir} has no checkpoint ({latest} is missing)')
    return root / latest.read_text().strip() / 'variables'


def _checkpoint_key(module_name, path):
    return '/'.join(['agent', module_name, *map(str, path), '.ATTRIBUTES', 'VARIABLE_VALUE'])


def load_matching(agent, logdir):
    """Assign every matching variable of `MODULES` from the source run; returns a report dict."""
    prefix = latest_checkpoint(logdir)
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = reader.get_variable_to_shape_map()
    loaded, skipped = {}, {}
    for name in MODULES:
        module = getattr(agent, name, None)
        if module is None:
            continue
        variables = module._flatten(with_path=True, predicate=lambda x: isinstance(x, tf.Variable))
        for path, variable in variables:
            if any(str(part).startswith('_') for part in path):
                continue  # shared random generator state, not a weight
            key = _checkpoint_key(name, path)
            label = '/'.join(map(str, (name, *path)))
            if key not in shapes:
                skipped[label] = 'absent in source'
            elif list(shapes[key]) != variable.shape.as_list():
                skipped[label] = f'shape {shapes[key]} in source, {variable.shape.as_list()} here'
            else:
                variable.assign(reader.get_tensor(key))
                loaded[name] = loaded.get(name, 0) + 1
    return dict(
        source=str(pathlib.Path(logdir).resolve()),
        checkpoint=str(prefix.parent.name),
        loaded_variables=loaded,
        skipped_variables=skipped,
    )


def write_report(logdir, report):
    """Save the transfer report to `<logdir>/transfer.json` and print a summary line."""
    atomic_write_text(pathlib.Path(logdir) / 'transfer.json', json.dumps(report, indent=2))
    counts = ', '.join(f'{k} {v}' for k, v in report['loaded_variables'].items())
    print(
        f'Transfer: started from {report["source"]} ({report["checkpoint"]}): loaded {counts} '
        f'variables; {len(report["skipped_variables"])} kept fresh (see transfer.json).',
        flush=True,
    )
