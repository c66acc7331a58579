"""Scripted experts: damped-least-squares IK on the end-effector site, with a noise knob for imperfect demos.

An expert picks an end-effector target from the observation, turns the Cartesian error (plus keeping the gripper
pointing down, plus a pull towards the home posture in the null space) into a joint displacement by damped least
squares, and sends it as an action in [-1, 1]. Noise: Gaussian action noise ``noise_std`` and, with probability
``epsilon``, a uniformly random action instead, so demonstrations can be made deliberately imperfect
(``NoisyExpert``, shared with OGBench's cube oracle in ``ogbench_tasks``).
"""
from __future__ import annotations

import mujoco
import numpy as np

from .tasks import HOME_Q, PandaPushEnv, PandaReachEnv, PandaTaskEnv

DOWN = np.array([0.0, 0.0, -1.0])


class NoisyExpert:
    """Callable ``expert(obs) -> action`` in [-1, 1]: a task's clean action (``clean_action``) made imperfect by
    Gaussian noise ``noise_std`` and, with probability ``epsilon``, a uniformly random action instead."""

    def __init__(self, env, noise_std: float = 0.0, epsilon: float = 0.0, seed: int | None = None):
        self.env = env.unwrapped
        self.act_dim = self.env.action_space.shape[0]
        self.noise_std = noise_std
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)

    def clean_action(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            return self.rng.uniform(-1.0, 1.0, size=self.act_dim).astype(np.float32)
        action = self.clean_action(np.asarray(obs, dtype=np.float64))
        if self.noise_std > 0:
            action = action + self.noise_std * self.rng.standard_normal(self.act_dim)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class ScriptedExpert(NoisyExpert):
    """The Panda experts; read the arm's Jacobian from the environment they are bound to."""

    damping = 0.05          # DLS damping (m): keeps steps bounded near singularities
    orientation_gain = 0.5  # weight of the gripper-down error against position error
    posture_gain = 0.1      # null-space pull towards HOME_Q per control step
    max_step = 0.05         # Cartesian error followed per control step (m)

    def __init__(self, env, noise_std: float = 0.0, epsilon: float = 0.0, seed: int | None = None):
        super().__init__(env, noise_std, epsilon, seed)
        self.env: PandaTaskEnv
        self._jac_pos = np.zeros((3, self.env.model.nv))
        self._jac_rot = np.zeros((3, self.env.model.nv))

    def ee_target(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def clean_action(self, obs: np.ndarray) -> np.ndarray:
        env = self.env
        ee = obs[14:17]
        mujoco.mj_jacSite(env.model, env.data, self._jac_pos, self._jac_rot, env.arm.ee_site)
        jac = np.vstack([self._jac_pos[:, env.arm.dof], self._jac_rot[:, env.arm.dof]])
        z_axis = env.data.site_xmat[env.arm.ee_site].reshape(3, 3)[:, 2]
        step = self.ee_target(obs) - ee
        step *= min(1.0, self.max_step / max(np.linalg.norm(step), 1e-9))
        error = np.concatenate([step, self.orientation_gain * np.cross(z_axis, DOWN)])
        jjt = jac @ jac.T + self.damping ** 2 * np.eye(6)
        dq = jac.T @ np.linalg.solve(jjt, error)
        null_space = np.eye(7) - jac.T @ np.linalg.solve(jjt, jac)
        dq += null_space @ (self.posture_gain * (HOME_Q - obs[:7]))
        action = dq / env.action_scale
        # Scale the whole vector, not each joint: clipping joints one by one bends the Cartesian direction.
        return action / max(1.0, np.abs(action).max())

class ReachExpert(ScriptedExpert):
    def ee_target(self, obs):
        return obs[17:20]


class PushExpert(ScriptedExpert):
    """Go above the spot behind the puck (opposite the goal), descend, then push through the puck towards the goal."""

    # Heights of the end-effector site, which sits 5 cm above the fingertips.
    travel_height = 0.15
    push_height = 0.06
    standoff = 0.05          # hand-to-puck-centre distance behind the puck before pushing (m)

    def ee_target(self, obs):
        ee, goal, puck = obs[14:17], obs[17:20], obs[20:23]
        direction = goal[:2] - puck[:2]
        direction /= max(np.linalg.norm(direction), 1e-6)
        behind = puck[:2] - self.standoff * direction
        relative = ee[:2] - puck[:2]
        along = relative @ direction
        lateral = np.linalg.norm(relative - along * direction)
        in_line = along < -0.015 and lateral < 0.035
        low = ee[2] < 0.09                                    # fingertips below the puck's top
        if in_line and low:                                   # push along the puck-goal line, through the puck
            return np.array([*(behind + 0.1 * direction), self.push_height])
        if np.linalg.norm(ee[:2] - behind) < 0.02:            # above the start of the push: descend
            return np.array([*behind, self.push_height])
        if low:                                               # leave the puck's height before travelling
            return np.array([*ee[:2], self.travel_height])
        return np.array([*behind, self.travel_height])


def make_expert(env, noise_std: float = 0.0, epsilon: float = 0.0, seed: int | None = None) -> NoisyExpert:
    """The scripted expert for ``env``'s task (OGBench's own oracle for the OGBench task)."""
    from .ogbench_tasks import CubeOracleExpert, CubeSingleEnv

    task = type(env.unwrapped)
    experts = {PandaReachEnv: ReachExpert, PandaPushEnv: PushExpert, CubeSingleEnv: CubeOracleExpert}
    if task not in experts:
        raise ValueError(f'no scripted expert for {task.__name__}')
    return experts[task](env, noise_std=noise_std, epsilon=epsilon, seed=seed)
