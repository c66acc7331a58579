"""BC pre-training workspace: a demonstration dataset (or rosbags + an ingest spec) -> a policy checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..algo.bc import train_bc
from ..algo.blocks import Cascade
from ..algo.checkpoint import save_policy
from ..algo.config import FlowConfig
from ..data import DemoDataset


def pretrain(dataset: DemoDataset, out: str | Path, cfg: FlowConfig | None = None, steps: int = 5000,
             batch: int = 256, lr: float = 3e-4, seed: int = 0, device: str = 'cpu', log_dir: str | None = None,
             progress: bool | None = True, should_stop: Callable[[], bool] | None = None) -> dict:
    """Flow-matching BC on every step of ``dataset`` (targets: chunks of ``cfg.chunk`` actions); writes a policy
    checkpoint carrying the normaliser, the flow config and the dataset's labels and provenance. Returns the training
    metrics. ``should_stop()`` True ends the training early with KeyboardInterrupt, nothing written."""
    cfg = cfg or FlowConfig()
    obs, actions = dataset.stack(cfg.chunk)
    flow, normalizer, metrics = train_bc(obs, actions, cfg, steps=steps, batch=batch, lr=lr, log_dir=log_dir,
                                         progress=progress, device=device, seed=seed, should_stop=should_stop)
    save_policy(str(out), Cascade(flow), normalizer, version=0,
                extra={'task': dataset.task, 'obs_labels': dataset.obs_labels,
                       'action_labels': dataset.action_labels, 'control_rate_hz': dataset.control_rate_hz,
                       'provenance': dataset.provenance, 'bc': {'steps': steps, 'batch': batch, 'lr': lr,
                                                                'seed': seed, 'final_loss': metrics['final_loss']}})
    return {'final_loss': metrics['final_loss'], 'steps': steps, 'samples': len(obs)}
