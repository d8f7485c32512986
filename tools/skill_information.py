"""What the skill predictor can tell about a run's skills from imagined states (issue 16).

    .venv/bin/python -m tools.skill_information --run RUN --json information.json

(RUN: the logdir of a run that trains a skill predictor and draws its skills by CEM or at
random: `lsp`, `random_skills` or `lsp_fixed_policy`; e.g.
runs/learning_check/batch8/dmc_cartpole_balance/lsp/0.)

The logged MI bound (`train/skill_mi_bound`: E[log q(z | {s}, s0)] − E[log p(z)], LSP §3.2)
compares the predictor q with the distribution p each update drew its skills from; a negative
value says the bound is loose, not why. This tool loads the run's latest checkpoint, plans and
imagines `--batches` training batches of its replay as training does (the skills of the
batch's posterior states, by CEM on `cem.train_starts` of them or at random, then the skill
policy over the plan horizon) and reports, in nats per skill, averaged over batches:

- `log_q`: the predictor's log density of each segment's own skill (what the MI reward pays);
- `log_q_shuffled`: the same with the skills shuffled over the batch's start states, so each
  segment is scored with a skill of the same plan that it was not imagined with;
- `information`: `log_q − log_q_shuffled`, what the imagined states tell the predictor about
  which skill of the update's plan was used (0 when the behaviour does not depend on the skill);
- `log_p`: the density under the update's own skill distribution (minus its entropy), and
  `mi_bound`: `log_q − log_p`, the logged bound;
- `log_p_pooled`: the density under one diagonal Gaussian per segment fitted to the skills of
  all batches, what a predictor reaches that knows how skills spread over updates but cannot
  see the update's plan in the states;
- `predictor_std`, `within_batch_std` and `pooled_std`: the predictor's std, and the skills' std
  over one batch's start states and over all batches (means over segments and dimensions);
- `action_change`: the mean absolute difference of the actor's action (tanh of its mean) at the
  batch's posterior states between two skills drawn from N(0, I) per state, over the actions'
  range [−1, 1]: 0 when the actor ignores its skill;
- `actor_grad_task` and `actor_grad_mi`: the global norms of the gradients, over the actor's
  weights and before clipping, of the two parts of the actor's loss that training sums: the
  task rewards' λ-returns with the value bootstrap, and the MI rewards' (`actor_loss_parts`).
  They say how much the MI reward moves the actor next to the task reward.
"""

import argparse
import json
import math
import pathlib
import sys

import numpy as np

from dreamer_lsp.config import ConfigError
from dreamer_lsp.rundir import RunDir, atomic_write_text
from tools.cem_precision import start_batches
from tools.skill_rollouts import checkpointed_run_config, load_agent_offline

FIGURES = (
    'log_q',
    'log_q_shuffled',
    'log_p',
    'predictor_std',
    'within_batch_std',
    'action_change',
    'actor_grad_task',
    'actor_grad_mi',
)


def pooled_log_density(skills):
    """Mean log density of skills [S, M, D] under one diagonal Gaussian per segment fitted to
    its M skills (maximum likelihood: their mean and their std with ddof 0), summed over D."""
    center, scale = skills.mean(1, keepdims=True), skills.std(1, keepdims=True)
    log_density = -0.5 * np.square((skills - center) / scale) - np.log(scale)
    return float(np.mean(np.sum(log_density - 0.5 * math.log(2 * math.pi), -1)))


def actor_loss_parts(agent, start, sequence, plan):
    """The actor's loss [D §4] on an imagined `sequence` split by reward: its task part and its
    MI part, which sum to the loss training minimises.

    λ-returns are linear in the rewards and the bootstrap values together, so the returns of the
    task rewards with the value bootstrap plus those of the MI rewards with none are training's.
    """
    from dreamer_lsp._tf import tf

    task_reward, _ = agent.task_reward(sequence)  # [H - 1, N]
    reward, _ = agent.reward(start, sequence, plan)
    weights, task_returns, _ = agent.behavior.target(sequence['feat'], task_reward)
    mi_returns, _ = agent.behavior.lambda_returns(reward - task_reward, tf.zeros_like(reward))
    return -tf.reduce_mean(weights * task_returns), -tf.reduce_mean(weights * mi_returns)


def batch_figures(agent, start, rng):
    """One batch's figures (the keys of FIGURES) and its skills [S, N, D]."""
    from dreamer_lsp._tf import tf

    plan, _ = agent.plan_skills(start)
    policy = agent.skill_policy(plan['skills'])
    actor_weights = agent.behavior.actor.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        sequence = agent.world_model.imagine(policy, start, agent.horizon)
        task_loss, mi_loss = actor_loss_parts(agent, start, sequence, plan)
    skills = agent.segment_skills(sequence)  # [S, N, D]
    prediction = agent.predictor(agent.segments(start, sequence))  # batch shape [S, N]
    shuffled = tf.gather(skills, rng.permutation(int(skills.shape[1])), axis=1)
    feat = agent.world_model.feat(start)  # [N, F]
    actions = [
        tf.tanh(agent.behavior.policy(feat, rng.normal(size=(feat.shape[0], agent.skill_dim))).mean)
        for _ in range(2)
    ]  # 2 x [N, A]
    figures = dict(
        log_q=prediction.log_prob(skills),
        log_q_shuffled=prediction.log_prob(shuffled),
        log_p=plan['log_p'],
        predictor_std=prediction.stddev(),
        within_batch_std=tf.math.reduce_std(skills, 1),
        action_change=tf.abs(actions[0] - actions[1]),
        actor_grad_task=tf.linalg.global_norm(tape.gradient(task_loss, actor_weights)),
        actor_grad_mi=tf.linalg.global_norm(tape.gradient(mi_loss, actor_weights)),
    )
    return {key: float(tf.reduce_mean(value)) for key, value in figures.items()}, skills.numpy()


def skill_information(agent, starts, seed=0):
    """The figures of the module docstring over the batches' posterior states `starts`."""
    rng = np.random.default_rng(seed)
    batches, skills = [], []
    for start in starts:
        figures, batch_skills = batch_figures(agent, start, rng)
        batches.append(figures)
        skills.append(batch_skills)
    pooled = np.concatenate(skills, 1)  # [S, batches x N, D]
    report = {key: float(np.mean([figures[key] for figures in batches])) for key in FIGURES}
    report.update(
        information=report['log_q'] - report['log_q_shuffled'],
        mi_bound=report['log_q'] - report['log_p'],
        log_p_pooled=pooled_log_density(pooled),
        pooled_std=float(pooled.std(1).mean()),
    )
    return dict(report, batches=batches)


def main(argv=None):
    """Print (and optionally save) what the run's skill predictor tells about its skills."""
    parser = argparse.ArgumentParser(
        prog='python -m tools.skill_information', description=__doc__.split('\n\n')[0]
    )
    parser.add_argument('--run', type=pathlib.Path, required=True, help='a skill run logdir')
    parser.add_argument('--batches', type=int, default=8, help='training batches of its replay')
    parser.add_argument('--seed', type=int, default=0, help='of the shuffles')
    parser.add_argument('--threads', type=int, default=0, help='TensorFlow intra-op threads')
    parser.add_argument('--json', type=pathlib.Path, help='also write the figures here')
    args = parser.parse_args(argv)
    try:
        config = checkpointed_run_config(args.run)
        if not config.skills.intrinsic:
            raise ConfigError(f'{args.run} trains no skill predictor ({config.method})')
        if config.skills.high_level not in ('cem', 'random'):
            raise ConfigError(
                f'{args.run} chooses its skills with a policy ({config.method}); valid: runs '
                'whose skills come from CEM or at random'
            )
    except (ConfigError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    from dreamer_lsp._tf import tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    checkpoint = RunDir(args.run).latest_name()
    agent = load_agent_offline(args.run, config)
    starts = start_batches(agent, args.run, config, args.batches)
    report = skill_information(agent, starts, args.seed)
    print(
        f'{args.run} ({checkpoint}), {args.batches} batches (nats per skill): '
        f'log q {report["log_q"]:.2f}, '
        f'shuffled {report["log_q_shuffled"]:.2f} (information {report["information"]:.3f}); '
        f'log p {report["log_p"]:.2f} (MI bound {report["mi_bound"]:.2f}), pooled over batches '
        f'{report["log_p_pooled"]:.2f}; std: predictor {report["predictor_std"]:.2f}, skills '
        f'within a batch {report["within_batch_std"]:.2f}, pooled {report["pooled_std"]:.2f}; '
        f'action change between two skills {report["action_change"]:.3f}; actor gradient '
        f'norm from the task reward {report["actor_grad_task"]:.3g}, from the MI reward '
        f'{report["actor_grad_mi"]:.3g}'
    )
    if args.json:
        atomic_write_text(
            args.json,
            json.dumps(dict(run=str(args.run), checkpoint=checkpoint, **report), indent=2),
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
