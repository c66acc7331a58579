"""PolicyRuntime: the actor side (ROS policy node, runners). Acts with the current cascade, swaps in updates safely."""
from __future__ import annotations

import threading

import numpy as np
import torch

from .blocks import Cascade
from .config import resolve_device
from .normalize import ObsNormalizer
from .serialize import BlockUpdate, UpdateRejected


class PolicyRuntime:
    """act() reads one immutable (normaliser, cascade, version) snapshot; apply_update() builds a new snapshot off to
    the side and swaps the reference under a lock, so a swap never lands in the middle of an inference."""

    def __init__(self, cascade: Cascade, normalizer: ObsNormalizer, version: int = 0, device: str = 'auto',
                 seed: int | None = None):
        self.device = resolve_device(device)
        self._lock = threading.Lock()
        self._gen = torch.Generator(device=self.device)
        # Unseeded actors draw a fresh seed: the generator's fixed default would give every actor the same noise.
        if seed is None:
            self._gen.seed()
        else:
            self._gen.manual_seed(seed)
        self._snap = self._prepare(cascade, normalizer, version)

    def _prepare(self, cascade: Cascade, normalizer: ObsNormalizer, version: int):
        return (normalizer.to(self.device).eval(), cascade.to(self.device).eval().requires_grad_(False), version)

    @property
    def version(self) -> int:
        return self._snap[2]

    @property
    def cascade(self) -> Cascade:
        return self._snap[1]

    @property
    def normalizer(self) -> ObsNormalizer:
        return self._snap[0]

    @property
    def obs_dim(self) -> int:
        return self._snap[1].obs_dim

    @property
    def act_dim(self) -> int:
        return self._snap[1].act_dim

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False, noise: np.ndarray | None = None) -> np.ndarray:
        """obs [obs_dim] or [B, obs_dim] (raw) -> action(s) in [-1, 1], flattened chunk [act_dim] or [B, act_dim].

        Stochastic: fresh x0 ~ N(0, I) per decision. Deterministic: x0 = 0. ``noise`` (shaped like the actions): the x0
        to decode, for a caller that steers the noise (the DSRL baseline); deterministic is noise = 0.
        """
        norm, cascade, _ = self._snap  # one consistent snapshot for the whole inference
        o = np.asarray(obs, np.float32)
        single = o.ndim == 1
        o2 = o.reshape(1, -1) if single else o
        if o2.ndim != 2 or o2.shape[1] != cascade.obs_dim:
            raise ValueError(f'act: expected obs [{cascade.obs_dim}] or [B, {cascade.obs_dim}], got {o.shape}')
        if not np.isfinite(o2).all():
            raise ValueError('act: observation contains NaN or inf')
        s = norm(torch.as_tensor(o2, device=self.device))
        x0 = None
        if noise is not None:
            n = np.asarray(noise, np.float32)
            if n.size != len(o2) * cascade.act_dim or not np.isfinite(n).all():
                raise ValueError(f'act: noise must be {len(o2)} x {cascade.act_dim} finite values, got shape {n.shape}')
            x0 = torch.as_tensor(n.reshape(len(o2), cascade.act_dim), device=self.device)
        elif deterministic:
            x0 = torch.zeros(len(s), cascade.act_dim, device=self.device)
        with self._lock:  # the generator is shared between threads
            # clip=True even for a clip=False (unbounded toy) cascade: an actor never emits out-of-range actions.
            a = cascade.sample(s, x0, generator=None if x0 is not None else self._gen, clip=True)
        a = a.cpu().numpy()
        return a[0] if single else a

    def apply_update(self, update: bytes | BlockUpdate) -> int:
        """Validate, then swap atomically; returns the new version. Raises UpdateRejected and keeps the old policy.

        A block must carry version = current + 1; a base (compaction or snapshot) must not be older than the current.
        """
        norm, cascade, version = self._snap
        if isinstance(update, BlockUpdate):
            update.validate(cascade.obs_dim, cascade.act_dim)
            upd = update
        else:
            upd = BlockUpdate.from_bytes(update, cascade.obs_dim, cascade.act_dim)
        if upd.kind == 'block':
            if upd.version != version + 1:
                raise UpdateRejected(f'block update v{upd.version} out of order: policy is at v{version}')
            new_cascade = Cascade(cascade.base, [*cascade.blocks, upd.build_block()], clip=cascade.clip)
            new_norm = norm
        else:
            if upd.version < version:
                raise UpdateRejected(f'base update v{upd.version} is older than the policy (v{version})')
            new_cascade, new_norm = upd.build_policy()
        snap = self._prepare(new_cascade, new_norm, upd.version)
        with self._lock:
            if self._snap[2] != version:  # another thread applied an update meanwhile: re-check the order
                raise UpdateRejected(f'update v{upd.version} raced with another update (policy now v{self._snap[2]})')
            self._snap = snap
        return upd.version
