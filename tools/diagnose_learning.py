"""Learning diagnostics: trains a Dreamer run and probes it against the real episodes.

    .venv/bin/python -m tools.diagnose_learning --configs dmc_proprio dreamer learning_check \
        --seed 1 --threads 1 --steps 8000 --logdir runs/diagnose/b8_s1 --probe-every 20

Runs the normal training loop (same logdir layout, resumable) and, every `--probe-every`
updates, compares what the agent believes with what happened in the newest training episode:

- `value_pred` / `value_real`: the value head on the episode's posterior states against the
  real discounted return from those states (first half of the episode, so truncation at the time
  limit changes the real return by less than 0.99^250 of it);
- `reward_pred` / `reward_real` / `reward_abs_error`: the reward head on the posterior states
  against the rewards received there;
- `open_loop_reward_error`: the reward head along a prior rollout of the episode's real actions
  (horizon steps) against the real rewards, i.e. how well the model imagines this data;
- `imag_reward`, `imag_value`, `imag_return`: what imagination with the current actor predicts
  from the same start states (mean imagined reward, value, and λ-return of the first step);
- `actor_mean_abs`, `actor_std`, `actor_saturated`: the actor's pre-tanh mean and std on the
  posterior states and on imagined states, and the share of tanh(mean) beyond ±0.99.

    .venv/bin/python -m tools.diagnose_learning --plot runs/diagnose/b8_s1 runs/diagnose/b8_s0 \
        --out diagnosis.png

Each probe is one line of `<logdir>/diagnostics.jsonl` with `updates` and `step`. Probes leave
the agent's random generator as they found it, so training follows the same random stream as a
run of the same seed without probes.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

from dreamer_lsp import config as config_lib
from dreamer_lsp.config import ConfigError
from dreamer_lsp.rundir import RunBusyError


def discounted_returns(reward, discount):
    """Σ_k γ^k r_{t+k} for every t of a 1-D reward sequence (no bootstrap after the end).

    The λ-return with λ = 1, zero values and a zero bootstrap [D eq. 6].
    """
    from dreamer_lsp._tf import tf
    from dreamer_lsp.utils import lambda_return

    reward = tf.constant(reward, tf.float64)
    zeros = tf.zeros_like(reward)
    return lambda_return(reward, zeros, discount * tf.ones_like(reward), 1.0).numpy()


def make_probe(agent):
    """A compiled function that probes `agent` on one episode's observations and actions."""
    from dreamer_lsp._tf import tf
    from dreamer_lsp.world_model import flatten_states

    world_model, config = agent.world_model, agent.config
    horizon = config.horizon

    def probe(obs, action):
        data = {world_model.obs_key: obs[None], 'action': action[None]}
        embed = world_model.encoder(world_model.preprocess(data))
        post, _ = world_model.rssm.observe(embed, tf.cast(action[None], agent.dtype))
        feat = world_model.rssm.feat(post)[0]  # [T + 1, F]
        value = agent.behavior.value(feat).mode()
        reward = world_model.reward(feat).mode()
        actor = agent.behavior.actor(feat)
        # Open loop: from the posterior at t, the real actions t+1 .. t+H through the prior.
        length = action.shape[0]
        starts = length - horizon
        state = {k: v[0, :starts] for k, v in post.items()}
        actions = tf.stack([action[k : starts + k] for k in range(1, horizon + 1)], 1)
        prior = world_model.rssm.imagine(tf.cast(actions, agent.dtype), state)  # [starts, H]
        open_loop = world_model.reward(world_model.rssm.feat(prior)).mode()  # reward[t + k]
        start = flatten_states({k: v[:, : length // 2] for k, v in post.items()})
        sequence = world_model.imagine(agent.imagination_policy, start, horizon)
        imag_reward, _ = agent.task_reward(sequence)
        _, returns, imag_value = agent.behavior.target(sequence['feat'], imag_reward)
        imag_actor = agent.behavior.actor(sequence['feat'])
        return dict(
            value=value,
            reward=reward,
            open_loop=open_loop,
            actor_mean=actor.mean,
            actor_std=actor.std,
            imag_reward=imag_reward,
            imag_value=imag_value,
            imag_return=returns[0],
            imag_actor_mean=imag_actor.mean,
            imag_actor_std=imag_actor.std,
        )

    return tf.function(probe)


def probe_episode(agent, probe, episode):
    """Scalars comparing `agent`'s predictions with one real episode (see the module doc)."""
    obs = episode[agent.world_model.obs_key]
    # The probe samples from the agent's generator; restoring its state afterwards keeps the
    # probed run on the same random stream as the same seed without probes.
    generator_state = agent.rng.state.numpy()
    out = {k: v.numpy() for k, v in probe(obs, episode['action']).items()}
    agent.rng.state.assign(generator_state)
    reward = episode['reward'].astype(np.float64)
    half = len(reward) // 2
    real_value = discounted_returns(reward, agent.config.discount)
    horizon = agent.config.horizon
    starts = len(reward) - horizon
    real_ahead = np.stack([reward[k : starts + k] for k in range(1, horizon + 1)], 1)

    def saturated(mean):
        return float(np.mean(np.abs(np.tanh(mean)) > 0.99))

    return dict(
        value_pred=float(out['value'][:half].mean()),
        value_real=float(real_value[:half].mean()),
        reward_pred=float(out['reward'].mean()),
        reward_real=float(reward.mean()),
        reward_abs_error=float(np.abs(out['reward'] - reward).mean()),
        open_loop_reward_error=float(np.abs(out['open_loop'] - real_ahead).mean()),
        imag_reward=float(out['imag_reward'].mean()),
        imag_value=float(out['imag_value'].mean()),
        imag_return=float(out['imag_return'].mean()),
        actor_mean_abs=float(np.abs(out['actor_mean']).mean()),
        actor_std=float(out['actor_std'].mean()),
        actor_saturated=saturated(out['actor_mean']),
        imag_actor_mean_abs=float(np.abs(out['imag_actor_mean']).mean()),
        imag_actor_std=float(out['imag_actor_std'].mean()),
        imag_actor_saturated=saturated(out['imag_actor_mean']),
        episode_return=float(reward.sum()),
    )


PANELS = (
    (
        'value',
        ('value_pred', 'imag_value', 'value_real'),
        ('value on real states', 'imagined value', 'real discounted return'),
    ),
    ('actor std before tanh', ('actor_std',), ('',)),
    ('actor |mean| before tanh', ('actor_mean_abs',), ('',)),
    ('reward per step', ('imag_reward', 'reward_real'), ('imagined', 'real')),
)


def plot(logdirs, out):
    """One column of panels per run directory's diagnostics.jsonl, over updates, as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(PANELS), len(logdirs), figsize=(3.2 * len(logdirs), 2.2 * len(PANELS)), squeeze=False
    )
    for column, logdir in enumerate(logdirs):
        path = pathlib.Path(logdir) / 'diagnostics.jsonl'
        probes = [json.loads(line) for line in path.read_text().splitlines()]
        updates = [probe['updates'] for probe in probes]
        axes[0, column].set_title(pathlib.Path(logdir).name, fontsize=9)
        for row, (title, keys, labels) in enumerate(PANELS):
            axis = axes[row, column]
            for key, label in zip(keys, labels):
                axis.plot(updates, [probe[key] for probe in probes], label=label or None)
            axis.set_ylabel(title, fontsize=8)
            axis.tick_params(labelsize=7)
            if column == 0 and len(keys) > 1:
                axis.legend(fontsize=6)
        axes[-1, column].set_xlabel('updates', fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def build_parser():
    """The tool's own flags; every other flag goes to the trainer."""
    parser = argparse.ArgumentParser(
        prog='python -m tools.diagnose_learning',
        description=__doc__.split('\n\n')[0],
        epilog="Every other flag is the trainer's (python -m dreamer_lsp --help lists them).",
        allow_abbrev=False,
    )
    parser.add_argument(
        '--probe-every', type=int, default=20, metavar='N', help='updates between probes'
    )
    parser.add_argument(
        '--plot', nargs='+', metavar='LOGDIR', help='draw the probes of these runs instead'
    )
    parser.add_argument('--out', metavar='PNG', help='the figure --plot writes')
    return parser


def main(argv=None):
    """Train with probes; flags are the trainer's plus `--probe-every N` (updates).

    `--plot LOGDIR ... --out PNG` draws the probes of finished runs instead.
    """
    parser = build_parser()
    args, trainer_argv = parser.parse_known_args(argv)
    if args.plot is not None:
        if args.out is None or trainer_argv:
            parser.error('--plot LOGDIR [LOGDIR ...] takes --out PNG and no other flag')
        plot(args.plot, args.out)
        return
    if args.out is not None:
        parser.error('--out goes with --plot')
    from dreamer_lsp import train

    try:
        config = config_lib.parse_args(trainer_argv)
        config_lib.check(config)
        if config.skills.high_level != 'none':
            raise ConfigError('diagnose_learning probes Dreamer runs only (method dreamer)')
        trainer = train.Trainer(config)
    except (ConfigError, RunBusyError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    from dreamer_lsp.replay import load_episode

    agent, replay = trainer.agent, trainer.replay
    probe = make_probe(agent)
    path = trainer.run_dir.path / 'diagnostics.jsonl'
    train_step = agent.train

    def train_and_probe(data):
        metrics = train_step(data)
        updates = trainer.loop.updates + 1
        if updates % args.probe_every == 0 or updates == 1:
            newest = replay.directory / f'{replay.episode_names[-1]}.npz'
            line = dict(updates=updates, step=trainer.loop.step)
            line.update(probe_episode(agent, probe, load_episode(newest)))
            line.update({f'train/{k}': float(v.numpy()) for k, v in metrics.items()})
            with path.open('a') as file:
                file.write(json.dumps(line) + '\n')
        return metrics

    agent.train = train_and_probe
    trainer.run()


if __name__ == '__main__':
    main()
