import subprocess
import sys

import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp.config import ConfigError


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
