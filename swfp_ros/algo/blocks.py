"""JKO refinement blocks M(s, a) = a + τ·u(s, a) and the cascade π_n = (M_n ∘ … ∘ M_1)# π_0 (§3)."""
from __future__ import annotations

import torch
from torch import nn

from .config import BlockConfig
from .flow import FlowPolicy, batch_logabsdet, mlp


class RefinementBlock(nn.Module):
    """M(s, a) = a + τ·u(s, a). u's last layer starts at zero, so a new block is the identity map.

    τ starts at δ so that ||u|| ~ 1 means a displacement of ~δ; shrinking a block only rescales τ (exactly linear in
    the displacement, so a shrunk block's measured displacement is known before re-measuring).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int, tau: float):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden, self.layers = obs_dim, act_dim, hidden, layers
        self.u = mlp(obs_dim + act_dim, hidden, layers, act_dim)
        nn.init.zeros_(self.u[-1].weight)
        nn.init.zeros_(self.u[-1].bias)
        self.register_buffer('tau', torch.tensor(float(tau)))

    @classmethod
    def from_config(cls, obs_dim: int, act_dim: int, cfg: BlockConfig) -> 'RefinementBlock':
        return cls(obs_dim, act_dim, cfg.hidden, cfg.layers, cfg.delta)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        # a + τ·u as one op: at batch 1 each op's dispatch costs microseconds (benchmarks/bench_inference.py)
        return torch.addcmul(a, self.tau, self.u(torch.cat([s, a], -1)))

    def logabsdet(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """log|det(I + τ ∇_a u(s, a))| per sample (exact)."""
        return batch_logabsdet(lambda ab, sb: self(sb, ab), a, s)


class Cascade(nn.Module):
    """Base flow followed by frozen refinement blocks; works on normalised obs s.

    Actions are clipped to [-1, 1] once, at the very end (clip=False only for unbounded toys: the analytic test, §7).
    """

    def __init__(self, base: FlowPolicy, blocks: list[RefinementBlock] | None = None, clip: bool = True):
        super().__init__()
        self.base, self.clip = base, clip
        self.blocks = nn.ModuleList(blocks or [])
        for b in self.blocks:
            self._check_block(b)

    @property
    def obs_dim(self) -> int:
        return self.base.obs_dim

    @property
    def act_dim(self) -> int:
        return self.base.act_dim

    def _check_block(self, block: RefinementBlock) -> None:
        if (block.obs_dim, block.act_dim) != (self.obs_dim, self.act_dim):
            raise ValueError(f'block dims (obs {block.obs_dim}, act {block.act_dim}) do not match the cascade '
                             f'(obs {self.obs_dim}, act {self.act_dim})')

    def append(self, block: RefinementBlock) -> None:
        self._check_block(block)
        block.requires_grad_(False)
        self.blocks.append(block)

    def _finish(self, a: torch.Tensor, clip: bool | None) -> torch.Tensor:
        return a.clamp(-1.0, 1.0) if (self.clip if clip is None else clip) else a

    def sample(self, s: torch.Tensor, x0: torch.Tensor | None = None, generator: torch.Generator | None = None,
               clip: bool | None = None) -> torch.Tensor:
        """a = M_n(…M_1(x_K)); x0 given -> deterministic (x0 = 0 is the deterministic policy)."""
        a = self.base.sample(s, x0, generator)
        for b in self.blocks:
            a = b(s, a)
        return self._finish(a, clip)

    def sample_with_log_prob(self, s: torch.Tensor, x0: torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(unclipped action, its log-density): base log π_0 minus log|det(I + τ∇_a u)| per block.

        The density is that of the pre-clip action; clipping puts point masses on the bounds, which have no density.
        """
        a, logp = self.base.sample_with_log_prob(s, x0, generator)
        for b in self.blocks:
            logp = logp - b.logabsdet(s, a)
            a = b(s, a)
        return a, logp
