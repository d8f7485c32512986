"""Custom cartpole tasks: small analogues of the paper's quadruped transfer tasks.

The quadruped transfers (LSP §4.3 Walk → Reach, A.2 the sparse cove) need hundreds of thousands
of source steps, which a 2-core CPU cannot afford. These tasks keep their mechanism on the
cartpole, whose balance task the learning check trains: a source agent that learned to balance
must now carry the cart to a goal position on the rail while keeping the pole up (results/PLAN.md,
C4 and C5). Both start as the suite's `balance` (cart within 0.1 of the centre, pole nearly
upright), keep its observations (cart position, pole cos/sin, velocities: 5 features) and its
1-D action, and differ only in the reward, so a balance run's episodes relabel to them.

Tasks (`load(name, seed, **params)`):

* `reach`: dense reward = upright x near-goal, where upright = (cos θ + 1) / 2 as in the suite
  and near-goal is 1 while the cart is within `goal_radius=0.25` of `goal=1.0` and falls off as a
  Gaussian to 0.1 at `margin=1.0` beyond that (about 0.27 for a cart balanced at the centre).
* `reach_sparse`: reward 1 while the cart is within `goal_radius=0.25` of `goal=1.4` and the pole
  is upright as the suite's sparse balance requires (cos θ ≥ 0.995), else 0. The rail ends at 1.8.

This module never imports TensorFlow (see `dreamer_lsp.envs.ProcessEnv`).
"""

from dm_control.rl import control
from dm_control.suite import cartpole
from dm_control.utils import rewards

from dreamer_lsp import custom_tasks

DEFAULT_TIME_LIMIT = cartpole._DEFAULT_TIME_LIMIT
_UPRIGHT_COSINE = cartpole.Balance._ANGLE_COSINE_RANGE


class _GoalTask(cartpole.Balance):
    """The suite's balance start and observations with a goal position for the cart."""

    def __init__(self, goal, goal_radius, random=None):
        if goal_radius <= 0:
            raise ValueError(f'goal_radius must be positive; got {goal_radius}')
        self._goal = float(goal)
        self._goal_radius = float(goal_radius)
        super().__init__(swing_up=False, sparse=False, random=random)

    def _goal_bounds(self):
        return (self._goal - self._goal_radius, self._goal + self._goal_radius)


class Reach(_GoalTask):
    """Keep the pole up with the cart near `goal` (dense reward)."""

    def __init__(self, goal=1.0, goal_radius=0.25, margin=1.0, random=None):
        if margin <= 0:
            raise ValueError(f'margin must be positive; got {margin}')
        self._margin = float(margin)
        super().__init__(goal, goal_radius, random=random)

    def get_reward(self, physics):
        """Upright x near-goal, in [0, 1]."""
        upright = (physics.pole_angle_cosine()[0] + 1) / 2
        near_goal = rewards.tolerance(
            physics.cart_position(), bounds=self._goal_bounds(), margin=self._margin
        )
        return float(upright * near_goal)


class ReachSparse(_GoalTask):
    """Reward 1 only while the cart is at `goal` with the pole upright."""

    def __init__(self, goal=1.4, goal_radius=0.25, random=None):
        super().__init__(goal, goal_radius, random=random)

    def get_reward(self, physics):
        """1 at the goal with the pole upright, else 0."""
        at_goal = rewards.tolerance(physics.cart_position(), bounds=self._goal_bounds())
        upright = rewards.tolerance(physics.pole_angle_cosine()[0], bounds=_UPRIGHT_COSINE)
        return float(at_goal * upright)


TASKS = {'reach': Reach, 'reach_sparse': ReachSparse}


def load(name, seed=None, time_limit=DEFAULT_TIME_LIMIT, **params):
    """Returns a `control.Environment` for task `name`, deterministic given `seed`.

    `params` are the task's keyword parameters (module docstring); an unknown task or parameter
    raises ValueError naming the valid ones. Timestep and time limit (10 s) are the suite's.
    """
    task = custom_tasks.build_task('cartpole', TASKS, name, seed, params)
    physics = cartpole.Physics.from_xml_string(*cartpole.get_model_and_assets())
    return control.Environment(physics, task, time_limit=time_limit)
