"""The world model [D §3, ref Dreamer's model part]: learns from replay, filters observations
while acting and imagines trajectories for behaviour learning."""

from dreamer_lsp import networks
from dreamer_lsp._tf import tf, tfd


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

    @property
    def batch_keys(self):
        """The episode keys a training batch needs."""
        return (self.obs_key, 'action', 'reward')

    def preprocess(self, obs):
        """Images to [-0.5, 0.5] in the compute dtype; features cast to the compute dtype."""
        x = obs[self.obs_key]
        if self.obs_key == 'image':
            return tf.cast(x, self.dtype) / 255.0 - 0.5
        return tf.cast(x, self.dtype)

    def loss(self, data):
        """The model loss of a [B, T] batch; returns loss, posterior states and metrics."""
        inputs = self.preprocess(data)
        embed = self.encoder(inputs)  # [B, T, E]
        action = tf.cast(data['action'], self.dtype)
        post, prior = self.rssm.observe(embed, action)
        feat = self.rssm.feat(post)  # [B, T, F]
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

    def initial(self, batch_size=1):
        """The latent state before the first observation (all zeros)."""
        return self.rssm.initial(batch_size, self.dtype)

    def observe_step(self, latent, prev_action, obs):
        """The posterior latent state after `prev_action` and then observing `obs` (acting)."""
        embed = self.encoder(self.preprocess(obs))
        latent, _ = self.rssm.obs_step(latent, prev_action, embed)
        return latent

    def feat(self, state):
        """The features of a latent state, the input of every head and policy."""
        return self.rssm.feat(state)

    def imagine(self, policy, start, horizon):
        """Roll the prior `horizon` steps forward from `start` under `policy` [D §4].

        start: dict of [N, ...] latent states. policy(feat, t) sees the (stopped) features
        [N, F] of step t and returns a dict with the 'action' [N, A] to take and anything else
        it wants recorded (e.g. what it conditioned the action on). Returns a dict of [H, ...]
        sequences: 'feat' [H, N, F], the features of the states reached after each action, and
        every key the policy returned, per step. The rollout computes in the start's dtype.
        """
        state, feat = start, self.rssm.feat(start)
        sequences = {'feat': []}
        for t in range(horizon):
            # The policy sees stopped features; gradients reach it through the dynamics [ref].
            step = policy(tf.stop_gradient(feat), t)
            # In the start's dtype: CEM may score its rollouts in lower precision.
            state = self.rssm.img_step(state, tf.cast(step['action'], state['deter'].dtype))
            feat = self.rssm.feat(state)
            sequences['feat'].append(feat)
            for key, value in step.items():
                sequences.setdefault(key, []).append(value)
        return {key: tf.stack(values, 0) for key, values in sequences.items()}

    def task_reward(self, sequence):
        """The reward head's mode [H - 1, N] for every imagined state but the last.

        The last state's reward enters no λ-return [ref], so it is not computed.
        """
        return self.reward(sequence['feat'][:-1]).mode()


def flatten_states(states):
    """[B, T, ...] latent states to [B * T, ...]."""
    return {k: tf.reshape(v, (-1, v.shape[-1])) for k, v in states.items()}
