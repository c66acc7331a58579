"""Critic update and block cost of the learner, against a plain TD update, optionally against an earlier commit.

    python benchmarks/bench_critic.py [--baseline COMMIT] [--blocks 0 16] [--env-steps 3000]

Each measurement is the in-process runner's loop without the simulator: push-sized transitions (obs 23, act 7; random,
so each is its own n-step window) arrive 8 per call to ``Learner.update()``, with the default learner settings
(3x256 twin critic, batch 256, one update per 2 env steps, 5-step targets), 10k demonstration and 10k online
transitions already stored, a cascade of ``--blocks`` blocks, and a block every 1000 env steps (the benchmark's
period). As in the runner, calls that trained a block count as block time, the others as critic time. Beside it, in
the same process, the plain reference: a twin-LayerNorm 3x256 TD update of batch 256 on tensors already in memory,
next actions precomputed, in rounds alternating with the learner's. Figures are CPU time of the process (on shared
cores wall-clock measures the other jobs too; it is printed beside). With ``--baseline``, the package at that commit
(``git archive``) is measured the same way, alternating with the working tree, in separate processes. One torch
thread. Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OBS, ACT = 23, 7


def plain_update():
    """A twin-LayerNorm 3x256 TD update, batch 256, every input (next actions too) already a tensor: a step function."""
    import torch
    from torch import nn

    def net():
        layers, width = [], OBS + ACT
        for _ in range(3):
            layers += [nn.Linear(width, 256), nn.LayerNorm(256), nn.SiLU()]
            width = 256
        return nn.Sequential(*layers, nn.Linear(256, 1))

    torch.manual_seed(0)
    q1, q2 = net(), net()
    t1, t2 = net().requires_grad_(False), net().requires_grad_(False)
    params = [*q1.parameters(), *q2.parameters()]
    targets = [*t1.parameters(), *t2.parameters()]
    opt = torch.optim.Adam(params, lr=3e-4)
    b = {'obs': torch.randn(256, OBS), 'action': torch.rand(256, ACT) * 2 - 1, 'reward': torch.randn(256),
         'next_obs': torch.randn(256, OBS), 'next_action': torch.rand(256, ACT) * 2 - 1,
         'done': torch.zeros(256), 'disc': torch.full((256,), 0.99 ** 5)}

    def step():
        with torch.no_grad():
            x2 = torch.cat([b['next_obs'], b['next_action']], -1)
            y = b['reward'] + b['disc'] * (1 - b['done']) * torch.minimum(t1(x2), t2(x2)).squeeze(-1)
        x = torch.cat([b['obs'], b['action']], -1)
        loss = (q1(x).squeeze(-1) - y).pow(2).mean() + (q2(x).squeeze(-1) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, pt in zip(params, targets):
                pt.lerp_(p, 0.005)
    return step


def make_learner(blocks: int):
    """A learner as the benchmark runs it, with replay filled, a cascade of ``blocks`` blocks and a transition source."""
    import numpy as np
    import torch
    from swfp_ros.algo.blocks import RefinementBlock
    from swfp_ros.algo.config import FlowConfig, SwfpConfig
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.learner import Learner
    from swfp_ros.algo.normalize import ObsNormalizer

    rng = np.random.default_rng(0)

    def transitions(n):
        return {'obs': rng.normal(size=(n, OBS)).astype(np.float32),
                'action': rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
                'reward': rng.normal(size=n).astype(np.float32), 'next_obs': rng.normal(size=(n, OBS)).astype(np.float32),
                'terminated': rng.random(n) < 0.02, 'n_steps': np.ones(n)}

    torch.manual_seed(0)
    cfg = SwfpConfig(warmup_steps=0, steps_per_block=1000)
    learner = Learner(FlowPolicy(OBS, ACT, FlowConfig()), ObsNormalizer(OBS), cfg,
                      demo_transitions={**transitions(10_000), 'n_steps': np.full(10_000, 5)})
    learner.add_transitions(**transitions(10_000))
    learner.counters.owed_updates = 0.0
    learner.counters.next_block_at = learner.counters.env_steps + cfg.steps_per_block
    for _ in range(blocks):
        block = RefinementBlock(OBS, ACT, cfg.block.hidden, cfg.block.layers, tau=cfg.block.delta)
        torch.nn.init.normal_(block.u[-1].weight, std=0.1)
        learner.policy.append(block)
    return learner, transitions


def worker(blocks: int, env_steps: int) -> None:
    """Alternates rounds of learner calls and as many plain updates, timing both in this process's CPU time (the
    cores are shared: wall-clock under load measures the other jobs as much as this one) and in wall-clock."""
    import torch
    torch.set_num_threads(1)
    plain = plain_update()
    learner, transitions = make_learner(blocks)
    for _ in range(20):
        plain()
    cpu = {'critic': 0.0, 'block': 0.0, 'plain': 0.0}
    wall = dict(cpu)
    counts = {'critic': 0, 'block': 0, 'plain': 0}
    calls = env_steps // 8
    for first in range(0, calls, 10):
        updates_before = learner.counters.critic_updates
        for _ in range(min(10, calls - first)):
            learner.add_transitions(**transitions(8))
            before, blocks_before = learner.counters.critic_updates, learner.counters.blocks_trained
            c0, w0 = time.process_time(), time.perf_counter()
            learner.update()
            kind = 'block' if learner.counters.blocks_trained > blocks_before else 'critic'
            cpu[kind] += time.process_time() - c0
            wall[kind] += time.perf_counter() - w0
            counts[kind] += 1 if kind == 'block' else learner.counters.critic_updates - before
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(learner.counters.critic_updates - updates_before):
            plain()
            counts['plain'] += 1
        cpu['plain'] += time.process_time() - c0
        wall['plain'] += time.perf_counter() - w0
    ms = {k: 1e3 * cpu[k] / max(counts[k], 1) for k in ('critic', 'plain')}
    print(json.dumps({'blocks': blocks, 'critic_ms_per_update': ms['critic'], 'plain_ms_per_update': ms['plain'],
                      'critic_updates_per_s': 1e3 / ms['critic'], 'ratio_to_plain': ms['critic'] / ms['plain'],
                      'block_s': cpu['block'] / max(counts['block'], 1), 'blocks_trained': counts['block'],
                      'critic_updates': counts['critic'],
                      'wall_critic_ms_per_update': 1e3 * wall['critic'] / max(counts['critic'], 1),
                      'wall_plain_ms_per_update': 1e3 * wall['plain'] / max(counts['plain'], 1),
                      'wall_block_s': wall['block'] / max(counts['block'], 1)}))


def measure(source: Path, blocks: int, env_steps: int) -> dict:
    env = {**os.environ, 'PYTHONPATH': str(source), 'OMP_NUM_THREADS': '1'}
    out = subprocess.run([sys.executable, __file__, '--worker', '--blocks', str(blocks), '--env-steps',
                          str(env_steps)], cwd=source, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--baseline', help='a commit of this repository to measure as well')
    parser.add_argument('--blocks', nargs='+', type=int, default=[0, 16])
    parser.add_argument('--env-steps', type=int, default=3000)
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.blocks[0], args.env_steps)
        return 0
    sources = {'current': REPO}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            archive = subprocess.run(['git', '-C', str(REPO), 'archive', args.baseline, 'swfp_ros'],
                                     capture_output=True, check=True).stdout
            subprocess.run(['tar', '-x', '-C', tmp], input=archive, check=True)
            sources = {f'baseline {args.baseline}': Path(tmp), **sources}
        results = {}
        for blocks in args.blocks:
            for name, source in sources.items():   # alternating: both see the same machine load
                r = measure(source, blocks, args.env_steps)
                results[f'{name}, {blocks} blocks'] = r
                print(f"{name:>18}, {blocks:>2} blocks: critic {r['critic_ms_per_update']:.1f} ms/update "
                      f"({r['critic_updates_per_s']:.0f}/s, {r['ratio_to_plain']:.2f}x the plain "
                      f"{r['plain_ms_per_update']:.1f} ms), block {r['block_s']:.2f} s (CPU time; wall-clock "
                      f"{r['wall_critic_ms_per_update']:.1f} ms, plain {r['wall_plain_ms_per_update']:.1f} ms, block "
                      f"{r['wall_block_s']:.2f} s)", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
