"""Custom quadruped tasks of the LSP paper, built on dm_control's quadruped model.

The paper's code is unpublished, so these follow its text (§4.3 transfer, A.2 obstacle
transfer). Every task is deterministic given its seed and keeps its arena (goal and obstacle
positions) in the MuJoCo model. Reward relabeling redraws an episode's arena by seeding the
task's random state as the episode was seeded, then replays the stored qpos/qvel;
`arena_params` and `set_arena_params` read and restore an arena vector directly.

Tasks (`load(name, seed, **params)`):

* `getup_walk`: random orientation, often upside down (as the suite's quadruped `walk`
  initialisation); reward = upright x forward-walk reward of the suite's `Move` at walking speed.
* `reach`: upright start with random heading; walk to a goal on the floor at a random bearing.
  Dense reward = upright x linear tolerance of the torso-goal distance, 1 within `goal_radius`
  and 0 at `goal_distance[1]` beyond it. Params: `goal_distance=(3.0, 6.0)` (range of the
  start-goal distance, m), `goal_radius=0.5` (m).
* `getup_reach`: `reach` with a random orientation start. Same params.
* `obstacles`: `num_obstacles=20` cylinders of radius `obstacle_radius=0.3` scattered uniformly
  over the square of half-width `arena_size=6.0` around the start, never within 1 m of the start;
  upright start with random heading; reward as `getup_walk`.
* `cove`: cylinders laid out as a U between the start and the goal with its opening facing away
  from the start, the goal inside it, so that walking straight at the goal ends against the cove's
  bottom (LSP A.2). Sparse reward: 1 within `goal_radius` of the goal, else 0. Params:
  `goal_distance=4.0`, `goal_radius=0.5`, `cove_width=2.4` (distance between the arms' centre
  lines), `cove_depth=2.0` (arm length; the goal sits halfway along), `obstacle_radius=0.3`,
  `obstacle_spacing=0.75` (largest centre distance of neighbouring cylinders),
  `rotation_range=0.0` (the layout is turned about the start by a uniform angle in this range,
  radians). The robot starts upright facing the goal.

Observations are the suite's quadruped ones (`egocentric_state` 44, `torso_velocity` 3,
`torso_upright` scalar, `imu` 6, `force_torque` 24) plus `goal_relative` (3, the goal in the
torso frame) for tasks with a goal. Actions have 12 dimensions.

`arena_params()` is a float32 vector: the goal xy (tasks with a goal) followed by x, y, radius of
every obstacle. This module never imports TensorFlow (see `dreamer_lsp.envs.ProcessEnv`).
"""

import numpy as np
from dm_control.rl import control
from dm_control.suite import base, common, quadruped
from dm_control.utils import rewards
from lxml import etree

from dreamer_lsp import custom_tasks

CONTROL_TIMESTEP = quadruped._CONTROL_TIMESTEP
DEFAULT_TIME_LIMIT = quadruped._DEFAULT_TIME_LIMIT
WALK_SPEED = quadruped._WALK_SPEED

_MIN_FLOOR_SIZE = DEFAULT_TIME_LIMIT * WALK_SPEED
_OBSTACLE_HEIGHT = 1.0
_START_CLEARANCE = 1.0
_GOAL_RGBA = '0.9 0.1 0.1 1'
_GOAL_HALF_HEIGHT = 0.01


def _obstacle_name(index):
    return f'obstacle_{index:02d}'


def _round_to_float32(values):
    # Arena values are rounded to float32 when sampled so a stored vector restores them exactly.
    return np.asarray(values, np.float32).astype(np.float64)


class Physics(quadruped.Physics):
    """Quadruped physics with a goal marker body `goal` and obstacle bodies `obstacle_NN`."""

    def goal_relative(self):
        """Returns the goal position in the torso frame (3-D)."""
        torso_frame = self.named.data.xmat['torso'].reshape(3, 3)
        torso_to_goal = self.named.data.xpos['goal'] - self.named.data.xpos['torso']
        return torso_to_goal.dot(torso_frame)

    def goal_distance(self):
        """Returns the horizontal distance between the torso and the goal."""
        torso_to_goal = self.named.data.xpos['goal'] - self.named.data.xpos['torso']
        return float(np.linalg.norm(torso_to_goal[:2]))


class _Task(base.Task):
    """Arena bookkeeping shared by all tasks: an optional goal and a fixed set of obstacles."""

    has_goal = False

    def __init__(
        self, random, num_obstacles=0, obstacle_radius=0.3, goal_radius=0.5, floor_size=None
    ):
        super().__init__(random=random)
        if num_obstacles < 0 or obstacle_radius <= 0 or goal_radius <= 0:
            raise ValueError('num_obstacles must be >= 0 and radii must be positive')
        self._goal = np.zeros(2)
        self._obstacles = np.zeros((int(num_obstacles), 2))
        self._obstacle_radius = float(np.float32(obstacle_radius))
        self._goal_radius = float(goal_radius)
        self._floor_size = max(_MIN_FLOOR_SIZE, floor_size or 0.0)
        self._walk = quadruped.Move(desired_speed=WALK_SPEED)

    def make_physics(self):
        """Builds the quadruped model with this task's floor, goal marker and obstacles."""
        xml = quadruped.make_model(floor_size=self._floor_size)
        mjcf = etree.fromstring(xml, etree.XMLParser(remove_blank_text=True))
        worldbody = mjcf.find('worldbody')
        if self.has_goal:
            goal = etree.SubElement(worldbody, 'body', name='goal', pos='0 0 0')
            etree.SubElement(
                goal,
                'site',
                name='goal',
                type='cylinder',
                size=f'{self._goal_radius} {_GOAL_HALF_HEIGHT}',
                pos=f'0 0 {_GOAL_HALF_HEIGHT}',
                rgba=_GOAL_RGBA,
            )
        half_height = _OBSTACLE_HEIGHT / 2
        for index in range(len(self._obstacles)):
            name = _obstacle_name(index)
            body = etree.SubElement(worldbody, 'body', name=name, pos=f'0 0 {half_height}')
            etree.SubElement(
                body,
                'geom',
                name=name,
                type='cylinder',
                size=f'{self._obstacle_radius} {half_height}',
                material='decoration',
                contype='1',
                conaffinity='1',
            )
        return Physics.from_xml_string(etree.tostring(mjcf), common.ASSETS)

    def arena_params(self):
        """Returns the arena as float32: goal xy (if any), then x, y, radius per obstacle."""
        radii = np.full((len(self._obstacles), 1), self._obstacle_radius)
        obstacles = np.concatenate([self._obstacles, radii], axis=1).ravel()
        goal = self._goal if self.has_goal else np.zeros(0)
        return np.concatenate([goal, obstacles]).astype(np.float32)

    def set_arena_params(self, physics, params):
        """Restores an arena vector from `arena_params`; call `physics.forward()` afterwards."""
        params = np.asarray(params, np.float64).ravel()
        expected = self.arena_params().size
        if params.size != expected:
            raise ValueError(f'Arena vector has {params.size} values, this task needs {expected}')
        num_goal = 2 if self.has_goal else 0
        obstacles = params[num_goal:].reshape(-1, 3)
        if not np.all(obstacles[:, 2] == self._obstacle_radius):
            raise ValueError(f"Obstacle radii must equal this task's {self._obstacle_radius}")
        if self.has_goal:
            self._goal = params[:2]
        self._obstacles = obstacles[:, :2]
        self._apply_arena(physics)

    def _apply_arena(self, physics):
        body_pos = physics.named.model.body_pos
        if self.has_goal:
            body_pos['goal', :2] = self._goal
        if len(self._obstacles):
            names = [_obstacle_name(i) for i in range(len(self._obstacles))]
            body_pos[names, :2] = self._obstacles

    def _place_robot(self, physics, upright, yaw=None):
        if upright:
            if yaw is None:
                yaw = self.random.uniform(0, 2 * np.pi)
            orientation = np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])
        else:
            orientation = self.random.randn(4)
            orientation /= np.linalg.norm(orientation)
        quadruped._find_non_contacting_height(physics, orientation)

    def get_observation(self, physics):
        """Returns the suite's quadruped observations, plus `goal_relative` with a goal."""
        obs = quadruped._common_observations(physics)
        if self.has_goal:
            obs['goal_relative'] = physics.goal_relative()
        return obs


class GetupWalk(_Task):
    """Stand up from a random, often upside-down orientation and walk forward (LSP §4.3)."""

    def __init__(self, random=None):
        super().__init__(random)

    def initialize_episode(self, physics):
        """Drops the robot at the origin with a uniformly random orientation."""
        self._place_robot(physics, upright=False)
        super().initialize_episode(physics)

    def get_reward(self, physics):
        """Returns upright x forward-walk reward, as the suite's quadruped walk."""
        return self._walk.get_reward(physics)


class Reach(_Task):
    """Walk to a goal on the floor from an upright start with random heading (LSP §4.3)."""

    has_goal = True
    upright_start = True

    def __init__(self, random=None, goal_distance=(3.0, 6.0), goal_radius=0.5):
        low, high = (float(d) for d in goal_distance)
        if not 0 <= low <= high:
            raise ValueError(
                f'goal_distance must be (low, high) with 0 <= low <= high: {low, high}'
            )
        self._goal_distance = (low, high)
        super().__init__(random, goal_radius=goal_radius, floor_size=high + 2)

    def initialize_episode(self, physics):
        """Samples a goal at a random bearing and distance, then places the robot."""
        bearing = self.random.uniform(0, 2 * np.pi)
        distance = self.random.uniform(*self._goal_distance)
        self._goal = _round_to_float32(distance * np.array([np.cos(bearing), np.sin(bearing)]))
        self._apply_arena(physics)
        self._place_robot(physics, upright=self.upright_start)
        super().initialize_episode(physics)

    def get_reward(self, physics):
        """Returns upright x a reward rising linearly as the torso nears the goal."""
        reach = rewards.tolerance(
            physics.goal_distance(),
            bounds=(0, self._goal_radius),
            margin=self._goal_distance[1],
            sigmoid='linear',
            value_at_margin=0,
        )
        return quadruped._upright_reward(physics) * reach


class GetupReach(Reach):
    """Reach from a random, often upside-down orientation (LSP §4.3, GetUp Walk -> Reach)."""

    upright_start = False


class Obstacles(_Task):
    """Walk forward among randomly placed cylinders (LSP A.2 source task)."""

    def __init__(self, random=None, num_obstacles=20, obstacle_radius=0.3, arena_size=6.0):
        if arena_size <= obstacle_radius + _START_CLEARANCE:
            raise ValueError(
                f'arena_size must exceed obstacle_radius + {_START_CLEARANCE}: {arena_size}'
            )
        self._arena_size = float(arena_size)
        super().__init__(
            random,
            num_obstacles=num_obstacles,
            obstacle_radius=obstacle_radius,
            floor_size=arena_size + 4,
        )

    def initialize_episode(self, physics):
        """Scatters the obstacles away from the start, then places the robot upright."""
        min_distance = self._obstacle_radius + _START_CLEARANCE
        for index in range(len(self._obstacles)):
            position = self.random.uniform(-self._arena_size, self._arena_size, size=2)
            while np.linalg.norm(position) < min_distance:
                position = self.random.uniform(-self._arena_size, self._arena_size, size=2)
            self._obstacles[index] = _round_to_float32(position)
        self._apply_arena(physics)
        self._place_robot(physics, upright=True)
        super().initialize_episode(physics)

    def get_reward(self, physics):
        """Returns upright x forward-walk reward, as the suite's quadruped walk."""
        return self._walk.get_reward(physics)


class Cove(_Task):
    """Sparse-reward goal inside a U of cylinders that traps a straight approach (LSP A.2)."""

    has_goal = True

    def __init__(
        self,
        random=None,
        goal_distance=4.0,
        goal_radius=0.5,
        cove_width=2.4,
        cove_depth=2.0,
        obstacle_radius=0.3,
        obstacle_spacing=0.75,
        rotation_range=0.0,
    ):
        if min(cove_width, cove_depth, obstacle_spacing) <= 0 or rotation_range < 0:
            raise ValueError('cove sizes must be positive and rotation_range non-negative')
        bottom = goal_distance - cove_depth / 2
        if bottom - obstacle_radius < _START_CLEARANCE:
            raise ValueError(
                f'goal_distance - cove_depth / 2 - obstacle_radius must be >= {_START_CLEARANCE}'
            )
        ys = np.linspace(
            -cove_width / 2, cove_width / 2, int(np.ceil(cove_width / obstacle_spacing)) + 1
        )
        xs = (
            bottom + np.linspace(0, cove_depth, int(np.ceil(cove_depth / obstacle_spacing)) + 1)[1:]
        )
        self._layout = np.concatenate(
            [
                np.stack([np.full_like(ys, bottom), ys], axis=1),
                np.stack([xs, np.full_like(xs, -cove_width / 2)], axis=1),
                np.stack([xs, np.full_like(xs, cove_width / 2)], axis=1),
            ]
        )
        self._goal_layout = np.array([goal_distance, 0.0])
        self._rotation_range = float(rotation_range)
        super().__init__(
            random,
            num_obstacles=len(self._layout),
            obstacle_radius=obstacle_radius,
            goal_radius=goal_radius,
            floor_size=goal_distance + cove_depth + 3,
        )

    def initialize_episode(self, physics):
        """Turns the cove layout about the start and places the robot facing the goal."""
        angle = self.random.uniform(-self._rotation_range, self._rotation_range)
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        self._goal = _round_to_float32(self._goal_layout @ rotation)
        self._obstacles = _round_to_float32(self._layout @ rotation)
        self._apply_arena(physics)
        self._place_robot(physics, upright=True, yaw=angle)
        super().initialize_episode(physics)

    def get_reward(self, physics):
        """Returns 1 while the torso is within `goal_radius` of the goal, else 0."""
        return float(physics.goal_distance() <= self._goal_radius)


TASKS = {
    'getup_walk': GetupWalk,
    'reach': Reach,
    'getup_reach': GetupReach,
    'obstacles': Obstacles,
    'cove': Cove,
}


def load(name, seed=None, time_limit=DEFAULT_TIME_LIMIT, **params):
    """Returns a `control.Environment` for task `name`, deterministic given `seed`.

    `params` are the task's keyword parameters (see the module docstring);
    an unknown task or parameter raises ValueError naming the valid ones. The control timestep
    (0.02 s) and default time limit (20 s) are the suite's quadruped ones.
    """
    task = custom_tasks.build_task('quadruped', TASKS, name, seed, params)
    return control.Environment(
        task.make_physics(), task, time_limit=time_limit, control_timestep=CONTROL_TIMESTEP
    )
