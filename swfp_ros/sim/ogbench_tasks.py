"""OGBench's cube-single (single-task) behind the project's task surface, and its scripted oracle as a noisy expert.

OGBench (Park et al., 2025) is the suite that FQL, QC-FQL and SAC Flow report on, so a success rate here can be set
beside published ones. Its UR5e + Robotiq 2F-85 scene, task definitions and scripted oracles ship in the ``ogbench``
wheel (extra ``swfp_ros[ogbench]``); nothing is downloaded. We keep OGBench's own dynamics, observation, reward and
success test unchanged and only put them behind the interface the Panda tasks have (float32 observations with labels,
``info['is_success']``, seeding through ``reset(seed=...)``, shape/NaN checks on actions).

- action: 5 values in [-1, 1]: end-effector displacement x, y, z (±5 cm per step), yaw (±0.3 rad per step) and the
  change of the gripper opening; OGBench turns them into joint targets by its own inverse kinematics. This is an
  end-effector contract, not the joint-target contract of the policy node, which is why this task runs in-process
  only (README, "The simulated tasks").
- observation (28, labels in ``obs_labels``): UR5e joint positions and velocities (6 + 6), the pinch site position
  (scaled, as OGBench does: 10 × (p − (0.425, 0, 0))), cos/sin of its yaw, gripper opening (× 3), gripper contact,
  then the cube's scaled position, quaternion and cos/sin of its yaw.
- task: OGBench's singletask task 2 by default (``task_id`` 1-5 picks another): carry the cube 15 cm along x, its
  start jittered by ±1 cm and a random yaw, the arm starting at a random pose. Success: the cube within 4 cm of the
  goal. Reward: 0 at success, −1 otherwise (OGBench's singletask reward, success judged before the action, as in the
  ``cube-single-singletask`` ids). The episode terminates at success; the registered time limit is OGBench's 200 steps.
Control at 20 Hz (25 physics steps of 2 ms).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .experts import NoisyExpert

UR5E_JOINTS = ('shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint', 'wrist_1_joint', 'wrist_2_joint',
               'wrist_3_joint')
OBS_LABELS = (*(f'{j}.position' for j in UR5E_JOINTS), *(f'{j}.velocity' for j in UR5E_JOINTS),
              'effector_x', 'effector_y', 'effector_z', 'effector_yaw_cos', 'effector_yaw_sin', 'gripper_opening',
              'gripper_contact', 'cube_x', 'cube_y', 'cube_z', 'cube_qw', 'cube_qx', 'cube_qy', 'cube_qz',
              'cube_yaw_cos', 'cube_yaw_sin')
ACTION_LABELS = ('effector_dx', 'effector_dy', 'effector_dz', 'effector_dyaw', 'gripper_delta')
DEFAULT_TASK_ID = 2     # OGBench's default singletask task ("task2_vertical1")


def _ogbench_cube_env():
    try:
        from ogbench.manipspace.envs.cube_env import CubeEnv
    except ImportError as err:
        raise ImportError("the cube_single task needs OGBench: pip install 'swfp_ros[ogbench]' "
                          f'(ogbench and dm_control): {err}') from None
    return CubeEnv


class CubeSingleEnv(gym.Env):
    """OGBench ``cube-single-singletask`` (task ``task_id``), float32 observations, ``info['is_success']``."""

    metadata = {'render_modes': ['rgb_array'], 'render_fps': 20}
    control_rate_hz = 20.0
    obs_labels = list(OBS_LABELS)
    action_labels = list(ACTION_LABELS)

    def __init__(self, task_id: int = DEFAULT_TASK_ID, render_mode: str | None = None, width: int = 480,
                 height: int = 360):
        if render_mode not in (None, 'rgb_array'):
            raise ValueError(f'unsupported render_mode {render_mode!r}; use "rgb_array"')
        if not 1 <= task_id <= 5:
            raise ValueError(f'task_id must be 1-5 (OGBench cube-single tasks), got {task_id}')
        # The keyword arguments of OGBench's cube-single-singletask-task<N>-v0 registration.
        self._env = _ogbench_cube_env()(env_type='single', reward_task_id=task_id, permute_blocks=False,
                                        success_timing='pre', width=width, height=height)
        self.task_id = task_id
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(len(OBS_LABELS),), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(len(ACTION_LABELS),), dtype=np.float32)

    @property
    def ogbench_env(self):
        """The wrapped OGBench ``CubeEnv`` (its MuJoCo model and data, for the oracle)."""
        return self._env

    @property
    def sim_time(self) -> float:
        return float(self._env.data.time)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # OGBench draws the arm pose and the cube jitter from its own generator: seed it from ours, so that
        # reset(seed=s) fixes the episode and reset() continues the sequence.
        obs, _ = self._env.reset(seed=int(self.np_random.integers(2 ** 31)))
        return obs.astype(np.float32), {'is_success': False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f'action must have shape {self.action_space.shape}, got {action.shape}')
        if not np.all(np.isfinite(action)):
            raise ValueError('action contains NaN or inf')
        obs, reward, terminated, truncated, info = self._env.step(np.clip(action, -1.0, 1.0))
        success = bool(info['success'])
        return obs.astype(np.float32), float(reward), bool(terminated), bool(truncated), {'is_success': success}

    def render(self):
        if self.render_mode != 'rgb_array':
            return None
        return self._env.render()

    def close(self):
        renderer = getattr(self._env, '_renderer', None)
        if renderer is not None:
            renderer.close()
            self._env._renderer = None


class CubeOracleExpert(NoisyExpert):
    """OGBench's Markov oracle for cube tasks (the one that made its datasets), with the Panda experts' noise knobs.

    The oracle reads privileged state from OGBench's info dict; in task mode that dict lacks the target fields the
    oracle expects from data-collection mode, so they are filled from the goal marker (cube 0's target).
    """

    def __init__(self, env, noise_std: float = 0.0, epsilon: float = 0.0, seed: int | None = None):
        from ogbench.manipspace import lie
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

        super().__init__(env, noise_std, epsilon, seed)
        self.env: CubeSingleEnv
        self._lie = lie
        self._oracle = CubeMarkovOracle(env=self.env.ogbench_env, min_norm=0.4)   # OGBench's dataset setting
        # reset() only draws where the arm retreats to after placing (after success ends the episode here), from
        # numpy's global generator: draw it from ours and leave the global state as it was.
        state = np.random.get_state()
        np.random.seed(int(self.rng.integers(2 ** 31)))
        self._oracle.reset(None, None)
        np.random.set_state(state)

    def _info(self) -> dict:
        inner = self.env.ogbench_env
        info = inner.compute_ob_info()
        mocap = inner.model.body('object_target_0').mocapid[0]
        info['privileged/target_block'] = 0
        info['privileged/target_block_pos'] = inner.data.mocap_pos[mocap].copy()
        info['privileged/target_block_yaw'] = np.array(
            [self._lie.SO3(wxyz=inner.data.mocap_quat[mocap]).compute_yaw_radians()])
        return info

    def clean_action(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self._oracle.select_action(obs, self._info()), dtype=np.float64)
