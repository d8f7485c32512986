"""The Dreamer agent [D §3-4, ref dreamer.py]: a world model and an actor-critic learned in its
imagination with the task reward, one compiled update, and the acting policy."""

import time

from dreamer_lsp._tf import GPUS, tf
from dreamer_lsp.actor_critic import ActorCritic
from dreamer_lsp.utils import Adam, Timings
from dreamer_lsp.world_model import WorldModel, flatten_states

# A checkpoint holds `agent/<name>/...` for every module of `saved_modules()`.
CHECKPOINT_ROOT = 'agent'


def compute_dtype(precision):
    """float16 when `precision` is 16 and a GPU is present, else float32 (with one notice).

    Mixed bfloat16 on CPUs that multiply it natively was tried and not kept: updates were 20-25%
    faster, but in the cartpole learning check the actor saturated and its gradients vanished.
    """
    if precision not in (16, 32):
        raise ValueError(f'precision must be 16 or 32, got {precision}')
    if precision == 16 and not GPUS:
        print('Notice: precision 16 needs a GPU; no GPU found, training in float32.')
        return tf.float32
    return tf.float16 if precision == 16 else tf.float32


def scoring_dtype(precision, agent_dtype):
    """The dtype of CEM's scoring rollouts (`cem.precision`): the agent's own at 32; at 16,
    float16 on a GPU and bfloat16 on a CPU."""
    if precision not in (16, 32):
        raise ValueError(f'cem.precision must be 16 or 32, got {precision}')
    if precision == 32:
        return agent_dtype
    return tf.float16 if GPUS else tf.bfloat16


class Dreamer(tf.Module):
    """World model plus actor-critic learned in imagination; `train` is one compiled update.

    The agent protocol the trainer uses: `train(batch)` -> metrics, `initial_state()`,
    `act(obs, state, explore)` -> (action, state, extras stored with the step),
    `episode_extras` (the keys of those extras), `timings`, `checkpoint()`, `world_model`
    (`obs_key`, `batch_keys`: what a replay batch holds), `model_opt.loss_scaling` and
    `trainable_variables` (checked for divergence).
    """

    episode_extras = ()

    def __init__(self, config, obs_space, action_size, dtype=None, condition_size=0):
        super().__init__(name='dreamer')
        self.config = config
        self.action_size = action_size
        self.dtype = dtype or compute_dtype(config.precision)
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.world_model = WorldModel(config, obs_space, action_size, self.rng, self.dtype)
        scaling = self.dtype == tf.float16
        self.behavior = ActorCritic(
            config, self.world_model.rssm.feat_size, action_size, self.rng, scaling, condition_size
        )
        self.model_opt = Adam(
            'model_opt',
            [self.world_model],
            config.model.lr,
            config.grad_clip,
            config.adam_eps,
            scaling,
        )
        self.train = tf.function(self._train)
        self.timings = Timings()

    def saved_modules(self):
        """What a checkpoint holds, by name; the names are the checkpoint's layout."""
        return dict(
            rng=self.rng,
            world_model=self.world_model,
            actor=self.behavior.actor,
            value=self.behavior.value,
            model_opt=self.model_opt,
            actor_opt=self.behavior.actor_opt,
            value_opt=self.behavior.value_opt,
        )

    def checkpoint(self):
        """A `tf.train.Checkpoint` of the agent's weights, optimizer and RNG state."""
        return tf.train.Checkpoint(**{CHECKPOINT_ROOT: tf.train.Checkpoint(**self.saved_modules())})

    def _train(self, data):
        """One update of model, actor and value [ref Dreamer._train].

        Behaviour learning imagines from the posterior states with the weights the model loss
        saw; the model's update is applied after it, which changes no value (the gradients use
        the forward pass's weights) and keeps the update order of the reference's graph.
        """
        with tf.GradientTape() as model_tape:
            model_loss, post, metrics = self.world_model.loss(data)
        start = flatten_states({k: tf.stop_gradient(v) for k, v in post.items()})
        metrics.update(self.learn_behavior(start))
        metrics['model_grad_norm'] = self.model_opt.minimize(model_tape, model_loss)
        return metrics

    def learn_behavior(self, start):
        """One actor-critic update in imagination with the task reward [D §4]; metrics."""
        _, metrics = self.behavior.train(
            self.world_model, start, self.imagination_policy, self.task_reward, self.config.horizon
        )
        # The actor's entropy on the batch's posterior states, after its update.
        feat = self.world_model.feat(start)
        metrics['action_ent'] = tf.reduce_mean(self.behavior.policy(feat).entropy())
        return metrics

    def imagination_policy(self, feat, t):
        """The actor's reparameterised sample at every imagined step."""
        return {'action': self.behavior.policy(feat).sample()}

    def task_reward(self, sequence):
        """The reward head's prediction for imagined states, and its mean as a metric."""
        reward = self.world_model.task_reward(sequence)
        return reward, dict(imag_reward=tf.reduce_mean(reward))

    # Acting ------------------------------------------------------------------------------

    def initial_state(self, batch_size=1):
        """The acting state before the first observation: zero latent and zero action."""
        latent = self.world_model.initial(batch_size)
        return latent, tf.zeros((batch_size, self.action_size), self.dtype)

    @tf.function
    def step(self, obs, state, explore):
        """One compiled acting step: filter the observation, then sample (explore) or take the
        mode. An agent with more acting state (LSP's skill) overrides it with its own."""
        latent, prev_action = state
        latent = self.world_model.observe_step(latent, prev_action, obs)
        dist = self.behavior.policy(self.world_model.feat(latent))
        action = self.behavior.explore(dist, explore)
        return action, (latent, tf.cast(action, self.dtype))

    def act(self, obs, state, explore):
        """Acting step for the environment loop: returns a NumPy action [A], state, extras."""
        begin = time.perf_counter()
        action, state = self.step(obs, state, explore)
        action = action.numpy()[0]
        self.timings.add('acting/step_ms', 1000 * (time.perf_counter() - begin))
        return action, state, {}
