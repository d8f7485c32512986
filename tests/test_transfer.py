"""Runs that start from a finished run's checkpoint: transfer, and the skill-rollout figure."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp._tf import tf
from dreamer_lsp.config import ConfigError
from dreamer_lsp.train import Trainer, check_config
from dreamer_lsp.transfer import latest_checkpoint


def make_config(logdir, *blocks, **overrides):
    config = config_lib.build(
        ['debug', 'dmc_proprio', *blocks], {'logdir': str(logdir), **overrides}
    )
    check_config(config)
    return config


@pytest.fixture(scope='module')
def source_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp('source')
    trainer = Trainer(make_config(logdir, 'lsp', steps=800))
    trainer.run()
    return logdir


def checkpoint_value(logdir, key):
    reader = tf.train.load_checkpoint(str(latest_checkpoint(logdir)))
    return reader.get_tensor(key)


def test_transfer_loads_the_source_weights_and_trains(source_run, tmp_path):
    config = make_config(
        tmp_path / 'target',
        'lsp_fixed_policy',
        steps=1000,
        **{'transfer.checkpoint': str(source_run), 'skills.length': 4, 'skills.horizon': 8},
    )
    trainer = Trainer(config)
    actor_kernel = trainer.agent.actor.net.hidden[0].kernel.numpy()
    expected = checkpoint_value(
        source_run, 'agent/actor/net/hidden/0/kernel/.ATTRIBUTES/VARIABLE_VALUE'
    )
    np.testing.assert_array_equal(actor_kernel, expected)
    gru = trainer.agent.world_model.rssm.cell.recurrent_kernel.numpy()
    np.testing.assert_array_equal(
        gru,
        checkpoint_value(
            source_run, 'agent/world_model/rssm/cell/recurrent_kernel/.ATTRIBUTES/VARIABLE_VALUE'
        ),
    )
    report = json.loads((tmp_path / 'target' / 'transfer.json').read_text())
    assert report['source'] == str(source_run.resolve())
    assert (
        report['loaded_variables']['world_model'] > 10 and report['loaded_variables']['actor'] > 5
    )
    # K changed from 2 to 4: the skill predictor's input layer cannot be reused.
    assert any(name.startswith('predictor/') for name in report['skipped_variables'])
    trainer.run()
    # lsp_fixed_policy: the transferred low-level actor is still bit-identical after training.
    np.testing.assert_array_equal(trainer.agent.actor.net.hidden[0].kernel.numpy(), expected)
    lines = [json.loads(line) for line in (tmp_path / 'target' / 'metrics.jsonl').open()]
    assert any('train/model_loss' in line for line in lines)


def test_transfer_with_a_seeded_replay_skips_the_prefill(source_run, tmp_path, capsys):
    config = make_config(
        tmp_path / 'target',
        'lsp',
        steps=200,
        **{
            'transfer.checkpoint': str(source_run),
            'transfer.replay': str(source_run / 'train_episodes'),
        },
    )
    trainer = Trainer(config)
    assert trainer.replay.num_episodes == 4 and trainer.prefill_end == 0
    trainer.run()
    output = capsys.readouterr().out
    assert 'Seeded the replay with 4 episodes' in output and 'Prefilled' not in output
    assert trainer.updates >= config.pretrain


def test_missing_transfer_source_is_a_config_error(tmp_path):
    config = config_lib.build(
        ['debug'], {'logdir': str(tmp_path / 'x'), 'transfer.checkpoint': str(tmp_path / 'none')}
    )
    with pytest.raises(ConfigError, match='is not a directory'):
        check_config(config)


def test_skill_rollouts_figure_from_a_checkpoint(source_run, tmp_path):
    out = tmp_path / 'fig7.png'
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [
            sys.executable,
            'tools/skill_rollouts.py',
            '--run',
            str(source_run),
            '--out',
            str(out),
            '--skills',
            '3',
            '--steps',
            '12',
            '--stride',
            '4',
            '--video-size',
            '32',
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import imageio.v2 as imageio

    image = imageio.imread(out)
    assert image.shape == (3 * 34, 4 * 34, 3)  # 3 skills x (13 frames / stride 4) columns
    rows = [image[i * 34 : i * 34 + 32, -34:-2] for i in range(3)]
    assert not np.array_equal(rows[0], rows[1])  # different skills end in different states
