"""Time of a block update against naive fine-tuning as the number of Euler steps K grows: a block does not
back-propagate through the base flow (docs/algorithm.md §3).

    python benchmarks/bench_block_cost.py [--repeats 3]

A default block update (300 gradient steps of 256 on a pool of 4096 states, 3x256 critic) back-propagates through
the block only: its gradient steps cost the same at K = 4 and K = 32; the only K-dependent part is one no-grad pass of
the pool through the K Euler steps (sampling π_n). Naive fine-tuning back-propagates through all K steps. Each figure is
the minimum of --repeats runs in CPU time of this process (on shared cores wall-clock measures the other jobs too), one
torch thread; the ratios are measured within this one run. The memory side of the
claim is a test (test/algo/test_memory_compute.py: saved-tensor bytes are deterministic). Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.config import BlockConfig, FlowConfig
from swfp_ros.algo.flow import FlowPolicy, mlp
from swfp_ros.algo.jko import train_block
from swfp_ros.algo.naive import naive_loss

OBS, ACT = 8, 4


def min_time(fn, repeats: int) -> float:
    best = float('inf')
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def flow(K: int) -> FlowPolicy:
    torch.manual_seed(0)
    return FlowPolicy(OBS, ACT, FlowConfig(hidden=256, layers=3, euler_steps=K))


def block_update_time(K: int, q_fn, repeats: int) -> tuple[float, float]:
    """(whole update, its gradient steps): the gradient steps are the whole minus a 0-step update (sampling and
    validation only)."""
    cascade, states = Cascade(flow(K)), torch.randn(BlockConfig().pool_size, OBS)
    run = lambda cfg: train_block(cascade, q_fn, states, cfg, None, torch.Generator().manual_seed(0))  # noqa: E731
    total = min_time(lambda: run(BlockConfig()), repeats)
    return total, total - min_time(lambda: run(BlockConfig(train_steps=0)), repeats)


def naive_update_time(K: int, q_fn, repeats: int, steps: int = 5) -> float:
    cascade = Cascade(flow(K).requires_grad_(True))
    opt = torch.optim.Adam(cascade.base.parameters(), lr=1e-4)
    states = torch.randn(256, OBS)

    def run():
        for _ in range(steps):
            loss = naive_loss(cascade, q_fn, states, 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return min_time(run, repeats) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    critic = mlp(OBS + ACT, 256, 3, 1, layer_norm=True).requires_grad_(False)
    q_fn = lambda s, a: critic(torch.cat([s, a], -1)).squeeze(-1)  # noqa: E731
    figures = {}
    for K in (4, 32):
        total, grad_steps = block_update_time(K, q_fn, args.repeats)
        figures[f'block_s_K{K}'], figures[f'block_gradient_steps_s_K{K}'] = total, grad_steps
        figures[f'naive_step_s_K{K}'] = naive_update_time(K, q_fn, args.repeats)
    figures['block_ratio_K32_K4'] = figures['block_s_K32'] / figures['block_s_K4']
    figures['block_gradient_steps_ratio_K32_K4'] = \
        figures['block_gradient_steps_s_K32'] / figures['block_gradient_steps_s_K4']
    figures['naive_step_ratio_K32_K4'] = figures['naive_step_s_K32'] / figures['naive_step_s_K4']
    for K in (4, 32):
        print(f"K={K:>2}: block update {figures[f'block_s_K{K}']:.2f} s (gradient steps "
              f"{figures[f'block_gradient_steps_s_K{K}']:.2f} s); naive step {figures[f'naive_step_s_K{K}'] * 1e3:.0f} ms")
    print(f"K 4 -> 32: block x{figures['block_ratio_K32_K4']:.2f} (gradient steps "
          f"x{figures['block_gradient_steps_ratio_K32_K4']:.2f}), naive x{figures['naive_step_ratio_K32_K4']:.2f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
