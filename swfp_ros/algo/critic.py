"""Twin LayerNorm Q critics with Polyak targets and chunk-aware n-step TD targets (§4)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .config import CriticConfig
from .flow import mlp


class TwinQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, cfg: CriticConfig):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, cfg.hidden, cfg.layers, 1, layer_norm=True)
        self.q2 = mlp(obs_dim + act_dim, cfg.hidden, cfg.layers, 1, layer_norm=True)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([s, a], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class Critic(nn.Module):
    """Q(s, a) on normalised obs and [-1, 1] actions; `q_min` is what blocks climb."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: CriticConfig | None = None):
        super().__init__()
        self.cfg = cfg or CriticConfig()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.q = TwinQ(obs_dim, act_dim, self.cfg)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=self.cfg.lr)
        self._params, self._target_params = list(self.q.parameters()), list(self.target.parameters())

    def q_min(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.minimum(*self.q(s, a))

    @torch.no_grad()
    def td_target(self, batch: dict[str, torch.Tensor], temperature: float = 0.0) -> torch.Tensor:
        """y = r_n + γ^n (1 - terminated) (min_j Q̄_j(s', a') [- temperature·log π(a'|s')]), a' ~ π_n(·|s').

        n = the transition's env steps (``n_steps``); ``next_obs`` is normalised and ``next_action`` (the executed,
        clipped a') drawn by the caller. The soft term needs ``next_log_prob`` (the pre-clip density of a'); the
        temperature is in Q units (α·E||∇_a Q|| under the blocks' gradient-norm scaling).
        """
        q_next = torch.minimum(*self.target(batch['next_obs'], batch['next_action']))
        if self.cfg.soft_target and temperature > 0:
            q_next = q_next - temperature * batch['next_log_prob']
        disc = self.cfg.gamma ** batch['n_steps'].to(q_next.dtype)
        return batch['reward'] + disc * (1.0 - batch['terminated'].to(q_next.dtype)) * q_next

    def update(self, batch: dict[str, torch.Tensor], temperature: float = 0.0) -> dict[str, torch.Tensor]:
        """One TD step on both critics + Polyak target update; returns metrics as 0-d tensors (no host sync)."""
        y = self.td_target(batch, temperature)
        q1, q2 = self.q(batch['obs'], batch['action'])
        loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._params, self.cfg.polyak)
        return {'td_loss': loss.detach() / 2, 'q_mean': q1.detach().mean(), 'target_mean': y.mean()}

    def state_dict_full(self) -> dict:
        return {'q': self.q.state_dict(), 'target': self.target.state_dict(), 'opt': self.opt.state_dict()}

    def load_state_dict_full(self, d: dict) -> None:
        self.q.load_state_dict(d['q'])
        self.target.load_state_dict(d['target'])
        self.opt.load_state_dict(d['opt'])
