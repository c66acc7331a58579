"""Robots per sim-bridge process: N lockstep robots (panda_reach), each driven by its own policy node in namespace
actorI, simulated either by N sim bridge processes (one robot each) or by ONE bridge process with ``robots:
[actor0, ...]``; beside them, in this process, the in-process loop over N envs (one batched ``act`` per step of all
N). Per N and layout: env steps/s of all robots over a fixed window after every robot stepped, CPU cores per process
kind, and the graph / in-process ratio. No learner: the policy nodes run unpaced (``max_learner_backlog: 0``).

Usage: python benchmarks/bench_robots_per_bridge.py [--robots 1 2 4] [--seconds 20] [--out outputs/bench_robots]
Uses an untrained default-size flow (throughput does not depend on the weights). Prints a table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
from bench_ros_latency import start, stop, untrained_checkpoint  # noqa: E402
from bench_scale_out import leased_domain, proc_cpu_s  # noqa: E402


def in_process(ckpt: str, n: int, steps: int, task: str = 'panda_reach') -> float:
    """Env steps/s of the in-process loop: one act() for all N observations, then each env's step."""
    from swfp_ros.algo.checkpoint import load_policy
    from swfp_ros.sim import make_env
    rt = load_policy(ckpt, 'cpu')
    envs = [make_env(task) for _ in range(n)]
    obs = np.stack([e.reset(seed=1000 * i)[0] for i, e in enumerate(envs)])
    for _ in range(20):
        rt.act(obs)
    t0 = time.perf_counter()
    for _ in range(max(1, steps // n)):
        actions = rt.act(obs)
        for i, env in enumerate(envs):
            o, _, term, trunc, _ = env.step(actions[i])
            obs[i] = env.reset()[0] if term or trunc else o
    return max(1, steps // n) * n / (time.perf_counter() - t0)


def graph(node, ckpt: str, n: int, shared: bool, seconds: float, task: str = 'panda_reach') -> dict:
    """Env steps/s of all N robots through the graph, and CPU cores per process kind."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray
    counts = [0] * n
    subs = []
    for i in range(n):
        def on_reward(_msg, i=i):
            counts[i] += 1
        subs.append(node.create_subscription(Float64MultiArray, f'/actor{i}/swfp/reward', on_reward,
                                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)))
    namespaces = [f'actor{i}' for i in range(n)]
    env = dict(os.environ)
    if shared:
        bridges = [start('sim_bridge', {'task': task, 'robots': namespaces, 'publish_clock': False}, env)]
    else:
        bridges = [start('sim_bridge', {'task': task, 'seed': 1000 * i, 'publish_clock': False}, env, ns)
                   for i, ns in enumerate(namespaces)]
    policies = [start('policy_node', {'task': task, 'checkpoint': ckpt, 'device': 'cpu', 'actor_id': i,
                                      'max_learner_backlog': 0},
                      env, ns) for i, ns in enumerate(namespaces)]
    try:
        deadline = time.monotonic() + 120
        while min(counts) < 20:
            if time.monotonic() > deadline:
                raise RuntimeError(f'robots did not start stepping: {counts}')
            rclpy.spin_once(node, timeout_sec=0.05)
        cpu0 = {p.pid: proc_cpu_s(p.pid) for p in bridges + policies}
        s0, t0 = sum(counts), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
        wall = time.perf_counter() - t0
        steps = sum(counts) - s0
        cpu = {p.pid: (proc_cpu_s(p.pid) - cpu0[p.pid]) / wall for p in bridges + policies}
    finally:
        for p in bridges + policies:
            stop(p)
        for s in subs:
            node.destroy_subscription(s)
    return {'steps_per_s': steps / wall, 'processes': len(bridges) + len(policies),
            'cpu_bridges': sum(cpu[p.pid] for p in bridges), 'cpu_policies': sum(cpu[p.pid] for p in policies)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--robots', type=int, nargs='+', default=[1, 2, 4])
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument('--out', default='outputs/bench_robots')
    args = ap.parse_args()
    out = Path(args.out)
    ckpt = untrained_checkpoint(out)
    torch.set_num_threads(1)     # as the policy node runs (torch_threads: 1)
    rows = []
    with leased_domain():
        import rclpy
        rclpy.init()
        node = rclpy.create_node('bench_robots')
        try:
            for n in args.robots:
                inproc = in_process(ckpt, n, 1000)
                row = {'robots': n, 'inprocess_steps_per_s': inproc}
                rows.append(row)
                for layout, shared in (('separate', False), ('shared', True)):
                    g = graph(node, ckpt, n, shared, args.seconds)
                    row.update({f'{layout}_{k}': v for k, v in g.items()},
                               **{f'{layout}_to_inprocess': g['steps_per_s'] / inproc})
                print(json.dumps(row), flush=True)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    print(f'{"robots":>6} {"in-proc/s":>9} | {"N bridges: steps/s":>18} {"ratio":>5} {"procs":>5} {"cpu B+P":>9} | '
          f'{"1 bridge: steps/s":>17} {"ratio":>5} {"procs":>5} {"cpu B+P":>9}')
    for r in rows:
        cells = [f'{r["robots"]:>6d} {r["inprocess_steps_per_s"]:>9.1f}']
        for layout in ('separate', 'shared'):
            cells.append(f'{r[f"{layout}_steps_per_s"]:>{18 if layout == "separate" else 17}.1f} '
                         f'{r[f"{layout}_to_inprocess"]:>5.2f} {r[f"{layout}_processes"]:>5d} '
                         f'{r[f"{layout}_cpu_bridges"]:>4.2f}+{r[f"{layout}_cpu_policies"]:<4.2f}')
        print(' | '.join(cells))
    (out / 'robots_per_bridge.json').write_text(json.dumps({'seconds': args.seconds, 'rows': rows}, indent=1))
    print(json.dumps({'rows': rows}))


if __name__ == '__main__':
    main()
