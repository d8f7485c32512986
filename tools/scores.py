"""Loading, binning and exporting the scores of a sweep (no TensorFlow, no plotting).

A sweep is laid out ``<root>/<task>/<method>/<seed>/`` with ``config.yaml`` and
``metrics.jsonl`` in every run directory (SPEC, Logdir contract). Scores use the format of the
published curves: a list of ``{task, method, seed, xs, ys}``.

Binning: bins are ``(lo, hi]`` with edges at ``offset + k * bin_size``; a bin's value is the
mean of the metric's values whose step falls into it and its x is the bin's end ``hi``, as in
the published file (its first x, 5000, is the end of the reference's first bin; the reference
anchors the edges at a run's first logged step, which ``offset=5000`` reproduces). Bins a run
has no value in are left out of that run's curve, so seeds of unequal length contribute only to
the bins they reach.
"""

import difflib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ruamel.yaml import YAML, YAMLError

from dreamer_lsp.rundir import RunDir

LAYOUT = '<root>/<task>/<method>/<seed>/metrics.jsonl'
PUBLISHED_DEFAULT = (
    Path(__file__).resolve().parent.parent.parent
    / 'shared'
    / 'data'
    / 'dreamer_v1_dmc_vision_scores.json'
)


class ScoreError(Exception):
    """A problem with the user's input, reported as one line (exit code 2)."""


def warn(message):
    """Print one warning line to stderr."""
    print(f'warning: {message}', file=sys.stderr)


@dataclass
class Run:
    """One run directory of a sweep."""

    task: str
    method: str
    seed: str
    path: Path
    config: dict = field(default_factory=dict)


def read_config(path):
    """The mappings of a run's ``config.yaml``; {} (with a warning if unreadable) if missing."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        config = YAML(typ='safe').load(path.read_text())
    except YAMLError as exc:
        warn(f'{path} is not valid YAML, read as empty: {" ".join(str(exc).split())}')
        return {}
    return config if isinstance(config, dict) else {}


def read_metrics(path):
    """The JSON objects of a ``metrics.jsonl`` with a numeric ``step``; warns once on bad lines."""
    records, bad = [], 0
    with open(path) as file:
        for line in file:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record['step'] = float(record['step'])
            except (ValueError, TypeError, KeyError):
                bad += 1
                continue
            records.append(record)
    if bad:
        warn(f'skipped {bad} malformed line(s) in {path}')
    return records


def metric_series(records, metric):
    """Steps and finite values of ``metric`` in ``records`` as float arrays."""
    pairs = []
    for record in records:
        value = record.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            pairs.append((record['step'], float(value)))
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = np.array(pairs).T
    return steps, values


def bin_series(steps, values, bin_size, offset=0.0, max_steps=None):
    """Mean of ``values`` per bin ``(lo, hi]``; returns the bin ends and means of non-empty bins."""
    if bin_size <= 0:
        raise ScoreError(f'--bin must be positive, got {bin_size}')
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    if max_steps is not None:
        keep = steps <= max_steps
        steps, values = steps[keep], values[keep]
    ends = offset + np.ceil((steps - offset) / bin_size) * bin_size
    xs = np.unique(ends)
    ys = np.array([values[ends == x].mean() for x in xs])
    return xs, ys


def find_runs(root, tasks=None, methods=None):
    """The runs under ``root`` laid out as ``LAYOUT``, filtered and ordered by ``tasks``."""
    root = Path(root)
    if not root.is_dir():
        raise ScoreError(f'root {root} does not exist or is not a directory')
    runs = []
    for metrics in sorted(root.glob('*/*/*/metrics.jsonl')):
        path = metrics.parent
        task, method, seed = path.relative_to(root).parts
        runs.append(Run(task, method, seed, path, read_config(RunDir(path).config)))
    if not runs:
        raise ScoreError(f'no runs under {root}: expected the layout {LAYOUT}')
    selected = [
        run
        for run in runs
        if (not tasks or run.task in tasks) and (not methods or run.method in methods)
    ]
    for kind, wanted, found in (
        ('task', tasks, {run.task for run in runs}),
        ('method', methods, {run.method for run in runs}),
    ):
        for name in wanted or ():
            if name not in found:
                warn(f'no runs of {kind} {name!r} under {root} (found: {", ".join(sorted(found))})')
    if not selected:
        raise ScoreError(
            f'no runs under {root} match tasks={tasks or "all"} methods={methods or "all"}'
        )
    order = {task: i for i, task in enumerate(tasks or ())}
    return sorted(
        selected,
        key=lambda run: (
            order.get(run.task, len(order)),
            run.task,
            run.method,
            _seed_key(run.seed),
        ),
    )


def _seed_key(seed):
    """Sort seeds numerically when they are integers."""
    return (0, int(seed), '') if str(seed).isdigit() else (1, 0, str(seed))


def group_runs(items):
    """Runs or score records grouped by (task, method), in first-seen order."""
    groups = {}
    for item in items:
        task, method = (
            (item['task'], item['method']) if isinstance(item, dict) else (item.task, item.method)
        )
        groups.setdefault((task, method), []).append(item)
    return groups


def score_runs(runs, metric, bin_size, offset=0.0, max_steps=None):
    """Binned ``metric`` of every run as score records ``{task, method, seed, xs, ys}``.

    Runs without a value of ``metric`` are left out with one warning; if no run has one, a
    ``ScoreError`` names the closest metric that exists.
    """
    records, missing, seen = [], [], set()
    for run in runs:
        metrics = read_metrics(RunDir(run.path).metrics)
        steps, values = metric_series(metrics, metric)
        xs, ys = bin_series(steps, values, bin_size, offset, max_steps)
        if not len(xs):
            missing.append(run)
            for record in metrics:
                seen.update(record)
            continue
        records.append(
            dict(task=run.task, method=run.method, seed=run.seed, xs=xs.tolist(), ys=ys.tolist())
        )
    if not records:
        close = difflib.get_close_matches(metric, sorted(seen - {'step'}), n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ScoreError(f'metric {metric!r} not found in any of the {len(runs)} runs{hint}')
    if missing:
        names = ', '.join(f'{run.task}/{run.method}/{run.seed}' for run in missing)
        warn(f'{len(missing)} run(s) have no {metric!r} values and are left out: {names}')
    return records


def aggregate(records):
    """Mean, std (over seeds, ddof 0) and seed count at every x any of ``records`` has."""
    xs = np.unique(np.concatenate([np.asarray(record['xs'], float) for record in records]))
    columns = [[] for _ in xs]
    index = {x: i for i, x in enumerate(xs)}
    for record in records:
        for x, y in zip(record['xs'], record['ys']):
            columns[index[float(x)]].append(y)
    mean = np.array([np.mean(column) for column in columns])
    std = np.array([np.std(column) for column in columns])
    count = np.array([len(column) for column in columns])
    return xs, mean, std, count


def task_key(task):
    """The task name without the ``dmc_`` prefix and the sweep's ``_pixels`` directory suffix."""
    task = task.removesuffix('_pixels')
    return task[len('dmc_') :] if task.startswith('dmc_') else task


def load_published(path):
    """The published score records at ``path``, or None (with a warning) if it is missing."""
    path = Path(path)
    if not path.is_file():
        warn(f'published scores not found at {path}; plotting without the published overlay')
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ScoreError(f'published scores {path} are not valid JSON: {exc}') from None


def published_overlays(tasks, published):
    """For every task, the published records of the same task (matched by ``task_key``)."""
    by_key = {}
    for record in published or ():
        by_key.setdefault(task_key(record['task']), []).append(record)
    return {task: by_key[task_key(task)] for task in tasks if task_key(task) in by_key}


def final_scores(records):
    """Per (task, method): mean and std (ddof 0) over seeds of each run's last binned value.

    Returns ``{(task, method): dict(mean, std, seeds, first_end, last_end)}``, where the ends
    are the smallest and largest x of the last bins that went into the mean.
    """
    table = {}
    for key, group in group_runs(records).items():
        finals = np.array([record['ys'][-1] for record in group])
        ends = [record['xs'][-1] for record in group]
        table[key] = dict(
            mean=float(finals.mean()),
            std=float(finals.std()),
            seeds=len(group),
            first_end=min(ends),
            last_end=max(ends),
        )
    return table


def format_table(table, metric):
    """The final-score table as markdown."""
    lines = [
        f'| task | method | seeds | final step | {metric} (mean ± std) |',
        '|---|---|---|---|---|',
    ]
    for (task, method), row in table.items():
        steps = f'{row["first_end"]:.0f}'
        if row['first_end'] != row['last_end']:
            steps += f'–{row["last_end"]:.0f}'
        lines.append(
            f'| {task} | {method} | {row["seeds"]} | {steps} | '
            f'{row["mean"]:.1f} ± {row["std"]:.1f} |'
        )
    return '\n'.join(lines)


def write_scores(records, path):
    """Write score records as JSON in the published format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records) + '\n')
