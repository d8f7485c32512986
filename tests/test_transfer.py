"""Runs that start from a finished run's checkpoint: transfer, the skill-rollout figure and the
skill predictor's information."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp._tf import tf
from dreamer_lsp.agents import make_agent
from dreamer_lsp.config import ConfigError, check
from dreamer_lsp.envs import ProcessEnv
from dreamer_lsp.rundir import RunDir
from dreamer_lsp.train import Trainer
from dreamer_lsp.transfer import load_matching, shared_entries, write_report
from tools import acting_cem_noise, cem_precision, skill_information, skill_rollouts


def make_config(logdir, *blocks, **overrides):
    config = config_lib.build(
        ['debug', 'dmc_proprio', *blocks], {'logdir': str(logdir), **overrides}
    )
    check(config)
    return config


@pytest.fixture(scope='module')
def source_run(built_once):
    def build(logdir):
        Trainer(make_config(logdir, 'lsp', steps=800)).run()

    logdir, _ = built_once('source', build)
    return logdir


def checkpoint_value(logdir, key):
    reader = tf.train.load_checkpoint(str(RunDir(logdir).latest_variables()))
    return reader.get_tensor(key)


def test_transfer_loads_the_source_weights_and_trains(source_run, tmp_path):
    config = make_config(
        tmp_path / 'target',
        'lsp_fixed_policy',
        steps=1000,
        **{'transfer.checkpoint': str(source_run), 'skills.length': 4, 'skills.horizon': 8},
    )
    trainer = Trainer(config)
    actor_kernel = trainer.agent.behavior.actor.net.hidden[0].kernel.numpy()
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
    assert report['loaded_in_full']['world_model'] > 10 and report['loaded_in_full']['actor'] > 5
    assert report['loaded_in_part'] == {}  # same task: every observation-sized layer in full
    # K changed from 2 to 4: the skill predictor's input layer cannot be reused, so none of its
    # layers are (the output layer has the same shape in both runs).
    predictor = {k: v for k, v in report['not_loaded'].items() if k.startswith('predictor/')}
    assert predictor['predictor/net/net/hidden/0/kernel'].startswith('shape [')
    assert 'kept fresh with its module' in predictor['predictor/net/net/out/kernel']
    assert not any(k == 'predictor' for k in report['loaded_in_full'])
    output = checkpoint_value(
        source_run, 'agent/predictor/net/net/out/kernel/.ATTRIBUTES/VARIABLE_VALUE'
    )
    assert output.shape == trainer.agent.predictor.net.net.out.kernel.shape
    assert not np.array_equal(trainer.agent.predictor.net.net.out.kernel.numpy(), output)
    trainer.run()
    # lsp_fixed_policy: the transferred low-level actor is still bit-identical after training.
    np.testing.assert_array_equal(
        trainer.agent.behavior.actor.net.hidden[0].kernel.numpy(), expected
    )
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
    assert trainer.replay.num_episodes == 4 and trainer.loop.prefill_end == 0
    trainer.run()
    output = capsys.readouterr().out
    assert 'Seeded the replay with 4 episodes' in output and 'Prefilled' not in output
    assert trainer.loop.updates >= config.pretrain


def quadruped_space_and_observation(task):
    env = ProcessEnv(task=task, obs_type='features', time_limit=20)
    try:
        return env.obs_space, env.action_size, env.reset()['features']
    finally:
        env.close()


def test_transfer_to_more_observation_entries_keeps_the_embedding(tmp_path):
    source_space, actions, _ = quadruped_space_and_observation('quadruped_walk')
    target_space, _, observation = quadruped_space_and_observation('quadruped_reach')
    assert source_space['features'][0] == (78,) and target_space['features'][0] == (81,)
    config = config_lib.build(['debug', 'dmc_proprio', 'lsp'])
    source = make_agent(config, source_space, actions)
    checkpoint = tmp_path / 'source' / 'checkpoint'
    source.checkpoint().write(str(checkpoint / 'ckpt-0' / 'variables'))
    (checkpoint / 'latest').write_text('ckpt-0')
    target = make_agent(config.update({'seed': 1}), target_space, actions)
    report = load_matching(target, tmp_path / 'source')
    write_report(RunDir(tmp_path / 'target'), report)

    # The reach observation with its goal entries (the last 3) at zero: the same embedding.
    shared = observation.copy()
    shared[78:] = 0.0
    target_embed = target.world_model.encoder(tf.constant(shared[None]))
    source_embed = source.world_model.encoder(tf.constant(observation[None, :78]))
    np.testing.assert_allclose(target_embed.numpy(), source_embed.numpy(), rtol=1e-6, atol=1e-6)
    # The decoder predicts the shared entries (mean and std) as the source did.
    feat = tf.random.stateless_normal((5, source.world_model.rssm.feat_size), (0, 1))
    source_decoded, target_decoded = (
        source.world_model.decoder(feat),
        target.world_model.decoder(feat),
    )
    for statistic in ('mean', 'stddev'):
        np.testing.assert_allclose(
            getattr(target_decoded, statistic)().numpy()[:, :78],
            getattr(source_decoded, statistic)().numpy(),
            rtol=1e-6,
        )
    # The new rows of the encoder kept their fresh initialisation (not zero, not the source's).
    assert np.abs(target.world_model.encoder.layers[0].kernel.numpy()[78:]).sum() > 0

    written = json.loads((tmp_path / 'target' / 'transfer.json').read_text())
    assert sorted(written['loaded_in_part']) == [
        'world_model/decoder/net/out/bias',
        'world_model/decoder/net/out/kernel',
        'world_model/encoder/layers/0/kernel',
    ]
    assert (
        '78 shared observation entries loaded, 3 new ones fresh'
        in (written['loaded_in_part']['world_model/encoder/layers/0/kernel'])
    )
    assert written['not_loaded'] == {}
    assert written['loaded_in_full']['actor'] > 0 and written['loaded_in_full']['predictor'] > 0


def test_a_source_that_shares_no_network_is_refused(tmp_path):
    space, actions, _ = quadruped_space_and_observation('quadruped_walk')
    config = config_lib.build(['debug', 'dmc_proprio', 'dreamer'])
    checkpoint = tmp_path / 'source' / 'checkpoint'
    make_agent(config, space, actions).checkpoint().write(str(checkpoint / 'ckpt-0' / 'variables'))
    (checkpoint / 'latest').write_text('ckpt-0')
    wider = make_agent(config.update({'model.units': 24}), space, actions)
    with pytest.raises(ConfigError, match='shares no network with this agent'):
        load_matching(wider, tmp_path / 'source')


def test_shared_entries_fill_each_block_by_hand():
    source = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)  # 2 entries x (mean, log-std)
    target = -np.ones((2, 6), np.float32)  # 3 entries x (mean, log-std)
    value, sizes = shared_entries(source, target, axis=1, blocks=2)
    assert sizes == (2, 3)
    np.testing.assert_array_equal(value, [[0, 1, -1, 2, 3, -1], [4, 5, -1, 6, 7, -1]])


def test_missing_transfer_source_is_a_config_error(tmp_path):
    config = config_lib.build(
        ['debug'], {'logdir': str(tmp_path / 'x'), 'transfer.checkpoint': str(tmp_path / 'none')}
    )
    with pytest.raises(ConfigError, match='is not a directory'):
        check(config)


def test_skill_rollouts_figure_from_a_checkpoint(source_run, tmp_path):
    out = tmp_path / 'fig7.png'
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'tools.skill_rollouts',
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
            '--json',
            str(tmp_path / 'motion.json'),
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
    # The motion report C3's verdict reads (tools.claims motion), and the line that prints it.
    report = json.loads((tmp_path / 'motion.json').read_text())
    assert report['ratio'] == pytest.approx(report['between_skills'] / report['within_skill'])
    assert f'ratio {report["ratio"]:.2f}' in result.stdout


def test_skill_motion_spreads_different_skills_in_the_simulator(source_run):
    report, rows = skill_rollouts.skill_motion(
        source_run, skills=3, repeats=2, steps=8, video_size=64
    )
    assert len(rows) == 3 and rows[0].shape == (9, 64, 64, 3)
    assert report['between_skills'] > 0 and report['within_skill'] > 0
    assert report['ratio'] == pytest.approx(report['between_skills'] / report['within_skill'])
    assert len(report['between_skills_per_coordinate']) == 2  # cartpole qpos: slider, hinge


def test_motion_spread_by_hand():
    final = np.array([[[0.0, 0.0], [0.0, 1.0]], [[3.0, 0.0], [3.0, 1.0]]])  # [2 skills, 2, 2]
    report = skill_rollouts.motion_spread(final)
    # Between: (0,0)-(3,0) 3, (0,0)-(3,1) √10, (0,1)-(3,0) √10, (0,1)-(3,1) 3; within: 1 and 1.
    between = (6 + 2 * np.sqrt(10)) / 4
    assert report['between_skills'] == pytest.approx(between)
    assert report['within_skill'] == pytest.approx(1.0)
    assert report['ratio'] == pytest.approx(between)
    assert report['between_skills_per_coordinate'] == pytest.approx([3.0, 0.5])
    assert report['within_skill_per_coordinate'] == pytest.approx([0.0, 1.0])


def test_cem_precision_measures_elite_agreement_on_a_runs_batches(source_run, tmp_path, capsys):
    out = tmp_path / 'agreement.json'
    argv = ['--run', str(source_run), '--batches', '2', '--starts', '4', '16']
    assert cem_precision.main([*argv, '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['low_dtype'] == 'bfloat16'
    assert [row['starts'] for row in report['rows']] == [4, 16]
    assert all(row['calls'] == 2 * 2 for row in report['rows'])  # debug CEM: 2 iterations
    output = capsys.readouterr().out
    assert '16 starts, 4 scoring calls, bfloat16: identical elite sets' in output
    assert '16 starts, 4 scoring calls, float32, fresh noise: identical' in output
    assert cem_precision.main(['--run', str(tmp_path)]) == 2
    assert 'error:' in capsys.readouterr().err


def test_acting_cem_noise_from_a_runs_checkpoint(source_run, tmp_path, capsys):
    out = tmp_path / 'noise.json'
    argv = ['--run', str(source_run), '--particles', '1', '2', '--repeats', '2']
    acting_cem_noise.main([*argv, '--reference', '4', '--warmup', '3', '--json', str(out)])
    report = json.loads(out.read_text())
    assert [row['particles'] for row in report['rows']] == [1, 2]
    for row in report['rows']:
        gap = row['elite_value_mean'] - row['chosen_plan_value_mean']
        assert row['optimism'] == pytest.approx(gap)
        assert all(np.isfinite(value) for value in row.values())
    output = capsys.readouterr().out
    assert output.count('particles ') == 2 and 'optimism' in output
    with pytest.raises(SystemExit) as stopped:
        acting_cem_noise.main(['--run', str(tmp_path)])
    assert stopped.value.code == 2 and 'error:' in capsys.readouterr().err


def test_pooled_log_density_by_hand():
    skills = np.array([[[0.0, 0.0], [2.0, 4.0]]])  # [1 segment, 2 skills, 2 dimensions]
    # Fitted: means (1, 2), stds (1, 2); each skill is one std away in both dimensions.
    expected = -1.0 - np.log(2.0) - np.log(2 * np.pi)
    assert skill_information.pooled_log_density(skills) == pytest.approx(expected)


def test_skill_information_on_a_runs_batches(source_run, tmp_path, capsys):
    out = tmp_path / 'information.json'
    assert (
        skill_information.main(['--run', str(source_run), '--batches', '2', '--json', str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    assert len(report['batches']) == 2 and report['checkpoint'] == RunDir(source_run).latest_name()
    assert report['information'] == pytest.approx(report['log_q'] - report['log_q_shuffled'])
    assert report['mi_bound'] == pytest.approx(report['log_q'] - report['log_p'])
    config = config_lib.load_saved(RunDir(source_run).config)
    assert report['predictor_std'] >= config.model.min_std
    assert report['within_batch_std'] > 0 and report['pooled_std'] > 0
    assert np.isfinite(report['log_p_pooled']) and 0 < report['action_change'] < 2
    assert report['actor_grad_task'] > 0 and report['actor_grad_mi'] > 0
    assert 'information' in capsys.readouterr().out
    assert skill_information.main(['--run', str(tmp_path)]) == 2
    assert 'error:' in capsys.readouterr().err
