"""The actor's update checks against real SWFP blocks: how far a learner's accepted blocks move actions on the probe
states an actor uses, relative to the trust region they claim (this sets ``UpdateChecks.probe_slack``), and what a
check costs. Prints one row per block and a final JSON line.

    python benchmarks/bench_update_checks.py [--task panda_reach] [--env-steps 6000] [--delta 0.1 0.3]

Per delta: noisy reach demos -> BC (as bench_finetune prepares reach) -> in-process SWFP fine-tuning (warm-up 1k, a
block every 500 env steps). The runner's PolicyRuntime applies every block through the full checks, so a legitimate
block refused by them would stop the run. Afterwards, for each block i of the final cascade: E||M_i(a) - a||^2 on
(a) the learner's held-out states (its report), (b) the newest replay states (what an actor has just observed: the
runtime's probe states) and (c) synthetic normalised N(0, I) states (the fallback before any observation), each
divided by the block's claim (tolerance * delta^2).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--task', default='panda_reach')
    ap.add_argument('--env-steps', type=int, default=6000)
    ap.add_argument('--delta', type=float, nargs='+', default=[0.1, 0.3])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default=None, help='work folder (default: a temporary one)')
    args = ap.parse_args()
    torch.set_num_threads(1)
    from swfp_ros.algo.checkpoint import load_learner
    from swfp_ros.algo.config import FlowConfig
    from swfp_ros.algo.runtime import PROBE_SEED, PolicyRuntime, UpdateChecks
    from swfp_ros.algo.serialize import BlockUpdate, policy_digest
    from swfp_ros.train.demos import collect_demos
    from swfp_ros.train.finetune import CHECKPOINT, RunnerConfig, finetune
    from swfp_ros.train.pretrain import pretrain
    from swfp_ros.train.settings import load_swfp_config

    work = Path(args.out or tempfile.mkdtemp(prefix='bench_update_checks_'))
    bc = work / 'bc.pt'
    if not bc.is_file():
        demos, _ = collect_demos(args.task, 30, 1.0, 0.6, seed=args.seed, progress=False)
        pretrain(demos, bc, FlowConfig(), steps=3000, seed=args.seed, progress=False)
    rows, check_ms = [], {}
    for delta in args.delta:
        out = work / f'delta{delta}'
        swfp = load_swfp_config(overrides=['warmup_steps=1000', 'steps_per_block=500', f'block.delta={delta}'])
        t0 = time.perf_counter()
        finetune(str(bc), str(out), RunnerConfig(task=args.task, env_steps=args.env_steps, eval_every=args.env_steps,
                                                 eval_episodes=10, seed=args.seed), swfp, log=lambda *_: None)
        run_s = time.perf_counter() - t0
        learner = load_learner(str(out / CHECKPOINT))
        claim = swfp.block.tolerance * delta ** 2
        reports = [r for r in learner.reports if r.accepted]
        policy, norm = learner.policy, learner.normalizer
        gen = torch.Generator().manual_seed(PROBE_SEED)
        newest = learner.replay.data['obs'][:len(learner.replay)][-256:]     # what the actor observed last
        recent = norm(torch.as_tensor(newest))
        synthetic = torch.randn(256, policy.obs_dim, generator=gen).clamp(-3, 3)
        for i, block in enumerate(policy.blocks):
            before = type(policy)(policy.base, list(policy.blocks[:i]), clip=policy.clip)
            d2 = {}
            for name, s in (('recent', recent), ('synthetic', synthetic)):
                with torch.no_grad():
                    a = before.sample(s, torch.randn(len(s), policy.act_dim, generator=gen), clip=False)
                    d2[name] = (block(s, a) - a).pow(2).sum(-1).mean().item()
            rows.append({'delta': delta, 'block': i + 1, 'claim': claim,
                         'heldout': reports[i].w2_bound if i < len(reports) else float('nan'),
                         'recent': d2['recent'], 'synthetic': d2['synthetic']})
            print(f"delta {delta}  block {i + 1:2d}  claim {claim:.4f}  held-out {rows[-1]['heldout']:.4f}  "
                  f"recent {d2['recent']:.4f} ({d2['recent'] / claim:.2f}x)  synthetic {d2['synthetic']:.4f} "
                  f"({d2['synthetic'] / claim:.2f}x)", flush=True)
        # the cost of one check: the last block applied onto the cascade before it, with observed probe states
        before = type(policy)(policy.base, list(policy.blocks[:-1]), clip=policy.clip)
        upd = BlockUpdate.from_block(len(policy.blocks), policy.blocks[-1], policy_digest(before, norm), claim)
        payload = upd.to_bytes()
        for probes in (64, 1) * 5:   # the probe run's share of the cost: 64 probe states vs 1
            rt = PolicyRuntime(before, norm, len(policy.blocks) - 1, 'cpu', seed=0,
                               checks=UpdateChecks(probe_states=probes))
            rt.act(newest[-64:])
            t = time.perf_counter()
            rt.apply_update(payload)
            check_ms.setdefault(probes, []).append((time.perf_counter() - t) * 1e3)
        print(f'delta {delta}: {len(policy.blocks)} blocks accepted by the runner, run {run_s:.0f} s', flush=True)
    ratios = {k: max(r[k] / r['claim'] for r in rows) for k in ('heldout', 'recent', 'synthetic')}
    print(json.dumps({'blocks': len(rows), 'max_ratio_to_claim': ratios,
                      'apply_block_ms_median': {n: float(np.median(v)) for n, v in check_ms.items()},
                      'slack': UpdateChecks().probe_slack}))


if __name__ == '__main__':
    main()
