"""Forward kinematics of the Panda model (MuJoCo kinematics only, no physics stepping): the end-effector position of
measured joint positions, in the robot base frame. The task node uses it on a real arm, with the same MJCF as the
simulation (or the user's own model)."""
from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from .panda_model import ARM_JOINTS, ArmIndex, load_panda_spec


class ArmKinematics:
    def __init__(self, model_path: str | None = None):
        self.model = load_panda_spec(model_path).compile()
        self.data = mujoco.MjData(self.model)
        self.arm = ArmIndex.from_model(self.model)
        self.joint_names: tuple[str, ...] = ARM_JOINTS
        self.lower, self.upper = self.arm.lower.copy(), self.arm.upper.copy()

    def ee_position(self, q: Sequence[float]) -> np.ndarray:
        """End-effector site position (m) for the arm joint positions ``q`` (in ``joint_names`` order)."""
        q = np.asarray(q, dtype=np.float64).ravel()
        if q.shape != (len(self.joint_names),) or not np.all(np.isfinite(q)):
            raise ValueError(f'need {len(self.joint_names)} finite joint positions, got {q}')
        self.data.qpos[self.arm.qpos] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.arm.ee_site].copy()
