"""Baseline: naive fine-tuning. -Q back-propagated through all K Euler steps into the base velocity net, no trust
region, no blocks. Same interface as Learner, so a runner can swap it in; each improvement publishes a whole new base.
"""
from __future__ import annotations

import torch

from .blocks import Cascade
from .learner import Learner
from .serialize import BlockUpdate


def naive_loss(policy: Cascade, q_fn, s: torch.Tensor, q_scale: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """-Q(s, clip(x_K(s)))/scale with the graph through every Euler step (memory and time grow with K)."""
    return -q_fn(s, policy.sample(s, generator=generator)).mean() / q_scale


class NaiveLearner(Learner):
    def _improve(self, should_stop=None) -> list[BlockUpdate]:
        """One improvement step; it updates the base in place, so it always runs to the end (``should_stop`` is not
        asked)."""
        bc = self.cfg.block
        base = self.policy.base.requires_grad_(True)
        opt = torch.optim.Adam(base.parameters(), lr=bc.lr * 0.1)  # the whole base moves: a block's lr is too large
        states = self._states(bc.pool_size)
        self.critic.requires_grad_(False)
        try:
            # Same gradient-norm scaling of Q as the blocks, for a like-for-like comparison.
            a = self.policy.sample(states, generator=self.gen).detach().requires_grad_(True)
            grad, = torch.autograd.grad(self.critic.q_min(states, a).sum(), a)
            scale = grad.norm(dim=-1).mean().clamp_min(1e-6).item() if bc.q_scale == 'grad_norm' else 1.0
            for _ in range(bc.train_steps):
                idx = torch.randint(len(states), (min(bc.batch_size, len(states)),), generator=self.gen,
                                    device=self.device)
                loss = naive_loss(self.policy, self.critic.q_min, states[idx], scale, self.gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        finally:
            self.critic.q.requires_grad_(True)
            base.requires_grad_(False)
        self.counters.blocks_trained += 1
        self.counters.version += 1
        return [self.snapshot()]
