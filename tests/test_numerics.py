"""Agent pieces checked against values computed by hand."""

import math

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp import networks
from dreamer_lsp._tf import tf
from dreamer_lsp.dreamer import Dreamer
from dreamer_lsp.utils import Adam, lambda_return
from dreamer_lsp.world_model import WorldModel


def test_lambda_return_by_hand():
    reward = tf.constant([[1.0], [2.0], [3.0]])
    next_value = tf.constant([[20.0], [30.0], [40.0]])  # the last one bootstraps
    discount = tf.constant([[0.9], [0.9], [0.9]])
    lam = 0.5
    # Backwards: G2 = 3 + .9 * 40 = 39; G1 = 2 + .9 * (.5 * 30 + .5 * 39);
    # G0 = 1 + .9 * (.5 * 20 + .5 * G1).
    g2 = 3 + 0.9 * 40
    g1 = 2 + 0.9 * (0.5 * 30 + 0.5 * g2)
    g0 = 1 + 0.9 * (0.5 * 20 + 0.5 * g1)
    returns = lambda_return(reward, next_value, discount, lam).numpy()[:, 0]
    np.testing.assert_allclose(returns, [g0, g1, g2], rtol=1e-6)


def test_lambda_one_is_monte_carlo_and_zero_is_one_step():
    reward = tf.constant([1.0, 1.0, 1.0])
    next_value = tf.constant([6.0, 7.0, 8.0])
    discount = tf.fill([3], 0.5)
    mc = lambda_return(reward, next_value, discount, 1.0).numpy()
    np.testing.assert_allclose(mc[0], 1 + 0.5 * (1 + 0.5 * (1 + 0.5 * 8)))
    td = lambda_return(reward, next_value, discount, 0.0).numpy()
    np.testing.assert_allclose(td, [1 + 0.5 * 6, 1 + 0.5 * 7, 1 + 0.5 * 8])


def test_soft_clamp_of_the_decoder_std_by_hand():
    log_std = tf.constant([-20.0, math.log(0.5), 20.0])
    std = networks.soft_clamp_std(log_std, 0.1, 1.5).numpy()
    lo, hi = math.log(0.1), math.log(1.5)

    def softplus(x):
        return math.log1p(math.exp(x))

    expected = []
    for x in [-20.0, math.log(0.5), 20.0]:
        y = hi - softplus(hi - x)
        expected.append(math.exp(lo + softplus(y - lo)))
    np.testing.assert_allclose(std, expected, rtol=1e-5)
    # The clamp is soft: the floor is exact, the top saturates at 0.1 * (1 + 1.5 / 0.1) = 1.6.
    assert std[0] == pytest.approx(0.1, abs=1e-6) and std[2] == pytest.approx(1.6, rel=1e-5)
    assert 0.45 < std[1] < 0.55


def test_actor_initial_std_is_five():
    actor_config = config_lib.build().actor
    rng = tf.random.Generator.from_seed(0)
    actor = networks.ActionHead(
        rng,
        8,
        3,
        layers=2,
        units=16,
        act='elu',
        init_std=actor_config.init_std,
        min_std=actor_config.min_std,
        mean_scale=actor_config.mean_scale,
    )
    # Zero the output layer: std = softplus(0 + log(exp(5) - 1)) + 1e-4 = 5 + 1e-4, mean 0.
    actor.net.out.kernel.assign(tf.zeros_like(actor.net.out.kernel))
    dist = actor(tf.random.normal((4, 8)))
    np.testing.assert_allclose(dist.std.numpy(), 5.0 + 1e-4, rtol=1e-6)
    np.testing.assert_allclose(dist.mean.numpy(), 0.0)
    sample = dist.sample().numpy()
    assert sample.shape == (4, 3) and np.all(np.abs(sample) <= 1)


def test_tanh_normal_mode_is_the_most_likely_sample():
    rng = tf.random.Generator.from_seed(1)
    dist = networks.TanhNormal(tf.constant([[0.3, -0.2]]), tf.constant([[0.05, 0.05]]), rng)
    np.testing.assert_allclose(dist.mode().numpy(), np.tanh([[0.3, -0.2]]), atol=0.03)


def test_free_nats_clip_the_batch_mean_kl():
    config = config_lib.build(['debug', 'dmc_proprio'], {'model.free_nats': 1000.0})
    space = {'features': ((5,), np.float32)}
    model = WorldModel(config, space, 2, tf.random.Generator.from_seed(0))
    data = {
        'features': tf.random.normal((2, 6, 5)),
        'action': tf.zeros((2, 6, 2)),
        'reward': tf.zeros((2, 6)),
    }
    loss, _, metrics = model.loss(data)
    expected = 1000.0 + metrics['obs_loss'] + metrics['reward_loss']
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)
    assert metrics['kl'].numpy() < 1000.0


def test_adam_matches_the_update_rule_by_hand():
    variable = tf.Variable([1.0, -2.0])
    module = tf.Module()
    module.weights = [variable]
    optimizer = Adam('opt', [module], lr=0.1, clip=None, eps=1e-7)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(variable**2)
    optimizer.minimize(tape, loss)
    # First step: m = .1 g, v = .001 g^2, lr_t = .1 sqrt(1 - .999) / (1 - .9): delta = .1 sign(g).
    np.testing.assert_allclose(variable.numpy(), [0.9, -1.9], rtol=1e-5)


def test_adam_clips_the_global_norm():
    variable = tf.Variable([3.0, 4.0])
    module = tf.Module()
    module.weights = [variable]
    optimizer = Adam('opt', [module], lr=0.0, clip=1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(variable * tf.constant([30.0, 40.0]))
    norm = optimizer.minimize(tape, loss)
    assert norm.numpy() == pytest.approx(50.0)
    np.testing.assert_allclose(optimizer.first[0].numpy(), [0.1 * 0.6, 0.1 * 0.8], rtol=1e-5)


def test_float16_path_scales_the_loss_and_trains():
    config = config_lib.build(['debug', 'dmc_proprio'])
    agent = Dreamer(config, {'features': ((5,), np.float32)}, 2, dtype=tf.float16)
    data = {
        'features': tf.random.normal((4, 8, 5)),
        'action': tf.random.uniform((4, 8, 2), -1, 1),
        'reward': tf.random.normal((4, 8)),
    }
    for _ in range(4):
        metrics = agent.train(data)
    losses = [metrics[k].numpy() for k in ('model_loss', 'actor_loss', 'value_loss')]
    assert all(np.isfinite(losses))
    optimizer = agent.model_opt
    assert optimizer.loss_scaling
    # Each update is either applied or, on overflowing gradients, skipped with a halved scale.
    applied = optimizer.iterations.numpy()
    assert applied > 0
    assert optimizer.loss_scale.numpy() == 2.0 ** (15 - (4 - applied))


def test_compiled_and_eager_updates_agree():
    config = config_lib.build(['debug', 'dmc_proprio', 'lsp'])
    from dreamer_lsp.agents import make_agent

    agent = make_agent(config, {'features': ((5,), np.float32)}, 2)
    rng = np.random.default_rng(0)
    data = {
        'features': tf.constant(rng.normal(size=(4, 8, 5)), tf.float32),
        'action': tf.constant(rng.uniform(-1, 1, (4, 8, 2)), tf.float32),
        'reward': tf.constant(rng.normal(size=(4, 8)), tf.float32),
    }
    variables = [*agent.variables, agent.rng.state]
    initial = [v.numpy() for v in variables]
    compiled = agent.train(data)
    after_compiled = [v.numpy() for v in variables]
    for variable, value in zip(variables, initial):
        variable.assign(value)  # weights, optimizer slots and the random generator's state
    eager = agent._train(data)
    for key in compiled:
        np.testing.assert_allclose(eager[key].numpy(), compiled[key].numpy(), rtol=1e-3, atol=1e-4)
    for a, b in zip(after_compiled, [v.numpy() for v in variables]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
