"""Regenerate the paper's figures and score tables from a sweep's logdirs.

    python -m tools.plot curves --root ROOT --out figures/fig4        # Fig. 4, learning curves
    python -m tools.plot curves --root ROOT --seeds --threshold 800 --out F  # + seeds, criterion
    python -m tools.plot ablation --root ROOT --out figures/fig6b     # Fig. 6b, MI ablation
    python -m tools.plot transfer --root ROOT --out figures/fig9      # Fig. 5 / 9, transfer
    python -m tools.plot trajectories --run RUN --out figures/fig8    # Fig. 8 / 1, root paths
    python -m tools.plot skills --reports R1.json R2.json --out F     # skill use, + table
    python -m tools.plot export --root ROOT --out scores.json         # published score format
    python -m tools.plot table --root ROOT                            # final scores, markdown

Figures are written as ``<out>.png`` and ``<out>.pdf``. Errors are one line with exit code 2.
"""

import argparse
import json
import math
import sys
import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

from dreamer_lsp.replay import episode_files
from dreamer_lsp.rundir import RunDir, checkpoint_name_step
from tools import scores

plt.switch_backend('Agg')

METHOD_STYLES = {
    'lsp': ('LSP', '#d62728'),
    'lsp_fixed_policy': ('LSP (fixed policy)', '#ff7f0e'),
    'no_mi': ('no_MI', '#9467bd'),
    'dreamer': ('Dreamer', '#1f77b4'),
    # The paper's HRL baseline as built here: an amortised Gaussian high-level policy over skills,
    # not Nachum et al.'s HIRO with subgoals.
    'hiro': ('amortised high level ("HIRO")', '#2ca02c'),
    'random_skills': ('Random Skills', '#8c564b'),
    'randskills_inp': ('RandSkillsInp', '#e377c2'),
}
EXTRA_COLORS = ('#17becf', '#bcbd22', '#7f7f7f', '#393b79', '#637939', '#843c39', '#7b4173')
PUBLISHED_LABEL = 'Dreamer (published, vision)'
METRIC_LABELS = {'test/return': 'Test return', 'train/return': 'Episode return'}
TITLE_WORDS = {'getup': 'GetUp'}


def method_label(method):
    """The paper's name of a method (the directory name if unknown)."""
    return METHOD_STYLES.get(method, (method, None))[0]


def method_color(method):
    """A colour per method that is the same in every figure."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method][1]
    return EXTRA_COLORS[zlib.crc32(method.encode()) % len(EXTRA_COLORS)]


def method_order(methods):
    """Methods in the paper's order, unknown ones after them alphabetically."""
    known = list(METHOD_STYLES)
    return sorted(methods, key=lambda m: (known.index(m) if m in known else len(known), m))


def task_title(task, runs=()):
    """A panel title like the paper's: ``dmc_quadruped_getup_walk`` → ``Quadruped GetUp Walk``."""
    words = scores.task_key(task).split('_')
    title = ' '.join(TITLE_WORDS.get(word, word.capitalize()) for word in words)
    obs_types = {run.config.get('obs_type') for run in runs}
    if obs_types == {'pixels'}:
        title += ' Pixels'
    return title


def save(fig, out):
    """Write ``fig`` to ``<out>.png`` and ``<out>.pdf``; returns both paths."""
    out = Path(out)
    if out.suffix in ('.png', '.pdf'):
        out = out.with_suffix('')
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_name(out.name + suffix) for suffix in ('.png', '.pdf')]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def _step_scale(max_step):
    """Divisor and axis-label unit for environment steps."""
    return (1e6, '×1M') if max_step >= 2e5 else (1e3, '×1k')


def _grid(count):
    """A figure with ``count`` panels in rows of at most three."""
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.3 * rows + 0.5), squeeze=False, layout='constrained'
    )
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _band(ax, xs, mean, std, scale, color, label, linestyle='-'):
    """Mean line with a shaded ± std band."""
    marker = 'o' if len(xs) == 1 else None
    ax.plot(xs / scale, mean, color=color, label=label, linestyle=linestyle, marker=marker, lw=1.6)
    if linestyle == '-':
        ax.fill_between(xs / scale, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def draw_curves(
    runs,
    records,
    metric,
    published=None,
    max_steps=None,
    xlabel='Environment steps ({unit})',
    seed_records=None,
    threshold=None,
):
    """Learning curves, one panel per task: mean ± std over seeds per method.

    ``published`` maps a task to the published records drawn dashed on its panel; ``xlabel``
    may contain ``{unit}``. ``seed_records`` (score records, typically unbinned) are drawn as
    one thin line per seed, and ``threshold`` as a dotted line at a pass criterion. Returns the
    figure.
    """
    groups = scores.group_runs(records)
    seed_groups = scores.group_runs(seed_records or [])
    tasks = list(dict.fromkeys(task for task, _ in groups))
    published = published or {}
    end = max_steps or max(x for record in records for x in record['xs'])
    scale, unit = _step_scale(end)
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        methods = method_order([method for t, method in groups if t == task])
        for method in methods:
            xs, mean, std, _ = scores.aggregate(groups[task, method])
            _band(ax, xs, mean, std, scale, method_color(method), method_label(method))
            for record in seed_groups.get((task, method), ()):
                seed_xs = np.asarray(record['xs'], float) / scale
                ax.plot(seed_xs, record['ys'], color=method_color(method), lw=0.7, alpha=0.6)
        if task in published:
            xs, mean, std, _ = scores.aggregate(published[task])
            # Keep every published bin that starts before the end (its x is the bin's end).
            width = np.median(np.diff(xs)) if len(xs) > 1 else 0.0
            keep = xs - width < end
            color = method_color('dreamer')
            _band(ax, xs[keep], mean[keep], std[keep], scale, color, PUBLISHED_LABEL, '--')
        if threshold is not None:
            ax.axhline(threshold, color='0.3', lw=1, ls=':', label=f'criterion ({threshold:g})')
        ax.set_title(task_title(task, [run for run in runs if run.task == task]))
        ax.set_xlabel(xlabel.format(unit=unit))
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_xlim(0, max_steps / scale if max_steps else None)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    ncol = min(len(handles), 2 * min(len(axes), 3))
    fig.legend(handles.values(), handles.keys(), loc='outside lower center', ncol=ncol)
    return fig


def _episode_files(run):
    """The run's training episodes in file (index) order."""
    directory = RunDir(run).episodes
    files = episode_files(directory)
    if not files:
        raise scores.ScoreError(f'no training episodes in {directory}')
    return files


def load_trajectory(run, steps):
    """Root xy paths and skill-start points of the run's first ``steps`` environment steps.

    Returns ``(paths, starts, arena)``: per episode a [n, 2] array of root positions and a
    [m, 2] array of the positions where a new skill began (empty without skills); ``arena`` is
    the episodes' arena vector if it is the same in all of them, else None.
    """
    config = scores.read_config(RunDir(run).config)
    repeat = config.get('action_repeat')
    if not isinstance(repeat, int) or repeat < 1:
        repeat = 2
        scores.warn(f'no action_repeat in {run}/config.yaml; assuming the default {repeat}')
    paths, starts, arenas, remaining = [], [], [], steps
    for path in _episode_files(run):
        if remaining <= 0:
            break
        with np.load(path) as episode:
            if 'qpos' not in episode or episode['qpos'].ndim != 2 or episode['qpos'].shape[1] < 2:
                raise scores.ScoreError(f'{path} has no qpos with root x, y columns')
            qpos = episode['qpos'][:, :2]
            skill = episode['skill'] if 'skill' in episode else None
            arena = np.atleast_2d(episode['arena'])[0] if 'arena' in episode else None
        length = min(len(qpos) - 1, math.ceil(remaining / repeat))
        remaining -= length * repeat
        paths.append(qpos[: length + 1])
        if skill is None:
            starts.append(np.zeros((0, 2)))
        else:
            # Entry t holds the skill that produced step t, so a skill chosen at state t - 1
            # shows as a change at entry t; entry 0 (the reset) holds a zero skill.
            changed = np.any(skill[1 : length + 1] != skill[:length], axis=-1)
            starts.append(qpos[:length][changed])
        arenas.append(arena)
    same = all(a is not None and np.array_equal(a, arenas[0]) for a in arenas)
    return paths, starts, arenas[0] if same else None


def _draw_arena(ax, arena):
    """Obstacles (grey discs) and the goal (red star) from an arena vector."""
    arena = np.asarray(arena, float)
    if len(arena) % 3 == 2:
        ax.plot(*arena[:2], marker='*', color='red', markersize=14, ls='', label='Goal', zorder=4)
        arena = arena[2:]
    for x, y, radius in arena.reshape(-1, 3):
        ax.add_patch(plt.Circle((x, y), radius, color='0.6', zorder=1))


def draw_trajectories(runs, steps):
    """Root (x, y) trajectories of each run's first ``steps`` steps, one panel per run."""
    fig, axes = _grid(len(runs))
    for ax, run in zip(axes, runs):
        paths, starts, arena = load_trajectory(run, steps)
        cmap = plt.get_cmap('viridis')
        norm = plt.Normalize(0, max(len(paths) - 1, 1))
        for index, path in enumerate(paths):
            segments = np.stack([path[:-1], path[1:]], axis=1)
            ax.add_collection(LineCollection(segments, colors=cmap(norm(index)), lw=0.8, zorder=2))
        points = np.concatenate(starts)
        if len(points):
            episode = np.concatenate([np.full(len(p), i) for i, p in enumerate(starts)])
            ax.scatter(
                *points.T,
                s=7,
                c=cmap(norm(episode)),
                edgecolors='black',
                linewidths=0.3,
                zorder=3,
                label='Skill start',
            )
        if arena is not None:
            _draw_arena(ax, arena)
        ax.plot(*paths[0][0], marker='o', color='red', markersize=6, ls='', label='Start', zorder=4)
        ax.autoscale_view()
        ax.set_aspect('equal', adjustable='datalim')
        config = scores.read_config(RunDir(run).config)
        ax.set_title(method_label(str(config.get('method', Path(run).name))))
        ax.set_xlabel('x (m)')
        ax.set_ylabel('y (m)')
        ax.legend(loc='best', fontsize='small')
        colorbar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax)
        colorbar.set_label('Episode')
    fig.suptitle(f'Root position, first {steps:,} environment steps')
    return fig


def _skill_values(report):
    """The readings of one ``tools.skill_information`` report that the skills figure and table
    show, by name."""
    grad_task, grad_mi = float(report['actor_grad_task']), float(report['actor_grad_mi'])
    return dict(
        action_change=float(report['action_change']),
        information=float(report['information']),
        grad_task=grad_task,
        grad_mi=grad_mi,
        grad_ratio=grad_mi / grad_task,
    )


# (title, value, y scale) per panel of the skills figure.
SKILL_PANELS = (
    ('Action change between two skills', 'action_change', 'linear'),
    ('Information about the skill (nats)', 'information', 'linear'),
    ('Actor gradient norm, MI / task reward', 'grad_ratio', 'log'),
)
# (header, value, format) per column of the skills table after method, seed and step.
SKILL_COLUMNS = (
    ('action change', 'action_change', '.3f'),
    ('information (nats)', 'information', '.3f'),
    ('actor gradient, task reward', 'grad_task', '.3g'),
    ('actor gradient, MI reward', 'grad_mi', '.3g'),
)
SEED_MARKERS = 'os^Dv'


def load_skill_reports(paths):
    """``tools.skill_information`` reports grouped by run, in step order: {run: [(step, values),
    ...]} with the values of ``_skill_values``.

    The step is the one in the report's checkpoint name; ScoreError (one line) for a file that
    is missing, not JSON, or not such a report.
    """
    groups = {}
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
            step = checkpoint_name_step(report['checkpoint'])
            values = _skill_values(report)
        except OSError as error:
            raise scores.ScoreError(f'cannot read {path}: {error.strerror}') from None
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as error:
            raise scores.ScoreError(
                f'{path} is not a report of python -m tools.skill_information --json '
                f'({type(error).__name__}: {error})'
            ) from None
        groups.setdefault(report['run'], []).append((step, values))
    return {run: sorted(points, key=lambda point: point[0]) for run, points in groups.items()}


def _method_and_seed(run):
    """A run directory ``<...>/<method>/<seed>`` as (method, seed)."""
    method, seed = Path(run).parts[-2:]
    return method, seed


def draw_skill_reports(groups):
    """How much a run's actor uses its skill, per measured checkpoint (the C3 diagnosis).

    One line per run (``<...>/<method>/<seed>``): the change of the actor's action between two
    skills, the information the imagined states carry about the skill, and the ratio of the
    actor's gradient norms from the MI and the task rewards. Returns the figure.
    """
    fig, axes = _grid(len(SKILL_PANELS))
    max_step = max(step for points in groups.values() for step, _ in points)
    scale, unit = _step_scale(max_step)
    for run, points in groups.items():
        method, seed = _method_and_seed(run)
        marker = SEED_MARKERS[int(seed) % len(SEED_MARKERS)] if seed.isdigit() else 'o'
        steps = np.array([step for step, _ in points]) / scale
        for ax, (_, name, _) in zip(axes, SKILL_PANELS):
            ax.plot(
                steps,
                [values[name] for _, values in points],
                color=method_color(method),
                marker=marker,
                lw=1.4,
                label=f'{method_label(method)} seed {seed}',
            )
    for ax, (title, _, yscale) in zip(axes, SKILL_PANELS):
        ax.set_title(title, fontsize=10)
        ax.set_yscale(yscale)
        ax.set_xlim(0, max_step / scale * 1.05)
        ax.set_xlabel(f'Environment steps ({unit})')
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def format_skill_table(groups):
    """The readings that ``draw_skill_reports`` draws, with both gradient norms, as a markdown
    table: one row per report, in the order of the groups."""
    headers = ['method', 'seed', 'step'] + [header for header, _, _ in SKILL_COLUMNS]
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
    for run, points in groups.items():
        method, seed = _method_and_seed(run)
        for step, values in points:
            cells = [f'`{method}`', seed, f'{step:,}']
            for _, name, spec in SKILL_COLUMNS:
                cell = format(values[name], spec)
                # A reading that rounds to zero is written 0, whatever its sign.
                cells.append(cell.lstrip('-') if float(cell) == 0 else cell)
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _root_args(parser, metric, bin_size, max_steps):
    """Arguments shared by the commands that read a sweep."""
    parser.add_argument('--root', required=True, help=f'sweep laid out as {scores.LAYOUT}')
    parser.add_argument('--metric', default=metric)
    parser.add_argument('--bin', type=float, default=bin_size, help='bin width (env steps)')
    parser.add_argument(
        '--bin-offset',
        type=float,
        default=0.0,
        help='bin edges at offset + k * bin (5000 reproduces the published xs)',
    )
    parser.add_argument('--max-steps', type=float, default=max_steps)
    parser.add_argument('--tasks', nargs='+', help='only these tasks')
    parser.add_argument('--methods', nargs='+', help='only these methods')


def _curve_args(parser):
    """Options of the commands that draw learning curves."""
    parser.add_argument(
        '--seeds', action='store_true', help="also draw every seed's own values, unbinned"
    )
    parser.add_argument('--threshold', type=float, help='a pass criterion, drawn as a line')


def build_parser():
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog='python -m tools.plot',
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    commands = parser.add_subparsers(dest='command', required=True)
    curves = commands.add_parser('curves', help='Fig. 4: learning curves per task')
    _root_args(curves, 'test/return', 1e5, 1e6)
    curves.add_argument('--published', default=str(scores.PUBLISHED_DEFAULT))
    ablation = commands.add_parser('ablation', help='Fig. 6b: lsp vs no_mi vs dreamer')
    _root_args(ablation, 'test/return', 1e5, 1e6)
    ablation.add_argument('--published', default=str(scores.PUBLISHED_DEFAULT))
    ablation.set_defaults(tasks=['dmc_quadruped_getup_walk'], methods=['lsp', 'no_mi', 'dreamer'])
    transfer = commands.add_parser('transfer', help='Fig. 5 / 9: returns after transfer')
    _root_args(transfer, 'train/return', 1e4, None)
    trajectories = commands.add_parser('trajectories', help='Fig. 8 / 1: root xy trajectories')
    trajectories.add_argument('--run', nargs='+', action='extend', required=True)
    trajectories.add_argument('--steps', type=int, default=40000)
    for command in (curves, ablation, transfer):
        _curve_args(command)
    skills = commands.add_parser(
        'skills',
        help='skill use per checkpoint from tools.skill_information reports: a figure, and'
        ' the readings printed as a markdown table',
    )
    skills.add_argument('--reports', nargs='+', required=True, help='their --json files')
    for command in (curves, ablation, transfer, trajectories, skills):
        command.add_argument('--out', required=True, help='writes <out>.png and <out>.pdf')
    export = commands.add_parser('export', help='scores as {task, method, seed, xs, ys} JSON')
    _root_args(export, 'test/return', 1e5, None)
    export.add_argument('--out', required=True, help='JSON file to write')
    table = commands.add_parser('table', help='markdown table of final scores')
    _root_args(table, 'test/return', 1e5, None)
    return parser


def run(args):
    """Execute one parsed command; returns the written paths."""
    if args.command == 'trajectories':
        for path in args.run:
            if not Path(path).is_dir():
                raise scores.ScoreError(f'run directory {path} does not exist')
        return save(draw_trajectories(args.run, args.steps), args.out)
    if args.command == 'skills':
        groups = load_skill_reports(args.reports)
        print(format_skill_table(groups))
        return save(draw_skill_reports(groups), args.out)
    runs = scores.find_runs(args.root, args.tasks, args.methods)
    records = scores.score_runs(runs, args.metric, args.bin, args.bin_offset, args.max_steps)
    if args.command in ('export', 'table'):
        print(scores.format_table(scores.final_scores(records), args.metric))
        if args.command == 'table':
            return []
        scores.write_scores(records, args.out)
        return [Path(args.out)]
    seed_records = None
    if args.seeds:
        # A bin of one step keeps every logged value where it was logged.
        seed_records = scores.score_runs(runs, args.metric, 1.0, 0.0, args.max_steps)
    style = dict(seed_records=seed_records, threshold=args.threshold)
    if args.command == 'transfer':
        xlabel = 'Environment steps since transfer ({unit})'
        fig = draw_curves(
            runs, records, args.metric, max_steps=args.max_steps, xlabel=xlabel, **style
        )
    else:
        tasks = {record['task'] for record in records}
        published = scores.published_overlays(tasks, scores.load_published(args.published))
        fig = draw_curves(runs, records, args.metric, published, args.max_steps, **style)
    return save(fig, args.out)


def main(argv=None):
    """Command-line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        paths = run(args)
    except scores.ScoreError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    for path in paths:
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
