"""BC from an ingested rosbag vs BC from the in-memory demos, on panda_reach.

    python benchmarks/bench_bc_from_bag.py [--episodes 60] [--noise 1.0] [--epsilon 0.3] [--bc-steps 3000]
                                           [--eval-episodes 50] [--seeds 0] [--storage mcap] [--out FILE.json]

One noisy scripted-expert rollout feeds both sides: it is kept as a DemoDataset (what ``collect_demos`` returns) and
written as a real rosbag2 (``write_demo_bag``: /clock, /joint_states, /swfp/task, /swfp/action, /swfp/reward,
/swfp/episode), which is then ingested with the shipped spec ``config/ingest_panda_reach.yaml``. The two datasets are
compared array by array; a BC flow policy is trained on each (same FlowConfig, seed and steps, one torch thread) and
both are evaluated, stochastic as deployed, on the same seeded episodes with ``evaluate_runtime``. Target: the two
success rates within 0.1. Prints a line per step and a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TASK = 'panda_reach'


def max_abs_diff(a, b) -> dict:
    """Max |a - b| per array of two DemoDatasets (shapes must agree)."""
    oa, aa = a.stack()
    ob, ab = b.stack()
    if oa.shape != ob.shape or aa.shape != ab.shape:
        raise SystemExit(f'datasets differ in shape: obs {oa.shape} vs {ob.shape}, actions {aa.shape} vs {ab.shape}')
    ra = np.concatenate([e.rewards for e in a])
    rb = np.concatenate([e.rewards for e in b])
    return {'obs': float(np.max(np.abs(oa - ob))), 'actions': float(np.max(np.abs(aa - ab))),
            'rewards': float(np.max(np.abs(ra - rb))),
            'episode_lengths_equal': [len(e) for e in a] == [len(e) for e in b],
            'success_equal': [e.success for e in a] == [e.success for e in b]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--episodes', type=int, default=60, help='demonstration episodes')
    ap.add_argument('--noise', type=float, default=1.0, help='expert Gaussian action noise sigma')
    ap.add_argument('--epsilon', type=float, default=0.3, help='expert random-action probability')
    ap.add_argument('--bc-steps', type=int, default=3000)
    ap.add_argument('--eval-episodes', type=int, default=50)
    ap.add_argument('--num-envs', type=int, default=8, help='evaluation envs stepped together')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0], help='demo / BC / evaluation seeds')
    ap.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    ap.add_argument('--out', help='also write the final JSON here')
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from swfp_ros.algo.checkpoint import load_policy
    from swfp_ros.algo.config import FlowConfig
    from swfp_ros.data import ingest, write_demo_bag
    from swfp_ros.paths import config_path
    from swfp_ros.sim import make_env
    from swfp_ros.train.demos import collect_demos
    from swfp_ros.train.finetune import evaluate_runtime, evaluation_seed
    from swfp_ros.train.pretrain import pretrain

    spec = config_path(f'ingest_{TASK}.yaml')
    base = make_env(TASK).unwrapped
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in args.seeds:
            timing = {}
            t0 = time.perf_counter()
            memory, records = collect_demos(TASK, args.episodes, args.noise, args.epsilon, seed=seed, progress=False)
            timing['demos_s'] = time.perf_counter() - t0

            bag = tmp / f'demos_seed{seed}'
            t0 = time.perf_counter()
            info = write_demo_bag(bag, records, joint_names=base.joint_names, task_labels=base.task_labels,
                                  control_rate_hz=base.control_rate_hz, storage=args.storage)
            timing['bag_write_s'] = time.perf_counter() - t0
            bag_bytes = sum(f.stat().st_size for f in bag.iterdir())

            t0 = time.perf_counter()
            from_bag = ingest([bag], spec, progress=False)
            timing['ingest_s'] = time.perf_counter() - t0
            diff = max_abs_diff(memory, from_bag)
            print(f'seed {seed}: {len(memory)} demos, {memory.num_steps} steps, demo success '
                  f'{memory.success_rate:.2f}; bag {info["messages"]} msgs ({bag_bytes / 1e6:.2f} MB, '
                  f'{args.storage}) -> ingested {len(from_bag)} episodes, {from_bag.num_steps} steps; max |diff| obs '
                  f'{diff["obs"]:.2e}, actions {diff["actions"]:.2e}, rewards {diff["rewards"]:.2e}', flush=True)

            side = {}
            for name, ds in (('memory', memory), ('bag', from_bag)):
                ckpt = tmp / f'bc_{name}_seed{seed}.pt'
                t0 = time.perf_counter()
                metrics = pretrain(ds, ckpt, FlowConfig(), steps=args.bc_steps, seed=seed, progress=False)
                t_bc = time.perf_counter() - t0
                t0 = time.perf_counter()
                ev = evaluate_runtime(load_policy(str(ckpt), device='cpu', seed=seed), TASK, args.eval_episodes,
                                      args.num_envs, seed=evaluation_seed(seed))
                t_eval = time.perf_counter() - t0
                side[name] = {'success_rate': ev['success_rate'], 'mean_return': round(ev['mean_return'], 3),
                              'final_loss': round(metrics['final_loss'], 4), 'bc_s': round(t_bc, 1),
                              'eval_s': round(t_eval, 1)}
                print(f'seed {seed}: BC from {name:6s}: success {ev["success_rate"]:.2f} over {args.eval_episodes} '
                      f'episodes, mean return {ev["mean_return"]:.2f}, final loss {metrics["final_loss"]:.4f}; '
                      f'BC {t_bc:.1f} s ({args.bc_steps / t_bc:.0f} steps/s), eval {t_eval:.1f} s', flush=True)
            runs.append({'seed': seed, 'demo_success': memory.success_rate, 'steps': memory.num_steps,
                         'bag_messages': info['messages'], 'bag_mb': round(bag_bytes / 1e6, 3),
                         'max_abs_diff': diff, 'memory': side['memory'], 'bag': side['bag'],
                         'success_diff': round(side['bag']['success_rate'] - side['memory']['success_rate'], 4),
                         'timing_s': {k: round(v, 3) for k, v in timing.items()}})

    sm = round(float(np.mean([r['memory']['success_rate'] for r in runs])), 4)
    sb = round(float(np.mean([r['bag']['success_rate'] for r in runs])), 4)
    worst = {k: max(r['max_abs_diff'][k] for r in runs) for k in ('obs', 'actions', 'rewards')}
    within = abs(sb - sm) <= 0.1
    print(f'BC success from memory {sm:.3f}, from the {args.storage} bag {sb:.3f}: difference {sb - sm:+.3f} '
          f'({"within" if within else "NOT within"} 0.1); max |diff| of the datasets: obs {worst["obs"]:.2e}, '
          f'actions {worst["actions"]:.2e}, rewards {worst["rewards"]:.2e}')
    result = {'benchmark': 'bc_from_bag', 'task': TASK, 'storage': args.storage, 'demo_episodes': args.episodes,
              'noise': args.noise, 'epsilon': args.epsilon, 'bc_steps': args.bc_steps,
              'eval_episodes': args.eval_episodes, 'seeds': args.seeds, 'success_memory': sm, 'success_bag': sb,
              'success_diff': round(sb - sm, 4), 'within_0_1': within, 'max_abs_diff': worst, 'runs': runs,
              'cpus': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
              'python': platform.python_version(), 'torch': torch.__version__}
    line = json.dumps(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + '\n')
    print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
