"""The Dreamer agent [D §3-4, ref dreamer.py]: world model, actor, value and the train step."""

import time

from dreamer_lsp import networks
from dreamer_lsp._tf import tf, tfd
from dreamer_lsp.utils import Adam, Timings, lambda_return


def compute_dtype(precision):
    """float16 when `precision` is 16 and a GPU is present, else float32 (with one notice).

    Mixed bfloat16 on CPUs that multiply it natively was tried and not kept: updates were 20-25%
    faster, but in the cartpole learning check the actor saturated and its gradients vanished.
    """
    if precision not in (16, 32):
        raise ValueError(f'precision must be 16 or 32, got {precision}')
    if precision == 16 and not tf.config.list_physical_devices('GPU'):
        print('Notice: precision 16 needs a GPU; no GPU found, training in float32.')
        return tf.float32
    return tf.float16 if precision == 16 else tf.float32


class WorldModel(tf.Module):
    """Encoder, RSSM, observation decoder and reward head, trained by the VIB objective [D §3]."""

    def __init__(self, config, obs_space, action_size, rng, dtype=tf.float32):
        super().__init__(name='world_model')
        model = config.model
        self.obs_key = 'image' if 'image' in obs_space else 'features'
        self.dtype = dtype
        if self.obs_key == 'image':
            self.encoder = networks.ConvEncoder(rng, model.cnn_depth, model.cnn_act)
        else:
            size = obs_space['features'][0][0]
            self.encoder = networks.MLPEncoder(
                rng, size, model.mlp_layers, model.mlp_units, model.dense_act
            )
        self.rssm = networks.RSSM(
            rng,
            action_size,
            self.encoder.embed_size,
            model.stoch,
            model.deter,
            model.hidden,
            model.dense_act,
        )
        feat = self.rssm.feat_size
        if self.obs_key == 'image':
            self.decoder = networks.ConvDecoder(rng, feat, model.cnn_depth, model.cnn_act)
        else:
            self.decoder = networks.GaussianMLP(
                rng,
                feat,
                size,
                model.mlp_layers,
                model.mlp_units,
                model.dense_act,
                model.min_std,
                model.max_std,
            )
        self.reward = networks.NormalHead(
            rng, feat, model.reward_layers, model.units, model.dense_act
        )
        self.free_nats, self.kl_scale = model.free_nats, model.kl_scale

    def preprocess(self, obs):
        """Images to [-0.5, 0.5] in the compute dtype; features cast to the compute dtype."""
        x = obs[self.obs_key]
        if self.obs_key == 'image':
            return tf.cast(x, self.dtype) / 255.0 - 0.5
        return tf.cast(x, self.dtype)

    def loss(self, data):
        """The model loss of a [B, T] batch; returns loss, posterior states and metrics."""
        inputs = self.preprocess(data)
        embed = self.encoder(inputs)
        action = tf.cast(data['action'], self.dtype)
        post, prior = self.rssm.observe(embed, action)
        feat = self.rssm.feat(post)
        # The decoder's target is its input, in float32 (a no-op unless mixed precision).
        obs_like = tf.reduce_mean(self.decoder(feat).log_prob(tf.cast(inputs, tf.float32)))
        reward_like = tf.reduce_mean(
            self.reward(feat).log_prob(tf.cast(data['reward'], tf.float32))
        )
        kl = tf.reduce_mean(tfd.kl_divergence(self.rssm.dist(post), self.rssm.dist(prior)))
        # Free nats on the batch-mean KL, as the reference (not per step or per dimension).
        div = tf.maximum(kl, self.free_nats)
        loss = self.kl_scale * div - obs_like - reward_like
        metrics = dict(
            model_loss=loss,
            kl=kl,
            obs_loss=-obs_like,
            reward_loss=-reward_like,
            prior_ent=tf.reduce_mean(self.rssm.dist(prior).entropy()),
            post_ent=tf.reduce_mean(self.rssm.dist(post).entropy()),
        )
        return loss, post, metrics


class Dreamer(tf.Module):
    """World model plus actor-critic learned in imagination; `train` is one compiled update."""

    def __init__(self, config, obs_space, action_size, dtype=None):
        super().__init__(name='dreamer')
        self.config = config
        self.action_size = action_size
        self.dtype = dtype or compute_dtype(config.precision)
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.world_model = WorldModel(config, obs_space, action_size, self.rng, self.dtype)
        feat = self.world_model.rssm.feat_size
        model = config.model
        self.actor = networks.ActionHead(
            self.rng,
            feat + self.actor_extra_inputs,
            action_size,
            config.actor.layers,
            model.units,
            model.dense_act,
            config.actor.init_std,
            config.actor.min_std,
            config.actor.mean_scale,
        )
        self.value = networks.NormalHead(
            self.rng, feat, config.value.layers, model.units, model.dense_act
        )
        scaling = self.dtype == tf.float16
        self.model_opt = Adam(
            'model_opt', [self.world_model], model.lr, config.grad_clip, config.adam_eps, scaling
        )
        self.actor_opt = Adam(
            'actor_opt', [self.actor], config.actor.lr, config.grad_clip, config.adam_eps, scaling
        )
        self.value_opt = Adam(
            'value_opt', [self.value], config.value.lr, config.grad_clip, config.adam_eps, scaling
        )
        self.train = tf.function(self._train)
        self.policy = tf.function(self._policy)
        self.timings = Timings()

    actor_extra_inputs = 0

    def _train(self, data):
        """One update of model, actor and value in this order [ref Dreamer._train]."""
        with tf.GradientTape() as model_tape:
            model_loss, post, metrics = self.world_model.loss(data)
        start = {k: tf.stop_gradient(v) for k, v in post.items()}
        plan, plan_metrics = self.plan_behavior(start)
        metrics.update(plan_metrics)
        # The value loss reuses the values computed for the actor's λ-returns (same features,
        # same weights) where the reference runs the value network a second time. The value
        # tape watches only the value network, so its gradient is the reference's.
        with (
            tf.GradientTape() as actor_tape,
            tf.GradientTape(watch_accessed_variables=False) as value_tape,
        ):
            value_tape.watch(self.value.trainable_variables)
            _, value, weights, returns, aux, behavior_metrics = self.imagine_returns(start, plan)
            actor_loss = -tf.reduce_mean(weights * returns)
        with value_tape:
            value_like = tfd.Normal(value[:-1], 1.0).log_prob(tf.stop_gradient(returns))
            value_loss = -tf.reduce_mean(weights * value_like)
        metrics.update(behavior_metrics)
        metrics['model_grad_norm'] = self.model_opt.minimize(model_tape, model_loss)
        if self.train_actor:
            metrics['actor_grad_norm'] = self.actor_opt.minimize(actor_tape, actor_loss)
        metrics['value_grad_norm'] = self.value_opt.minimize(value_tape, value_loss)
        metrics.update(self.auxiliary_updates(aux))
        metrics.update(actor_loss=actor_loss, value_loss=value_loss)
        feat = self.world_model.rssm.feat(post)
        metrics['action_ent'] = tf.reduce_mean(
            self.actor_dist(feat, self.skill_like(feat)).entropy()
        )
        return metrics

    train_actor = True

    def actor_dist(self, feat, skill):
        """The action distribution; Dreamer's actor sees only the features."""
        return self.actor(feat)

    def skill_like(self, feat):
        """A placeholder skill for `actor_dist` outside imagination (none for Dreamer)."""
        return None

    def auxiliary_updates(self, aux):
        """Updates of extra modules after the behaviour update; Dreamer has none."""
        return {}

    def plan_behavior(self, start):
        """What imagination needs decided before the actor's tape records; Dreamer: nothing."""
        return None, {}

    def imagine_returns(self, start, plan=None):
        """Imagine `horizon` steps from every start state.

        start: dict of [B, T, ...] posterior states, flattened to N = B*T starts.
        Returns features [H, N, F], values [H, N], weights and λ-returns [H - 1, N], the
        inputs of `auxiliary_updates` and metrics.
        """
        rssm = self.world_model.rssm
        state = {k: tf.reshape(v, (-1, v.shape[-1])) for k, v in start.items()}
        feat, feats = rssm.feat(state), []
        for _ in range(self.config.horizon):
            # The actor sees stopped features; gradients reach it through the dynamics [ref].
            action = self.actor(tf.stop_gradient(feat)).sample()
            state = rssm.img_step(state, tf.cast(action, self.dtype))
            feat = rssm.feat(state)
            feats.append(feat)
        imag_feat = tf.stack(feats, 0)
        reward = self.imagined_reward(imag_feat)
        weights, returns, value = self.returns(imag_feat, reward)
        metrics = dict(imag_reward=tf.reduce_mean(reward), imag_value=tf.reduce_mean(value))
        return imag_feat, value, weights, returns, {}, metrics

    def imagined_reward(self, imag_feat):
        """The reward head's mode [H-1, N] for every imagined step but the last.

        The last step's reward enters no λ-return [ref], so it is not computed.
        """
        return self.world_model.reward(imag_feat[:-1]).mode()

    def returns(self, imag_feat, reward):
        """Discount weights [H-1, N], λ-returns [H-1, N] and values [H, N] of a rollout [ref].

        imag_feat: [H, N, F]; reward: [H-1, N], the rewards of all steps but the last.
        """
        value = self.value(imag_feat).mode()
        pcont = self.config.discount * tf.ones_like(reward)
        returns = lambda_return(reward, value[:-1], pcont, value[-1], self.config.return_lambda)
        weights = tf.stop_gradient(
            tf.math.cumprod(tf.concat([tf.ones_like(pcont[:1]), pcont[:-1]], 0), 0)
        )
        return weights, returns, value

    def initial_state(self, batch_size=1):
        """The acting state before the first observation: zero latent and zero action."""
        latent = self.world_model.rssm.initial(batch_size, self.dtype)
        return latent, tf.zeros((batch_size, self.action_size), self.dtype)

    def _policy(self, obs, state, explore):
        """One acting step: filter the observation, then sample (explore) or take the mode."""
        latent, prev_action = state
        embed = self.world_model.encoder(self.world_model.preprocess(obs))
        latent, _ = self.world_model.rssm.obs_step(latent, prev_action, embed)
        dist = self.actor(self.world_model.rssm.feat(latent))
        if explore:
            action = dist.sample()
            noise = self.config.actor.expl_amount * self.rng.normal(tf.shape(action))
            action = tf.clip_by_value(action + noise, -1.0, 1.0)
        else:
            action = dist.mode()
            if self.config.actor.eval_noise:
                noise = self.config.actor.eval_noise * self.rng.normal(tf.shape(action))
                action = tf.clip_by_value(action + noise, -1.0, 1.0)
        return action, (latent, tf.cast(action, self.dtype))

    def idle_extras(self):
        """What an episode stores per step besides observations when the agent is not acting."""
        return {}

    def act(self, obs, state, explore):
        """Acting step for the environment loop: returns a NumPy action [A], state, extras."""
        begin = time.perf_counter()
        action, state = self.policy(obs, state, explore)
        action = action.numpy()[0]
        self.timings.add('acting/step_ms', 1000 * (time.perf_counter() - begin))
        return action, state, {}
