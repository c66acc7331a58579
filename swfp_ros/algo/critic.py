"""An ensemble of LayerNorm Q critics (twin by default) with Polyak targets and chunk-aware n-step TD targets (§4)."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .config import CriticConfig
from .flow import mlp


class QEnsemble(nn.Module):
    """``cfg.ensemble`` Q heads, registered as q1, q2, ... (a twin critic's checkpoint keys, unchanged)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: CriticConfig):
        super().__init__()
        for i in range(cfg.ensemble):
            self.add_module(f'q{i + 1}', mlp(obs_dim + act_dim, cfg.hidden, cfg.layers, 1, layer_norm=True))
        self.heads = tuple(self.children())

    def forward(self, s: torch.Tensor, a: torch.Tensor, heads: list[int] | None = None) -> torch.Tensor:
        """[heads, B]: every head's Q(s, a), or those listed."""
        x = torch.cat([s, a], -1)
        chosen = self.heads if heads is None else [self.heads[i] for i in heads]
        return torch.stack([head(x).squeeze(-1) for head in chosen])


class Critic(nn.Module):
    """Q(s, a) on normalised obs and [-1, 1] actions; `q_min` (the minimum over all heads) is what blocks climb.

    The TD target is the minimum of two target heads: both of a twin critic (clipped double Q), a random pair of a
    larger ensemble (REDQ, Chen et al. 2021), so that more heads make the block objective more pessimistic without
    making the target more so.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: CriticConfig | None = None):
        super().__init__()
        self.cfg = cfg or CriticConfig()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.q = QEnsemble(obs_dim, act_dim, self.cfg)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=self.cfg.lr)
        self._params, self._target_params = list(self.q.parameters()), list(self.target.parameters())

    def q_min(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.q(s, a).amin(0)

    def target_heads(self, rng: np.random.Generator | None) -> list[int] | None:
        """The target heads of one TD step: None (both) for a twin critic, else a pair drawn with ``rng``."""
        if self.cfg.ensemble == 2:
            return None
        if rng is None:
            raise ValueError(f'a critic ensemble of {self.cfg.ensemble} draws its target pair: pass an rng')
        return [int(i) for i in rng.choice(self.cfg.ensemble, 2, replace=False)]

    @torch.no_grad()
    def td_target(self, batch: dict[str, torch.Tensor], temperature: float = 0.0,
                  heads: list[int] | None = None) -> torch.Tensor:
        """y = r_n + γ^n (1 - terminated) (min_j Q̄_j(s', a') [- temperature·log π(a'|s')]), a' ~ π_n(·|s').

        j over ``heads`` (``target_heads``; None: all). n = the transition's env steps (``n_steps``); ``next_obs`` is
        normalised and ``next_action`` (the executed, clipped a') drawn by the caller. The soft term needs
        ``next_log_prob`` (the pre-clip density of a'); the temperature is in Q units (α·E||∇_a Q|| under the
        blocks' gradient-norm scaling).
        """
        q_next = self.target(batch['next_obs'], batch['next_action'], heads).amin(0)
        if self.cfg.soft_target and temperature > 0:
            q_next = q_next - temperature * batch['next_log_prob']
        disc = self.cfg.gamma ** batch['n_steps'].to(q_next.dtype)
        return batch['reward'] + disc * (1.0 - batch['terminated'].to(q_next.dtype)) * q_next

    def update(self, batch: dict[str, torch.Tensor], temperature: float = 0.0,
               rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """One TD step on every head + Polyak target update; returns metrics as 0-d tensors (no host sync). ``rng``
        draws an ensemble's target pair."""
        y = self.td_target(batch, temperature, self.target_heads(rng))
        q = self.q(batch['obs'], batch['action'])
        loss = (q - y).pow(2).mean(1).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._params, self.cfg.polyak)
        return {'td_loss': loss.detach() / len(q), 'q_mean': q[0].detach().mean(), 'target_mean': y.mean()}

    def state_dict_full(self) -> dict:
        return {'q': self.q.state_dict(), 'target': self.target.state_dict(), 'opt': self.opt.state_dict()}

    def load_state_dict_full(self, d: dict) -> None:
        self.q.load_state_dict(d['q'])
        self.target.load_state_dict(d['target'])
        self.opt.load_state_dict(d['opt'])
