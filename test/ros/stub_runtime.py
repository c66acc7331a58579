"""A tiny stand-in for ``swfp_ros.algo.runtime`` with the same interface (act / prepare_update / commit_update /
version / device).

The ROS tests use it to exercise the node plumbing independently of the algorithm (``policy_loader:
stub_runtime:load_policy`` with this directory on PYTHONPATH). Update bytes: b'SWFPSTUB' + version (u32) + crc32 of
the payload (u32) + payload (act_dim float64 biases); an update must be the next version and checksum-valid.
"""
from __future__ import annotations

import json
import struct
import time
import zlib

import numpy as np

MAGIC = b'SWFPSTUB'


class UpdateRejected(ValueError):
    pass


class StubRuntime:
    def __init__(self, obs_dim: int, act_dim: int = 7, seed: int = 0, gain: float = 0.5, sleep_s: float = 0.0):
        rng = np.random.default_rng(seed)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.W = rng.normal(0, 0.1, (act_dim, obs_dim))
        self.bias = np.zeros(act_dim)
        self.gain, self.sleep_s = gain, sleep_s
        self.rng = rng
        self.version = 0
        self.device = 'cpu'

    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64).ravel()
        if obs.size != self.obs_dim:
            raise ValueError(f'obs has {obs.size} values, expected {self.obs_dim}')
        if self.sleep_s:
            time.sleep(self.sleep_s)
        a = np.tanh(self.W @ obs) * self.gain + self.bias
        if not deterministic:
            a = a + self.rng.normal(0, 0.1, self.act_dim)
        return np.clip(a, -1, 1)

    def prepare_update(self, data: bytes) -> tuple[int, np.ndarray]:
        if len(data) < 16 or data[:8] != MAGIC:
            raise UpdateRejected('not a stub update (bad magic)')
        version, crc = struct.unpack('<II', data[8:16])
        payload = data[16:]
        if zlib.crc32(payload) != crc:
            raise UpdateRejected('checksum mismatch')
        if version != self.version + 1:
            raise UpdateRejected(f'out-of-order update {version}, have {self.version}')
        bias = np.frombuffer(payload, dtype=np.float64)
        if bias.size != self.act_dim:
            raise UpdateRejected(f'update for act_dim {bias.size}, policy has {self.act_dim}')
        return version, bias.copy()

    def commit_update(self, prepared: tuple[int, np.ndarray]) -> int:
        version, bias = prepared
        if version != self.version + 1:
            raise UpdateRejected(f'out-of-order update {version}, have {self.version}')
        self.bias, self.version = bias, version
        return version


def make_update(version: int, bias) -> bytes:
    payload = np.asarray(bias, dtype=np.float64).tobytes()
    return MAGIC + struct.pack('<II', version, zlib.crc32(payload)) + payload


def write_checkpoint(path, obs_dim: int, act_dim: int = 7, seed: int = 0, gain: float = 0.5, sleep_s: float = 0.0):
    with open(path, 'w') as f:
        json.dump({'obs_dim': obs_dim, 'act_dim': act_dim, 'seed': seed, 'gain': gain, 'sleep_s': sleep_s}, f)
    return path


def load_policy(checkpoint, device='auto') -> StubRuntime:
    with open(checkpoint) as f:
        return StubRuntime(**json.load(f))
