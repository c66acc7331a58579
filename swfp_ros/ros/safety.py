"""Command safety filter between the policy and the arm: pure numpy, no ROS, always on in the policy node.

Invariant: every command sent is within the joint limits AND within ``max_delta`` of the measured position, per
joint, at once. Order of checks for each command (the first failing check decides; "hold" = command the measured
position, brought into the limits):

1. measured position missing, wrong size or non-finite -> no command at all (``command is None``): there is nothing
   safe to hold to; the caller publishes nothing and the arm's controller keeps its last target.
2. measured position more than ``max_delta`` outside a joint limit -> no command either (``measured_out_of_limits``):
   no target is then both within the limits and within ``max_delta`` of it, so the measurement is treated as invalid
   (a sensor glitch, or a joint pushed past its soft limit). Within ``max_delta`` of a limit it is still usable
   (counted as ``measured_beyond_limit``): the hold and every command go to the nearest point inside the limits.
3. e-stop latched -> hold. The latch is set by ``set_estop(True)`` and only cleared by an explicit ``set_estop(False)``.
4. observation older than ``stale_timeout_s`` -> hold (the watchdog).
5. target wrong size or non-finite -> hold.
6. otherwise clamp: joint limits first, then the delta bound around the measured position. Because the measured
   position is within ``max_delta`` of the limits (check 2), the two intervals intersect and the result lies in both.

Every hold and clamp is counted per reason (``counters``), so diagnostics can show what the filter did. A hold is
a decision; in realtime the actor loop sends it only while the measurement it holds at is fresh (an older one may no
longer be where the arm is), see :mod:`swfp_ros.actor.loop`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

HOLD_REASONS = ('estop', 'stale', 'nan_target', 'bad_size_target', 'bad_observation')
NO_COMMAND_REASONS = ('bad_measured', 'measured_out_of_limits')


@dataclass(frozen=True)
class SafetyResult:
    command: np.ndarray | None     # absolute joint targets to send, or None (send nothing)
    held: bool                     # the command is the measured position because a check failed
    reason: str | None             # first failing check (a HOLD_REASONS / NO_COMMAND_REASONS entry) or None
    clamped: tuple[str, ...] = ()  # clamps applied to an otherwise valid target

    @property
    def ok(self) -> bool:
        return self.command is not None and not self.held


class SafetyFilter:
    def __init__(self, lower, upper, max_delta, stale_timeout_s: float = 0.5):
        self.lower = np.asarray(lower, dtype=np.float64).ravel()
        self.upper = np.asarray(upper, dtype=np.float64).ravel()
        self.n = self.lower.size
        if self.upper.shape != self.lower.shape or np.any(self.upper < self.lower):
            raise ValueError('joint limits must have equal sizes and lower <= upper')
        per_joint = np.asarray(max_delta, dtype=np.float64).ravel()
        if per_joint.size not in (1, self.n):
            raise ValueError(f'max_delta must be one value or one per joint ({self.n}), got {per_joint.size}')
        self.max_delta = np.broadcast_to(per_joint, (self.n,)).copy()
        if np.any(self.max_delta <= 0) or not np.all(np.isfinite(self.max_delta)):
            raise ValueError(f'max_delta must be positive and finite, got {max_delta}')
        if not stale_timeout_s > 0:
            raise ValueError(f'stale_timeout_s must be positive, got {stale_timeout_s}')
        self.stale_timeout_s = float(stale_timeout_s)
        self.estopped = False
        self.counters: Counter[str] = Counter()

    def set_estop(self, engaged: bool) -> None:
        if engaged and not self.estopped:
            self.counters['estop_engaged'] += 1
        self.estopped = bool(engaged)

    def _vector(self, x) -> np.ndarray | None:
        try:
            v = np.asarray(x, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            return None
        return v

    def _window(self, measured) -> tuple[np.ndarray, np.ndarray, np.ndarray] | SafetyResult:
        """(q, lo, hi): the measured position and the box of commands allowed from it (within the limits and within
        max_delta of q), or the no-command result when the measurement is unusable."""
        q = self._vector(measured)
        if q is None or q.shape != (self.n,) or not np.all(np.isfinite(q)):
            self.counters['bad_measured'] += 1
            return SafetyResult(None, True, 'bad_measured')
        excess = np.maximum(self.lower - q, q - self.upper)
        if np.any(excess > self.max_delta):
            self.counters['measured_out_of_limits'] += 1
            return SafetyResult(None, True, 'measured_out_of_limits')
        if np.any(excess > 0):
            self.counters['measured_beyond_limit'] += 1
        return q, np.maximum(self.lower, q - self.max_delta), np.minimum(self.upper, q + self.max_delta)

    def _hold(self, q: np.ndarray, reason: str) -> SafetyResult:
        self.counters[reason] += 1
        # "Stay where you are", brought inside the limits: a measured position can sit up to max_delta beyond one.
        return SafetyResult(np.clip(q, self.lower, self.upper), True, reason)

    def filter(self, target, measured, obs_age_s: float) -> SafetyResult:
        """The command to send for a desired absolute joint ``target`` given the ``measured`` joint positions."""
        window = self._window(measured)
        if isinstance(window, SafetyResult):
            return window
        q, lo, hi = window
        if self.estopped:
            return self._hold(q, 'estop')
        if not (obs_age_s <= self.stale_timeout_s):     # also catches NaN ages
            return self._hold(q, 'stale')
        t = self._vector(target)
        if t is None or t.shape != (self.n,):
            return self._hold(q, 'bad_size_target')
        if not np.all(np.isfinite(t)):
            return self._hold(q, 'nan_target')
        limited = np.clip(t, self.lower, self.upper)
        cmd = np.clip(limited, lo, hi)                  # == clipping `limited` to q ± max_delta (see check 6)
        clamped = tuple(name for name, changed in (('clamp_limit', np.any(limited != t)),
                                                   ('clamp_delta', np.any(cmd != limited))) if changed)
        for c in clamped:
            self.counters[c] += 1
        self.counters['passed'] += 1
        return SafetyResult(cmd, False, None, clamped)

    def hold(self, measured, reason: str) -> SafetyResult:
        """Hold at ``measured`` for a reason found outside the filter (e.g. an invalid observation), counted."""
        window = self._window(measured)
        if isinstance(window, SafetyResult):
            return window
        return self._hold(window[0], reason)

    @property
    def holds(self) -> int:
        return sum(self.counters[r] for r in HOLD_REASONS + NO_COMMAND_REASONS)
