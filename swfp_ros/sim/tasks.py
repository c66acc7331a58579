"""PandaReach and PandaPush: gymnasium environments on a position-controlled Franka Panda in MuJoCo.

Interface shared with a real arm (and the ROS sim bridge):
- action: 7 joint-position deltas in [-1, 1]; the command sent to the position actuators is
  ``clip(q_measured + action * ACTION_SCALE, joint limits)``, i.e. an absolute joint target, which is what a real
  arm's forward_command_controller takes (``step_joint_targets`` accepts such targets directly);
- observation: ``[q (7), qdot (7), task vector]``, where the task vector (labels in ``task_labels``) carries what a
  real cell gets from kinematics and perception: end-effector position, goal, and for push the object position, the
  differences object - end effector and goal - object, and the hand in the push's frame (:func:`push_frame`).
  The reach task's vector and reward are :data:`REACH` — one definition, used by this environment and by the ROS
  task node that computes them on a real arm (forward kinematics of the measured joints, :mod:`.kinematics`).
Control at 20 Hz (25 physics steps of 2 ms). Episodes end on success (terminated) or at the time limit (truncated,
added by the registered TimeLimit wrapper). Action chunking belongs to the runner, not here.
"""
from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from .panda_model import ARM_JOINTS, ArmIndex, load_panda_spec

CONTROL_RATE_HZ = 20.0
PHYSICS_DT = 0.002
ACTION_SCALE = 0.1            # rad per control step at |action| = 1 (2 rad/s commanded; the servo lags behind)
LIMIT_MARGIN = 0.02           # rad kept away from each joint limit
HOME_Q = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 0.33, 0.785])  # gripper pointing down above the workspace
SUCCESS_DISTANCE = 0.05       # m


class ReachDefinition:
    """The reach task's vector and reward from the end-effector and goal positions (metres, robot base frame): what
    the simulated task computes and what the task node computes from a real arm's joint states."""

    labels = ('ee_x', 'ee_y', 'ee_z', 'goal_x', 'goal_y', 'goal_z')

    def __init__(self, success_distance: float = SUCCESS_DISTANCE):
        self.success_distance = float(success_distance)

    def vector(self, ee: np.ndarray, goal: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(ee, np.float64).ravel(), np.asarray(goal, np.float64).ravel()])

    def reward(self, ee: np.ndarray, goal: np.ndarray) -> tuple[float, bool]:
        """(-distance, distance < success_distance)."""
        distance = float(np.linalg.norm(np.asarray(ee, np.float64) - np.asarray(goal, np.float64)))
        return -distance, distance < self.success_distance


REACH = ReachDefinition()


class PandaTaskEnv(gym.Env):
    """Shared machinery: model, arm addressing, control step, observation, rendering."""

    metadata = {'render_modes': ['rgb_array'], 'render_fps': int(CONTROL_RATE_HZ)}
    task_labels: tuple[str, ...] = ()
    control_rate_hz = CONTROL_RATE_HZ
    action_scale = ACTION_SCALE

    def __init__(self, model_path: str | None = None, render_mode: str | None = None,
                 width: int = 480, height: int = 360, home_noise: float = 0.05):
        if render_mode not in (None, 'rgb_array'):
            raise ValueError(f'unsupported render_mode {render_mode!r}; use "rgb_array"')
        spec = load_panda_spec(model_path)
        self._build_scene(spec)
        self.model = spec.compile()
        self.model.opt.timestep = PHYSICS_DT
        self.data = mujoco.MjData(self.model)
        self.arm = ArmIndex.from_model(self.model)
        self.substeps = int(round(1.0 / (CONTROL_RATE_HZ * PHYSICS_DT)))
        self.home_noise = home_noise
        self.render_mode = render_mode
        self._render_size = (height, width)
        self._renderer = None
        self.joint_names = ARM_JOINTS
        self.joint_lower = self.arm.lower + LIMIT_MARGIN
        self.joint_upper = self.arm.upper - LIMIT_MARGIN
        obs_dim = 14 + len(self.task_labels)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        self.obs_labels = ([f'{j}.position' for j in ARM_JOINTS] + [f'{j}.velocity' for j in ARM_JOINTS]
                           + list(self.task_labels))
        self.goal = np.zeros(3)
        self.elapsed_steps = 0

    # --- task hooks -------------------------------------------------------------------------------------------
    def _build_scene(self, spec: mujoco.MjSpec) -> None:
        world = spec.worldbody
        world.add_light(pos=[0.5, 0.0, 2.5], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
        world.add_geom(name='floor', type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], rgba=[0.3, 0.35, 0.4, 1])
        # The goal marker rides a mocap body: a site on the world body is static, and MuJoCo 4.0 computes its
        # site_xpos once, at compile time, so moving its model pos left it drawn at the origin. A mocap body's pose is
        # data (mocap_pos), placed by every mj_forward/mj_step.
        marker = world.add_body(name='goal', mocap=True)
        marker.add_site(name='goal', **self._goal_marker)

    # Drawn only (a site never collides): a translucent green sphere where the end effector should go.
    _goal_marker = {'type': mujoco.mjtGeom.mjGEOM_SPHERE, 'size': [0.02, 0, 0], 'rgba': [0.1, 0.9, 0.2, 0.6]}

    def _set_goal(self, goal: np.ndarray) -> None:
        """The task's goal, and its marker in renders."""
        self.goal = np.asarray(goal, np.float64)
        self.data.mocap_pos[self.model.body('goal').mocapid[0]] = self.goal

    def _sample_task(self) -> None:
        raise NotImplementedError

    def task_vector(self) -> np.ndarray:
        raise NotImplementedError

    def _reward_and_success(self) -> tuple[float, bool]:
        raise NotImplementedError

    # --- state accessors --------------------------------------------------------------------------------------
    @property
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.arm.qpos].copy()

    @property
    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self.arm.dof].copy()

    @property
    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self.arm.ee_site].copy()

    @property
    def action_labels(self) -> list[str]:
        """One joint-position delta per arm joint."""
        return list(self.joint_names)

    @property
    def sim_time(self) -> float:
        return float(self.data.time)

    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Names, positions, velocities and efforts of all arm and finger joints, as /joint_states carries them."""
        names = list(ARM_JOINTS) + list(self.arm.finger_names)
        qpos = np.concatenate([self.arm.qpos, self.arm.finger_qpos])
        dofs = np.concatenate([self.arm.dof, self.arm.finger_dof])
        return names, self.data.qpos[qpos].copy(), self.data.qvel[dofs].copy(), self.data.qfrc_actuator[dofs].copy()

    def observation(self) -> np.ndarray:
        return np.concatenate([self.joint_positions, self.joint_velocities, self.task_vector()]).astype(np.float32)

    def joint_targets_for(self, action: np.ndarray) -> np.ndarray:
        """The absolute joint target an action in [-1, 1] commands from the current measured position."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return np.clip(self.joint_positions + action * self.action_scale, self.joint_lower, self.joint_upper)

    # --- gymnasium API ----------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        q0 = HOME_Q + self.np_random.uniform(-self.home_noise, self.home_noise, size=7)
        q0 = np.clip(q0, self.joint_lower, self.joint_upper)
        self.data.qpos[self.arm.qpos] = q0
        self.data.ctrl[self.arm.actuator] = q0
        self.data.ctrl[self.arm.finger_actuator] = 0.0   # fingers closed: the hand is a pusher
        self._sample_task()
        mujoco.mj_forward(self.model, self.data)
        self.elapsed_steps = 0
        return self.observation(), {'is_success': False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f'action must have shape (7,), got {action.shape}')
        if not np.all(np.isfinite(action)):
            raise ValueError('action contains NaN or inf')
        return self.step_joint_targets(self.joint_targets_for(action))

    def step_joint_targets(self, q_target: np.ndarray):
        """Advance one control period holding the absolute joint targets ``q_target`` (clipped to the limits)."""
        q_target = np.asarray(q_target, dtype=np.float64)
        if q_target.shape != (7,) or not np.all(np.isfinite(q_target)):
            raise ValueError(f'joint targets must be 7 finite values, got {q_target}')
        self.data.ctrl[self.arm.actuator] = np.clip(q_target, self.joint_lower, self.joint_upper)
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self.elapsed_steps += 1
        reward, success = self._reward_and_success()
        return self.observation(), float(reward), bool(success), False, {'is_success': bool(success)}

    def advance(self, q_target: np.ndarray, seconds: float) -> float:
        """Hold the absolute joint targets ``q_target`` (clipped to the limits) for ``seconds`` of physics (rounded to
        whole physics steps; returns the seconds simulated): what a position-controlled arm does between two
        commands. No episode bookkeeping (the mock arm's clock)."""
        self.data.ctrl[self.arm.actuator] = np.clip(np.asarray(q_target, np.float64), self.joint_lower,
                                                    self.joint_upper)
        nstep = int(seconds / PHYSICS_DT)
        if nstep:
            mujoco.mj_step(self.model, self.data, nstep=nstep)
        return nstep * PHYSICS_DT

    def render(self):
        if self.render_mode != 'rgb_array':
            return None
        if self._renderer is None:
            height, width = self._render_size
            self._renderer = mujoco.Renderer(self.model, height=height, width=width)
            self._camera = mujoco.MjvCamera()
            self._camera.lookat[:] = [0.45, 0.0, 0.2]
            self._camera.distance, self._camera.azimuth, self._camera.elevation = 1.6, 150.0, -25.0
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class PandaReachEnv(PandaTaskEnv):
    """Bring the end effector within 5 cm of a goal sampled in front of the robot. Reward: -distance (m)."""

    task_labels = REACH.labels
    goal_low = np.array([0.30, -0.25, 0.15])
    goal_high = np.array([0.60, 0.25, 0.45])

    def _sample_task(self):
        self._set_goal(self.np_random.uniform(self.goal_low, self.goal_high))

    def task_vector(self):
        return REACH.vector(self.ee_position, self.goal)

    def _reward_and_success(self):
        return REACH.reward(self.ee_position, self.goal)


def push_frame(ee: np.ndarray, obj: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """The hand in the push's frame on the floor: [direction x, direction y, along, across, distance], the direction
    the unit vector from the puck to the goal, along / across the hand's offset from the puck on it and to its left.
    A puck on its goal has no direction: all zero but the distance."""
    push = goal[:2] - obj[:2]
    distance = float(np.linalg.norm(push))
    direction = push / distance if distance > 1e-9 else np.zeros(2)
    hand = ee[:2] - obj[:2]
    along = hand @ direction
    across = direction[0] * hand[1] - direction[1] * hand[0]
    return np.array([direction[0], direction[1], along, across, distance])


class PandaPushEnv(PandaTaskEnv):
    """Push a puck on the floor to within 5 cm of a goal 10-20 cm away in any direction.

    Reward: -(puck-goal distance) - 0.5 * (hand-puck distance), in metres. Besides the absolute positions the task
    vector carries what pushing turns on, which an MLP would otherwise have to learn from them: the differences
    puck - hand and goal - puck, and the hand in the push's own frame on the floor (origin at the puck, the first axis
    towards the goal): that axis, the hand's coordinates along and across it (behind the puck = negative along), and
    the puck's distance to the goal (README "Push to ≥ 0.7": what each changed for SWFP).
    """

    task_labels = ('ee_x', 'ee_y', 'ee_z', 'goal_x', 'goal_y', 'goal_z', 'obj_x', 'obj_y', 'obj_z',
                   'obj_from_ee_x', 'obj_from_ee_y', 'obj_from_ee_z', 'goal_from_obj_x', 'goal_from_obj_y',
                   'goal_from_obj_z', 'push_dir_x', 'push_dir_y', 'ee_along_push', 'ee_across_push', 'push_dist')
    puck_radius = 0.025
    puck_half_height = 0.02
    # The target: a flat green disc of the puck's size on the floor, centred under the goal the puck must reach.
    _goal_marker = {'type': mujoco.mjtGeom.mjGEOM_CYLINDER, 'size': [puck_radius, 0.002, 0],
                    'pos': [0, 0, 0.002 - puck_half_height], 'rgba': [0.1, 0.9, 0.2, 0.6]}

    def _build_scene(self, spec):
        super()._build_scene(spec)
        puck = spec.worldbody.add_body(name='puck', pos=[0.5, 0.0, self.puck_half_height])
        puck.add_freejoint(name='puck_free')
        puck.add_geom(name='puck', type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[self.puck_radius, self.puck_half_height, 0],
                      mass=0.2, friction=[0.5, 0.005, 0.0001], rgba=[0.9, 0.3, 0.1, 1])

    def _sample_task(self):
        start = np.array([0.5, 0.0]) + self.np_random.uniform([-0.05, -0.1], [0.05, 0.1])
        angle = self.np_random.uniform(-np.pi, np.pi)
        radius = self.np_random.uniform(0.10, 0.20)
        self._set_goal([*(start + radius * np.array([np.cos(angle), np.sin(angle)])), self.puck_half_height])
        joint = self.model.joint('puck_free')
        self.data.qpos[joint.qposadr[0]:joint.qposadr[0] + 7] = [*start, self.puck_half_height, 1, 0, 0, 0]

    @property
    def object_position(self) -> np.ndarray:
        return self.data.body('puck').xpos.copy()

    def task_vector(self):
        ee, obj = self.ee_position, self.object_position
        return np.concatenate([ee, self.goal, obj, obj - ee, self.goal - obj, push_frame(ee, obj, self.goal)])

    def _reward_and_success(self):
        obj = self.object_position
        to_goal = float(np.linalg.norm(obj[:2] - self.goal[:2]))
        to_puck = float(np.linalg.norm(self.ee_position - obj))
        return -to_goal - 0.5 * to_puck, to_goal < SUCCESS_DISTANCE
