"""The actor loop: what a policy does between observations and commands, as a pure-Python object (no rclpy).

:class:`ActorLoop` owns chunk execution, the safety-filter calls, transition assembly, learner pacing, the return to
a home posture between episodes and the policy-update swap. It is driven by events — ``joint_state``, ``task``,
``reward``, ``tick``, ``update``, ``estop``, ``set_active``, ``backlog``, ``episode``, ``home``, ``idle`` — and
answers through two callables: ``send_command(points)`` ((k, n) absolute joint targets: one row for a position
command, k rows for a trajectory) and ``send_transition(Transition)``. The ROS policy node only parses messages into
these events (:class:`ActorWorker` runs them on one thread); a test or an in-process runner can call them directly.

Modes
    lockstep  one decision per new observation, and only once the reward of the previous step arrived (a simulator
              that waits for each action: training as fast as the two sides allow). Each step gets exactly one
              command, a policy step or a hold: the simulator takes one step per command it receives. With
              ``max_learner_backlog`` > 0 the loop also waits while the learner reports more untrained transitions
              than that (a backlog report older than ``backlog_timeout_s`` counts as "no learner": an actor never
              waits for a dead learner).
              Before the learner's first report it waits up to ``learner_wait_s`` after activation: the learner is
              still being discovered, and the transitions of steps taken before its subscription matched would be
              lost (the topic is volatile); with no report by then it acts unpaced until one arrives.
    realtime  one control step per ``tick`` (a timer at ``control_rate``) with the latest measured joint state (a
              real arm, or the simulator in realtime). A chunk of H actions runs over H ticks, each step filtered
              against the joint position measured at that tick. With ``async_chunks`` (and H > 1) the next chunk
              is inferred in the background from the observation at the current chunk's last step, so the boundary
              tick publishes at once instead of after an inference; that observation is the next decision's ``obs``
              (and the previous transition's ``next_obs``): the decision sees the state one step before the chunk
              starts, as a robot with one step of action latency. With ``temporal_ensemble`` every tick infers a
              chunk and commands the exponentially weighted mean (weights exp(-m i), i = 0 for the oldest chunk) of
              the chunks that cover the tick (ACT's temporal ensembling: smoother, but it measurably lowered success
              in the ACT study); the executed action is then no chunk the policy sampled, so no transitions are
              published.
Safety: every command goes through the :class:`SafetyFilter` (limits, per-step delta from the measured position,
stale observations, e-stop); an invalid joint state or task message holds; a missing task (no goal yet) holds; holds
are never recorded as transitions. In realtime a hold goes to the measured position only while that measurement is
fresh (``stale_timeout_s``): once it is older, nothing is sent (``stale_holds_withheld``) and the controller keeps
its last target, since the arm may have moved since the measurement (pushed, or a stalled node resuming); that age
is checked once more as the last step before every send (``stale_commands_withheld`` for policy and homing steps).
Transitions: (obs, executed action in [-1, 1] — a chunk cut short is padded with zeros —, reward summed over the
steps it covered, next_obs, terminated, n_steps, policy version, actor id). The observation that finishes one is
usually the next decision's: the transition goes out after that decision's command, not before it, so building and
publishing it is off the observation → command path.
Home posture: after an episode ends, when a home posture was given (``home``, the task monitor's), the loop drives
the arm there at ``home_speed`` rad/s through the same safety filter and waits until the next ``episode`` starts.
Policy updates: lockstep applies them at once (the simulator waits). Realtime checks them on a thread of their own
(``runtime.prepare_update``: deserialising, probe checks, building the new modules take tens of ms, longer than a
control period on a busy CPU) and swaps the checked policy in on the control thread (``runtime.commit_update``) right
after a command went out and never while an inference runs, i.e. between two inferences; one update at a time, in
arrival order.
"""
from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .types import RewardInfo, Transition

MODES = ('lockstep', 'realtime')
COMMAND_TYPES = ('float64_array', 'trajectory')


@dataclass(frozen=True)
class ActorConfig:
    """Every behaviour of the actor loop in one place (the policy node's parameters of the same names)."""
    joint_names: tuple[str, ...]
    action_scale: float = 0.1            # rad per control step at |action| = 1 (must match training)
    mode: str = 'lockstep'               # lockstep | realtime (see the module docstring)
    control_rate: float = 20.0           # Hz: realtime ticks, trajectory point spacing
    command_type: str = 'float64_array'  # float64_array: one step per tick | trajectory: a chunk per message
    deterministic: bool = False          # False while fine-tuning: fresh noise per decision
    actor_id: int = 0                    # tags this actor's transitions (its n-step stream in the learner)
    lockstep_timeout_s: float = 2.0      # lockstep: restart the step protocol when nothing arrived for this long
    max_learner_backlog: int = 0         # lockstep pacing on the learner's backlog; 0 = off
    backlog_timeout_s: float = 1.0       # a backlog report older than this is ignored (learner gone: no pacing)
    learner_wait_s: float = 5.0          # pacing: how long after activation to wait for the first backlog report
    async_chunks: bool = True            # realtime: infer the next chunk while the current one executes
    temporal_ensemble: bool = False      # realtime, float64_array: ACT temporal ensembling (off by default)
    ensemble_decay: float = 0.01         # ACT's m: weight exp(-m i) of the i-th oldest chunk
    home_speed: float = 0.5              # rad/s per joint on the way back to the home posture

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.command_type not in COMMAND_TYPES:
            raise ValueError(f"command_type must be one of {COMMAND_TYPES}, got {self.command_type!r}")
        if not self.joint_names:
            raise ValueError('joint_names is empty')
        for name in ('action_scale', 'control_rate', 'lockstep_timeout_s', 'backlog_timeout_s', 'home_speed'):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f'{name} must be positive and finite, got {value}')
        if self.temporal_ensemble and (self.mode != 'realtime' or self.command_type != 'float64_array'):
            raise ValueError('temporal_ensemble needs mode realtime and command_type float64_array')
        if self.ensemble_decay < 0:
            raise ValueError(f'ensemble_decay must be >= 0, got {self.ensemble_decay}')
        if not (0 <= self.learner_wait_s < math.inf):
            raise ValueError(f'learner_wait_s must be >= 0 and finite, got {self.learner_wait_s}')

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate


@dataclass
class Observation:
    q: np.ndarray                  # measured arm joint positions
    vector: np.ndarray             # the policy's observation [q, qdot, task vector]
    stamp_ns: int                  # the joint state's header stamp
    rx: float                      # clock() when the joint state arrived


@dataclass
class Pending:
    """A decision in flight: its chunk, the steps executed so far, and the rewards collected for them."""
    obs: np.ndarray
    chunk: np.ndarray              # (H, n) policy actions in [-1, 1]
    version: int = 0
    start_tick: int = 0
    executed: list = field(default_factory=list)   # executed actions (policy units), one per step sent
    record: bool = True
    reward: float = 0.0
    n_rewards: int = 0
    terminated: bool = False
    done: bool = False


def _percentiles(samples, scale: float = 1e3) -> tuple[float, float]:
    if not samples:
        return 0.0, 0.0
    x = np.asarray(samples) * scale
    return float(np.percentile(x, 50)), float(np.percentile(x, 99))


class ActorLoop:
    """One actor's control loop (see the module docstring). Not thread-safe: drive it from one thread."""

    def __init__(self, runtime, safety, cfg: ActorConfig, send_command: Callable[[np.ndarray], None],
                 send_transition: Callable[[Transition], None], log: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.runtime, self.safety, self.cfg = runtime, safety, cfg
        self.n = len(cfg.joint_names)
        self._send_command, self._send_transition = send_command, send_transition
        self._log = log or (lambda level, text: None)
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.unsent: deque[Transition] = deque()              # finished in this event, sent once its command is out
        self.inference_s: deque[float] = deque(maxlen=2000)
        self.obs_to_command_s: deque[float] = deque(maxlen=2000)     # obs arrival (or the later tick) -> command
        self.chunk_start_delay_s: deque[float] = deque(maxlen=2000)  # realtime: tick -> a chunk's first step out
        self.chunk_step_delay_s: deque[float] = deque(maxlen=2000)   # realtime: tick -> a later step out
        self.horizon = self.act_dim = None
        self._pool: ThreadPoolExecutor | None = None          # async chunks: the next chunk's inference
        self._update_pool: ThreadPoolExecutor | None = None   # realtime: update checks
        self.reset()

    # --- set-up -------------------------------------------------------------------------------------------------
    def warmup(self, obs_dim: int, iters: int = 5) -> None:
        """A few inferences (allocations, kernels); learns the chunk size H = act_dim / joints. A runtime that keeps
        the observations it acted on (``clear_observations``: the probe states of its update checks) forgets these
        made-up ones."""
        obs = np.zeros(obs_dim, dtype=np.float32)
        a = None
        for _ in range(max(1, iters)):
            a = np.asarray(self.runtime.act(obs, deterministic=self.cfg.deterministic), dtype=np.float64).ravel()
        if hasattr(self.runtime, 'clear_observations'):
            self.runtime.clear_observations()
        if a.size == 0 or a.size % self.n:
            raise ValueError(f'policy act_dim {a.size} is not a multiple of {self.n} joints')
        self.act_dim, self.horizon = a.size, a.size // self.n

    def reset(self) -> None:
        """Forget the episode state: inactive, and no joint state, task, decision or update in flight (for a runner
        that reuses one loop; the policy node builds a new one at each configure). Counters and latency records are
        kept."""
        self.active = False
        self.task_vec: np.ndarray | None = None
        self.js = None                               # latest valid (q, qd, stamp_ns, rx)
        self.obs_invalid: str | None = None          # reason while the latest joint state / task was invalid
        self.pending: Pending | None = None
        self.obs_q: deque[Observation] = deque()
        self.rewards: deque[RewardInfo] = deque()
        self.last_stamp = None
        self.last_progress = self.clock()
        self.incoming_updates: deque[bytes] = deque()         # realtime: waiting for their checks
        self.checking_update: Future | None = None           # realtime: the update being checked, or checked
        self.tick_t = 0.0
        self.tick_index = 0
        self.backlog, self.backlog_t = 0, -math.inf           # no report yet
        self.active_t = -math.inf                             # clock() at the last activation
        self.paused: Observation | None = None       # lockstep pacing: the observation waiting for the learner
        self.prefetch: tuple[Observation, Future] | None = None
        self.ensemble: deque[tuple[int, np.ndarray]] = deque()
        self.home_q: np.ndarray | None = None
        self.homing = False
        self.episode_index: int | None = None

    def close(self) -> None:
        for pool in (self._pool, self._update_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._update_pool = None

    @property
    def version(self) -> int:
        return int(getattr(self.runtime, 'version', 0))

    # --- events -------------------------------------------------------------------------------------------------
    def joint_state(self, q: np.ndarray, qd: np.ndarray, stamp_ns: int, rx: float) -> None:
        self.js = (q, qd, stamp_ns, rx)
        if self.obs_invalid == 'bad_joint_state':
            self.obs_invalid = None
        if self.task_vec is None:
            return
        obs = self._observation()
        if self.cfg.mode == 'lockstep':
            if stamp_ns != self.last_stamp:
                self.last_stamp = stamp_ns
                self.obs_q.append(obs)
                self._lockstep_advance()
        elif self.pending is not None and self.pending.done:
            self._finish(obs)                        # the terminal observation of a realtime episode
        self._send_finished()

    def task(self, vector: np.ndarray) -> None:
        self.task_vec = np.asarray(vector, dtype=np.float64)
        if self.obs_invalid == 'bad_task':
            self.obs_invalid = None

    def invalid(self, reason: str) -> None:
        """The latest joint state or task message was invalid: hold until a valid one arrives."""
        self.obs_invalid = reason
        if self.cfg.mode == 'realtime':
            self._discard_pending()

    def reward(self, r: RewardInfo) -> None:
        if self.cfg.mode == 'lockstep':
            self.rewards.append(r)
            self._lockstep_advance()
            self._send_finished()
            return
        if self.pending is not None and not self.pending.done:
            self._add_reward(self.pending, r)
        if r.done:
            self._discard_prefetch()                 # the next chunk starts from the next episode's state
            self.ensemble.clear()
            if self.home_q is not None:
                self.homing = True

    def episode(self, index: int) -> None:
        """A new episode started (task monitor or simulator): leave the home posture phase."""
        if index != self.episode_index:
            self.episode_index = index
            if self.homing:
                self.homing = False
                self.pending = None

    def home(self, q_home: np.ndarray | None) -> None:
        q = None if q_home is None else np.asarray(q_home, dtype=np.float64).ravel()
        if q is not None and (q.shape != (self.n,) or not np.all(np.isfinite(q))):
            raise ValueError(f'home posture needs {self.n} finite joint positions, got {q_home}')
        self.home_q = q
        if q is None:
            self.homing = False

    def tick(self, t: float) -> None:
        """Realtime: one control step at time ``t``."""
        self.tick_t = t
        self.tick_index += 1
        if not self.active:
            return
        if self.js is None:
            self.counters['no_observation'] += 1
            return
        if self.obs_invalid:
            self._discard_pending()
            self._send_hold(self.obs_invalid)
            return
        if self.task_vec is None:
            self._send_hold('no_task')
            return
        if self.homing:
            self._home_step()
            return
        obs = self._observation()
        pend = self.pending
        if pend is not None and pend.done:
            return                                   # waiting for the terminal observation
        if self.cfg.temporal_ensemble:
            self._ensemble_step(obs)
        elif self.cfg.command_type == 'trajectory':
            self._trajectory_tick(obs, pend)
        else:
            self._position_tick(obs, pend)
        self._send_finished()

    def update(self, data: bytes) -> None:
        if (self.cfg.mode == 'realtime' and self.active) or self.checking_update is not None or self.incoming_updates:
            self.incoming_updates.append(data)       # checked aside, swapped in after a command, between inferences
            self._check_next_update()
            return
        t0 = time.perf_counter()
        try:
            prepared = self.runtime.prepare_update(data)
        except ValueError as e:                      # UpdateRejected is a ValueError: keep the old policy
            self._update_rejected(e)
            return
        self._commit_update(prepared, t0)

    def estop(self, engaged: bool) -> None:
        self.safety.set_estop(engaged)
        self._log('warning', 'E-STOP engaged: holding' if engaged else 'e-stop released')
        if engaged and self.active:
            self._discard_pending()
            self._send_hold('estop')

    def set_active(self, active: bool) -> None:
        self.active = active
        self.paused = None
        if not active:
            self._discard_pending()
            self._send_hold('deactivated')
        else:
            self.last_progress = self.active_t = self.clock()
            self.pending = None                      # a decision cut off by the deactivation is not waited for
            self.last_stamp = None                   # act on the current (possibly heartbeat) observation
            self.obs_q.clear()
            self.rewards.clear()

    def backlog_report(self, n: int) -> None:
        self.backlog, self.backlog_t = int(n), self.clock()
        self._release_paused()

    def idle(self) -> None:
        """Periodic check (the worker calls it every ``idle_s``): lockstep restart when nothing progressed for
        ``lockstep_timeout_s``, pacing released when the learner left."""
        self._release_paused()
        self._apply_deferred()
        if (self.cfg.mode == 'lockstep' and self.active and self.pending is not None
                and self.clock() - self.last_progress > self.cfg.lockstep_timeout_s):
            self.counters['lockstep_timeouts'] += 1
            self._log('warning', f'no reward/observation for {self.cfg.lockstep_timeout_s} s: restarting '
                                 f'({self.counters["lockstep_timeouts"]} so far)')
            self.pending = None
            self.obs_q.clear()
            self.rewards.clear()
            self.last_stamp = None                   # accept the simulator's heartbeat observation
            self.last_progress = self.clock()

    # --- observations and inference -----------------------------------------------------------------------------
    def _observation(self) -> Observation:
        q, qd, stamp, rx = self.js
        return Observation(q, np.concatenate([q, qd, self.task_vec]), stamp, rx)

    def _infer(self, vector: np.ndarray) -> tuple[np.ndarray, int]:
        """(chunk (H, n), version) for one observation vector; a wrong-sized output becomes NaN (a counted hold)."""
        version = self.version
        t0 = time.perf_counter()
        a = self.runtime.act(vector.astype(np.float32), deterministic=self.cfg.deterministic)
        self.inference_s.append(time.perf_counter() - t0)
        self.counters['inferences'] += 1
        a = np.asarray(a, dtype=np.float64).ravel()
        if a.size != self.act_dim:
            return np.full((self.horizon, self.n), np.nan), version
        return a.reshape(self.horizon, self.n), version

    def _old(self, rx: float) -> bool:
        """Whether a measurement taken at ``rx`` is older than ``stale_timeout_s`` (a NaN time counts as old)."""
        return not (self.clock() - rx <= self.safety.stale_timeout_s)

    def _stale(self, obs: Observation) -> bool:
        return self.safety.estopped or bool(self.obs_invalid) or self._old(obs.rx)

    # --- commanding ---------------------------------------------------------------------------------------------
    def _publish(self, points: np.ndarray, rx: float) -> bool:
        """Send ``points``, decided from a measurement taken at ``rx``; whether they went out. Realtime: that
        measurement's age is checked again right before the send, as the last step before it -- the thread can be
        descheduled (or the process stopped) after the safety filter judged it fresh, and a command decided from a
        measurement older than ``stale_timeout_s`` can command a jump back from where the arm is now."""
        if self.cfg.mode == 'realtime' and self._old(rx):
            return False
        self._send_command(np.atleast_2d(points))
        self.counters['commands'] += 1
        return True

    def _send_hold(self, reason: str, obs: Observation | None = None) -> None:
        """Hold at the measured position of ``obs`` (default: the latest joint state)."""
        if obs is None:
            if self.js is None:
                return
            q, rx = self.js[0], self.js[3]
        else:
            q, rx = obs.q, obs.rx
        self._publish_hold(self.safety.hold(q, reason), rx)

    def _publish_hold(self, res, rx: float) -> None:
        """Send the hold the safety filter decided (measured at ``rx``), counted in ``holds``. Realtime: never at a
        measurement older than ``stale_timeout_s`` -- the arm may have moved since (pushed by hand, or still on its way
        to the last target), so holding there can command a jump; nothing is sent and the controller keeps its last
        target. Lockstep: the simulated arm waits for the next command, so the last observation is where it is."""
        if res.command is None:
            return
        if not self._publish(res.command, rx):
            self.counters['stale_holds_withheld'] += 1
            return
        self.counters['holds'] += 1

    def _command(self, obs: Observation, pend: Pending) -> bool:
        """Send the next step(s) of ``pend`` from ``obs``; False when the safety filter held instead."""
        age = self.clock() - obs.rx
        if self.obs_invalid:
            self._send_hold(self.obs_invalid, obs)
            return False
        k = len(pend.executed)
        steps = pend.chunk[k:] if self.cfg.command_type == 'trajectory' else pend.chunk[k:k + 1]
        base, points, executed = obs.q, [], []
        for a in steps:
            res = self.safety.filter(base + np.clip(a, -1, 1) * self.cfg.action_scale, base, age)
            if not res.ok:
                self._publish_hold(res, obs.rx)
                return False
            executed.append(np.clip((res.command - base) / self.cfg.action_scale, -1.0, 1.0))
            points.append(res.command)
            base = res.command
        if not self._publish(np.array(points), obs.rx):
            self.counters['stale_commands_withheld'] += 1
            return False
        pend.executed += executed
        realtime = self.cfg.mode == 'realtime'
        now = self.clock()
        self.obs_to_command_s.append(now - max(obs.rx, self.tick_t if realtime else 0.0))
        if realtime:
            (self.chunk_start_delay_s if k == 0 else self.chunk_step_delay_s).append(now - self.tick_t)
        return True

    def _start_chunk(self, obs: Observation, chunk: np.ndarray | None = None, version: int | None = None) -> bool:
        """A new decision from ``obs`` (inferred now unless ``chunk`` is given); whether a policy step went out."""
        if self._stale(obs):
            chunk, version = np.zeros((self.horizon, self.n)), self.version
        elif chunk is None:
            chunk, version = self._infer(obs.vector)
        self.pending = Pending(obs=obs.vector, chunk=chunk, version=version, start_tick=self.tick_index)
        ok = self._command(obs, self.pending)
        if not ok:
            self.pending.record = False
        self._apply_deferred()
        return ok

    def _position_tick(self, obs: Observation, pend: Pending | None) -> None:
        if pend is None or not pend.record or len(pend.executed) >= self.horizon:
            chunk = version = None
            if self.prefetch is not None:
                pre_obs, future = self.prefetch
                self.prefetch = None
                if not future.done():
                    self.counters['prefetch_late'] += 1     # the inference outlasted a control period
                chunk, version = future.result()
                obs = Observation(obs.q, pre_obs.vector, obs.stamp_ns, obs.rx)   # decided from pre_obs
                self.counters['prefetched_chunks'] += 1
            if pend is not None:
                self._finish(obs)
            if not self._start_chunk(obs, chunk, version):
                return
        elif not self._command(obs, pend):
            pend.record = False
            return
        pend = self.pending
        if (self.cfg.async_chunks and self.horizon > 1 and pend.record and len(pend.executed) == self.horizon
                and self.prefetch is None):
            self._apply_deferred()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix='swfp-prefetch')
            self.prefetch = (obs, self._pool.submit(self._infer, obs.vector))

    def _trajectory_tick(self, obs: Observation, pend: Pending | None) -> None:
        """A chunk per trajectory message; the controller executes it over H ticks, the next one follows then."""
        if pend is not None and pend.record and self.tick_index - pend.start_tick < self.horizon:
            if self._stale(obs):                     # the watchdog and the e-stop also act mid-trajectory
                self._discard_pending()
                self._send_hold('estop' if self.safety.estopped else 'stale', obs)
            return
        if pend is not None:
            self._finish(obs)
        self._start_chunk(obs)

    def _ensemble_step(self, obs: Observation) -> None:
        chunk, version = self._infer(obs.vector) if not self._stale(obs) else (None, 0)
        if chunk is not None:
            self.ensemble.append((self.tick_index, chunk))
        while self.ensemble and self.tick_index - self.ensemble[0][0] >= self.horizon:
            self.ensemble.popleft()
        if not self.ensemble:
            self._send_hold('estop' if self.safety.estopped else 'stale', obs)
            return
        weights = np.exp(-self.cfg.ensemble_decay * np.arange(len(self.ensemble)))   # i = 0: the oldest chunk
        actions = np.stack([c[self.tick_index - start] for start, c in self.ensemble])
        action = (weights[:, None] * actions).sum(0) / weights.sum()
        self.pending = Pending(obs=obs.vector, chunk=action[None], version=version, record=False,
                               start_tick=self.tick_index)
        self._command(obs, self.pending)
        self.counters['ensemble_steps'] += 1
        self._apply_deferred()

    def _home_step(self) -> None:
        q = self.js[0]
        step = np.clip(self.home_q - q, -self.cfg.home_speed * self.cfg.dt, self.cfg.home_speed * self.cfg.dt)
        res = self.safety.filter(q + step, q, self.clock() - self.js[3])
        if res.ok:
            if self._publish(res.command, self.js[3]):
                self.counters['homing_steps'] += 1
            else:
                self.counters['stale_commands_withheld'] += 1
        else:
            self._publish_hold(res, self.js[3])

    # --- transitions ----------------------------------------------------------------------------------------------
    def _add_reward(self, pend: Pending, r: RewardInfo) -> None:
        pend.reward += r.reward
        pend.n_rewards += 1
        pend.terminated |= r.terminated
        pend.done |= r.done

    def _finish(self, next_obs: Observation) -> None:
        pend, self.pending = self.pending, None
        if pend is None or not pend.record or pend.n_rewards == 0 or not pend.executed:
            self.counters['transitions_dropped'] += int(pend is not None and pend.record)
            return
        action = np.concatenate(pend.executed)
        if action.size != self.act_dim:              # chunk cut short by an episode end: pad with zeros
            action = np.concatenate([action, np.zeros(self.act_dim - action.size)])
        self.unsent.append(Transition(obs=pend.obs, action=action, reward=pend.reward, next_obs=next_obs.vector,
                                      terminated=pend.terminated, n_steps=pend.n_rewards, version=pend.version,
                                      actor_id=self.cfg.actor_id))

    def _send_finished(self) -> None:
        """Send the transitions this event finished (called once its command, if any, went out)."""
        while self.unsent:
            self._send_transition(self.unsent.popleft())
            self.counters['transitions'] += 1

    def _discard_pending(self) -> None:
        if self.pending is not None:
            self.pending.record = False
        self._discard_prefetch()
        self.ensemble.clear()

    def _discard_prefetch(self) -> None:
        if self.prefetch is not None:
            self.prefetch[1].result()                # never leave an inference running behind an update swap
            self.prefetch = None

    # --- lockstep -----------------------------------------------------------------------------------------------
    def _lockstep_advance(self) -> None:
        """Pair each reward with the observation that follows it; act once per step."""
        if not self.active:
            self.obs_q.clear()
            self.rewards.clear()
            return
        while True:
            if self.pending is None:
                if not self.obs_q:
                    return
                while len(self.obs_q) > 1:           # only the newest observation is worth acting on
                    self.obs_q.popleft()
                self.rewards.clear()                 # rewards for actions no longer tracked
                self._act_paced(self.obs_q.popleft())
                self.last_progress = self.clock()
                continue
            if not (self.rewards and self.obs_q):
                return
            r, obs = self.rewards.popleft(), self.obs_q.popleft()
            self.last_progress = self.clock()
            pend = self.pending
            self._add_reward(pend, r)
            if pend.done or pend.n_rewards >= self.horizon or not pend.record:
                self._finish(obs)
                if not pend.done:
                    self._act_paced(obs)
                # after an episode end, the next observation (the reset state) starts a new decision; after a hold,
                # this one does (the rest of a decision that was held is not executed)
            elif self.cfg.command_type == 'float64_array':
                if not self._command(obs, pend):     # next step of the chunk; held instead: that hold is this
                    pend.record = False              # observation's one command, the next one starts a decision

    def learner_behind(self) -> bool:
        if self.cfg.max_learner_backlog <= 0:
            return False
        now = self.clock()
        if self.backlog_t == -math.inf:              # no report yet: the learner may still be being discovered
            return now - self.active_t < self.cfg.learner_wait_s
        return self.backlog > self.cfg.max_learner_backlog and now - self.backlog_t <= self.cfg.backlog_timeout_s

    def _act_paced(self, obs: Observation) -> None:
        """Act now, or (pacing) keep the observation until the learner caught up; the simulator waits meanwhile."""
        if self.learner_behind():
            first_report = self.backlog_t == -math.inf
            if first_report and not self.counters['learner_waits']:
                self._log('info', f'waiting up to {self.cfg.learner_wait_s} s for the learner\'s first backlog report '
                                  'before acting (pacing)')
            self.counters['learner_waits' if first_report else 'paced_waits'] += 1
            self.paused = obs
            return
        self._start_chunk(obs)

    def _release_paused(self) -> None:
        if self.paused is not None and self.active and not self.learner_behind():
            if self.backlog_t == -math.inf:
                self.counters['learner_wait_expired'] += 1
                self._log('warning', f'no learner backlog report within learner_wait_s {self.cfg.learner_wait_s} s '
                                     'of activation: acting unpaced until one arrives')
            obs, self.paused = self.paused, None
            obs.rx = self.clock()       # the simulator waited for this action: the observation is still current
            self.last_progress = self.clock()
            self._start_chunk(obs)

    # --- updates and statistics -----------------------------------------------------------------------------------
    def _check_next_update(self) -> None:
        if self.checking_update is None and self.incoming_updates:
            if self._update_pool is None:
                self._update_pool = ThreadPoolExecutor(1, thread_name_prefix='swfp-update')
            data, t0 = self.incoming_updates.popleft(), time.perf_counter()
            self.checking_update = self._update_pool.submit(lambda: (self.runtime.prepare_update(data), t0))

    def _apply_deferred(self) -> None:
        """Swap in the update checked aside, if its checks are done and no inference is running."""
        future = self.checking_update
        if future is None or not future.done() or self.prefetch is not None:
            return
        self.checking_update = None
        try:
            prepared, t0 = future.result()
        except ValueError as e:
            self._update_rejected(e)
        else:
            self._commit_update(prepared, t0)
        self._check_next_update()

    def _commit_update(self, prepared, t0: float) -> None:
        try:
            self.runtime.commit_update(prepared)
        except ValueError as e:
            self._update_rejected(e)
            return
        self.counters['updates_applied'] += 1
        self._log('info', f'policy update applied: version {self.version} ({(time.perf_counter() - t0) * 1e3:.1f} ms '
                          f'from its arrival)')

    def _update_rejected(self, e: Exception) -> None:
        self.counters['updates_rejected'] += 1
        self._log('warning', f'policy update rejected ({self.counters["updates_rejected"]} so far): {e}; keeping '
                             f'version {self.version}')

    def stats(self) -> dict:
        """Figures for diagnostics: latency percentiles (ms), counters, the safety filter's counters."""
        out = {'policy_version': self.version, 'mode': self.cfg.mode, 'estop': int(self.safety.estopped),
               'homing': int(self.homing)}
        for name, samples in (('inference_ms', self.inference_s), ('obs_to_action_ms', self.obs_to_command_s),
                              ('chunk_start_delay_ms', self.chunk_start_delay_s),
                              ('chunk_step_delay_ms', self.chunk_step_delay_s)):
            p50, p99 = _percentiles(samples)
            out[f'{name}_p50'], out[f'{name}_p99'] = f'{p50:.3f}', f'{p99:.3f}'
        out.update(self.counters)
        out.update({f'safety_{k}': v for k, v in self.safety.counters.items()})
        return out


class ActorWorker:
    """Runs an :class:`ActorLoop` on one thread, fed by a queue of ``(event, payload)`` pairs: the ROS callbacks only
    parse and post, so inference never blocks the executor. Events are the loop's method names; ``tick`` events
    that queue up behind a slow step are coalesced to the newest. :meth:`busy` says which event the thread is in and
    for how long, and where: a worker stuck in a call (inference, an update check, a DDS write) acts no more, and the
    node reports it rather than going quiet.

    ``inline``: no thread; :meth:`post` handles the event on the caller's thread and the owner calls :meth:`idle`
    every ``idle_s``. For a lockstep simulation only, where the simulator waits for each action anyway and the
    hand-off between two threads is a large part of a step (the composed sim actor, :mod:`swfp_ros.ros.sim_actor`);
    never for an arm, whose control ticks must not wait behind an inference. A call stuck inline stops the caller's
    thread with it, so :meth:`busy` cannot report it from that thread."""

    EVENTS = ('joint_state', 'task', 'invalid', 'reward', 'tick', 'update', 'estop', 'set_active', 'backlog_report',
              'episode', 'home')

    def __init__(self, loop: ActorLoop, on_error: Callable[[str, Exception], None], idle_s: float = 0.1,
                 inline: bool = False):
        self.loop, self.on_error, self.idle_s, self.inline = loop, on_error, idle_s, inline
        self._events: queue.SimpleQueue = queue.SimpleQueue()   # C-implemented: a cheaper hand-off per event
        self._stop = threading.Event()
        self._ticks = 0                               # tick events queued and not yet handled
        self._lock = threading.Lock()
        # (event, monotonic start, thread id) while one is being handled
        self._current: tuple[str, float, int] | None = None
        self._thread = threading.Thread(target=self._run, name='swfp-actor', daemon=True)

    def start(self) -> None:
        if not self.inline:
            self._thread.start()

    def post(self, event: str, *args) -> None:
        if event not in self.EVENTS:
            raise ValueError(f'unknown actor event {event!r}')
        if self.inline:
            if event == 'tick':
                raise ValueError('an inline actor worker takes no ticks (lockstep only)')
            self._handle(event, args)
            return
        if event == 'tick':
            with self._lock:
                self._ticks += 1
        self._events.put((event, args))

    def busy(self, depth: int = 4) -> tuple[str, float, str] | None:
        """(event, seconds in it, where: the thread's ``depth`` innermost frames, ``file:line in function``, innermost
        first) while the thread handles an event; None while it waits for one."""
        current = self._current
        if current is None:
            return None
        frame, frames = sys._current_frames().get(current[2]), []
        while frame is not None and len(frames) < depth:
            frames.append(f'{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}')
            frame = frame.f_back
        return current[0], time.monotonic() - current[1], ' <- '.join(frames)

    def idle(self) -> None:
        """Inline only: the loop's periodic check (lockstep restart, pacing), which the thread runs every idle_s."""
        if not self.inline:
            raise RuntimeError('idle() is for an inline worker; the thread runs its own')
        self._handle('idle', ())

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._events.put(None)                        # wakes the thread from its wait for the next event or idle
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.loop.close()

    def _run(self) -> None:
        # idle() runs every idle_s however busy the queue is: a steady stream of events (the learner's backlog
        # reports arrive every 50 ms) must not hold back the lockstep restart or the release of a dead learner
        next_idle = time.monotonic() + self.idle_s
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_idle:
                event, args, next_idle = 'idle', (), now + self.idle_s
            else:
                try:
                    item = self._events.get(timeout=next_idle - now)
                except queue.Empty:
                    continue
                if item is None:                      # stop()
                    break
                event, args = item
            if event == 'tick':
                with self._lock:
                    self._ticks -= 1
                    behind = self._ticks > 0
                if behind:
                    self.loop.counters['ticks_coalesced'] += 1   # behind: skip to the newest tick
                    continue
            self._handle(event, args)

    def _handle(self, event: str, args: tuple) -> None:
        if self._stop.is_set():
            return
        self._current = (event, time.monotonic(), threading.get_ident())
        try:
            getattr(self.loop, event)(*args)
        except Exception as e:  # noqa: BLE001 - the control loop must survive a bad event
            if not self._stop.is_set():
                self.loop.counters['worker_errors'] += 1
                self.on_error(event, e)
        finally:
            self._current = None
