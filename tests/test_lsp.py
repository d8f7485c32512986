"""LSP components with real TensorFlow graphs and the `debug` sizes."""

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp._tf import tf
from dreamer_lsp.agents import make_agent
from dreamer_lsp.lsp import LSP, cross_entropy_method, refit
from tools import cem_precision, skill_information
from tools.acting_cem_noise import measure

SPACE = {'features': ((5,), np.float32)}


def make(preset, **overrides):
    config = config_lib.build(['debug', 'dmc_proprio', preset], overrides)
    return make_agent(config, SPACE, 2)


def batch(agent, seed=0):
    rng = np.random.default_rng(seed)
    b, t = agent.config.batch_size, agent.config.batch_length
    return {
        'features': tf.constant(rng.normal(size=(b, t, 5)), tf.float32),
        'action': tf.constant(rng.uniform(-1, 1, (b, t, 2)), tf.float32),
        'reward': tf.constant(rng.normal(size=(b, t)), tf.float32),
    }


def start_states(agent, data):
    _, post, _ = agent.world_model.loss(data)
    return {k: tf.reshape(v, (-1, v.shape[-1])) for k, v in post.items()}


def imagine(agent, start, plan):
    """The imagined sequence of a plan (None: `hiro`), its reward and metrics, as in training."""
    policy = agent.skill_policy(None if plan is None else plan['skills'])
    sequence = agent.world_model.imagine(policy, start, agent.horizon)
    reward, metrics = agent.reward(start, sequence, plan)
    return sequence, reward, metrics


def test_cem_converges_on_a_known_objective():
    target = tf.constant([[0.5, -1.0, 1.5]])
    rng = tf.random.Generator.from_seed(3)

    def score(z):  # -||z - z*||^2 per proposal
        return -tf.reduce_sum(tf.square(z - target), [1, 2])

    optimise = tf.function(
        lambda: cross_entropy_method(score, (1, 3), proposals=64, elites=8, iterations=12, rng=rng)
    )
    mean, std, elite_value = optimise()
    np.testing.assert_allclose(mean.numpy(), target.numpy(), atol=0.1)
    assert np.all(std.numpy() < 0.1)  # shrinks from the prior's 1
    assert elite_value.numpy() > -0.02


def test_refit_takes_the_top_m_as_numpy_does():
    rng = np.random.default_rng(0)
    proposals = rng.normal(size=(16, 1, 3)).astype(np.float32)
    scores = rng.normal(size=16).astype(np.float32)
    mean, std, value = refit(tf.constant(proposals), tf.constant(scores), 4)
    top = np.argsort(-scores)[:4]
    np.testing.assert_allclose(mean.numpy(), proposals[top].mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), proposals[top].std(0), rtol=1e-4)
    np.testing.assert_allclose(value.numpy(), scores[top].mean(), rtol=1e-5)


def test_lsp_presets_match_the_spec_table():
    expected = {
        'lsp': ('cem', True, False),
        'random_skills': ('random', True, False),
        'randskills_inp': ('random', False, False),
        'no_mi': ('cem', False, False),
        'hiro': ('policy', True, False),
        'lsp_fixed_policy': ('cem', True, True),
        'dreamer': ('none', False, False),
    }
    for preset, row in expected.items():
        skills = config_lib.build([preset]).skills
        assert (skills.high_level, skills.intrinsic, skills.freeze_actor) == row
    config = config_lib.build(['lsp'])
    assert (config.skills.dim, config.skills.length, config.skills.horizon) == (3, 10, 10)
    assert (config.cem.proposals, config.cem.elites, config.cem.iterations) == (16, 4, 4)
    assert (config.skills.predictor_lr, config.skills.mean_noise) == (8e-5, 0.1)


def test_train_step_and_planner_do_not_retrace():
    agent = make('lsp')
    agent.train(batch(agent, 0))
    agent.train(batch(agent, 1))
    assert agent.train.experimental_get_tracing_count() == 1
    state = agent.initial_state()
    for _ in range(2 * agent.skill_length + 1):
        obs = {'features': tf.random.normal((1, 5))}
        _, state, _ = agent.act(obs, state, explore=True)
    # One compiled acting function, traced once with and once without a planning step.
    assert agent.step.experimental_get_tracing_count() == 2


def test_skill_changes_only_every_k_steps():
    agent = make('lsp')
    state = agent.initial_state()
    skills = []
    for _ in range(3 * agent.skill_length):
        _, state, extras = agent.act({'features': tf.random.normal((1, 5))}, state, True)
        skills.append(extras['skill'])
    skills = np.array(skills)
    changes = [t for t in range(1, len(skills)) if not np.array_equal(skills[t], skills[t - 1])]
    k = agent.skill_length
    assert changes == [k, 2 * k]


@pytest.mark.parametrize('noise_acting', [True, False])
def test_training_acts_with_the_skill_noise_when_cem_collapses(monkeypatch, noise_acting):
    # CEM's plan collapsed to a point: mean 0.5, std 0.
    monkeypatch.setattr(
        LSP, 'cem', lambda self, start: (tf.fill((2, 3), 0.5), tf.zeros((2, 3)), tf.constant(0.0))
    )
    agent = make('lsp', **{'skills.mean_noise_acting': noise_acting})
    latent, _, _, _ = agent.initial_state()
    skills = np.array([agent.choose_skill(latent, explore=True)[0] for _ in range(400)])
    if noise_acting:  # skills ~ N(0.5, 0.1²) per dimension
        np.testing.assert_allclose(skills.mean(0), 0.5, atol=0.03)
        np.testing.assert_allclose(skills.std(0), agent.config.skills.mean_noise, rtol=0.2)
    else:
        np.testing.assert_array_equal(skills, 0.5)
    np.testing.assert_array_equal(agent.choose_skill(latent, explore=False), [[0.5] * 3])


def test_action_entropy_is_measured_with_the_skills_the_actor_was_given():
    agent = make('lsp')
    start = {k: tf.stop_gradient(v) for k, v in start_states(agent, batch(agent)).items()}
    n = start['deter'].shape[0]
    skills = tf.fill((n, agent.num_skills, agent.skill_dim), 10.0)
    plan = dict(skills=skills, log_p=tf.zeros((agent.num_skills, n)))
    agent.plan_skills = lambda start: (plan, {})
    metrics = agent.learn_behavior(start)
    feat = agent.world_model.feat(start)
    given = agent.behavior.policy(feat, skills[:, 0]).entropy().numpy().mean()
    zero = agent.behavior.policy(feat, tf.zeros_like(skills[:, 0])).entropy().numpy().mean()
    # Monte Carlo estimates (100 samples per state), so equal only within their noise; the
    # skill moves the entropy by far more (about 3 nats here).
    assert metrics['action_ent'].numpy() == pytest.approx(given, abs=0.3)
    assert abs(given - zero) > 1.0


def test_predictor_noise_is_a_config_key_and_applied():
    agent = make('lsp', **{'skills.predictor_noise': 0.7})
    assert agent.predictor.noise == 0.7
    segments = tf.random.normal((4, agent.skill_length + 1, agent.world_model.rssm.feat_size))
    first = agent.predictor(segments).mean().numpy()
    second = agent.predictor(segments).mean().numpy()
    assert not np.allclose(first, second)
    quiet = make('lsp', **{'skills.predictor_noise': 0.0})
    np.testing.assert_array_equal(
        quiet.predictor(segments).mean().numpy(), quiet.predictor(segments).mean().numpy()
    )


def test_intrinsic_reward_is_the_predictor_log_probability_of_the_rollout():
    agent = make('lsp', **{'skills.predictor_noise': 0.0})
    start = start_states(agent, batch(agent))
    plan, _ = agent.plan_skills(start)
    sequence, _, metrics = imagine(agent, start, plan)
    segments = agent.segments(start, sequence)
    log_q = agent.predictor(segments).log_prob(agent.segment_skills(sequence))  # [S, N]
    expected = tf.reduce_mean(log_q) / agent.skill_length
    np.testing.assert_allclose(metrics['intrinsic_reward'].numpy(), expected.numpy(), rtol=1e-5)
    k, feat = agent.skill_length, agent.world_model.rssm.feat_size
    assert segments.shape[1:] == (start['deter'].shape[0], k + 1, feat)


@pytest.mark.parametrize('preset', ['no_mi', 'randskills_inp'])
def test_presets_without_mi_have_no_intrinsic_reward(preset):
    agent = make(preset)
    start = start_states(agent, batch(agent))
    plan, _ = agent.plan_skills(start)
    sequence, reward, metrics = imagine(agent, start, plan)
    assert 'intrinsic_reward' not in metrics
    task_reward = agent.world_model.task_reward(sequence)
    np.testing.assert_array_equal(reward.numpy(), task_reward.numpy())
    assert 'predictor_log_likelihood' not in agent.train(batch(agent))


def test_random_skills_never_call_cem(monkeypatch):
    calls = []
    original = LSP.cem
    monkeypatch.setattr(LSP, 'cem', lambda self, start: calls.append(1) or original(self, start))
    agent = make('random_skills')
    agent.train(batch(agent))
    state = agent.initial_state()
    for _ in range(agent.skill_length + 1):
        _, state, _ = agent.act({'features': tf.random.normal((1, 5))}, state, True)
    assert calls == []
    lsp = make('lsp')
    lsp.train(batch(lsp))
    assert calls  # the same spy sees LSP's calls


def test_fixed_policy_leaves_the_actor_bit_identical():
    agent = make('lsp_fixed_policy')
    before = [v.numpy().copy() for v in agent.behavior.actor.variables]
    predictor_before = [v.numpy().copy() for v in agent.predictor.variables]
    for seed in range(3):
        agent.train(batch(agent, seed))
    for old, new in zip(before, agent.behavior.actor.variables):
        np.testing.assert_array_equal(old, new.numpy())
    assert any(
        not np.array_equal(o, n.numpy())
        for o, n in zip(predictor_before, agent.predictor.variables)
    )


def test_hiro_trains_its_high_level_policy():
    agent = make('hiro')
    before = [v.numpy().copy() for v in agent.high_policy.variables]
    metrics = agent.train(batch(agent))
    assert 'predictor_log_likelihood' in metrics and 'cem_std' not in metrics
    assert any(
        not np.array_equal(o, n.numpy()) for o, n in zip(before, agent.high_policy.variables)
    )


def test_cem_subset_of_start_states_is_a_config_key():
    agent = make('lsp', **{'cem.train_starts': 5})
    start = start_states(agent, batch(agent))
    subset = agent._cem_starts(start, tf.shape(start['deter'])[0])
    assert subset['deter'].shape[0] == 5
    metrics = agent.train(batch(agent))
    assert np.isfinite(metrics['cem_elite_value'].numpy())


def normal_log_density(x, mean, std):
    """log N(x; mean, diag std²) summed over the last axis, in NumPy."""
    return np.sum(-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), -1)


def planned(agent, seed=0):
    """plan_skills on a batch, with the CEM result it was sampled from."""
    results = []
    original = agent.cem
    agent.cem = lambda start: results.append(original(start)) or results[-1]
    plan, metrics = agent.plan_skills(start_states(agent, batch(agent, seed)))
    mean, std, _ = (t.numpy() for t in results[0])
    return plan, metrics, mean, std


@pytest.mark.parametrize('per', ['skill', 'update'])
def test_entropy_floor_holds_only_with_noise_per_skill(per):
    # One elite: CEM's std is exactly 0 after its first iteration.
    agent = make('lsp', **{'cem.elites': 1, 'skills.mean_noise_per': per})
    plan, metrics, mean, std = planned(agent)
    np.testing.assert_array_equal(std, 0.0)
    skills = plan['skills'].numpy()  # [N, S, D]
    _, _, behavior = imagine(agent, start_states(agent, batch(agent)), plan)
    spread = behavior['skill_spread'].numpy()
    np.testing.assert_allclose(spread, skills.std(0).mean(), rtol=1e-5)
    if per == 'skill':
        assert spread >= 0.9 * agent.config.skills.mean_noise
        expected = normal_log_density(skills, mean, agent.config.skills.mean_noise)  # [N, S]
        np.testing.assert_allclose(plan['log_p'].numpy(), expected.T, rtol=1e-4)
    else:
        assert spread < 1e-6
        # One ε for the batch: every skill equals μ + ε; the density is a point mass's limit.
        shift = skills[0] - mean
        np.testing.assert_allclose(skills - mean, np.broadcast_to(shift, skills.shape), atol=1e-6)
        assert np.all(np.abs(shift) > 0)
        assert np.all(np.isfinite(plan['log_p'].numpy()))


def test_mutual_information_estimate_by_hand():
    agent = make('lsp', **{'skills.predictor_noise': 0.0})
    start = start_states(agent, batch(agent))
    n, s, d = start['deter'].shape[0], agent.num_skills, agent.skill_dim
    skills = np.random.default_rng(1).normal(size=(n, s, d)).astype(np.float32)
    log_p = normal_log_density(skills, 0.0, 1.0).T  # [S, N] under N(0, I)
    plan = dict(skills=tf.constant(skills), log_p=tf.constant(log_p, tf.float32))
    sequence, _, metrics = imagine(agent, start, plan)
    predicted = agent.predictor(agent.segments(start, sequence))
    mean, std = predicted.mean().numpy(), predicted.stddev().numpy()  # [S, N, D]
    log_q = normal_log_density(np.transpose(skills, (1, 0, 2)), mean, std)
    np.testing.assert_allclose(
        metrics['skill_mi_bound'].numpy(), log_q.mean() - log_p.mean(), rtol=1e-4
    )


def test_random_skills_log_their_density_under_the_prior():
    agent = make('random_skills')
    plan, _ = agent.plan_skills(start_states(agent, batch(agent)))
    expected = normal_log_density(plan['skills'].numpy(), 0.0, 1.0).T
    np.testing.assert_allclose(plan['log_p'].numpy(), expected, rtol=1e-5)


def test_hiro_logs_spread_and_mi_bound_of_its_policy_skills():
    agent = make('hiro')
    metrics = agent.train(batch(agent))
    assert metrics['skill_spread'].numpy() > 0
    assert np.isfinite(metrics['skill_mi_bound'].numpy())


def test_acting_cem_scores_each_proposal_on_several_particles(monkeypatch):
    starts = []
    original = LSP.cem
    monkeypatch.setattr(
        LSP, 'cem', lambda self, start: starts.append(start) or original(self, start)
    )
    agent = make('lsp', **{'cem.act_particles': 3})
    _, _, extras = agent.act({'features': tf.ones((1, 5))}, agent.initial_state(), True)
    assert starts[-1]['deter'].shape[0] == 3 and extras['skill'].shape == (3,)


def test_acting_cem_noise_figures_from_one_state():
    agent = make('lsp')
    latent, _, _, _ = agent.initial_state()
    row = measure(agent, latent, particles=2, repeats=3, reference=4)
    assert row['particles'] == 2 and row['score_noise'] > 0
    assert row['optimism'] == pytest.approx(row['elite_value_mean'] - row['chosen_plan_value_mean'])
    assert all(np.isfinite(value) for value in row.values())


def test_cem_scores_in_bfloat16_the_same_rollouts_rounded():
    agent = make('lsp', **{'cem.precision': 16})
    assert agent.score_dtype == tf.bfloat16  # a CPU: no GPU here
    start = start_states(agent, batch(agent))
    rng = np.random.default_rng(1)
    shape = (start['deter'].shape[0], agent.num_skills, agent.skill_dim)
    skills = tf.constant(rng.normal(size=shape), tf.float32)
    random_state = agent.rng.state.numpy()
    low = agent.plan_value(skills, start)
    agent.rng.state.assign(random_state)
    high = agent.plan_value(skills, start, tf.float32).numpy()
    # The same noise (drawn in float32), rounded arithmetic: close, not equal; scores in float32.
    assert low.dtype == tf.float32 and not np.array_equal(low.numpy(), high)
    np.testing.assert_allclose(low.numpy(), high, atol=0.05 * np.abs(high).max())
    metrics = agent.train(batch(agent))  # the compiled update with bfloat16 scoring
    assert all(np.isfinite(value.numpy()) for value in metrics.values())


def test_elite_agreement_of_bfloat16_scoring():
    agent = make('lsp')
    starts = [start_states(agent, batch(agent, seed)) for seed in range(2)]
    rows = cem_precision.measure(agent, starts, [4, 16], tf.bfloat16)
    assert [row['starts'] for row in rows] == [4, 16]
    for row in rows:
        assert row['calls'] == 2 * agent.config.cem.iterations
        for kind in ('low', 'resampled'):
            figures = row[kind]
            assert 0 <= figures['identical_elite_sets'] <= figures['mean_elite_overlap'] <= 1
            assert 0 < figures['median_relative_difference'] <= figures['max_relative_difference']
    assert agent.score_dtype == tf.float32  # the comparison leaves the agent as it was


def test_actor_loss_parts_sum_to_the_training_loss_and_the_mi_part_reaches_the_skill_input():
    agent = make('lsp', **{'skills.predictor_noise': 0.0})
    start = start_states(agent, batch(agent))
    plan, _ = agent.plan_skills(start)
    kernel = agent.behavior.actor.net.hidden[0].kernel  # [F + D, units]: features, then skill
    with tf.GradientTape(persistent=True) as tape:
        sequence = agent.world_model.imagine(
            agent.skill_policy(plan['skills']), start, agent.horizon
        )
        task_loss, mi_loss = skill_information.actor_loss_parts(agent, start, sequence, plan)
        reward, _ = agent.reward(start, sequence, plan)
        weights, returns, _ = agent.behavior.target(sequence['feat'], reward)
        loss = -tf.reduce_mean(weights * returns)  # ActorCritic.train's actor loss
    np.testing.assert_allclose((task_loss + mi_loss).numpy(), loss.numpy(), rtol=1e-5)
    parts = tape.gradient(task_loss, kernel) + tape.gradient(mi_loss, kernel)
    np.testing.assert_allclose(parts.numpy(), tape.gradient(loss, kernel).numpy(), atol=1e-6)
    # Through the imagined states the MI reward moves the weights that read the skill.
    skill_rows = tape.gradient(mi_loss, kernel)[-agent.skill_dim :]
    assert float(tf.norm(skill_rows)) > 0


def test_skill_information_measures_random_skills_against_their_prior():
    agent = make('random_skills')
    start = start_states(agent, batch(agent))
    report = skill_information.skill_information(agent, [start])
    # Random skills are drawn from N(0, I): log p is minus its entropy, estimated by sampling.
    entropy = 0.5 * agent.skill_dim * np.log(2 * np.pi * np.e)
    assert report['log_p'] == pytest.approx(-entropy, abs=1.0)
    assert report['information'] == pytest.approx(report['log_q'] - report['log_q_shuffled'])
    assert report['actor_grad_task'] > 0 and report['actor_grad_mi'] > 0
