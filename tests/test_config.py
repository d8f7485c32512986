import subprocess
import sys

import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp import train
from dreamer_lsp.config import ConfigError
from dreamer_lsp.rundir import RunDir


def test_blocks_merge_in_command_line_order():
    config = config_lib.parse_args(['--configs', 'dmc_vision', 'dmc_proprio', '--seed', '3'])
    assert config.obs_type == 'features'
    assert config.seed == 3
    config = config_lib.parse_args(['--configs', 'dmc_proprio', 'dmc_vision'])
    assert config.obs_type == 'pixels'


def test_defaults_match_the_reference_dreamer():
    config = config_lib.build()
    assert (config.action_repeat, config.time_limit, config.prefill) == (2, 1000, 5000)
    assert (config.batch_size, config.batch_length, config.horizon) == (50, 50, 15)
    assert (config.model.deter, config.model.stoch, config.model.hidden) == (200, 30, 200)
    assert (config.model.units, config.model.cnn_depth, config.model.free_nats) == (400, 32, 3.0)
    assert (config.model.lr, config.actor.lr, config.value.lr) == (6e-4, 8e-5, 8e-5)
    assert (config.actor.layers, config.value.layers, config.model.reward_layers) == (4, 3, 2)
    assert (config.actor.init_std, config.actor.expl_amount, config.grad_clip) == (5.0, 0.3, 100.0)
    assert (config.discount, config.return_lambda, config.train_every) == (0.99, 0.95, 5)
    assert (config.model.min_std, config.model.max_std, config.model.mlp_units) == (0.1, 1.5, 256)
    assert config.precision == 16


def test_dotted_overrides_are_cast_to_the_default_type():
    config = config_lib.parse_args(['--model.deter', '64', '--model.lr=1e-3', '--steps', '2e4'])
    assert config.model.deter == 64 and isinstance(config.model.deter, int)
    assert config.model.lr == 1e-3 and isinstance(config.model.lr, float)
    assert config.steps == 20000 and isinstance(config.steps, int)


def test_config_is_immutable():
    config = config_lib.build()
    with pytest.raises(AttributeError):
        config.seed = 1
    updated = config.update({'seed': 5})
    assert (config.seed, updated.seed) == (0, 5)


@pytest.mark.parametrize(
    'argv, fragment',
    [
        (['--configs', 'dremer'], "unknown config block 'dremer'; closest valid: dreamer"),
        (['--batch_sise', '3'], "unknown config key 'batch_sise'; closest valid: batch_size"),
        (['--model.detr', '3'], "unknown config key 'model.detr'; closest valid: model.deter"),
        (['--seed', 'abc'], "config key 'seed' expects int"),
        (['--model.lr', 'fast'], "config key 'model.lr' expects float"),
    ],
)
def test_bad_input_names_the_offender(argv, fragment):
    with pytest.raises(ConfigError) as error:
        config_lib.parse_args(argv)
    assert fragment in str(error.value)
    assert '\n' not in str(error.value)


def test_save_and_diff(tmp_path):
    config = config_lib.build(['debug'])
    config.save(tmp_path / 'config.yaml')
    loaded = config_lib.Config(config_lib.load_blocks(tmp_path / 'config.yaml'))
    assert loaded == config
    other = config.update({'seed': 4, 'steps': 99})
    assert config.diff(other, ignore=('steps',)) == ['seed: 0 -> 4']


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, '-m', 'dreamer_lsp', *args], capture_output=True, text=True, timeout=120
    )


def test_cli_exits_2_with_one_line_on_bad_config(tmp_path):
    result = _run_cli('--configs', 'debug', 'lps', '--logdir', str(tmp_path / 'run'))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and "unknown config block 'lps'" in lines[0]
    assert not (tmp_path / 'run').exists()
    result = _run_cli('--configs', 'debug')
    assert result.returncode == 2 and '--logdir is required' in result.stderr


def test_cli_help_lists_every_key():
    result = _run_cli('--help')
    assert result.returncode == 0
    for key in config_lib.build().flat():
        assert f'--{key} ' in result.stdout


CHECK_BEFORE_TENSORFLOW = """
import sys
from dreamer_lsp import train
try:
    train.main(sys.argv[1:])
except SystemExit as exit:
    print(exit.code, 'tensorflow' in sys.modules)
"""


def _check_only(*args):
    """The program's command line in a process that reports its exit code and whether
    TensorFlow was loaded."""
    return subprocess.run(
        [sys.executable, '-c', CHECK_BEFORE_TENSORFLOW, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    'flags, fragment',
    [
        (
            ['--task', 'dmc_walker_wlak'],
            "unknown task 'dmc_walker_wlak'; closest valid: dmc_walker_walk",
        ),
        (['--task', 'walker_walk'], "unknown task 'walker_walk'; closest valid: dmc_walker_walk"),
        (
            ['--task', 'dmc_quadruped_getup_rech'],
            'closest valid: dmc_quadruped_getup_reach',
        ),
        (['--obs_type', 'pixel'], "obs_type 'pixel' is invalid; closest valid: pixels"),
        (['--precision', '8'], 'precision must be 16 or 32, got 8'),
        (
            ['--prefill_policy', 'agnet'],
            "prefill_policy 'agnet' is invalid; closest valid: agent",
        ),
        (
            ['--configs', 'dmc_propio'],
            "unknown config block 'dmc_propio'; closest valid: dmc_proprio",
        ),
        (['--transfer.checkpoint', '{empty}'], 'holds no checkpoint'),
        (['--transfer.checkpoint', '{missing}'], 'is not a directory'),
        (['--transfer.replay', '{empty}'], 'holds no episodes'),
        (['--skills.freeze_actor', 'true'], 'needs skills.high_level cem or random'),
        (
            ['--skills.high_level', 'cem', '--skills.freeze_actor', 'true'],
            'needs --transfer.checkpoint',
        ),
    ],
)
def test_bad_input_is_refused_before_tensorflow_and_before_writing(tmp_path, flags, fragment):
    empty = tmp_path / 'empty'
    empty.mkdir()
    flags = [f.format(empty=empty, missing=tmp_path / 'missing') for f in flags]
    logdir = tmp_path / 'run'
    result = _check_only(
        '--configs', 'debug', 'dmc_proprio', 'dreamer', '--logdir', str(logdir), *flags
    )
    assert result.stdout.split() == ['2', 'False'], result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert not logdir.exists()


def test_every_listed_task_is_known():
    for task in ('dmc_walker_walk', 'dmc_quadruped_cove', 'dmc_ball_in_cup_catch'):
        config_lib.check_task(task)


def test_a_logdir_without_a_checkpoint_does_not_bind_its_config(tmp_path):
    # A run that stopped before its first checkpoint: its saved config is replaced, not enforced.
    logdir = tmp_path / 'run'
    logdir.mkdir()
    config_lib.build(['debug'], {'task': 'dmc_walker_walk'}).save(logdir / 'config.yaml')
    corrected = config_lib.build(['debug'], {'task': 'dmc_cartpole_balance'})
    train.check_saved_config(corrected, RunDir(logdir))
    (logdir / 'checkpoint').mkdir()
    (logdir / 'checkpoint' / 'latest').write_text('ckpt-000000400-00000002\n')
    with pytest.raises(ConfigError, match="task: 'dmc_walker_walk' -> 'dmc_cartpole_balance'"):
        train.check_saved_config(corrected, RunDir(logdir))


def test_a_run_extended_past_the_requested_budget_is_refused_not_counted_finished(tmp_path):
    # A 36k run resumed to 100k and stopped at 37k: the 36k command must not treat it as its own.
    logdir = tmp_path / 'run'
    run_dir = RunDir(logdir)
    logdir.mkdir()
    config_lib.build(['debug'], {'steps': 1000}).save(run_dir.config)

    def checkpoint_at(step):
        state = {'step': step}
        run_dir.save_checkpoint(f'ckpt-{step:09d}', lambda prefix: None, state, keep=1)

    checkpoint_at(1100)
    for steps in (1000, 2000, 5000):  # finished at its budget, or extended further: fine
        train.check_saved_config(config_lib.build(['debug'], {'steps': steps}), run_dir)
    config_lib.build(['debug'], {'steps': 5000}).save(run_dir.config)
    checkpoint_at(1200)
    for steps in (1200, 5000):
        train.check_saved_config(config_lib.build(['debug'], {'steps': steps}), run_dir)
    message = 'extended to 5000 steps and is at step 1200, past the 1000 requested; pass --steps'
    with pytest.raises(ConfigError, match=message):
        train.check_saved_config(config_lib.build(['debug'], {'steps': 1000}), run_dir)
