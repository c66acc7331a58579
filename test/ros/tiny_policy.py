"""Tiny real checkpoints and a small SWFP config for the ROS tests (the real algorithm, sized to run in seconds)."""
from __future__ import annotations

from pathlib import Path

import torch

from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.checkpoint import save_policy
from swfp_ros.algo.config import FlowConfig
from swfp_ros.algo.flow import FlowPolicy
from swfp_ros.algo.normalize import ObsNormalizer

# learner.yaml's `swfp:` section for tests: warm-up and blocks after a few dozen transitions, small nets, quick blocks.
SMALL_SWFP = {
    'warmup_steps': 64, 'steps_per_block': 64, 'utd': 0.5,
    'critic': {'hidden': 32, 'layers': 2, 'batch_size': 32},
    'block': {'hidden': 32, 'layers': 2, 'train_steps': 20, 'batch_size': 64, 'pool_size': 256,
              'compaction_steps': 50},
}


def write_bc_checkpoint(path: Path, obs_dim: int, act_dim: int = 7, seed: int = 0) -> Path:
    """An (untrained) small FlowPolicy as a BC policy checkpoint: what `swfp pretrain` writes."""
    torch.manual_seed(seed)
    flow = FlowPolicy(obs_dim, act_dim, FlowConfig(hidden=32, layers=2))
    save_policy(str(path), Cascade(flow), ObsNormalizer(obs_dim), version=0)
    return Path(path)
