"""Command safety filter between the policy and the arm: pure numpy, no ROS, always on in the policy node.

Order of checks for each command (the first failing check decides; "hold" = command the measured position):

1. measured position missing, wrong size or non-finite -> no command at all (``command is None``): there is nothing
   safe to hold to; the caller publishes nothing.
2. e-stop latched -> hold. The latch is set by ``set_estop(True)`` and only cleared by an explicit ``set_estop(False)``.
3. observation older than ``stale_timeout_s`` -> hold (the watchdog).
4. target wrong size or non-finite -> hold.
5. otherwise clamp: per-step delta ``|target - measured| <= max_delta`` (per joint), then joint limits.

Every hold and clamp is counted per reason (``counters``), so diagnostics can show what the filter did.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

HOLD_REASONS = ('estop', 'stale', 'nan_target', 'bad_size_target', 'bad_observation')
NO_COMMAND_REASONS = ('bad_measured',)
CLAMP_REASONS = ('clamp_delta', 'clamp_limit')


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
        self.max_delta = np.broadcast_to(np.asarray(max_delta, dtype=np.float64), (self.n,)).copy()
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

    def _hold(self, measured: np.ndarray, reason: str) -> SafetyResult:
        self.counters[reason] += 1
        # Holding means "stay where you are", but never command outside the limits (a measured position can sit a
        # hair beyond a soft limit).
        return SafetyResult(np.clip(measured, self.lower, self.upper), True, reason)

    def filter(self, target, measured, obs_age_s: float) -> SafetyResult:
        """The command to send for a desired absolute joint ``target`` given the ``measured`` joint positions."""
        q = self._vector(measured)
        if q is None or q.shape != (self.n,) or not np.all(np.isfinite(q)):
            self.counters['bad_measured'] += 1
            return SafetyResult(None, True, 'bad_measured')
        if self.estopped:
            return self._hold(q, 'estop')
        if not (obs_age_s <= self.stale_timeout_s):     # also catches NaN ages
            return self._hold(q, 'stale')
        t = self._vector(target)
        if t is None or t.shape != (self.n,):
            return self._hold(q, 'bad_size_target')
        if not np.all(np.isfinite(t)):
            return self._hold(q, 'nan_target')
        clamped = []
        cmd = np.clip(t, q - self.max_delta, q + self.max_delta)
        if np.any(cmd != t):
            clamped.append('clamp_delta')
        limited = np.clip(cmd, self.lower, self.upper)
        if np.any(limited != cmd):
            clamped.append('clamp_limit')
        for c in clamped:
            self.counters[c] += 1
        self.counters['passed'] += 1
        return SafetyResult(limited, False, None, tuple(clamped))

    def hold(self, measured, reason: str) -> SafetyResult:
        """Hold at ``measured`` for a reason found outside the filter (e.g. an invalid observation), counted."""
        q = self._vector(measured)
        if q is None or q.shape != (self.n,) or not np.all(np.isfinite(q)):
            self.counters['bad_measured'] += 1
            return SafetyResult(None, True, 'bad_measured')
        return self._hold(q, reason)

    @property
    def holds(self) -> int:
        return sum(self.counters[r] for r in HOLD_REASONS + NO_COMMAND_REASONS)
