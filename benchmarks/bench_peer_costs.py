"""Training cost per env step of the SB3-based methods (SAC from scratch, DSRL, residual RL), interleaved in one
process so that the ratios hold on a shared machine.

    python benchmarks/bench_peer_costs.py [--tasks panda_reach cube_single] [--steps 600] [--rounds 2]

Per task: a small BC checkpoint (the cost does not depend on its quality: the default 3x256 flow, K = 4), then
``--rounds`` rounds of (SAC, DSRL, residual), each learning ``--steps`` env steps after a 100-step warm-up with the
benchmark's settings (PeerConfig defaults; SAC with SB3's defaults as in baselines.train_sac). Evaluations excluded.
Prints ms per env step and the ratio to SAC from scratch; the last line is JSON.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from swfp_ros.algo.checkpoint import load_policy
from swfp_ros.algo.config import FlowConfig
from swfp_ros.sim import make_env
from swfp_ros.train.demos import collect_demos
from swfp_ros.train.peers import PeerConfig, make_peer
from swfp_ros.train.pretrain import pretrain

WARMUP = 100


def ms_per_step(model, steps: int) -> float:
    model.learn(total_timesteps=WARMUP)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return 1e3 * (time.perf_counter() - start) / steps


def build(method: str, task: str, ckpt: str):
    from stable_baselines3 import SAC
    if method == 'sac':
        return SAC('MlpPolicy', make_env(task), learning_starts=WARMUP, seed=0, device='cpu', verbose=0)
    model, _ = make_peer(method, task, load_policy(ckpt, device='cpu', seed=0), PeerConfig(learning_starts=WARMUP))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', nargs='+', default=['panda_reach', 'cube_single'])
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--rounds', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            demos, _ = collect_demos(task, 3, 0.3, 0.0, seed=0, progress=False)
            ckpt = str(Path(tmp) / f'{task}.pt')
            pretrain(demos, ckpt, FlowConfig(), steps=50, progress=False)
            times = {m: [] for m in ('sac', 'dsrl', 'residual')}
            for _ in range(args.rounds):
                for method in times:
                    times[method].append(ms_per_step(build(method, task, ckpt), args.steps))
            figures[task] = {m: round(float(np.mean(t)), 1) for m, t in times.items()}
            print(f'{task:12s} ms per env step: ' + ', '.join(
                f'{m} {v:.1f} ({v / figures[task]["sac"]:.2f}x SAC)' for m, v in figures[task].items()))
    print(json.dumps(figures))


if __name__ == '__main__':
    main()
