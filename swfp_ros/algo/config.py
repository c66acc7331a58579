"""Typed configuration of the SWFP algorithm (ALGORITHM.md); defaults follow the prototype findings of §6."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class FlowConfig:
    """Base flow-matching policy (§1)."""
    hidden: int = 256
    layers: int = 3
    euler_steps: int = 4          # K; Δ = 1/K
    time_embed_dim: int = 32      # sinusoidal features of t
    chunk: int = 1                # H: actions per decision, flattened into one vector


@dataclass
class BlockConfig:
    """One JKO refinement block and its trust region (§3)."""
    hidden: int = 128
    layers: int = 2
    delta: float = 0.1            # trust-region radius: E||M(a)-a||² <= delta², in [-1,1] action units
    alpha: float = 0.0            # entropy temperature; 0 skips the Jacobian (§6: alpha=0 works, halves the cost)
    # 'grad_norm': divide Q by the pool's mean ||∇_a Q||, at every alpha (§6: keeps the entropy balance as |Q| grows;
    # at alpha = 0 it makes λ's starting value 1/(2δ) a first step of about δ whatever the critic's scale); the
    # temperature is then alpha·E||∇_a Q|| in Q units, which the soft critic target uses too.
    # 'none': raw Q (the analytic Boltzmann target of §5.1 only holds unscaled).
    q_scale: str = 'grad_norm'
    train_steps: int = 300
    lr: float = 1e-3
    batch_size: int = 256
    pool_size: int = 4096         # states drawn per block; actions sampled once (no grad through π_n)
    holdout_frac: float = 0.2     # of the pool (a random subset of distinct states), for validation only
    holdout_actions: int = 4      # actions per held-out state: per-state displacement and within-state spread
    dual_step: float = 0.05       # ascent step on log λ per train step
    tolerance: float = 1.25       # accept if held-out E||M(a)-a||² <= tolerance·delta²
    # The JKO step is per state, the bound above an average over states: the 95th percentile over held-out states of
    # the per-state E_a||M(a)-a||² is held to tolerance·state_p95·delta² the same way (shrunk to state_p95·delta²).
    state_p95: float = 4.0
    max_blocks: int = 16          # cascade length that triggers compaction
    compaction_steps: int = 2000  # flow-matching steps when re-fitting the base to the cascade
    compaction_lr: float = 3e-4
    # A compaction is published only if, on held-out states with paired noise, the re-fitted base's executed actions
    # stay within compaction_tolerance·delta² of the cascade's (E||base'(x0) - cascade(x0)||²) and the critic's value
    # drops by at most compaction_value_tolerance·delta in units of E||∇_a Q|| (what a step of that length straight
    # down the critic's gradient would lose); otherwise the cascade is kept and compaction retried after the next block.
    compaction_tolerance: float = 1.0
    compaction_value_tolerance: float = 0.5

    def __post_init__(self):
        if self.q_scale not in ('grad_norm', 'none'):
            raise ValueError(f"BlockConfig.q_scale must be 'grad_norm' or 'none', got {self.q_scale!r}")
        if self.delta <= 0 or self.tolerance < 1.0:
            raise ValueError('BlockConfig needs delta > 0 and tolerance >= 1')
        if self.holdout_actions < 1:
            raise ValueError(f'BlockConfig.holdout_actions must be >= 1, got {self.holdout_actions}')


@dataclass
class CriticConfig:
    """Twin LayerNorm critics with Polyak targets (§4)."""
    hidden: int = 256
    layers: int = 3
    gamma: float = 0.99
    # Decisions per TD target: windows of n consecutive transitions of one actor (replay.NStepAssembler); 1 = the
    # prototype's one-step targets. Measured (seed 0, 12k env steps, block every 1k): push from BC 0.10 went to
    # 0.53 after one block and ended at 0.30 with n = 5, against 0.27 / 0.17 with n = 1; reach was alike for both
    # (0.60 -> 0.97 / 1.00 at 10k), n = 5 a little faster (0.90 vs 0.87 at 4k).
    n_step: int = 5
    polyak: float = 0.005
    lr: float = 3e-4
    batch_size: int = 256
    # Hard (not soft) target by default: with alpha=0 the soft term vanishes anyway, and with alpha>0 it costs K+blocks
    # Jacobians per target; the prototype's results were all obtained without it.
    soft_target: bool = False

    def __post_init__(self):
        if self.n_step < 1:
            raise ValueError(f'CriticConfig.n_step must be >= 1, got {self.n_step}')


@dataclass
class SwfpConfig:
    """Everything the online learner needs."""
    flow: FlowConfig = field(default_factory=FlowConfig)
    block: BlockConfig = field(default_factory=BlockConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    warmup_steps: int = 5000      # env steps of critic-only training before the first block
    steps_per_block: int = 2500   # env steps between blocks
    utd: float = 0.5              # critic updates per env step (a chunk of H actions is H steps; prototype: 1 per 2)
    demo_ratio: float = 0.5       # fraction of each critic batch drawn from demonstrations, when given
    replay_capacity: int = 1_000_000
    seed: int = 0                 # critic initialisation, minibatches, block noise (the runner sets its run seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'SwfpConfig':
        d = dict(d)
        subs = {'flow': FlowConfig, 'block': BlockConfig, 'critic': CriticConfig}
        kwargs = {k: subs[k](**d.pop(k, {})) for k in subs}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f'unknown SwfpConfig keys: {sorted(unknown)}')
        return cls(**kwargs, **d)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)
