"""Base policy: conditional flow matching, K fixed Euler steps, exact change-of-variables log-density (§1)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import FlowConfig


def mlp(inp: int, hidden: int, layers: int, out: int, layer_norm: bool = False) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(inp if i == 0 else hidden, hidden))
        if layer_norm:
            mods.append(nn.LayerNorm(hidden))
        mods.append(nn.SiLU())
    mods.append(nn.Linear(hidden if layers else inp, out))
    return nn.Sequential(*mods)


def check_dims(name: str, x: torch.Tensor, dim: int) -> None:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f'{name}: expected shape [batch, {dim}], got {tuple(x.shape)}')


def log_normal(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I), summed over the last dim."""
    return -0.5 * (x.pow(2).sum(-1) + x.shape[-1] * math.log(2 * math.pi))


def batch_logabsdet(fn, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """log|det ∂fn(x, *args)/∂x| per sample, exact: per-sample Jacobian + slogdet (d <= ~64, §1).

    fn is batched ([B, d], *[B, ...]) -> [B, d]. The Jacobian comes from one backward pass over d stacked copies of
    the batch (copy i selects output i), which on CPU is ~15x faster than vmap(jacrev) for small MLPs. x is treated as
    a constant (callers never need d logdet / dx); the result is differentiable w.r.t. fn's parameters when grad is
    enabled.
    """
    B, d = x.shape
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        xr = x.detach().repeat(d, 1).requires_grad_(True)
        y = fn(xr, *(a.repeat(d, *([1] * (a.ndim - 1))) for a in args)).view(d, B, d)
        sel = torch.diagonal(y, dim1=0, dim2=2).sum()  # Σ_i Σ_b y[i, b, i]
        g, = torch.autograd.grad(sel, xr, create_graph=create_graph)
    jac = g.view(d, B, d).transpose(0, 1)  # jac[b, i, :] = ∂y_i/∂x at sample b
    return torch.linalg.slogdet(jac)[1]


class VelocityNet(nn.Module):
    """v_θ(s, x, t): MLP on [s, x, sinusoidal(t)]."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: FlowConfig):
        super().__init__()
        self.register_buffer('freqs', torch.exp(torch.linspace(0, math.log(1000.0), cfg.time_embed_dim // 2)))
        self.net = mlp(obs_dim + act_dim + cfg.time_embed_dim, cfg.hidden, cfg.layers, act_dim)

    def forward(self, s: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """t: [B] (a time per sample) or [1] (one time for the batch: its features are computed once, and in a
        frozen compiled forward they become constants)."""
        ang = t.unsqueeze(-1) * self.freqs
        features = torch.cat([torch.sin(ang), torch.cos(ang)], -1).expand(x.shape[0], -1)
        return self.net(torch.cat([s, x, features], -1))


class FlowPolicy(nn.Module):
    """π_0(·|s) = (E_{K-1} ∘ … ∘ E_0)# N(0, I), E_k(x) = x + Δ·v_θ(s, x, kΔ). Works on normalised obs s."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: FlowConfig | None = None):
        super().__init__()
        self.cfg = cfg or FlowConfig()
        if act_dim % self.cfg.chunk:
            raise ValueError(f'act_dim {act_dim} is not a multiple of chunk H={self.cfg.chunk}')
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.velocity = VelocityNet(obs_dim, act_dim, self.cfg)

    def loss(self, s: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None,
             x0: torch.Tensor | None = None) -> torch.Tensor:
        """Conditional flow matching on the linear path x_t = (1-t)x0 + t·a: E||v(s, x_t, t) - (a - x0)||².

        x0 is drawn independently of a (BC), unless given: a paired x0 (the noise that produced a) makes the
        regression a distillation of that map, with straight paths that K Euler steps integrate accurately.
        """
        check_dims('FlowPolicy.loss obs', s, self.obs_dim)
        check_dims('FlowPolicy.loss actions', a, self.act_dim)
        if x0 is None:
            x0 = torch.randn(a.shape, generator=generator, device=a.device)
        t = torch.rand(a.shape[0], generator=generator, device=a.device)
        xt = (1 - t[:, None]) * x0 + t[:, None] * a
        return (self.velocity(s, xt, t) - (a - x0)).pow(2).sum(-1).mean()

    def _x0(self, s: torch.Tensor, x0: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        check_dims('FlowPolicy obs', s, self.obs_dim)
        if x0 is None:
            return torch.randn(s.shape[0], self.act_dim, generator=generator, device=s.device)
        check_dims('FlowPolicy x0', x0, self.act_dim)
        return x0

    def sample(self, s: torch.Tensor, x0: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """x_K by K Euler steps (unclipped: the cascade clips once, at its end)."""
        x = self._x0(s, x0, generator)
        dt = 1.0 / self.cfg.euler_steps
        for k in range(self.cfg.euler_steps):
            # x + Δ·v as one op (alpha): at batch 1 each op's dispatch costs microseconds (benchmarks/bench_inference.py)
            x = torch.add(x, self.velocity(s, x, torch.full((1,), k * dt, device=x.device)), alpha=dt)
        return x

    def sample_with_log_prob(self, s: torch.Tensor, x0: torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_K, log π(x_K|s)) with log π = log N(x0) - Σ_k log|det(I + Δ ∂_x v(s, x_k, kΔ))|."""
        x = self._x0(s, x0, generator)
        logp = log_normal(x)
        dt = 1.0 / self.cfg.euler_steps

        def step(xb, sb, tb):
            return torch.add(xb, self.velocity(sb, xb, tb), alpha=dt)

        for k in range(self.cfg.euler_steps):
            t = torch.full((x.shape[0],), k * dt, device=x.device)
            logp = logp - batch_logabsdet(step, x, s, t)
            x = step(x, s, t)
        return x, logp
