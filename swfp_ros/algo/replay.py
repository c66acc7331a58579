"""Numpy ring buffer of transitions (obs, action, reward, next_obs, terminated, n_steps); raw (unnormalised) obs."""
from __future__ import annotations

import numpy as np

FIELDS = ('obs', 'action', 'reward', 'next_obs', 'terminated', 'n_steps')


class ReplayBuffer:
    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        if capacity <= 0:
            raise ValueError('ReplayBuffer capacity must be positive')
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        self.data = {
            'obs': np.zeros((capacity, obs_dim), np.float32), 'action': np.zeros((capacity, act_dim), np.float32),
            'reward': np.zeros(capacity, np.float32), 'next_obs': np.zeros((capacity, obs_dim), np.float32),
            'terminated': np.zeros(capacity, np.bool_), 'n_steps': np.ones(capacity, np.int32)}
        self.ptr = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Add already-validated arrays with a common leading batch dim; oldest entries are overwritten."""
        n = len(batch['obs'])
        idx = (self.ptr + np.arange(n)) % self.capacity
        for k in FIELDS:
            self.data[k][idx] = batch[k]
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = rng.integers(0, self.size, size=n)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {'capacity': self.capacity, 'ptr': self.ptr, 'size': self.size,
                'data': {k: v[:self.size].copy() for k, v in self.data.items()}}

    def load_state_dict(self, d: dict) -> None:
        if d['capacity'] != self.capacity:
            raise ValueError(f"replay capacity mismatch: checkpoint {d['capacity']}, config {self.capacity}")
        for k in FIELDS:
            self.data[k][:d['size']] = d['data'][k]
        self.ptr, self.size = d['ptr'], d['size']


def sample_mixed(online: ReplayBuffer, demo: ReplayBuffer | None, n: int, demo_ratio: float,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A batch with a fixed fraction from the demonstrations (when there are any)."""
    n_demo = int(round(n * demo_ratio)) if demo is not None and len(demo) else 0
    if n_demo == 0 or len(online) == 0:
        src = online if len(online) else demo
        return src.sample(n, rng)
    a, b = online.sample(n - n_demo, rng), demo.sample(n_demo, rng)
    return {k: np.concatenate([a[k], b[k]]) for k in a}
