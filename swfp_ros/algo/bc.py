"""Behaviour cloning of the base flow policy by conditional flow matching (§1)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .config import FlowConfig, resolve_device
from .flow import FlowPolicy
from .normalize import ObsNormalizer


def fit_flow(flow: FlowPolicy, s: torch.Tensor, a: torch.Tensor, steps: int, batch: int, lr: float,
             generator: torch.Generator | None = None, log_every: int = 0, writer=None, progress: bool | None = False,
             tag: str = 'bc', x0: torch.Tensor | None = None, should_stop=None) -> list[float]:
    """Flow-matching regression of `flow` onto pairs (s, a) (normalised obs, [-1,1] actions), with the noise x0 that
    produced each a when given (distillation); returns the loss curve. ``should_stop()`` True ends it early (the
    caller checks it again and discards the partial fit)."""
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    losses = []
    for step in tqdm(range(steps), desc=tag, disable=None if progress is None else not progress):  # None: a tty
        if should_stop is not None and should_stop():
            break
        idx = torch.randint(len(s), (min(batch, len(s)),), generator=generator, device=s.device)
        loss = flow.loss(s[idx], a[idx], generator, None if x0 is None else x0[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if writer is not None and (step % max(log_every, 1) == 0 or step == steps - 1):
            writer.add_scalar(f'{tag}/flow_matching_loss', losses[-1], step)
    return losses


def train_bc(obs: np.ndarray, actions: np.ndarray, cfg: FlowConfig | None = None, steps: int = 20_000,
             batch: int = 256, lr: float = 3e-4, log_dir: str | None = None, progress: bool | None = True,
             device: str = 'auto', seed: int = 0,
             should_stop: Callable[[], bool] | None = None) -> tuple[FlowPolicy, ObsNormalizer, dict]:
    """BC on arrays obs [N, obs_dim], actions [N, H*act_size] in [-1, 1]. Returns (flow, normaliser, metrics).
    ``should_stop()``: polled before each step; True ends the fit there with KeyboardInterrupt, its log closed."""
    obs, actions = np.asarray(obs, np.float32), np.asarray(actions, np.float32)
    if obs.ndim != 2 or actions.ndim != 2 or len(obs) != len(actions) or len(obs) == 0:
        raise ValueError(f'train_bc: need obs [N, obs_dim] and actions [N, act_dim] with the same N>0, '
                         f'got {obs.shape} and {actions.shape}')
    if not (np.isfinite(obs).all() and np.isfinite(actions).all()):
        raise ValueError('train_bc: obs/actions contain NaN or inf')
    if np.abs(actions).max() > 1.0 + 1e-6:
        raise ValueError(f'train_bc: actions must be scaled to [-1, 1], max |a| = {np.abs(actions).max():.3f}')
    dev = resolve_device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    torch.manual_seed(seed)  # network initialisation
    norm = ObsNormalizer(obs.shape[1]).fit(obs).to(dev)
    flow = FlowPolicy(obs.shape[1], actions.shape[1], cfg or FlowConfig()).to(dev)
    s = norm(torch.as_tensor(obs, device=dev))
    a = torch.as_tensor(actions, device=dev)
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter  # only when asked: importing tensorboard is slow
        writer = SummaryWriter(log_dir)
    try:
        losses = fit_flow(flow, s, a, steps, batch, lr, gen, log_every=100, writer=writer, progress=progress,
                          should_stop=should_stop)
    finally:
        if writer is not None:
            writer.close()
    if len(losses) < steps:
        raise KeyboardInterrupt
    flow.eval()
    tail = losses[-min(100, len(losses)):]
    return flow, norm, {'final_loss': float(np.mean(tail)), 'losses': losses}
