"""Behaviour learning in imagination [D §4, ref Dreamer._train]: an actor and a value learned
from imagined trajectories of a world model under a reward function."""

from dreamer_lsp import networks
from dreamer_lsp._tf import tf, tfd
from dreamer_lsp.utils import Adam, lambda_return


class ActorCritic(tf.Module):
    """The actor q(a | s, c) and the value v(s) with their optimizers.

    `condition_size` inputs next to the features condition the actor (none for Dreamer; an
    agent that extends it may condition its actor on more). The value sees the features only.
    """

    def __init__(self, config, feat_size, action_size, rng, loss_scaling, condition_size=0):
        super().__init__(name='actor_critic')
        self.config = config
        model = config.model
        self.actor = networks.ActionHead(
            rng,
            feat_size + condition_size,
            action_size,
            config.actor.layers,
            model.units,
            model.dense_act,
            config.actor.init_std,
            config.actor.min_std,
            config.actor.mean_scale,
        )
        self.value = networks.NormalHead(
            rng, feat_size, config.value.layers, model.units, model.dense_act
        )
        self.actor_opt = Adam(
            'actor_opt',
            [self.actor],
            config.actor.lr,
            config.grad_clip,
            config.adam_eps,
            loss_scaling,
        )
        self.value_opt = Adam(
            'value_opt',
            [self.value],
            config.value.lr,
            config.grad_clip,
            config.adam_eps,
            loss_scaling,
        )
        self._rng = rng

    def policy(self, feat, condition=None):
        """The action distribution q(a | s, c) for features [..., F] and condition [..., C]."""
        if condition is not None:
            feat = tf.concat([feat, tf.cast(condition, feat.dtype)], -1)
        return self.actor(feat)

    def explore(self, dist, explore):
        """An action of `dist`: a sample plus Gaussian noise of `actor.expl_amount` when
        exploring, else the mode plus `actor.eval_noise` [ref Dreamer._exploration]."""
        action = dist.sample() if explore else dist.mode()
        amount = self.config.actor.expl_amount if explore else self.config.actor.eval_noise
        if amount:
            noise = amount * self._rng.normal(tf.shape(action))
            action = tf.clip_by_value(action + noise, -1.0, 1.0)
        return action

    def target(self, feat, reward):
        """Discount weights [H-1, N], λ-returns [H-1, N] and values [H, N] of a rollout [ref].

        feat: [H, N, F]; reward: [H-1, N], the rewards of all imagined states but the last.
        """
        value = self.value(feat).mode()
        returns, discounts = self.lambda_returns(reward, value[1:])
        weights = tf.stop_gradient(
            tf.math.cumprod(tf.concat([tf.ones_like(discounts[:1]), discounts[:-1]], 0), 0)
        )
        return weights, returns, value

    def rollout_value(self, feat, reward):
        """The λ-return of each rollout's first step [N], `target`'s returns[0] (CEM's score).

        The first imagined state's value enters no λ-return, so it is not computed: 10% of the
        value head's work on a 10-step rollout.
        """
        returns, _ = self.lambda_returns(reward, self.value(feat[1:]).mode())
        return returns[0]

    def lambda_returns(self, reward, next_value):
        """λ-returns [H-1, N] of rewards [H-1, N] bootstrapped from the next states' values
        [H-1, N], and the constant discounts [H-1, N] they used."""
        discounts = self.config.discount * tf.ones_like(reward)
        return lambda_return(reward, next_value, discounts, self.config.return_lambda), discounts

    def train(self, world_model, start, policy, reward_fn, horizon, update_actor=True):
        """Imagine from `start` under `policy`, then one actor and one value update [D §4].

        reward_fn(sequence) returns the rewards [H - 1, N] of the imagined states but the last
        and metrics. The actor maximises the λ-returns through the dynamics; the value regresses
        them. Returns the imagined sequence (the policy's keys, 'feat') and metrics.
        """
        # The value loss reuses the values computed for the actor's λ-returns (same features,
        # same weights) where the reference runs the value network a second time. The value
        # tape watches only the value network, so its gradient is the reference's.
        with (
            tf.GradientTape() as actor_tape,
            tf.GradientTape(watch_accessed_variables=False) as value_tape,
        ):
            value_tape.watch(self.value.trainable_variables)
            sequence = world_model.imagine(policy, start, horizon)
            reward, metrics = reward_fn(sequence)
            weights, returns, value = self.target(sequence['feat'], reward)
            actor_loss = -tf.reduce_mean(weights * returns)
        with value_tape:
            value_like = tfd.Normal(value[:-1], 1.0).log_prob(tf.stop_gradient(returns))
            value_loss = -tf.reduce_mean(weights * value_like)
        metrics['imag_value'] = tf.reduce_mean(value)
        if update_actor:
            metrics['actor_grad_norm'] = self.actor_opt.minimize(actor_tape, actor_loss)
        metrics['value_grad_norm'] = self.value_opt.minimize(value_tape, value_loss)
        metrics.update(actor_loss=actor_loss, value_loss=value_loss)
        return sequence, metrics
