"""Typed configuration of the SWFP algorithm (docs/algorithm.md); defaults follow the prototype findings of §9."""
from __future__ import annotations

import dataclasses
import difflib
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


class ConfigError(ValueError):
    """An invalid setting: ``key`` is its dotted name (``critic.gamma``), ``problem`` says what is wrong."""

    def __init__(self, key: str, problem: str):
        super().__init__(f'{key}: {problem}')
        self.key, self.problem = key, problem


def _validate(cfg, ranges: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Every field of the dataclass ``cfg`` has its annotated type (an int is accepted for a float and stored as
    one; a float is never accepted for an int, nor a bool for a number), then passes its range test."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, want = getattr(cfg, f.name), hints[f.name]
        if want in (int, float):
            number = numbers.Integral if want is int else numbers.Real
            if isinstance(value, bool) or not isinstance(value, number):
                raise ConfigError(f.name, f'expected {"an integer" if want is int else "a number"}, got {value!r}')
            setattr(cfg, f.name, want(value))
        elif not isinstance(value, want):
            raise ConfigError(f.name, f'expected {getattr(want, "__name__", want)}, got {value!r}')
    for name, (ok, what) in ranges.items():
        if not ok(getattr(cfg, name)):
            raise ConfigError(name, f'must be {what}, got {getattr(cfg, name)!r}')


def _at_least(n):
    return lambda v: v >= n, f'>= {n}'


_POSITIVE = (lambda v: v > 0, '> 0')
_FRACTION = (lambda v: 0 < v < 1, 'in (0, 1)')


@dataclass
class FlowConfig:
    """Base flow-matching policy (§1)."""
    hidden: int = 256
    layers: int = 3
    euler_steps: int = 4          # K; Δ = 1/K
    time_embed_dim: int = 32      # sinusoidal features of t
    chunk: int = 1                # H: actions per decision, flattened into one vector

    def __post_init__(self):
        _validate(self, {'hidden': _at_least(1), 'layers': _at_least(1), 'euler_steps': _at_least(1),
                         'time_embed_dim': (lambda v: v >= 2 and v % 2 == 0, 'even and >= 2'), 'chunk': _at_least(1)})


@dataclass
class BlockConfig:
    """One JKO refinement block and its trust region (§3)."""
    hidden: int = 128
    layers: int = 2
    delta: float = 0.1            # trust-region radius: E||M(a)-a||² <= delta², in [-1,1] action units
    alpha: float = 0.0            # entropy temperature; 0 skips the Jacobian (§9: alpha=0 works, halves the cost)
    # 'grad_norm': divide Q by the pool's mean ||∇_a Q||, at every alpha (§8 D6: keeps the entropy balance as |Q| grows;
    # at alpha = 0 it makes λ's starting value 1/(2δ) a first step of about δ whatever the critic's scale); the
    # temperature is then alpha·E||∇_a Q|| in Q units, which the soft critic target uses too.
    # 'none': raw Q (the analytic Boltzmann target of §7 only holds unscaled).
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
        _validate(self, {'hidden': _at_least(1), 'layers': _at_least(1), 'delta': _POSITIVE, 'alpha': _at_least(0),
                         'q_scale': (lambda v: v in ('grad_norm', 'none'), "'grad_norm' or 'none'"),
                         'train_steps': _at_least(0), 'lr': _POSITIVE, 'batch_size': _at_least(1),
                         'pool_size': _at_least(2), 'holdout_frac': _FRACTION, 'holdout_actions': _at_least(1),
                         'dual_step': _at_least(0), 'tolerance': _at_least(1), 'state_p95': _POSITIVE,
                         'max_blocks': _at_least(1), 'compaction_steps': _at_least(1), 'compaction_lr': _POSITIVE,
                         'compaction_tolerance': _POSITIVE, 'compaction_value_tolerance': _at_least(0)})


@dataclass
class CriticConfig:
    """LayerNorm Q critics (twin by default) with Polyak targets (§4)."""
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
    # Q heads. 2: clipped double Q. More: the target takes the minimum of a random pair, blocks climb the minimum of
    # all (a pessimistic objective against blocks that follow the critic's errors; see the README's push table).
    ensemble: int = 2
    # Hard (not soft) target by default: with alpha=0 the soft term vanishes anyway, and with alpha>0 it costs K+blocks
    # Jacobians per target; the prototype's results were all obtained without it.
    soft_target: bool = False

    def __post_init__(self):
        _validate(self, {'hidden': _at_least(1), 'layers': _at_least(1), 'gamma': _FRACTION, 'n_step': _at_least(1),
                         'ensemble': _at_least(2),
                         'polyak': (lambda v: 0 < v <= 1, 'in (0, 1]'), 'lr': _POSITIVE, 'batch_size': _at_least(1)})


@dataclass
class SwfpConfig:
    """Everything the online learner needs."""
    flow: FlowConfig = field(default_factory=FlowConfig)
    block: BlockConfig = field(default_factory=BlockConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    warmup_steps: int = 2000      # env steps of critic-only training before the first block
    steps_per_block: int = 1000   # env steps between blocks
    utd: float = 0.5              # critic updates per env step (a chunk of H actions is H steps; prototype: 1 per 2)
    demo_ratio: float = 0.5       # fraction of each critic batch drawn from demonstrations, when given
    replay_capacity: int = 1_000_000
    seed: int = 0                 # critic initialisation, minibatches, block noise (the runner sets its run seed)

    def __post_init__(self):
        _validate(self, {'warmup_steps': _at_least(0), 'steps_per_block': _at_least(1), 'utd': _POSITIVE,
                         'demo_ratio': (lambda v: 0 <= v <= 1, 'in [0, 1]'), 'replay_capacity': _at_least(1),
                         'seed': _at_least(0)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'SwfpConfig':
        """From nested plain values (YAML); ``ConfigError`` names the dotted key of an unknown or invalid setting."""
        d = dict(d)
        subs = {'flow': FlowConfig, 'block': BlockConfig, 'critic': CriticConfig}
        _check_keys(cls, d, '')
        kwargs = {}
        for name, sub in subs.items():
            values = d.pop(name, None) or {}
            if not isinstance(values, dict):
                raise ConfigError(name, f'expected a mapping of {name} settings, got {values!r}')
            _check_keys(sub, values, f'{name}.')
            try:
                kwargs[name] = sub(**values)
            except ConfigError as e:
                raise ConfigError(f'{name}.{e.key}', e.problem) from None
        return cls(**kwargs, **d)


def _check_keys(cls, values: dict, prefix: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f'did you mean {prefix}{close[0]}? ' if close else ''
            group = f'{prefix[:-1]} ' if prefix else 'top-level '
            raise ConfigError(f'{prefix}{key}', f'unknown setting ({hint}valid {group}settings: {", ".join(valid)})')


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)
