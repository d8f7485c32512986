"""The sweep launcher (tools.sweep) and the paper-experiment scripts built on it."""

import dataclasses
import fcntl
import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp.rundir import RunDir
from tools import sweep

ROOT = Path(__file__).resolve().parent.parent

SCRIPTS = ROOT / 'scripts' / 'experiments'
SEEDS = {0, 1, 2}
QUADRUPED = 'dmc_quadruped_'


def script_command(name, *flags):
    return [sys.executable, str(SCRIPTS / f'{name}.py'), *flags]


def dry_run(name, root, *flags):
    """The printed commands of a script's dry run, each split into its arguments."""
    result = subprocess.run(
        script_command(name, '--dry-run', '--root', str(root), *flags),
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in result.stdout.splitlines()]


def parse(command):
    """A printed command as a dict: kind, blocks and every --flag's value."""
    if command[1:3] == ['-m', 'dreamer_lsp']:
        kind, args = 'train', command[3:]
    else:
        assert command[1] == str(ROOT / 'scripts' / 'relabel_rewards.py')
        kind, args = 'relabel', command[2:]
    parsed = {'kind': kind, 'blocks': ()}
    key = None
    for arg in args:
        if arg.startswith('--'):
            key = arg[2:]
            parsed.setdefault(key, None)
        elif key == 'configs':
            parsed['blocks'] += (arg,)
        else:
            parsed[key] = arg
    return parsed


def load_script(name):
    """An experiment script as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_runs(name, root):
    """The runs of a script's --smoke, built from its grid."""
    module = load_script(name)
    return sweep.smoke(module.grid(root), module.smoke_keep)


@pytest.mark.parametrize('regime, steps', [('batch8', None), ('batch50', 100000)])
def test_the_evidence_suite_shares_the_learning_checks_runs_and_regime(tmp_path, regime, steps):
    suite = load_script('evidence_suite').grid(tmp_path, regime, steps)
    check = load_script('learning_check').grid(tmp_path, regime, steps)
    assert all(run in suite for run in check)  # same logdirs, blocks and flags: one run each
    sweep.validate(suite)
    batch, budget = (8, 100000) if regime == 'batch8' else (50, steps)
    configs = {run.label: sweep.resolved_config(run) for run in suite if run.kind == 'train'}
    for seed in SEEDS:
        arm = f'dmc_cartpole_balance/{{}}/{seed}'
        assert configs[arm.format('lsp_no_noise')].skills.predictor_noise == 0
        assert configs[arm.format('lsp')].skills.predictor_noise == 0.1
        assert configs[arm.format('dreamer_h10')].horizon == 10
        assert configs[arm.format('no_mi')].cem.train_starts == 64
        assert configs[arm.format('random_skills')].cem.train_starts == 0
        for method in ('lsp', 'lsp_fixed_policy', 'dreamer'):
            target = configs[f'dmc_cartpole_reach/{method}/{seed}']
            source = 'dreamer' if method == 'dreamer' else 'lsp'
            assert target.transfer.checkpoint == str(
                tmp_path / 'dmc_cartpole_balance' / source / str(seed)
            )
            assert (target.task, target.steps, target.batch_size) == (
                'dmc_cartpole_reach',
                10000,
                batch,
            )
            assert target.transfer.replay and target.prefill_policy == 'random'
        for method in ('lsp_fixed_policy', 'dreamer'):
            target = configs[f'dmc_cartpole_reach_sparse/{method}/{seed}']
            assert target.transfer.checkpoint and not target.transfer.replay
            assert target.prefill_policy == 'agent' and target.batch_size == batch
            assert (target.skills.length, target.skills.horizon) == (30, 120)
    assert {config.steps for label, config in configs.items() if 'balance' in label} == {budget}
    assert {config.batch_size for config in configs.values()} == {batch}


def train_key(run):
    return run['task'], run['blocks'][1], int(run['seed']), run['blocks'][0]


def check_layout(run, root):
    task_dir = run['task'] + ('_pixels' if run['blocks'][0] == 'dmc_vision' else '')
    assert Path(run['logdir']) == root / task_dir / run['blocks'][1] / run['seed']


def check_order(runs):
    """Every source, relabeling and replay a run needs comes earlier."""
    seen = set()
    for run in runs:
        for key in ('transfer.checkpoint', 'source'):
            if run.get(key):
                assert run[key] in seen
        if run.get('transfer.replay'):
            assert str(Path(run['transfer.replay']).parent) in seen
        seen.add(run['logdir'] if run['kind'] == 'train' else str(Path(run['output']).parent))


def test_fig4_dry_run_lists_the_paper_grid(tmp_path):
    runs = [parse(command) for command in dry_run('fig4_single_tasks', tmp_path)]
    features = [
        'dmc_quadruped_walk',
        'dmc_quadruped_run',
        'dmc_quadruped_getup_walk',
        'dmc_quadruped_reach',
        'dmc_walker_walk',
        'dmc_walker_run',
        'dmc_cheetah_run',
        'dmc_hopper_hop',
    ]
    pixels = ['dmc_cheetah_run', 'dmc_quadruped_run', 'dmc_walker_run']
    methods = ['lsp', 'dreamer', 'hiro', 'random_skills', 'randskills_inp']
    # No HIRO with pixels: the paper has no HIRO curves for image-based tasks (§4.2).
    expected = set(itertools.product(features, methods, SEEDS, ['dmc_proprio'])) | set(
        itertools.product(pixels, [m for m in methods if m != 'hiro'], SEEDS, ['dmc_vision'])
    )
    assert len(runs) == len(expected) == 8 * 5 * 3 + 3 * 4 * 3
    assert {train_key(run) for run in runs} == expected
    for run in runs:
        assert run['kind'] == 'train' and run['blocks'][2] == 'fig4'
        check_layout(run, tmp_path)


def test_fig5_dry_run_lists_sources_relabelings_and_targets(tmp_path):
    runs = [parse(command) for command in dry_run('fig5_transfer', tmp_path)]
    check_order(runs)
    trains = [run for run in runs if run['kind'] == 'train']
    sources = {train_key(run): run for run in trains if run['blocks'][2] == 'fig5_source'}
    targets = [run for run in trains if run['blocks'][2] == 'fig5_target']
    relabels = {run['source']: run for run in runs if run['kind'] == 'relabel'}
    source_tasks = [QUADRUPED + 'getup_walk', QUADRUPED + 'walk']
    assert set(sources) == set(
        itertools.product(source_tasks, ['lsp', 'dreamer', 'hiro'], SEEDS, ['dmc_proprio'])
    )
    target_sources = {'lsp': 'lsp', 'lsp_fixed_policy': 'lsp', 'dreamer': 'dreamer', 'hiro': 'hiro'}
    target_tasks = {
        QUADRUPED + 'getup_reach': source_tasks[0],
        QUADRUPED + 'reach': source_tasks[1],
    }
    assert {train_key(run) for run in targets} == set(
        itertools.product(target_tasks, target_sources, SEEDS, ['dmc_proprio'])
    )
    assert len(runs) == len(sources) + len(relabels) + len(targets) == 18 + 9 + 24
    walk_sources = {run['logdir'] for key, run in sources.items() if key[0] == source_tasks[1]}
    assert set(relabels) == walk_sources
    for run in relabels.values():
        assert run['task'] == QUADRUPED + 'reach'
    for run in targets:
        check_layout(run, tmp_path)
        method, seed = run['blocks'][1], int(run['seed'])
        source_key = (target_tasks[run['task']], target_sources[method], seed, 'dmc_proprio')
        source = sources[source_key]['logdir']
        assert run['transfer.checkpoint'] == source
        if run['task'] == QUADRUPED + 'reach':
            assert run['transfer.replay'] == relabels[source]['output']
        else:
            assert 'transfer.replay' not in run


def test_fig6b_dry_run_lists_the_ablation(tmp_path):
    runs = [parse(command) for command in dry_run('fig6b_ablation', tmp_path)]
    assert len(runs) == 9
    assert {train_key(run) for run in runs} == set(
        itertools.product(
            [QUADRUPED + 'getup_walk'], ['lsp', 'no_mi', 'dreamer'], SEEDS, ['dmc_proprio']
        )
    )
    for run in runs:
        assert run['blocks'][2] == 'fig6b'
        check_layout(run, tmp_path)


def test_cove_dry_run_lists_sources_then_targets_with_k30_h120(tmp_path):
    commands = dry_run('cove_transfer', tmp_path)
    runs = [parse(command) for command in commands]
    check_order(runs)
    sources = {train_key(run): run for run in runs if run['blocks'][2] == 'cove_source'}
    targets = [run for run in runs if run['blocks'][2] == 'cove_target']
    assert len(runs) == len(sources) + len(targets) == 12
    assert set(sources) == set(
        itertools.product([QUADRUPED + 'obstacles'], ['lsp', 'dreamer'], SEEDS, ['dmc_proprio'])
    )
    pairs = {'lsp_fixed_policy': 'lsp', 'dreamer': 'dreamer'}
    assert {train_key(run) for run in targets} == set(
        itertools.product([QUADRUPED + 'cove'], pairs, SEEDS, ['dmc_proprio'])
    )
    for run in targets:
        source = sources[
            QUADRUPED + 'obstacles', pairs[run['blocks'][1]], int(run['seed']), 'dmc_proprio'
        ]
        assert run['transfer.checkpoint'] == source['logdir']
    for command, run in zip(commands, runs):
        config = config_lib.parse_args(command[3:])
        if run['blocks'][2] == 'cove_target':
            assert (config.skills.length, config.skills.horizon) == (30, 120)
        else:
            assert config.steps == 500_000 and config.skills.length == 10


@pytest.mark.parametrize(
    'name',
    ['fig4_single_tasks', 'fig5_transfer', 'fig6b_ablation', 'cove_transfer', 'evidence_suite'],
)
def test_slurm_dry_run_prints_the_same_commands_without_submitit(name, tmp_path):
    for flags in ((), ('--smoke',)):
        local = dry_run(name, tmp_path, *flags)
        assert dry_run(name, tmp_path, '--backend', 'slurm', *flags) == local


def test_smoke_keeps_dependencies_and_puts_debug_before_the_experiment(tmp_path):
    runs = [parse(command) for command in dry_run('fig5_transfer', tmp_path, '--smoke')]
    assert [run['kind'] for run in runs] == ['train', 'relabel', 'train']
    assert runs[0]['blocks'] == ('dmc_proprio', 'lsp', 'debug', 'fig5_source')
    assert runs[2]['blocks'] == ('dmc_proprio', 'lsp_fixed_policy', 'debug', 'fig5_target')
    assert runs[2]['transfer.replay'] == runs[1]['output']
    assert runs[0]['steps'] == runs[2]['steps'] == '400'


def test_selection_filters_the_grid_and_keeps_sources(tmp_path):
    full = [parse(command) for command in dry_run('fig4_single_tasks', tmp_path)]
    flags = ('--tasks', 'dmc_cheetah_run_pixels', 'dmc_walker_walk', '--methods', 'lsp')
    chosen = [parse(command) for command in dry_run('fig4_single_tasks', tmp_path, *flags)]
    expected = [
        run
        for run in full
        if Path(run['logdir']).parent.name == 'lsp'
        and Path(run['logdir']).parents[1].name in ('dmc_cheetah_run_pixels', 'dmc_walker_walk')
    ]
    assert chosen == expected and len(chosen) == 6
    # A transfer target brings its source and relabeling; --debug makes every run tiny.
    flags = ('--tasks', 'dmc_quadruped_reach', '--methods', 'lsp_fixed_policy', '--seeds', '1')
    runs = [parse(command) for command in dry_run('fig5_transfer', tmp_path, '--debug', *flags)]
    assert [run['kind'] for run in runs] == ['train', 'relabel', 'train']
    assert [run['steps'] for run in runs if run['kind'] == 'train'] == ['400', '400']
    assert all('debug' in run['blocks'] for run in runs if run['kind'] == 'train')
    assert runs[0]['seed'] == runs[2]['seed'] == '1'


def test_unknown_selection_is_one_line(tmp_path):
    result = subprocess.run(
        script_command('fig6b_ablation', '--dry-run', '--root', str(tmp_path), '--seeds', '7'),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == 'error: no run has seed 7; valid: 0, 1, 2'


def test_slurm_backend_without_submitit_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'submitit', None)
    run = sweep.train_run(tmp_path, 'dmc_cartpole_balance', 'dreamer', 0, 'debug')
    with pytest.raises(sweep.SweepError, match=r'pip install submitit==1\.5\.4'):
        sweep.run_slurm([run], tmp_path / 'slurm')


def test_slot_env_sets_only_the_slot_gpu(monkeypatch):
    monkeypatch.setenv('MUJOCO_GL', 'osmesa')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '7')
    assert sweep.slot_env(1, ('0', '1'))['CUDA_VISIBLE_DEVICES'] == '1'
    assert sweep.slot_env(2, ('0', '1'))['CUDA_VISIBLE_DEVICES'] == '0'
    assert sweep.slot_env(0, ('3',))['MUJOCO_GL'] == 'osmesa'
    assert sweep.slot_env(0, ())['CUDA_VISIBLE_DEVICES'] == '7'


def cartpole(root, seed, *args):
    """A tiny Dreamer run (the `debug` block) on cartpole balance."""
    run = sweep.train_run(root, 'dmc_cartpole_balance', 'dreamer', seed, 'debug')
    return dataclasses.replace(run, args=args)


def write_run_files(logdir, checkpoint_step, records):
    """A run directory's newest checkpoint state (if a step is given) and metrics.jsonl."""
    if checkpoint_step is not None:
        directory = logdir / 'checkpoint' / 'ckpt-a'
        directory.mkdir(parents=True)
        (directory / 'state.json').write_text(json.dumps({'step': checkpoint_step}))
        (logdir / 'checkpoint' / 'latest').write_text('ckpt-a')
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in records))


def fake_run(logdir, checkpoint_step, metrics, steps=1000):
    run = cartpole(logdir, 0, '--steps', str(steps))
    records = [{'step': step, key: 1.0} for step, key in metrics]
    write_run_files(run.logdir, checkpoint_step, records)
    return run


@pytest.mark.parametrize(
    'checkpoint, metrics, steps, finished',
    [
        (1004, [(500, 'test/return'), (1004, 'train/return'), (1004, 'test/return')], 1000, True),
        # SIGTERM in the last episode: checkpoint past `steps`, no final evaluation yet.
        (1004, [(500, 'test/return'), (1004, 'train/return')], 1000, False),
        # SIGKILL after the final evaluation, before the final checkpoint.
        (800, [(1004, 'test/return'), (1004, 'updates')], 1000, False),
        # Asked for more steps than the run has.
        (1004, [(1004, 'test/return')], 2000, False),
        (None, [], 1000, False),
    ],
)
def test_is_finished_needs_the_final_checkpoint_and_evaluation(
    tmp_path, checkpoint, metrics, steps, finished
):
    assert sweep.is_finished(fake_run(tmp_path, checkpoint, metrics, steps)) is finished


def test_invalid_grid_is_refused_before_anything_runs(tmp_path):
    bad = sweep.train_run(tmp_path, 'dmc_cartpole_balance', 'dreamer', 0, 'no_such_block')
    with pytest.raises(sweep.SweepError, match='no_such_block'):
        sweep.run_local([bad])
    good = sweep.train_run(tmp_path, 'dmc_cartpole_balance', 'dreamer', 0, 'debug')
    orphan = sweep.transfer_run(tmp_path, 'dmc_cartpole_swingup', 'dreamer', 0, 'debug', good)
    with pytest.raises(sweep.SweepError, match='not listed before it'):
        sweep.run_local([orphan])
    assert not (tmp_path / 'dmc_cartpole_swingup').exists()


def test_failed_source_blocks_its_target_and_a_locked_run_is_left_alone(tmp_path, capsys):
    # A transfer from a missing directory exits with code 2 before TensorFlow loads.
    source = cartpole(tmp_path, 0, '--transfer.checkpoint', '/no/such/run')
    target = sweep.transfer_run(tmp_path, 'dmc_cartpole_swingup', 'dreamer', 0, 'debug', source)
    locked = cartpole(tmp_path, 1)
    locked.logdir.mkdir(parents=True)
    with open(locked.logdir / sweep.LOCK_NAME, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status = sweep.run_local([source, target, locked], parallel=2)
    assert status == {
        source.logdir: sweep.FAILED,
        target.logdir: sweep.BLOCKED,
        locked.logdir: sweep.BUSY,
    }
    assert 'transfer.checkpoint' in (source.logdir / 'stdout.log').read_text()
    assert not target.logdir.exists()
    assert not (locked.logdir / 'stdout.log').exists()
    assert 'Summary: 3 runs: 1 failed, 1 blocked, 1 busy' in capsys.readouterr().out


def test_a_free_slot_goes_to_a_finished_sources_relabeling_before_the_next_source(tmp_path, capsys):
    source = cartpole(tmp_path, 0, '--steps', '600')
    # Listed before the relabeling; fails at once (exit code 2 before TensorFlow loads).
    other_source = cartpole(tmp_path, 1, '--transfer.checkpoint', '/no/such/run')
    relabeling = sweep.relabel_run(tmp_path, source, 'dmc_cartpole_swingup')
    status = sweep.run_local([source, other_source, relabeling], parallel=1)
    assert status == {
        source.logdir: sweep.DONE,
        other_source.logdir: sweep.FAILED,
        relabeling.logdir: sweep.DONE,
    }
    lines = capsys.readouterr().out.splitlines()
    started = [line.split()[1] for line in lines if line.startswith('start ')]
    assert started == [source.label, relabeling.label, other_source.label]


def test_local_sweep_runs_in_parallel_then_skips_finished_runs(tmp_path, capsys):
    runs = [cartpole(tmp_path, seed, '--steps', '600') for seed in (0, 1)]
    status = sweep.run_local(runs, parallel=2)
    assert set(status.values()) == {sweep.DONE}
    for run in runs:
        assert sweep.is_finished(run)
        assert (run.logdir / 'config.yaml').is_file()
        assert 'Finished 600 steps' in (run.logdir / 'stdout.log').read_text()
    capsys.readouterr()
    assert set(sweep.run_local(runs, parallel=2).values()) == {sweep.FINISHED}
    out = capsys.readouterr().out
    assert out.count('skip (finished)') == 3  # two runs and the summary line
    assert 'start' not in out


def run_smoke(root, names):
    """Run the scripts' --smoke at once (the machine has few cores, the chains are sequential)."""
    processes = {
        name: subprocess.Popen(
            script_command(name, '--smoke', '--root', str(root / name)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in names
    }
    for process in processes.values():
        output = process.communicate()[0]
        assert process.returncode == 0, output
        assert 'Summary' in output and 'failed' not in output
    runs = {name: smoke_runs(name, root / name) for name in names}
    for name, listed in runs.items():
        assert all(sweep.is_finished(run) for run in listed), name
        for run in listed:
            if '--transfer.checkpoint' in run.args:
                assert (run.logdir / 'transfer.json').is_file()
    return runs


@pytest.mark.slow
def test_fig4_fig6b_fig5_and_the_evidence_suite_run_in_smoke_mode(tmp_path):
    runs = run_smoke(
        tmp_path, ['fig4_single_tasks', 'fig6b_ablation', 'fig5_transfer', 'evidence_suite']
    )
    source, relabel, target = runs['fig5_transfer']
    assert relabel.kind == 'relabel'
    assert (relabel.logdir / 'episodes' / 'relabel.json').is_file()
    assert 'Seeded the replay' in (target.logdir / 'stdout.log').read_text()
    source, relabel, target = runs['evidence_suite']
    assert (relabel.logdir / 'episodes' / 'relabel.json').is_file()
    assert 'Seeded the replay' in (target.logdir / 'stdout.log').read_text()


@pytest.mark.slow  # ~200 CPU-s: the target keeps K = 30, H = 120 (A.2) at debug sizes
def test_cove_runs_in_smoke_mode(tmp_path):
    _, target = run_smoke(tmp_path, ['cove_transfer'])['cove_transfer']
    skills = config_lib.load_blocks(target.logdir / 'config.yaml')['skills']
    assert (skills['length'], skills['horizon']) == (30, 120)


ABSURD_LEARNING_RATES = ('--model.lr', '1000', '--actor.lr', '1000', '--value.lr', '1000')


def test_a_diverging_run_stops_cleanly_and_is_reported_as_diverged(tmp_path, capsys):
    # Updates at steps 650 and 900 (prefill 400, one update per 250 steps): the checkpoint of
    # step 600 or 800 is written before the absurd learning rates blow the networks up.
    source = cartpole(
        tmp_path, 0, *ABSURD_LEARNING_RATES, '--train_every', '250', '--pretrain', '0'
    )
    target = sweep.transfer_run(tmp_path, 'dmc_cartpole_swingup', 'dreamer', 0, 'debug', source)
    status = sweep.run_local([source, target])
    assert status == {source.logdir: sweep.DIVERGED, target.logdir: sweep.BLOCKED}
    out = capsys.readouterr().out
    assert 'Summary: 2 runs: 1 diverged, 1 blocked' in out
    log = (source.logdir / sweep.LOG_NAME).read_text()
    errors = [line for line in log.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'Traceback' not in log and 'PhysicsError' not in log
    match = re.fullmatch(
        r'error: diverged: (train/\w+|weight \S+) is (inf|-inf|nan|non-finite) at update (\d+) '
        r'\(step (\d+)\); stopped without writing a checkpoint \(checkpoint (ckpt-\S+) kept\)',
        errors[0],
    )
    assert match, errors[0]
    assert 'diverged ' in out and match.group(1) in out
    diverged_step = int(match.group(4))
    # Nothing written at or after the divergence: every checkpoint is older and readable.
    root = source.logdir / 'checkpoint'
    assert (root / 'latest').read_text().strip() == match.group(5)
    for directory in root.glob('ckpt-*'):
        state = json.loads((directory / 'state.json').read_text())
        assert state['step'] < diverged_step
    # The replay on disk is intact: every episode loads, in order, 100 agent steps each.
    files = sorted((source.logdir / 'train_episodes').glob('*.npz'))
    assert [f.name for f in files] == [f'{i:06d}-100.npz' for i in range(len(files))]
    for path in files:
        assert np.isfinite(np.load(path)['reward']).all()


@pytest.mark.slow
def test_the_quickstart_screen_runs_in_smoke_mode_and_reports(tmp_path):
    run_smoke(tmp_path, ['quickstart_screen'])
    summary = json.loads((tmp_path / 'quickstart_screen' / 'summary.json').read_text())
    seed = summary['dmc_walker_stand']['seeds']['0']
    assert seed['evaluations'][0][0] == 200 and seed['prefill_return'] is not None
    assert seed['baseline'] == max(seed['prefill_return'], seed['first_evaluation'])


def test_a_run_extended_past_the_sweeps_budget_stops_the_sweep_before_anything_starts(tmp_path):
    run = sweep.train_run(tmp_path, 'dmc_cartpole_balance', 'dreamer', 0, 'debug')
    budget = sweep.resolved_config(run).steps
    run_dir = RunDir(run.logdir)
    run_dir.path.mkdir(parents=True)
    sweep.resolved_config(run).update({'steps': 2 * budget}).save(run_dir.config)
    state = {'step': budget + 100}
    run_dir.save_checkpoint(f'ckpt-{budget + 100:09d}', lambda prefix: None, state, keep=1)
    with pytest.raises(sweep.SweepError, match=f'pass --steps {2 * budget} to continue it'):
        sweep.validate([run])
    sweep.validate([dataclasses.replace(run, args=('--steps', str(2 * budget)))])


def test_sigusr1_pauses_the_sweep_at_episode_ends_and_the_same_call_resumes(tmp_path, capsys):
    # Three training episodes of 200 steps after the prefill's two, so that the pause, sent once
    # the first of them is stored, lands at an episode end before the run's last one.
    runs = [cartpole(tmp_path, seed, '--steps', '1200') for seed in (0, 1)]
    episodes = runs[0].logdir / 'train_episodes'

    def pause_once_training():  # past the prefill's two episodes
        while len(list(episodes.glob('*.npz'))) < 3:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=pause_once_training, daemon=True).start()
    status = sweep.run_local(runs, parallel=1)
    assert status == {runs[0].logdir: sweep.INTERRUPTED, runs[1].logdir: sweep.NOT_STARTED}
    assert 'paused at an episode end' in capsys.readouterr().out
    assert 'Paused at the end of an episode' in (runs[0].logdir / 'stdout.log').read_text()
    state = RunDir(runs[0].logdir).checkpoint_state()
    assert state['step'] < 1200 and state['step'] == 200 * state['episodes']
    assert not runs[1].logdir.exists()
    assert set(sweep.run_local(runs, parallel=1).values()) == {sweep.DONE}


@pytest.mark.parametrize(
    'signum', [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT], ids=['pause', 'sigterm', 'ctrl_c']
)
def test_a_stop_that_arrives_while_a_run_starts_reaches_it_and_starts_nothing_else(
    tmp_path, monkeypatch, signum
):
    runs = [cartpole(tmp_path, seed) for seed in (0, 1)]
    start_local = sweep._start_local

    def start_then_stop(run, slot, gpus):
        # The signal's handler runs before the launcher has registered the new program.
        started = start_local(run, slot, gpus)
        os.kill(os.getpid(), signum)
        return started

    monkeypatch.setattr(sweep, '_start_local', start_then_stop)
    status = sweep.run_local(runs, parallel=2)
    assert status == {runs[0].logdir: sweep.INTERRUPTED, runs[1].logdir: sweep.NOT_STARTED}
    assert not runs[1].logdir.exists()


def test_squeues_answer_about_a_job_by_hand():
    # A job that is held, stopped or signalled may still run: never submit a second one.
    for state in ('PENDING', 'RUNNING', 'STOPPED', 'REQUEUE_HOLD', 'SIGNALING', 'SUSPENDED'):
        assert sweep.job_active(0, f'{state}\n', '') is True
    for state in ('COMPLETED', 'CANCELLED', 'TIMEOUT', 'PREEMPTED', 'FAILED'):
        assert sweep.job_active(0, f'{state}\n', '') is False
    assert sweep.job_active(0, '', '') is False
    error = 'slurm_load_jobs error: Invalid job id specified\n'
    assert sweep.job_active(1, '', error) is False
    unreachable = 'slurm_load_jobs error: Unable to contact slurm controller'
    assert sweep.job_active(1, '', unreachable) is None


def test_status_tells_each_runs_state_and_progress_from_its_files(tmp_path):
    root = tmp_path / 'sweep'
    logdirs = [root / 'dmc_cartpole_balance' / 'lsp' / str(seed) for seed in (0, 1, 2)]
    write_run_files(logdirs[0], 100_004, [{'step': 100_004, 'test/return': 900.0}])
    lines = [
        {'step': 40_000, 'test/return': 512.34},
        {'step': 41_000, 'fps': 2.0, 'updates_per_second': 0.4},
    ]
    write_run_files(logdirs[1], 40_004, lines)
    # A real process holds the run's training lock, as a trainer does, until its stdin closes.
    holder = subprocess.Popen(
        [
            sys.executable,
            '-c',
            'import sys; from dreamer_lsp.rundir import RunDir; '
            f'lock = RunDir({str(logdirs[1])!r}).lock_for_training(); '
            'print("locked", flush=True); sys.stdin.read()',
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )

    def status():
        result = subprocess.run(
            script_command('learning_check', '--methods', 'lsp', '--root', str(root), '--status'),
            capture_output=True,
            text=True,
            check=True,
        )
        return [' '.join(line.split()) for line in result.stdout.splitlines()]

    try:
        assert holder.stdout.readline() == 'locked\n'
        seen = status()
    finally:
        holder.communicate('')
    # 59,000 steps left at 2 steps/s: 29,500 s.
    progress = '41,000/100,000 steps, evaluation 512.3 at 40,000, 0.40 updates/s, 8:11:40 left'
    assert seen == [
        'finished dmc_cartpole_balance/lsp/0',
        f'training dmc_cartpole_balance/lsp/1 {progress}, pid {holder.pid}',
        'not started dmc_cartpole_balance/lsp/2',
    ]
    assert status()[1] == f'stopped dmc_cartpole_balance/lsp/1 {progress}'
