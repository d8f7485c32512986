import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools import plot, scores

ROOT = Path(__file__).resolve().parent.parent

WALK, GETUP = 'dmc_walker_walk', 'dmc_quadruped_getup_walk'
# test/return per run as {step: value}; seeds of unequal lengths.
RUNS = {
    (WALK, 'lsp', '0'): {500: 10, 1000: 20, 1500: 30, 2500: 50},
    (WALK, 'lsp', '1'): {1000: 100, 2000: 200, 3000: 300, 4000: 400},
    (WALK, 'lsp', '2'): {1000: 40, 2000: 60},
    (WALK, 'dreamer', '0'): {1000: 5, 2000: 6, 3000: 7},
    (WALK, 'dreamer', '1'): {1000: 8, 2000: 9},
    (GETUP, 'lsp', '0'): {1000: 1, 2000: 2, 3000: 3},
    (GETUP, 'lsp', '1'): {1000: 4},
    (GETUP, 'dreamer', '0'): {1000: 0, 2000: 1},
    (GETUP, 'dreamer', '1'): {1000: 2, 2000: 3, 3000: 4},
}
EPISODE_STEPS = 10


def write_episodes(directory):
    """Three 10-step episodes; the skill changes at entries 1 and 5 (states 0 and 4)."""
    directory.mkdir()
    for index in range(3):
        t = np.arange(EPISODE_STEPS + 1, dtype=float)
        qpos = np.stack([100 * index + t, t, np.zeros_like(t)], -1)
        skill = np.zeros((EPISODE_STEPS + 1, 3), np.float32)
        skill[1:5], skill[5:] = 1.0, -1.0
        arena = np.tile(np.array([4, 0, 2, 1, 0.3], np.float32), (EPISODE_STEPS + 1, 1))
        np.savez(
            directory / f'{index:06d}-{EPISODE_STEPS}.npz',
            qpos=qpos,
            reward=np.zeros(EPISODE_STEPS + 1),
            skill=skill,
            arena=arena,
        )


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / 'sweep'
    for (task, method, seed), values in RUNS.items():
        run = root / task / method / seed
        run.mkdir(parents=True)
        (run / 'config.yaml').write_text(
            f'action_repeat: 2\nmethod: {method}\nobs_type: features\nseed: {seed}\n'
            f"task: {task}\ntransfer:\n  checkpoint: ''\n"
        )
        lines = []
        for step, value in values.items():
            lines.append(json.dumps({'step': step, 'train/return': value + 1, 'episodes': 1}))
            lines.append(json.dumps({'step': step, 'test/return': value, 'test/length': 500}))
            lines.append(json.dumps({'step': step, 'train/model_loss': 1.0, 'fps': 9.0}))
        lines.insert(2, '{"step": 750, "test/return": ')
        (run / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
    write_episodes(root / GETUP / 'lsp' / '0' / 'train_episodes')
    published = tmp_path / 'published.json'
    published.write_text(
        json.dumps(
            [
                dict(task=task, method='dreamer', seed=str(seed), xs=[5000.0, 105000.0], ys=ys)
                for task in ('walker_walk', 'dmc_cheetah_run')
                for seed, ys in enumerate(([1.0, 2.0], [3.0, 4.0]))
            ]
        )
    )
    return root, published


def test_read_config_nested_and_typed(sweep):
    root, _ = sweep
    config = scores.read_config(root / WALK / 'lsp' / '0' / 'config.yaml')
    assert config['action_repeat'] == 2 and config['seed'] == 0
    assert config['method'] == 'lsp' and config['transfer'] == {'checkpoint': ''}


def test_binning_by_hand(sweep, capsys):
    root, _ = sweep
    records = scores.read_metrics(root / WALK / 'lsp' / '0' / 'metrics.jsonl')
    assert 'malformed' in capsys.readouterr().err
    steps, values = scores.metric_series(records, 'test/return')
    # Bins (0, 1000], (1000, 2000], (2000, 3000]: {500, 1000}, {1500}, {2500}.
    xs, ys = scores.bin_series(steps, values, 1000)
    np.testing.assert_allclose(xs, [1000, 2000, 3000])
    np.testing.assert_allclose(ys, [(10 + 20) / 2, 30, 50])
    # Edges at 500 + k * 1000: (-500, 500], (500, 1500], (1500, 2500].
    xs, ys = scores.bin_series(steps, values, 1000, offset=500)
    np.testing.assert_allclose(xs, [500, 1500, 2500])
    np.testing.assert_allclose(ys, [10, (20 + 30) / 2, 50])
    xs, ys = scores.bin_series(steps, values, 1000, max_steps=2000)
    np.testing.assert_allclose(ys, [15, 30])


def test_export_matches_hand_binning(sweep, tmp_path):
    root, _ = sweep
    out = tmp_path / 'scores.json'
    assert plot.main(['export', '--root', str(root), '--out', str(out), '--bin', '1000']) == 0
    exported = json.loads(out.read_text())
    assert {tuple(r[k] for k in ('task', 'method', 'seed')) for r in exported} == set(RUNS)
    run = next(r for r in exported if (r['task'], r['method'], r['seed']) == (WALK, 'lsp', '0'))
    assert run['xs'] == [1000.0, 2000.0, 3000.0]
    assert run['ys'] == [15.0, 30.0, 50.0]
    assert all(set(r) == {'task', 'method', 'seed', 'xs', 'ys'} for r in exported)


def test_aggregate_uses_the_seeds_that_reach_a_bin(sweep):
    root, _ = sweep
    runs = scores.find_runs(root, tasks=[WALK], methods=['lsp'])
    xs, mean, std, count = scores.aggregate(scores.score_runs(runs, 'test/return', 1000))
    np.testing.assert_allclose(xs, [1000, 2000, 3000, 4000])
    np.testing.assert_array_equal(count, [3, 3, 2, 1])
    np.testing.assert_allclose(mean, [(15 + 100 + 40) / 3, (30 + 200 + 60) / 3, 175, 400])
    np.testing.assert_allclose(std[2:], [125, 0])


def test_final_score_table(sweep, capsys):
    root, _ = sweep
    assert plot.main(['table', '--root', str(root), '--bin', '1000']) == 0
    table = capsys.readouterr().out
    finals = [50, 400, 60]  # last bins of walker_walk/lsp seeds 0, 1, 2
    mean = sum(finals) / 3
    std = math.sqrt(sum((f - mean) ** 2 for f in finals) / 3)
    assert f'| {WALK} | lsp | 3 | 2000–4000 | {mean:.1f} ± {std:.1f} |' in table
    assert f'| {WALK} | dreamer | 2 | 2000–3000 | {(7 + 9) / 2:.1f} ± 1.0 |' in table
    assert f'| {GETUP} | lsp | 2 | 1000–3000 | 3.5 ± 0.5 |' in table
    assert table.startswith('| task | method | seeds |')


@pytest.mark.parametrize(
    'args',
    [
        ['curves', '--bin', '1000'],
        ['curves', '--bin', '1000', '--seeds', '--threshold', '800'],
        ['ablation', '--bin', '1000'],
        ['transfer', '--bin', '1000'],
        ['trajectories', '--steps', '30'],
    ],
)
def test_every_figure_command_writes_png_and_pdf(sweep, tmp_path, args):
    root, published = sweep
    out = tmp_path / 'figures' / args[0]
    if args[0] == 'trajectories':
        extra = ['--run', str(root / GETUP / 'lsp' / '0'), '--run', str(root / WALK / 'lsp' / '0')]
        write_episodes(root / WALK / 'lsp' / '0' / 'train_episodes')
    else:
        extra = ['--root', str(root)]
    if args[0] in ('curves', 'ablation'):
        extra += ['--published', str(published)]
    assert plot.main([*args, *extra, '--out', str(out)]) == 0
    for suffix in ('.png', '.pdf'):
        assert out.with_suffix(suffix).stat().st_size > 1000


def test_export_writes_json(sweep, tmp_path):
    root, _ = sweep
    out = tmp_path / 'sub' / 'scores.json'
    assert plot.main(['export', '--root', str(root), '--out', str(out)]) == 0
    assert out.stat().st_size > 0


def test_published_overlay_only_on_matching_tasks(sweep):
    root, published_path = sweep
    published = scores.load_published(published_path)
    overlays = scores.published_overlays([WALK, GETUP], published)
    assert list(overlays) == [WALK]
    assert {r['task'] for r in overlays[WALK]} == {'walker_walk'}
    runs = scores.find_runs(root)
    records = scores.score_runs(runs, 'test/return', 1000)
    fig = plot.draw_curves(runs, records, 'test/return', overlays, max_steps=1e6)
    labels = {ax.get_title(): ax.get_legend_handles_labels()[1] for ax in fig.axes}
    assert plot.PUBLISHED_LABEL in labels['Walker Walk']
    assert plot.PUBLISHED_LABEL not in labels['Quadruped GetUp Walk']
    assert {'LSP', 'Dreamer'} <= set(labels['Quadruped GetUp Walk'])
    assert fig.axes[0].get_xlabel() == 'Environment steps (×1M)'


def test_seed_curves_and_criterion_line(sweep):
    root, _ = sweep
    runs = scores.find_runs(root, [WALK])
    records = scores.score_runs(runs, 'test/return', 1000)
    raw = scores.score_runs(runs, 'test/return', 1.0)
    fig = plot.draw_curves(runs, records, 'test/return', seed_records=raw, threshold=250)
    [ax] = fig.axes
    # One mean line per method, one thin line per seed (3 LSP, 2 Dreamer), the criterion.
    assert len(ax.lines) == 2 + 5 + 1
    # LSP seed 0 unbinned: its values at 500 and 1000 steps stay apart (binned: one point).
    seed_0 = [line for line in ax.lines if list(line.get_ydata()) == [10, 20, 30, 50]]
    assert len(seed_0) == 1 and list(seed_0[0].get_xdata()) == [0.5, 1.0, 1.5, 2.5]
    criterion = ax.lines[-1]
    assert list(criterion.get_ydata()) == [250, 250]
    assert 'criterion (250)' in ax.get_legend_handles_labels()[1]


@pytest.mark.skipif(not scores.PUBLISHED_DEFAULT.is_file(), reason='published scores not shipped')
def test_shipped_published_scores_match_by_task_name():
    overlays = scores.published_overlays(
        [WALK, GETUP], scores.load_published(scores.PUBLISHED_DEFAULT)
    )
    assert list(overlays) == [WALK] and len(overlays[WALK]) == 5


def test_missing_published_file_still_plots(sweep, tmp_path, capsys):
    root, _ = sweep
    out = tmp_path / 'fig'
    args = ['curves', '--root', str(root), '--out', str(out), '--published', str(tmp_path / 'no')]
    assert plot.main(args) == 0
    assert 'published scores not found' in capsys.readouterr().err
    assert out.with_suffix('.png').stat().st_size > 0


def test_trajectory_budget_and_skill_starts(sweep):
    root, _ = sweep
    # 30 env steps at action repeat 2: the first episode (10 steps) and half the second.
    paths, starts, arena = plot.load_trajectory(root / GETUP / 'lsp' / '0', 30)
    assert [len(path) for path in paths] == [11, 6]
    np.testing.assert_array_equal(starts[1], [[100, 0], [104, 4]])
    np.testing.assert_allclose(arena, [4, 0, 2, 1, 0.3], rtol=1e-6)


def test_missing_root_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'tools.plot', 'table', '--root', str(tmp_path / 'x')],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'error: root {tmp_path / "x"} does not exist or is not a directory'
    ]


def test_bad_inputs_exit_2(sweep, tmp_path, capsys):
    root, _ = sweep
    (tmp_path / 'empty').mkdir()
    assert plot.main(['table', '--root', str(tmp_path / 'empty')]) == 2
    assert '<root>/<task>/<method>/<seed>/metrics.jsonl' in capsys.readouterr().err
    assert plot.main(['table', '--root', str(root), '--metric', 'test/retrun']) == 2
    assert "did you mean 'test/return'" in capsys.readouterr().err
    assert plot.main(['table', '--root', str(root), '--tasks', 'dmc_nope']) == 2
    out = str(tmp_path / 'fig')
    assert plot.main(['trajectories', '--run', str(tmp_path / 'none'), '--out', out]) == 2


def write_skill_report(path, run, checkpoint, action_change, grad_mi):
    """A tools.skill_information report with the fields the skills figure reads."""
    path.write_text(
        json.dumps(
            dict(
                run=run,
                checkpoint=checkpoint,
                action_change=action_change,
                information=0.01,
                actor_grad_task=10.0,
                actor_grad_mi=grad_mi,
            )
        )
    )
    return str(path)


def test_skill_reports_are_grouped_by_run_in_step_order_drawn_and_tabled(tmp_path, capsys):
    lsp, rs = 'runs/cartpole/lsp/1', 'runs/cartpole/random_skills/0'
    reports = [
        write_skill_report(tmp_path / 'a.json', lsp, 'ckpt-000040000-00007100', 0.05, 0.5),
        write_skill_report(tmp_path / 'b.json', lsp, 'ckpt-000010000-00001100', 0.5, 5.0),
        write_skill_report(tmp_path / 'c.json', rs, 'ckpt-000100000-00019100', 0.02, 0.1),
    ]
    # A small negative estimate of the information, written 0 in the table.
    report = json.loads(Path(reports[2]).read_text())
    Path(reports[2]).write_text(json.dumps(dict(report, information=-0.0004)))
    groups = plot.load_skill_reports(reports)
    assert {run: [step for step, _ in points] for run, points in groups.items()} == {
        lsp: [10000, 40000],
        rs: [100000],
    }
    fig = plot.draw_skill_reports(groups)
    action, _, gradient = fig.axes
    lines = {line.get_label(): line for line in action.lines}
    assert list(lines['LSP seed 1'].get_xdata()) == [10, 40]
    assert list(lines['LSP seed 1'].get_ydata()) == [0.5, 0.05]
    assert [list(line.get_ydata()) for line in gradient.lines] == [[0.5, 0.05], [0.01]]
    assert gradient.get_yscale() == 'log'
    out = tmp_path / 'skills'
    assert plot.main(['skills', '--reports', *reports, '--out', str(out)]) == 0
    assert out.with_suffix('.png').stat().st_size > 1000
    table = capsys.readouterr().out.splitlines()
    assert table[:5] == [
        '| method | seed | step | action change | information (nats) '
        '| actor gradient, task reward | actor gradient, MI reward |',
        '|---|---|---|---|---|---|---|',
        '| `lsp` | 1 | 10,000 | 0.500 | 0.010 | 10 | 5 |',
        '| `lsp` | 1 | 40,000 | 0.050 | 0.010 | 10 | 0.5 |',
        '| `random_skills` | 0 | 100,000 | 0.020 | 0.000 | 10 | 0.1 |',
    ]


def test_a_bad_skill_report_exits_2_naming_the_file(tmp_path, capsys):
    bad = write_skill_report(tmp_path / 'bad.json', 'runs/x/lsp/0', 'latest', 0.1, 1.0)
    assert plot.main(['skills', '--reports', bad, '--out', str(tmp_path / 'f')]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert 'bad.json is not a report of python -m tools.skill_information' in error[0]
    checkpoint = 'ckpt-000010000-00001100'
    text = write_skill_report(tmp_path / 'text.json', 'runs/x/lsp/0', checkpoint, 'high', 1.0)
    assert plot.main(['skills', '--reports', text, '--out', str(tmp_path / 'f')]) == 2
    assert 'text.json is not a report of python -m tools.skill_information --json (ValueError' in (
        capsys.readouterr().err
    )
    assert plot.main(['skills', '--reports', str(tmp_path / 'none.json'), '--out', 'f']) == 2
    assert 'cannot read' in capsys.readouterr().err
