"""Robots per sim-bridge process: N lockstep robots (panda_reach), each driven by its own policy node in namespace
actorI, simulated either by N sim bridge processes (one robot each), by ONE bridge process with ``robots:
[actor0, ...]``, or by N composed sim actors (``sim_actor``: each robot's bridge and policy node in one process, as
``compose:=true`` starts them); beside them, in this process, the in-process loop over N envs (one batched ``act`` per step of all
N). Per N and layout: env steps/s of all robots over a fixed window after every robot stepped, CPU cores per process
kind, and the graph / in-process ratio. No learner: the policy nodes run unpaced (``max_learner_backlog: 0``).

Usage: python benchmarks/bench_robots_per_bridge.py [--robots 1 2 4] [--seconds 20] [--out outputs/bench_robots]
Uses an untrained default-size flow (throughput does not depend on the weights). Prints a table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
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


LAYOUTS = ('separate', 'shared', 'composed')


def start_composed(ckpt: str, task: str, namespace: str, actor_id: int, env, act_on_executor: bool = True):
    """A sim_actor process with the command line ``swfp up sim_finetune compose:=true`` gives it (graph.resolve),
    unpaced (no learner) and without /clock."""
    from swfp_ros.ros import graph as G
    rn = next(r for r in G.resolve(G.SIM_FINETUNE, {'compose': 'true', 'namespace': namespace, 'task': task,
                                                   'checkpoint': ckpt, 'device': 'cpu', 'actor_id': str(actor_id),
                                                   'seed': str(1000 * actor_id), 'use_sim_time': 'false'})
              if r.executable == 'sim_actor')
    bridge, policy = rn.components
    bridge.parameters['publish_clock'] = False
    policy.parameters.update(max_learner_backlog=0, act_on_executor=act_on_executor)
    return subprocess.Popen([str(Path(sys.executable).parent / 'sim_actor'), *rn.ros_args()], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def graph(node, ckpt: str, n: int, layout: str, seconds: float, task: str = 'panda_reach',
          act_on_executor: bool = True) -> dict:
    """Env steps/s of all N robots through the graph in ``layout`` (LAYOUTS), and CPU cores per process kind (a
    composed process counts as a bridge: its policy's share cannot be told apart).

    Steps are counted from the bridges' own /swfp/status (their ``steps`` counter, once a second), so that counting
    adds no subscriber to the topics of the step exchange."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    bridges_seen: dict[str, list[tuple[float, int]]] = {}     # bridge status name -> [(arrival, steps)]

    def on_status(msg):
        for st in msg.status:
            if st.name.endswith('/sim_bridge'):
                steps = next(int(kv.value) for kv in st.values if kv.key == 'steps')
                bridges_seen.setdefault(st.name, []).append((time.perf_counter(), steps))
    sub = node.create_subscription(DiagnosticArray, '/swfp/status', on_status, 100)
    namespaces = [f'actor{i}' for i in range(n)]
    env = dict(os.environ)
    if layout == 'composed':
        bridges = [start_composed(ckpt, task, ns, i, env, act_on_executor) for i, ns in enumerate(namespaces)]
    elif layout == 'shared':
        bridges = [start('sim_bridge', {'task': task, 'robots': namespaces, 'publish_clock': False}, env)]
    else:
        bridges = [start('sim_bridge', {'task': task, 'seed': 1000 * i, 'publish_clock': False}, env, ns)
                   for i, ns in enumerate(namespaces)]
    policies = [] if layout == 'composed' else [
        start('policy_node', {'task': task, 'checkpoint': ckpt, 'device': 'cpu', 'actor_id': i,
                              'max_learner_backlog': 0}, env, ns) for i, ns in enumerate(namespaces)]
    try:
        deadline = time.monotonic() + 120
        while len(bridges_seen) < len(bridges) or min(seen[-1][1] for seen in bridges_seen.values()) < 20 * n:
            if time.monotonic() > deadline:
                raise RuntimeError(f'robots did not start stepping: {bridges_seen}')
            rclpy.spin_once(node, timeout_sec=0.05)
        cpu0 = {p.pid: proc_cpu_s(p.pid) for p in bridges + policies}
        t0 = time.perf_counter()
        first = {name: len(seen) for name, seen in bridges_seen.items()}     # statuses after this one count
        while time.perf_counter() - t0 < seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
        wall = time.perf_counter() - t0
        cpu = {p.pid: (proc_cpu_s(p.pid) - cpu0[p.pid]) / wall for p in bridges + policies}
        deadline = time.monotonic() + 30
        while any(len(seen) < first[name] + 2 for name, seen in bridges_seen.items()):   # two statuses each
            if time.monotonic() > deadline:
                raise RuntimeError(f'a bridge stopped reporting its steps: {bridges_seen}')
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        for p in bridges + policies:
            stop(p)
        node.destroy_subscription(sub)
    rate = 0.0
    for name, seen in bridges_seen.items():
        (ta, sa), (tb, sb) = seen[first[name]], seen[-1]
        rate += (sb - sa) / (tb - ta)
    return {'steps_per_s': rate, 'processes': len(bridges) + len(policies),
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
                for layout in LAYOUTS:
                    g = graph(node, ckpt, n, layout, args.seconds)
                    row.update({f'{layout}_{k}': v for k, v in g.items()},
                               **{f'{layout}_to_inprocess': g['steps_per_s'] / inproc})
                print(json.dumps(row), flush=True)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    titles = {'separate': 'N bridges', 'shared': '1 bridge', 'composed': 'N sim_actors'}
    print(f'{"robots":>6} {"in-proc/s":>9} | ' + ' | '.join(
        f'{titles[k] + ": steps/s":>21} {"ratio":>5} {"procs":>5} {"cpu B+P":>9}' for k in LAYOUTS))
    for r in rows:
        cells = [f'{r["robots"]:>6d} {r["inprocess_steps_per_s"]:>9.1f}']
        for layout in LAYOUTS:
            cells.append(f'{r[f"{layout}_steps_per_s"]:>21.1f} '
                         f'{r[f"{layout}_to_inprocess"]:>5.2f} {r[f"{layout}_processes"]:>5d} '
                         f'{r[f"{layout}_cpu_bridges"]:>4.2f}+{r[f"{layout}_cpu_policies"]:<4.2f}')
        print(' | '.join(cells))
    (out / 'robots_per_bridge.json').write_text(json.dumps({'seconds': args.seconds, 'rows': rows}, indent=1))
    print(json.dumps({'rows': rows}))


if __name__ == '__main__':
    main()
