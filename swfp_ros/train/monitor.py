"""TensorBoard scalars of an online run, shared by ``swfp finetune`` and the learner node (``log_dir``).

The x axis is env steps everywhere. Tags:
    eval/success_rate, eval/mean_return            each evaluation (finetune)
    eval/q_bias, eval/q_mc_corr                    the critic against the evaluation returns (finetune)
    critic/td_loss, critic/q_mean                  the latest critic update
    block/w2_bound, block/delta_sq, block/accepted, block/lambda, block/delta_q
                                                   each trained block's held-out report (lambda = exp(log lambda))
    learner/replay_size, learner/blocks_accepted
    time/wall_s, time/critic_ms_per_update, time/block_s
"""
from __future__ import annotations

import math
from pathlib import Path


class ScalarLog:
    """A SummaryWriter behind named groups; ``None`` log_dir makes every call a no-op."""

    def __init__(self, log_dir: str | Path | None):
        self.writer = None
        if log_dir:
            from torch.utils.tensorboard import SummaryWriter  # only when asked: importing tensorboard is slow
            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, group: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(f'{group}/{key}', float(value), step)

    def critic(self, metrics: dict, step: int) -> None:
        if metrics:
            self.scalars('critic', {'td_loss': metrics.get('td_loss'), 'q_mean': metrics.get('q_mean')}, step)

    def block(self, report, step: int) -> None:
        self.scalars('block', {'w2_bound': report.w2_bound, 'delta_sq': report.delta_sq,
                               'accepted': float(report.accepted), 'lambda': math.exp(report.log_lambda),
                               'delta_q': report.delta_q}, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
