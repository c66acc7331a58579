"""The reach task on a real arm, as pure logic: the task vector from measured joints and a goal, and — as task
monitor, for online fine-tuning — rewards, success, time limits and episodes, with a return to a home posture in
between. The ROS task node (:mod:`swfp_ros.ros.task_node`) calls :meth:`TaskMonitor.control_step` once per control
period; the vector and reward are :data:`swfp_ros.sim.tasks.REACH`, exactly what the simulated task computes.

Episodes (``monitor=True``): an episode starts when a goal is available and the arm is at the home posture (the very
first one starts wherever the arm is); each later control step yields the reward of the step before it; the episode
terminates on success (distance < success distance) or is truncated after ``episode_steps`` steps; then the arm is
brought home (by the policy node, rate-limited, through its safety filter) and the next goal is taken: the next
entry of ``goals`` (cycled), or else the latest goal received.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .kinematics import ArmKinematics
from .tasks import HOME_Q, REACH, ReachDefinition


@dataclass(frozen=True)
class MonitorStep:
    task: np.ndarray | None                       # the task vector to publish (None: no goal yet)
    reward: tuple[float, bool, bool, int] | None  # (reward, terminated, truncated, step) of the previous step
    episode: int | None                           # index of an episode that starts now


class TaskMonitor:
    def __init__(self, kinematics: ArmKinematics, definition: ReachDefinition = REACH, monitor: bool = False,
                 episode_steps: int = 50, goals: Sequence[Sequence[float]] = (), home: Sequence[float] | None = None,
                 home_tolerance: float = 0.05):
        self.kin, self.definition, self.monitor = kinematics, definition, bool(monitor)
        if episode_steps < 1:
            raise ValueError(f'episode_steps must be >= 1, got {episode_steps}')
        if not home_tolerance > 0:
            raise ValueError(f'home_tolerance must be positive, got {home_tolerance}')
        self.episode_steps, self.home_tolerance = int(episode_steps), float(home_tolerance)
        self.goals = [self._check_goal(g) for g in goals]
        self.home = np.asarray(HOME_Q if home is None or len(home) == 0 else home, dtype=np.float64)
        if self.home.shape != (len(kinematics.joint_names),) or not np.all(np.isfinite(self.home)):
            raise ValueError(f'home posture needs {len(kinematics.joint_names)} finite joint positions')
        if np.any(self.home < kinematics.lower) or np.any(self.home > kinematics.upper):
            raise ValueError('home posture is outside the joint limits')
        self.latest_goal: np.ndarray | None = self.goals[0] if self.goals else None
        self.goal: np.ndarray | None = None if self.monitor else self.latest_goal
        self.state = 'waiting'                        # waiting (no episode yet) | running | homing
        self.episode_index = -1
        self.steps = 0
        self._next_goal = 0
        self.counters = {'episodes': 0, 'successes': 0, 'time_limits': 0}

    @staticmethod
    def _check_goal(goal) -> np.ndarray:
        g = np.asarray(goal, dtype=np.float64).ravel()
        if g.shape != (3,) or not np.all(np.isfinite(g)):
            raise ValueError(f'a goal is 3 finite coordinates (m, robot base frame), got {goal}')
        return g

    def set_goal(self, goal) -> None:
        """A goal from the goal topic: used at once (plain task source) or for the next episode (monitor)."""
        self.latest_goal = self._check_goal(goal)
        if not self.monitor:
            self.goal = self.latest_goal

    def at_home(self, q: np.ndarray) -> bool:
        return bool(np.all(np.abs(np.asarray(q) - self.home) <= self.home_tolerance))

    def _take_goal(self) -> np.ndarray | None:
        if self.goals:
            goal = self.goals[self._next_goal % len(self.goals)]
            self._next_goal += 1
            return goal
        return self.latest_goal

    def control_step(self, q: np.ndarray) -> MonitorStep:
        ee = self.kin.ee_position(q)
        if not self.monitor:
            return MonitorStep(None if self.goal is None else self.definition.vector(ee, self.goal), None, None)
        reward, episode = None, None
        if self.state == 'running':
            self.steps += 1
            r, success = self.definition.reward(ee, self.goal)
            truncated = not success and self.steps >= self.episode_steps
            reward = (r, success, truncated, self.steps)
            if success or truncated:
                self.state = 'homing'
                self.counters['episodes'] += 1
                self.counters['successes' if success else 'time_limits'] += 1
        elif self.state == 'waiting' or self.at_home(q):
            goal = self._take_goal()
            if goal is not None:
                self.goal, self.state, self.steps = goal, 'running', 0
                self.episode_index += 1
                episode = self.episode_index
        task = None if self.goal is None else self.definition.vector(ee, self.goal)
        return MonitorStep(task, reward, episode)
