"""Observation normaliser: fitted once on the BC data, then frozen (the critic and every block see the same inputs)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ObsNormalizer(nn.Module):
    """s = clamp((obs - mean) / std, ±clip). Buffers only, so it moves with .to(device) and lives in state_dict."""

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-6):
        super().__init__()
        self.dim, self.clip, self.eps = dim, clip, eps
        self.register_buffer('mean', torch.zeros(dim))
        self.register_buffer('std', torch.ones(dim))

    @torch.no_grad()
    def fit(self, obs: np.ndarray | torch.Tensor) -> 'ObsNormalizer':
        obs = torch.as_tensor(np.asarray(obs, dtype=np.float32)).reshape(-1, self.dim)
        if not torch.isfinite(obs).all():
            raise ValueError('ObsNormalizer.fit: observations contain NaN/inf')
        self.mean.copy_(obs.mean(0))
        # eps floor: constant features (e.g. a fixed goal) would otherwise divide by zero.
        self.std.copy_(obs.std(0, unbiased=False).clamp_min(self.eps) if len(obs) > 1 else torch.ones(self.dim))
        return self

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.shape[-1] != self.dim:
            raise ValueError(f'ObsNormalizer: expected obs of size {self.dim}, got shape {tuple(obs.shape)}')
        return ((obs - self.mean) / self.std).clamp(-self.clip, self.clip)
