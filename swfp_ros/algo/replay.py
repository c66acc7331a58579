"""Numpy ring buffer of transitions (obs, action, reward, next_obs, terminated, n_steps), raw (unnormalised) obs,
and the n-step windows that turn one-decision transitions into n-step ones before they are stored."""
from __future__ import annotations

import numpy as np

FIELDS = ('obs', 'action', 'reward', 'next_obs', 'terminated', 'n_steps')
DTYPES = {'obs': np.float32, 'action': np.float32, 'reward': np.float32, 'next_obs': np.float32,
          'terminated': np.bool_, 'n_steps': np.int32}


class ReplayBuffer:
    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        if capacity <= 0:
            raise ValueError('ReplayBuffer capacity must be positive')
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        widths = {'obs': (obs_dim,), 'action': (act_dim,), 'next_obs': (obs_dim,)}
        self.data = {k: np.zeros((capacity, *widths.get(k, ())), DTYPES[k]) for k in FIELDS}
        self.ptr = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Add already-validated arrays with a common leading batch dim; oldest entries are overwritten.

        Returns the slots written (whatever a caller derived from their old contents is now stale).
        """
        n = len(batch['obs'])
        idx = (self.ptr + np.arange(n)) % self.capacity
        for k in FIELDS:
            self.data[k][idx] = batch[k]
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        return idx

    def get(self, idx: np.ndarray, fields=FIELDS) -> dict[str, np.ndarray]:
        """``fields`` of the transitions in slots ``idx`` (any shape), as copies."""
        return {k: self.data[k][idx] for k in fields}

    def state_dict(self) -> dict:
        return {'capacity': self.capacity, 'ptr': self.ptr, 'size': self.size,
                'data': {k: v[:self.size].copy() for k, v in self.data.items()}}

    def load_state_dict(self, d: dict) -> None:
        if d['capacity'] != self.capacity:
            raise ValueError(f"replay capacity mismatch: checkpoint {d['capacity']}, config {self.capacity}")
        for k in FIELDS:
            self.data[k][:d['size']] = d['data'][k]
        self.ptr, self.size = d['ptr'], d['size']


class NStepAssembler:
    """Per-stream n-step windows over consecutive one-decision transitions (§4, n-step targets).

    The extra n-1 rewards come from the behaviour policy (slightly off-policy, as in D4PG / Rainbow); SWFP's small
    steps keep the behaviour close to the policy being evaluated.

    A stream is one actor (an env of the in-process runner, an ``actor_id`` in the ROS graph). Its transitions chain
    while each starts where the previous one ended (``obs == previous next_obs``) and nothing terminated. A break
    (an episode reset after a time limit, a lost message) closes the open windows early, bootstrapped from their last
    ``next_obs``: exactly the truncation target. Every decision opens one window; a window spanning transitions
    i..j has reward sum_k gamma^(env steps before k) r_k, ``n_steps = sum n_k`` and the last transition's
    ``next_obs`` and ``terminated``. n = 1 passes every transition through unchanged.
    """

    def __init__(self, n: int, gamma: float):
        if n < 1:
            raise ValueError(f'n-step window must be >= 1, got {n}')
        self.n, self.gamma = n, gamma
        self.open: dict[int, list[dict[str, np.ndarray]]] = {}   # stream -> its last < n transitions
        self.shapes: dict[str, tuple] = {k: () for k in FIELDS}   # per-transition shapes, for empty results

    def add(self, batch: dict[str, np.ndarray], streams: np.ndarray) -> dict[str, np.ndarray]:
        """Validated transitions (with their streams, in time order) -> the windows they complete (maybe none)."""
        self.shapes = {k: np.shape(batch[k])[1:] for k in FIELDS}
        done: list[dict] = []
        for i, stream in enumerate(np.asarray(streams, np.int64).tolist()):
            t = {k: np.array(batch[k][i]) for k in FIELDS}   # copies: the caller may reuse its arrays
            window = self.open.setdefault(stream, [])
            if window and (window[-1]['terminated'] or not np.array_equal(window[-1]['next_obs'], t['obs'])):
                done += self._close(window, len(window))
            window.append(t)
            if t['terminated']:
                done += self._close(window, len(window))
            elif len(window) == self.n:
                done += self._close(window, 1)
        return self._stack(done)

    def flush(self) -> dict[str, np.ndarray]:
        """Close every open window (finite data such as demonstrations: the last episodes end here)."""
        done = [w for window in self.open.values() for w in self._close(window, len(window))]
        return self._stack(done)

    def _stack(self, done: list[dict]) -> dict[str, np.ndarray]:
        if not done:
            return {k: np.zeros((0, *self.shapes[k]), DTYPES[k]) for k in FIELDS}
        return {k: np.stack([w[k] for w in done]).astype(DTYPES[k]) for k in FIELDS}

    def _close(self, window: list[dict], count: int) -> list[dict]:
        """Emit the windows starting at the first ``count`` transitions (each running to the end); drop those."""
        out = []
        for start in range(count):
            reward, steps = 0.0, 0
            for t in window[start:]:
                reward += self.gamma ** steps * float(t['reward'])
                steps += int(t['n_steps'])
            last = window[-1]
            out.append({'obs': window[start]['obs'], 'action': window[start]['action'], 'reward': reward,
                        'next_obs': last['next_obs'], 'terminated': last['terminated'], 'n_steps': steps})
        del window[:count]
        return out

    def state_dict(self) -> dict:
        return {'n': self.n, 'open': {s: [dict(t) for t in w] for s, w in self.open.items() if w}}

    def load_state_dict(self, d: dict) -> None:
        self.open = {int(s): [dict(t) for t in w] for s, w in d['open'].items()}


def split_sizes(n: int, demo_ratio: float, online_size: int, demo_size: int) -> tuple[int, int]:
    """(online, demo) counts of a draw of n with a fixed fraction from the demonstrations (when there are any)."""
    if demo_size == 0:
        return n, 0
    if online_size == 0:
        return 0, n
    n_demo = int(round(n * demo_ratio))
    return n - n_demo, n_demo


def batch_indices(online_size: int, demo_size: int, batches: int, batch_size: int, demo_ratio: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Slots of ``batches`` minibatches drawn with replacement: (online [batches, b_online], demo [batches, b_demo])."""
    n_online, n_demo = split_sizes(batch_size, demo_ratio, online_size, demo_size)
    return (rng.integers(0, online_size, (batches, n_online)) if n_online else np.zeros((batches, 0), np.int64),
            rng.integers(0, demo_size, (batches, n_demo)) if n_demo else np.zeros((batches, 0), np.int64))


def pool_indices(online_size: int, demo_size: int, n: int, demo_ratio: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to n distinct slots (drawn without replacement) at the demo ratio: when one source has too few transitions,
    the pool shrinks so that the ratio holds (a block's held-out states must not reappear in its training states)."""
    n_online, n_demo = split_sizes(n, demo_ratio, online_size, demo_size)
    scale = min(1.0, online_size / n_online if n_online else 1.0, demo_size / n_demo if n_demo else 1.0)
    n_online, n_demo = int(n_online * scale), int(n_demo * scale)
    return rng.choice(online_size, n_online, replace=False), rng.choice(demo_size, n_demo, replace=False)
