"""World-model components, the logger and checkpoints, with real TensorFlow at `debug` sizes."""

import functools
import json
import time

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp import networks
from dreamer_lsp._tf import tf
from dreamer_lsp.dreamer import Dreamer
from dreamer_lsp.logger import Logger
from dreamer_lsp.rundir import CheckpointError, CheckpointMismatchError, RunDir
from dreamer_lsp.train import read_agent_checkpoint
from dreamer_lsp.world_model import flatten_states


def make_agent(obs='features'):
    blocks = ['debug', 'dmc_proprio' if obs == 'features' else 'dmc_vision', 'dreamer']
    config = config_lib.build(blocks)
    space = (
        {'features': ((5,), np.float32)}
        if obs == 'features'
        else {'image': ((64, 64, 3), np.uint8)}
    )
    return Dreamer(config, space, 2), config


def fixed_batch(obs='features', batch=4, length=8):
    rng = np.random.default_rng(0)
    data = {
        'action': tf.constant(rng.uniform(-1, 1, (batch, length, 2)), tf.float32),
        'reward': tf.constant(rng.normal(size=(batch, length)), tf.float32),
    }
    if obs == 'features':
        # A smooth signal the model can learn to reconstruct and predict.
        time = np.arange(length)[None, :, None] + rng.uniform(0, 6, (batch, 1, 1))
        data['features'] = tf.constant(np.sin(time + np.arange(5)), tf.float32)
    else:
        data['image'] = tf.constant(rng.integers(0, 256, (batch, length, 64, 64, 3)), tf.uint8)
    return data


def test_rssm_observe_and_imagine_shapes():
    agent, config = make_agent()
    rssm = agent.world_model.rssm
    data = fixed_batch()
    embed = agent.world_model.encoder(agent.world_model.preprocess(data))
    post, prior = rssm.observe(embed, data['action'])
    stoch, deter = config.model.stoch, config.model.deter
    for states in (post, prior):
        assert states['stoch'].shape == (4, 8, stoch) and states['deter'].shape == (4, 8, deter)
        assert states['mean'].shape == states['std'].shape == (4, 8, stoch)
        assert np.all(states['std'].numpy() > 0.1 - 1e-6)
    np.testing.assert_array_equal(post['deter'].numpy(), prior['deter'].numpy())
    last = {k: v[:, -1] for k, v in post.items()}
    imagined = rssm.imagine(data['action'][:, :5], last)
    assert imagined['stoch'].shape == (4, 5, stoch) and imagined['deter'].shape == (4, 5, deter)
    assert rssm.feat(imagined).shape == (4, 5, stoch + deter)


def test_pixel_encoder_and_decoder_shapes():
    agent, config = make_agent('pixels')
    data = fixed_batch('pixels', batch=2, length=3)
    embed = agent.world_model.encoder(agent.world_model.preprocess(data))
    assert embed.shape == (2, 3, 32 * config.model.cnn_depth)
    feat = tf.zeros((2, 3, agent.world_model.rssm.feat_size))
    assert agent.world_model.decoder(feat).mean().shape == (2, 3, 64, 64, 3)


def test_model_loss_falls_on_a_fixed_batch_and_posterior_leaves_the_prior():
    agent, _ = make_agent()
    data = fixed_batch()
    losses = [float(agent.train(data)['model_loss']) for _ in range(20)]
    assert losses[-1] < losses[0]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    embed = agent.world_model.encoder(agent.world_model.preprocess(data))
    post, prior = agent.world_model.rssm.observe(embed, data['action'])
    assert not np.allclose(post['mean'].numpy(), prior['mean'].numpy(), atol=1e-3)


def test_bfloat16_layers_round_only_their_products():
    """With bfloat16 inputs a layer multiplies in bfloat16 and adds, activates and gates in
    float32, returning bfloat16 (CEM's scoring on a CPU)."""
    rng = tf.random.Generator.from_seed(0)
    low = lambda v: tf.cast(v, tf.bfloat16)  # noqa: E731
    wide = lambda v: tf.cast(v, tf.float32)  # noqa: E731
    dense = networks.Dense(rng, 5, 4, tf.nn.elu)
    dense.bias.assign(tf.random.normal((4,)))
    x = low(tf.random.normal((3, 5)))
    expected = low(tf.nn.elu(wide(tf.matmul(x, low(dense.kernel))) + dense.bias))
    assert dense(x).dtype == tf.bfloat16
    np.testing.assert_array_equal(wide(dense(x)).numpy(), wide(expected).numpy())

    cell = networks.GRUCell(rng, 5, 4)
    cell.bias.assign(tf.random.normal((2, 12)))
    state = low(tf.random.normal((3, 4)))
    inputs = wide(tf.matmul(x, low(cell.kernel))) + cell.bias[0]
    recurrent = wide(tf.matmul(state, low(cell.recurrent_kernel))) + cell.bias[1]
    (x_z, x_r, x_h), (h_z, h_r, h_h) = tf.split(inputs, 3, -1), tf.split(recurrent, 3, -1)
    update, reset = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
    expected = low(update * wide(state) + (1 - update) * tf.tanh(x_h + reset * h_h))
    assert cell(x, state).dtype == tf.bfloat16
    np.testing.assert_array_equal(wide(cell(x, state)).numpy(), wide(expected).numpy())


def test_transposed_convolution_matches_tensorflow_on_1x1_and_larger_maps():
    """On a 1x1 map (a matrix product) and larger maps the layer is tf.nn.conv2d_transpose."""
    rng = tf.random.Generator.from_seed(0)
    cases = [(1, 16, 8, 5, 2), (3, 6, 3, 6, 2)]  # (size, channels, filters, kernel, stride)
    for size, channels, filters, kernel, stride in cases:
        layer = networks.Conv2DTranspose(rng, channels, filters, kernel, stride)
        layer.bias.assign(tf.random.normal((filters,)))
        x = tf.random.normal((3, size, size, channels))
        out = (size - 1) * stride + kernel
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            ours = layer(x)
            expected = (
                tf.nn.conv2d_transpose(x, layer.kernel, (3, out, out, filters), stride, 'VALID')
                + layer.bias
            )
            weights = tf.random.normal(ours.shape)
            ours_loss = tf.reduce_sum(weights * ours)
            expected_loss = tf.reduce_sum(weights * expected)
        assert ours.shape == (3, out, out, filters)
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        for ours_grad, expected_grad in zip(
            tape.gradient(ours_loss, [x, layer.kernel]),
            tape.gradient(expected_loss, [x, layer.kernel]),
        ):
            np.testing.assert_allclose(ours_grad.numpy(), expected_grad.numpy(), atol=1e-4)


def test_value_gradient_equals_a_second_forward_pass_on_stopped_features():
    """The update reuses the actor's values; the reference runs the value network again."""
    agent, _ = make_agent()
    data = fixed_batch()
    variables = [*agent.variables, agent.rng.state]
    initial = [v.numpy() for v in variables]
    norm = agent.train(data)['value_grad_norm'].numpy()
    for variable, value in zip(variables, initial):
        variable.assign(value)
    _, post, _ = agent.world_model.loss(data)  # the same random draws as the update
    start = flatten_states({k: tf.stop_gradient(v) for k, v in post.items()})
    sequence = agent.world_model.imagine(agent.imagination_policy, start, agent.config.horizon)
    reward, _ = agent.task_reward(sequence)
    weights, returns, _ = agent.behavior.target(sequence['feat'], reward)
    value_net = agent.behavior.value
    with tf.GradientTape() as tape:
        value = value_net(tf.stop_gradient(sequence['feat'][:-1]))
        loss = -tf.reduce_mean(weights * value.log_prob(tf.stop_gradient(returns)))
    expected = tf.linalg.global_norm(tape.gradient(loss, value_net.trainable_variables))
    np.testing.assert_allclose(norm, expected.numpy(), rtol=1e-4)


def test_rollout_value_is_the_first_lambda_return_without_the_first_value():
    """CEM's score skips the value of the first imagined state: no λ-return reads it."""
    agent, _ = make_agent()
    _, post, _ = agent.world_model.loss(fixed_batch())
    start = flatten_states(post)
    sequence = agent.world_model.imagine(agent.imagination_policy, start, agent.config.horizon)
    reward, _ = agent.task_reward(sequence)
    _, returns, _ = agent.behavior.target(sequence['feat'], reward)
    rollout_value = agent.behavior.rollout_value(sequence['feat'], reward)
    np.testing.assert_allclose(rollout_value.numpy(), returns[0].numpy(), rtol=1e-6)
    # Changing the first state's features changes no λ-return.
    first_changed = tf.concat([sequence['feat'][:1] + 100.0, sequence['feat'][1:]], 0)
    _, changed, _ = agent.behavior.target(first_changed, reward)
    np.testing.assert_array_equal(changed.numpy(), returns.numpy())


def test_the_loggers_pending_averages_survive_a_checkpoint(tmp_path):
    # A run checkpointed between two log lines logs the averages of the updates on both sides.
    first, second = (Logger(RunDir(tmp_path / name), 100) for name in ('first', 'second'))
    for logger in (first, second):
        logger.average({'loss': 1.0})
        logger.average({'loss': 2.0, 'norm': 4.0})
    resumed = Logger(RunDir(tmp_path / 'second'), 100)
    resumed.restore_pending(json.loads(json.dumps(second.pending())))  # as state.json holds it
    for logger in (first, resumed):
        logger.average({'loss': 6.0})
        logger.write(10, 3)
    for name in ('first', 'second'):
        line = json.loads((tmp_path / name / 'metrics.jsonl').read_text())
        assert line['train/loss'] == 3.0 and line['train/norm'] == 4.0


def test_the_wall_time_counts_on_over_a_resume(tmp_path):
    logger = Logger(RunDir(tmp_path), 100)
    logger.restore_wall_seconds(3600.0)  # an earlier start's count, from its checkpoint
    begin = time.monotonic()
    logger.write(10, 3)
    took = time.monotonic() - begin
    logger.close()
    line = json.loads((tmp_path / 'metrics.jsonl').read_text())
    assert 3600.0 < line['wall_seconds'] < 3600.0 + took + 60.0


def test_a_checkpoint_of_another_agent_stops_the_resume_and_stays_in_place(tmp_path):
    # After a code change that adds or reshapes a variable, the checkpoints are not "unreadable".
    def agent(**shapes):
        module = tf.Module()
        for name, shape in shapes.items():
            setattr(module, name, tf.Variable(tf.zeros(shape)))
        return tf.train.Checkpoint(agent=module)

    run = RunDir(tmp_path / 'run')
    written = agent(kernel=(3, 4), bias=(4,))
    run.save_checkpoint('ckpt-000000100', written.write, {'step': 100}, keep=2)
    for changed in (agent(kernel=(3, 5), bias=(4,)), agent(kernel=(3, 4), bias=(4,), new=(2,))):
        with pytest.raises(CheckpointMismatchError, match='ckpt-000000100 holds another agent'):
            run.load_checkpoint(functools.partial(read_agent_checkpoint, changed))
        assert run.latest_name() == 'ckpt-000000100'
        assert not list(run.checkpoints.glob('unreadable-*'))
    same = agent(kernel=(3, 4), bias=(4,))
    assert run.load_checkpoint(lambda prefix: read_agent_checkpoint(same, prefix)) == {'step': 100}
    # A damaged file is still moved aside (and with no checkpoint left, the run cannot resume).
    data = next(run.checkpoints.glob('ckpt-000000100/variables.data-*'))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(CheckpointError, match='holds no readable checkpoint'):
        run.load_checkpoint(
            lambda prefix: read_agent_checkpoint(same, prefix), (tf.errors.OpError,)
        )
    assert list(run.checkpoints.glob('unreadable-ckpt-000000100'))
