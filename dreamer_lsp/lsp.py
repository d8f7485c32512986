"""Latent Skill Planning [LSP §3, Alg. 1, Alg. 2, A.3, A.7] on top of the Dreamer agent.

A skill z (continuous, `skills.dim`-dimensional) is held for K = `skills.length` agent steps and
conditions the low-level actor q_φ(a | s, z). The high level picks skills by CEM over the
world model (`lsp`, `no_mi`), at random (`random_skills`, `randskills_inp`) or with an amortised
Gaussian policy trained in imagination (`hiro`: the paper's HRL baseline, not Nachum et al.'s
HIRO with subgoals). The backward skill predictor q_χ(z | {s}, s0) gives the intrinsic reward
r_i = log q_χ that maximises a lower bound on the mutual information of skills and states.
"""

import math
import time

import numpy as np

from dreamer_lsp import networks
from dreamer_lsp._tf import tf, tfd
from dreamer_lsp.dreamer import Dreamer, scoring_dtype
from dreamer_lsp.utils import Adam


class SkillPredictor(tf.Module):
    """Backward skill predictor q_χ(z | {s}, s0): the feature decoder's architecture [LSP A.3].

    Its input is the features of a segment's first state s0 and of the K states that follow,
    concatenated, plus Gaussian noise of std `noise` (A.7: keeps skills from collapsing onto
    differences the world model predicts exactly but that are invisible in the motion).
    """

    def __init__(self, rng, feat_size, skill_length, skill_dim, model_config, noise):
        super().__init__(name='skill_predictor')
        self.net = networks.GaussianMLP(
            rng,
            feat_size * (skill_length + 1),
            skill_dim,
            model_config.mlp_layers,
            model_config.mlp_units,
            model_config.dense_act,
            model_config.min_std,
            model_config.max_std,
        )
        self.noise = noise
        self._rng = rng

    def __call__(self, segments):
        """The skill distribution for segments [..., K + 1, F]."""
        x = tf.reshape(segments, tf.concat([tf.shape(segments)[:-2], [-1]], 0))  # [..., (K+1)F]
        x = tf.cast(x, tf.float32)
        if self.noise:
            x += self.noise * self._rng.normal(tf.shape(x))
        return self.net(x)


class LSP(Dreamer):
    """Dreamer with a skill-conditioned actor, a high level over skills and the MI reward.

    Alg. 1 reads top to bottom in `learn_behavior` (training) and `step` (acting); Alg. 2 is
    `cem` with `cross_entropy_method`.
    """

    episode_extras = ('skill',)

    def __init__(self, config, obs_space, action_size, dtype=None):
        skills = config.skills
        self.skill_dim, self.skill_length = skills.dim, skills.length
        self.horizon = skills.horizon
        self.num_skills = self.horizon // self.skill_length  # the config requires K | H
        # The low-level actor q_φ(a | s, z) sees the skill next to the features.
        super().__init__(config, obs_space, action_size, dtype, condition_size=skills.dim)
        self.score_dtype = scoring_dtype(config.cem.precision, self.dtype)
        feat = self.world_model.rssm.feat_size
        model = config.model
        self.predictor = SkillPredictor(
            self.rng, feat, self.skill_length, self.skill_dim, model, skills.predictor_noise
        )
        self.predictor_opt = Adam(
            'predictor_opt',
            [self.predictor],
            skills.predictor_lr,
            config.grad_clip,
            config.adam_eps,
            self.dtype == tf.float16,
        )
        self.high_policy = None
        if skills.high_level == 'policy':
            # The `hiro` preset: an amortised Gaussian policy over skills trained with the actor
            # in imagination (the paper's HRL baseline), not Nachum et al.'s subgoal HIRO. It
            # learns from the actor's loss, with the actor's optimizer (one gradient clip).
            self.high_policy = networks.GaussianMLP(
                self.rng,
                feat,
                self.skill_dim,
                config.actor.layers,
                model.units,
                model.dense_act,
                model.min_std,
                model.max_std,
            )
            self.behavior.actor_opt.add(self.high_policy)

    def saved_modules(self):
        """Dreamer's modules plus the skill predictor and, for `hiro`, the high-level policy."""
        modules = super().saved_modules()
        modules.update(predictor=self.predictor, predictor_opt=self.predictor_opt)
        if self.high_policy is not None:
            modules['high_policy'] = self.high_policy
        return modules

    # Behaviour learning [Alg. 1] ----------------------------------------------------------

    def learn_behavior(self, start):
        """Skills for every start state, then the actor-critic update with the task reward plus
        the MI reward, then the skill predictor's update [LSP Alg. 1, §3.2].

        Horizon: the plan horizon H (`skills.horizon`), over which CEM optimised the skills.
        """
        plan, metrics = self.plan_skills(start)
        policy = self.skill_policy(None if plan is None else plan['skills'])
        sequence, behavior_metrics = self.behavior.train(
            self.world_model,
            start,
            policy,
            lambda sequence: self.reward(start, sequence, plan),
            self.horizon,
            update_actor=not self.config.skills.freeze_actor,
        )
        metrics.update(behavior_metrics)
        if self.config.skills.intrinsic:
            metrics.update(self.train_predictor(start, sequence))
        # The actor's entropy on the batch's posterior states (Dreamer's metric), each with the
        # skill it was given there: the first step's.
        feat = self.world_model.feat(start)
        policy = self.behavior.policy(feat, sequence['skill'][0])
        metrics['action_ent'] = tf.reduce_mean(policy.entropy())
        return metrics

    def plan_skills(self, start):
        """The skills of every start state [N] for behaviour learning [LSP Alg. 1].

        cem: ζ = CEM(S) from the batch's posterior states, ε on the mean, one sample per start;
        random: N(0, I); policy (`hiro`): None, chosen during the rollout. Returns the plan, a
        dict of skills [N, S, D] and their log densities [S, N] under the distribution they
        were drawn from (for the MI estimate), or None; and metrics.
        """
        high_level, skills_config = self.config.skills.high_level, self.config.skills
        count = tf.shape(start['deter'])[0]
        shape = (count, self.num_skills, self.skill_dim)
        if high_level == 'policy':
            return None, {}
        if high_level == 'random':
            skills = self.rng.normal(shape)
            prior = tfd.Independent(tfd.Normal(tf.zeros_like(skills), 1.0), 1)
            return dict(skills=skills, log_p=tf.transpose(prior.log_prob(skills))), {}
        mean, std, elite_value = self.cem(self._cem_starts(start, count))  # [S, D], [S, D], []
        # §3.2 adds ε ~ N(0, mean_noise) to the CEM mean "to lower bound the entropy of the skill
        # selection distribution". That bound holds only when every sampled skill gets its own ε:
        # the skills then follow N(μ, Σ + σ²I) however far CEM shrank Σ. One ε per update shifts
        # the whole batch together, so within it the skills spread only by Σ ('update' reading).
        noise = skills_config.mean_noise
        if skills_config.mean_noise_per == 'skill':
            # [N, S, D] from mean and std [S, D]; center and scale [S, D].
            skills = mean + noise * self.rng.normal(shape) + std * self.rng.normal(shape)
            center, scale = mean, tf.sqrt(tf.square(std) + noise**2)
        else:
            center = mean + noise * self.rng.normal(tf.shape(mean))
            skills, scale = center + std * self.rng.normal(shape), std
        # The floor keeps log p finite when CEM's std is exactly 0 (a single elite).
        scale = tf.maximum(scale, 1e-6)
        selection = tfd.Independent(tfd.Normal(center[:, None], scale[:, None]), 1)  # [S, 1]
        log_p = selection.log_prob(tf.transpose(skills, (1, 0, 2)))  # [S, N]
        metrics = dict(
            cem_elite_value=elite_value,
            cem_std=tf.reduce_mean(std),
            skill_entropy=gaussian_entropy(scale),
        )
        return dict(skills=tf.stop_gradient(skills), log_p=tf.stop_gradient(log_p)), metrics

    def skill_policy(self, skills=None):
        """The imagination policy q_φ(a | s, z) with skill k(t) = t // K held for K steps.

        skills: [N, S, D], or None to let the high-level policy choose at segment starts (then
        each step also records 'log_p', the chosen skill's log density under it). Each step
        records its 'action' and 'skill'.
        """
        current = {}

        def policy(feat, t):
            if t % self.skill_length == 0:
                if skills is None:
                    skill, dist = self.high_policy_skill(feat, explore=True)
                    current.update(skill=skill, log_p=dist.log_prob(tf.stop_gradient(skill)))
                else:
                    current['skill'] = skills[:, t // self.skill_length]
            return dict(action=self.behavior.policy(feat, current['skill']).sample(), **current)

        return policy

    def reward(self, start, sequence, plan):
        """The task reward plus, with `skills.intrinsic`, the MI reward r_i = log q_χ [§3.2].

        Logs the skills' spread over the batch and, with the MI reward, the estimate
        E[log q_χ(z | {s}, s0)] − E[log p(z)] (nats per skill) of the lower bound on I(z; {s} | s0)
        that r_i maximises, p being the distribution the skills were drawn from.
        """
        reward, metrics = self.task_reward(sequence)  # [H - 1, N]
        skills = self.segment_skills(sequence)
        metrics['skill_spread'] = skill_spread(skills)
        if not self.config.skills.intrinsic:
            return reward, metrics
        log_q = self.predictor(self.segments(start, sequence)).log_prob(skills)  # [S, N]
        # A segment's log q_χ is spread evenly over its K steps, so that every imagined
        # step carries the same share of its segment's intrinsic reward.
        intrinsic = tf.repeat(log_q / self.skill_length, self.skill_length, axis=0)  # [H, N]
        reward += self.config.skills.intrinsic_scale * intrinsic[:-1]
        log_p = plan['log_p'] if plan else sequence['log_p'][:: self.skill_length]
        metrics['intrinsic_reward'] = tf.reduce_mean(intrinsic)
        metrics['skill_mi_bound'] = mutual_information_bound(log_q, log_p)
        return reward, metrics

    def train_predictor(self, start, sequence):
        """Maximum-likelihood update of the skill predictor on imagined segments [LSP §3.2]."""
        segments = tf.stop_gradient(self.segments(start, sequence))
        skills = self.segment_skills(sequence)
        with tf.GradientTape() as tape:
            log_likelihood = tf.reduce_mean(self.predictor(segments).log_prob(skills))
            loss = -log_likelihood
        norm = self.predictor_opt.minimize(tape, loss)
        return dict(predictor_log_likelihood=log_likelihood, predictor_grad_norm=norm)

    def segment_skills(self, sequence):
        """The skill of every segment [S, N, D], the target of the predictor (no gradient)."""
        return tf.stop_gradient(sequence['skill'][:: self.skill_length])

    def segments(self, start, sequence):
        """Per-skill segments [S, N, K + 1, F]: s0 and the K states that follow it."""
        states = tf.concat([self.world_model.feat(start)[None], sequence['feat']], 0)  # [H+1, N, F]
        length = self.skill_length
        # Segment k: states k K to (k + 1) K, both included, [K + 1, N, F].
        parts = [states[k * length : (k + 1) * length + 1] for k in range(self.num_skills)]
        return tf.stack([tf.transpose(p, (1, 0, 2)) for p in parts], 0)

    def cem(self, start):
        """CEM over skill sequences z_{1:S} [LSP Alg. 2], each proposal scored on every start.

        start: states [N, ...]. Every iteration imagines all G x N rollouts in one batch and
        scores a proposal by its λ-return value estimate averaged over the N starts.
        Returns mean [S, D], std [S, D] and the elites' mean score.
        """
        cem = self.config.cem
        tiled = self.tile_starts(start)

        def score(proposals):  # [G, S, D] -> [G]
            return self.proposal_scores(proposals, tiled)

        shape = (self.num_skills, self.skill_dim)
        return cross_entropy_method(
            score, shape, cem.proposals, cem.elites, cem.iterations, self.rng
        )

    def tile_starts(self, start):
        """Start states [N, ...] repeated for each of CEM's G proposals, [G * N, ...]."""
        return {k: tf.tile(v, [self.config.cem.proposals, 1]) for k, v in start.items()}

    def proposal_scores(self, proposals, tiled, dtype=None):
        """The score [G] of each proposal [G, S, D]: its plan value averaged over the starts of
        `tiled` (from `tile_starts`), computed in `dtype` (default `cem.precision`'s)."""
        proposal_count = self.config.cem.proposals
        count = tf.shape(tiled['deter'])[0] // proposal_count
        skills = tf.repeat(proposals, count, axis=0)  # row g * N + n: proposal g, start n
        value = self.plan_value(skills, tiled, dtype)  # [G * N]
        return tf.reduce_mean(tf.reshape(value, (proposal_count, count)), 1)

    def plan_value(self, skills, start, dtype=None):
        """CEM's score of skill sequences [N, S, D] from start states [N, ...]: the λ-return of
        the first step of the rollout that holds each skill for K steps, task reward only [N].
        The rollout computes in `dtype` (default `cem.precision`'s); rewards and values come out
        float32."""
        start = {k: tf.cast(v, dtype or self.score_dtype) for k, v in start.items()}
        sequence = self.world_model.imagine(self.skill_policy(skills), start, self.horizon)
        reward = self.world_model.task_reward(sequence)
        return self.behavior.rollout_value(sequence['feat'], reward)

    def high_policy_skill(self, feat, explore):
        """A skill [N, D] of the high-level policy (`hiro`) at features [N, F], and its
        distribution: a reparameterised sample when exploring, else the mean."""
        dist = self.high_policy(feat)
        noise = self.rng.normal(tf.shape(dist.mean())) if explore else 0.0
        return dist.mean() + dist.stddev() * noise, dist

    def _cem_starts(self, state, count):
        """All start states (paper), or a random subset of `cem.train_starts` of them."""
        subset = self.config.cem.train_starts
        if not subset:
            return state
        indices = tf.argsort(self.rng.uniform((count,)))[: tf.minimum(subset, count)]
        return {k: tf.gather(v, indices) for k, v in state.items()}

    # Acting [Alg. 1] -----------------------------------------------------------------------

    def initial_state(self, batch_size=1):
        """Latent, previous action, active skill and steps since the skill was chosen."""
        latent, action = super().initial_state(batch_size)
        return latent, action, tf.zeros((batch_size, self.skill_dim)), 0

    def choose_skill(self, latent, explore):
        """The next skill from `latent` [1]: MPC in skill space for `cem` [LSP Alg. 1]."""
        high_level = self.config.skills.high_level
        if high_level == 'cem':
            # Every proposal is scored on `cem.act_particles` imagined rollouts from the one
            # current state (cem() averages a proposal's returns over its start states).
            particles = self.config.cem.act_particles
            mean, std, _ = self.cem({k: tf.repeat(v, particles, 0) for k, v in latent.items()})
            skill = mean[:1]  # [1, D]: the plan's first skill
            if explore:
                skill += std[:1] * self.rng.normal((1, self.skill_dim))
            if explore and self.config.skills.mean_noise_acting:
                # Alg. 1 adds ε to ζ's mean before acting samples from it: the skills acted on
                # keep the entropy floor of §3.2 when CEM's std collapses.
                skill += self.config.skills.mean_noise * self.rng.normal((1, self.skill_dim))
        elif high_level == 'random':
            skill = self.rng.normal((1, self.skill_dim))
        else:
            skill, _ = self.high_policy_skill(self.world_model.feat(latent), explore)
        return skill

    @tf.function
    def step(self, obs, latent, prev_action, skill, replan, explore):
        """Filter `obs`, choose a new skill if `replan` (a Python bool), act: one compiled call."""
        latent = self.world_model.observe_step(latent, prev_action, obs)
        if replan:
            skill = self.choose_skill(latent, explore)
        dist = self.behavior.policy(self.world_model.feat(latent), skill)
        return self.behavior.explore(dist, explore), latent, skill

    def act(self, obs, state, explore):
        """One agent step; every K steps a new skill is chosen from the filtered latent state."""
        begin = time.perf_counter()
        latent, prev_action, skill, age = state
        replan = age % self.skill_length == 0
        action, latent, skill = self.step(obs, latent, prev_action, skill, replan, explore)
        action_numpy = action.numpy()[0]
        self.timings.add(
            'acting/plan_step_ms' if replan else 'acting/step_ms',
            1000 * (time.perf_counter() - begin),
        )
        extras = {'skill': skill.numpy()[0].astype(np.float32)}
        return action_numpy, (latent, tf.cast(action, self.dtype), skill, age + 1), extras


def refit(proposals, scores, elites):
    """Mean, std and mean score of the `elites` best proposals [G, ...] by scores [G]."""
    best = tf.math.top_k(scores, elites)
    chosen = tf.gather(proposals, best.indices)
    return tf.reduce_mean(chosen, 0), tf.math.reduce_std(chosen, 0), tf.reduce_mean(best.values)


def cross_entropy_method(score, shape, proposals, elites, iterations, rng):
    """Maximise `score` ([G, *shape] -> [G]) from N(0, I) [LSP Alg. 2]; graph-friendly.

    Returns the final mean and std (each `shape`) and the last elites' mean score.
    """
    mean, std = tf.zeros(shape), tf.ones(shape)
    elite_value = tf.constant(0.0)
    for _ in range(iterations):
        samples = mean + std * rng.normal((proposals, *shape))
        mean, std, elite_value = refit(samples, score(samples), elites)
    return mean, std, elite_value


def skill_spread(skills):
    """The std of skills [S, N, D] over the N samples, averaged over segments and dimensions."""
    return tf.reduce_mean(tf.math.reduce_std(skills, 1))


def mutual_information_bound(log_q, log_p):
    """E[log q(z | {s}, s0)] − E[log p(z)] in nats: a lower bound on I(z; {s} | s0) [LSP §3.2].

    log_q: the predictor's log density of each sampled skill; log_p: the log density of the
    same skill under the distribution it was drawn from (same shape). E[−log p] estimates H(z).
    """
    return tf.reduce_mean(log_q) - tf.reduce_mean(log_p)


def gaussian_entropy(std):
    """Entropy of a diagonal Gaussian with `std` [..., D], summed over D and averaged."""
    return tf.reduce_mean(
        tf.reduce_sum(0.5 * tf.math.log(2 * math.pi * math.e * tf.square(std) + 1e-8), -1)
    )
