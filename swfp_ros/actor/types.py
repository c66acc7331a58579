"""What the actor exchanges with the task and the learner: a step's reward and a finished transition (pure data)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RewardInfo:
    """The reward of one control step, from the sim bridge or the task monitor."""
    reward: float
    terminated: bool
    truncated: bool
    step: int

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass(frozen=True)
class Transition:
    """One decision of the actor: (obs, executed action chunk in [-1, 1], reward summed over its n_steps control
    steps, next_obs, terminated), tagged with the policy version that chose it and the actor that ran it."""
    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool
    n_steps: int = 1
    version: int = 0
    actor_id: int = 0
