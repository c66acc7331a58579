"""One refinement = one JKO step = one small flow block, trained under a hard W2 trust region (§3)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .blocks import Cascade, RefinementBlock
from .config import BlockConfig

QFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (s [B,obs], a [B,act]) -> Q [B]

LOG_LAMBDA_MAX = 10.0  # keeps the dual finite when the constraint is hard to meet for long


@dataclass
class BlockReport:
    """Held-out diagnostics of one trained block (§9: these explained every failure of the prototype)."""
    accepted: bool
    reason: str               # 'ok', 'shrunk', 'trust_region', 'no_improvement', 'non_finite', 'stopped'
    w2_bound: float           # E||M(a)-a||² on held-out states: an upper bound on W2²(π_{n+1}, π_n); compare delta²
    w2_state_p95: float       # 95th percentile over held-out states of the per-state E_a||M(a)-a||²
    delta_sq: float
    shrink: float             # factor applied to τ (1.0 = not shrunk)
    logdet: float | None      # E log|det ∇_a M|: entropy change of the block (None at α = 0: not computed)
    delta_q: float            # critic-predicted E[Q(s, M(a)) - Q(s, a)] on held-out states (executed, i.e. clipped)
    improvement: float        # predicted free-energy decrease delta_q/q_scale + α·logdet (= delta_q/q_scale at α=0)
    spread: float             # per-coordinate std of the new actions within a state, mean over held-out states
    frac_beyond: float        # fraction of action coordinates beyond [-1, 1] before the final clip
    log_lambda: float         # dual variable after training (carried to the next block)
    q_scale: float            # divisor of the Q term
    train_loss: float

    def to_dict(self) -> dict:
        return asdict(self)


def grad_norm_scale(q_fn: QFn, s: torch.Tensor, a: torch.Tensor, clip: bool) -> torch.Tensor:
    """E||∇_a Q(s, a)|| at the executed actions (clipped when ``clip``): the Q term's unit (BlockConfig.q_scale)."""
    with torch.enable_grad():
        a_req = a.detach().clone().requires_grad_(True)
        grad, = torch.autograd.grad(q_fn(s, a_req.clamp(-1.0, 1.0) if clip else a_req).sum(), a_req)
    return grad.norm(dim=-1).mean().clamp_min(1e-6)


def block_loss(block: RefinementBlock, q_fn: QFn, s: torch.Tensor, a: torch.Tensor, log_lambda: float | torch.Tensor,
               alpha: float, q_scale: float, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """L = -Q(s, clip(M(a)))/scale - α·log|det ∇_a M| + λ·||M(a) - a||²; returns (loss, per-sample displacement²).

    a ~ π_n(·|s) is a constant here: nothing back-propagates through the base flow or earlier blocks.
    """
    m = block(s, a)
    d2 = (m - a).pow(2).sum(-1)
    # Q of the executed (clipped) action: the critic has only seen actions in [-1, 1], and past the bounds its
    # extrapolation is what a block would otherwise climb (measured on push: a growing fraction of saturated
    # coordinates with positive predicted ΔQ and falling real return).
    executed = m.clamp(-1.0, 1.0) if clip else m
    lam = torch.as_tensor(log_lambda, dtype=d2.dtype, device=d2.device).exp()
    loss = -q_fn(s, executed).mean() / q_scale + lam * d2.mean()
    if alpha > 0:  # the exact Jacobian doubles the cost (§9): skip it when it has no weight
        loss = loss - alpha * block.logabsdet(s, a).mean()
    return loss, d2


@torch.no_grad()
def _validate(block: RefinementBlock, q_fn: QFn, s: torch.Tensor, a: torch.Tensor, per_state: int, clip: bool,
              alpha: float) -> dict:
    """Held-out statistics; ``s``/``a`` hold ``per_state`` consecutive actions of each held-out state."""
    m = block(s, a)
    fin = (lambda x: x.clamp(-1, 1)) if clip else (lambda x: x)
    d2 = (m - a).pow(2).sum(-1).view(-1, per_state)
    spread = fin(m).view(-1, per_state, m.shape[-1]).std(1).mean() if per_state > 1 else torch.zeros(())
    stats = torch.stack([d2.mean(), torch.quantile(d2.mean(1), 0.95), (q_fn(s, fin(m)) - q_fn(s, fin(a))).mean(),
                         spread, (m.abs() > 1).float().mean()]).tolist()   # one host sync
    # no graph is kept: the Jacobian's own backward pass runs without create_graph under no_grad
    logdet = block.logabsdet(s, a).mean().item() if alpha > 0 else None
    return dict(zip(('w2_bound', 'w2_state_p95', 'delta_q', 'spread', 'frac_beyond'), stats), logdet=logdet)


def train_block(cascade: Cascade, q_fn: QFn, states: torch.Tensor, cfg: BlockConfig, log_lambda: float | None = None,
                generator: torch.Generator | None = None, should_stop: Callable[[], bool] | None = None
                ) -> tuple[RefinementBlock | None, BlockReport]:
    """Train the next block on normalised `states` (distinct) against a frozen critic; return (block or None, report).
    ``should_stop`` is asked before each train step: True abandons the block (report reason 'stopped').

    A random `holdout_frac` of the states (shuffled with `generator`) is held out, each with `holdout_actions` action
    samples. Accept rule: held-out displacement <= tolerance·δ² and its per-state 95th percentile <=
    tolerance·state_p95·δ², else shrink τ to meet δ² and state_p95·δ² and re-measure; reject if still violated, if
    anything is non-finite, or if the predicted improvement on held-out states is not positive. Improvement is
    ΔQ/scale + α·E logdet, the block's own objective without the proximity term: for α = 0 it is the sign of the
    critic-predicted ΔQ (§9); for α > 0 a block that trades a little Q for entropy towards the Boltzmann target is an
    improvement too (rejecting it would stall the analytic test of §7 short of the target covariance).
    """
    if states.ndim != 2 or states.shape[1] != cascade.obs_dim or len(states) < 2:
        raise ValueError(f'train_block: expected states [N>=2, {cascade.obs_dim}], got {tuple(states.shape)}')
    device = states.device
    delta_sq = cfg.delta ** 2
    # λ starts at the JKO proximity weight 1/(2τ) with τ = δ and is then the learnt multiplier, carried from block to
    # block. It may fall to a tenth of that (a JKO step of at most 10δ) but not to zero: with no proximity term at all a
    # block whose constraint is inactive jumps to its estimate of the minimiser and overshoots.
    log_lambda_min = math.log(1.0 / (2.0 * cfg.delta)) - math.log(10.0)
    log_lambda = log_lambda_min + math.log(10.0) if log_lambda is None else max(log_lambda, log_lambda_min)
    # The pool may arrive ordered (online states, then demonstrations): the held-out states are a random subset.
    order = torch.randperm(len(states), generator=generator, device=device)
    n_hold = max(1, int(len(states) * cfg.holdout_frac))
    s_tr = states[order[n_hold:]]
    s_ho = states[order[:n_hold]].repeat_interleave(cfg.holdout_actions, 0)
    with torch.no_grad():  # π_n samples, frozen, pre-clip
        a_tr = cascade.sample(s_tr, generator=generator, clip=False)
        a_ho = cascade.sample(s_ho, generator=generator, clip=False)

    # once per block: the critic and the pool are fixed while it trains
    scale = grad_norm_scale(q_fn, s_tr, a_tr, cascade.clip).item() if cfg.q_scale == 'grad_norm' else 1.0

    block = RefinementBlock.from_config(cascade.obs_dim, cascade.act_dim, cfg).to(device)
    opt = torch.optim.Adam(block.u.parameters(), lr=cfg.lr)
    loss = torch.zeros(())
    log_lambda_t = torch.tensor(log_lambda, device=device)   # on the device: no host sync per step
    for _ in range(cfg.train_steps):
        if should_stop is not None and should_stop():
            nan = float('nan')
            return None, BlockReport(accepted=False, reason='stopped', w2_bound=nan, w2_state_p95=nan,
                                     delta_sq=delta_sq, shrink=1.0, logdet=nan, delta_q=nan, improvement=nan,
                                     spread=nan, frac_beyond=nan, log_lambda=log_lambda, q_scale=scale, train_loss=nan)
        idx = torch.randint(len(s_tr), (min(cfg.batch_size, len(s_tr)),), generator=generator, device=device)
        loss, d2 = block_loss(block, q_fn, s_tr[idx], a_tr[idx], log_lambda_t, cfg.alpha, scale, cascade.clip)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Dual ascent on log λ for E||M(a)-a||² <= δ²; the violation is normalised and clipped so one noisy batch
        # cannot move λ by more than a factor e^dual_step.
        viol = (d2.detach().mean() / delta_sq - 1.0).clamp(-1.0, 1.0)
        log_lambda_t = (log_lambda_t + cfg.dual_step * viol).clamp(log_lambda_min, LOG_LAMBDA_MAX)
    block.requires_grad_(False)

    def validate() -> dict:
        st = _validate(block, q_fn, s_ho, a_ho, cfg.holdout_actions, cascade.clip, cfg.alpha)
        return {**st, 'improvement': st['delta_q'] / scale + cfg.alpha * (st['logdet'] or 0.0)}

    def within(st: dict, slack: float) -> bool:
        return st['w2_bound'] <= slack * delta_sq and st['w2_state_p95'] <= slack * cfg.state_p95 * delta_sq

    stats, shrink = validate(), 1.0
    finite = all(math.isfinite(v) for v in stats.values() if v is not None) and \
        all(torch.isfinite(p).all() for p in block.parameters())
    reason = 'ok'
    if finite and not within(stats, cfg.tolerance):
        # the displacement is exactly quadratic in τ: one factor brings both measures to their nominal bounds
        shrink = min(1.0, math.sqrt(delta_sq / max(stats['w2_bound'], 1e-30)),
                     math.sqrt(cfg.state_p95 * delta_sq / max(stats['w2_state_p95'], 1e-30)))
        block.tau.mul_(shrink)
        stats, reason = validate(), 'shrunk'
    if not finite:
        reason = 'non_finite'
    elif not within(stats, cfg.tolerance):
        reason = 'trust_region'
    elif not stats['improvement'] > 0:
        reason = 'no_improvement'
    accepted = reason in ('ok', 'shrunk')
    report = BlockReport(accepted=accepted, reason=reason, delta_sq=delta_sq, shrink=shrink,
                         log_lambda=log_lambda_t.item(), q_scale=scale, train_loss=float(loss.item()), **stats)
    return (block if accepted else None), report
