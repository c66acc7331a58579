"""Scale-out: N lockstep actors (sim bridge + policy node, namespaced actor0..) feeding one learner, the sim_finetune
graph as `swfp demo` runs it, for N = 1, 2, 4, 8. Per N, over a fixed window after every actor has started: env steps/s
(all actors), transitions/s stored by the learner, its backlog (journaled, not yet stored), the policy version lag of
the transitions (learner's latest published version minus the version that acted, when a transition reaches the
learner's topic), CPU per process, and the bytes/s crossing DDS: transitions (actors -> learner) and policy updates
(learner -> every actor). Prints a table, writes a PNG and a JSON next to it.

Usage: python benchmarks/bench_scale_out.py [--actors 1 2 4 8] [--seconds 30] [--out outputs/bench_scale_out]
Uses an untrained default-size flow (throughput does not depend on the weights); the learner's settings are the demo's
(warm-up 1000 env steps, a block every 500) with the demo's pacing (actors wait while the learner's backlog > 8).
Saturates the machine: on a shared machine run it once.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))


@contextlib.contextmanager
def leased_domain():
    """A ROS_DOMAIN_ID no test or benchmark on this machine uses meanwhile (the tests' lease); discovery on this
    host."""
    sys.path.insert(0, str(ROOT / 'test' / 'ros'))
    from conftest import DomainLease
    lease = DomainLease()
    os.environ.update(ROS_DOMAIN_ID=str(lease.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    try:
        yield lease.domain_id
    finally:
        lease.release()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    except FileNotFoundError:
        return float('nan')
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def serialized_bytes(msg) -> int:
    from rclpy.serialization import serialize_message
    return len(serialize_message(msg))


def run_once(n: int, ckpt: str, out: Path, seconds: float, pacing: int, warm_timeout: float = 240.0) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Float64MultiArray, UInt8MultiArray

    from swfp_ros.algo.serialize import BlockUpdate
    from swfp_ros.ros import messages as M
    from swfp_ros.ros.bringup import Bringup
    from swfp_ros.ros.qos import REWARD_QOS, TRANSITION_QOS, UPDATE_QOS
    from swfp_ros.train.graph_demo import DEMO_SWFP, _config_dir, graph_nodes

    run_dir = out / f'n{n}'
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = _config_dir(run_dir / 'config', DEMO_SWFP, {'max_learner_backlog': pacing})
    nodes = graph_nodes(ckpt, str(run_dir / 'learner'), str(cfg), 'panda_reach', n, 0)
    logf = open(run_dir / 'graph.log', 'w')
    up_learner = Bringup([x for x in nodes if not x.namespace], grace=30.0, out=logf)
    up_actors = Bringup([x for x in nodes if x.namespace], grace=30.0, out=logf)

    lock = threading.Lock()
    st = {'steps': [0] * n, 'learner': [], 'version': 0, 'lags': [], 'trans': 0, 'trans_bytes': 0, 'upd': 0,
          'upd_bytes': 0, 'window': False}

    def on_reward(i):
        def cb(msg):
            with lock:
                st['steps'][i] += 1
        return cb

    def on_status(msg):
        for s in msg.status:
            if s.name.endswith('learner_node'):
                v = {kv.key: kv.value for kv in s.values}
                with lock:
                    st['learner'].append((time.monotonic(), v))

    def on_transition(msg):
        t = M.transition_from_msg(msg)
        size = serialized_bytes(msg) if not st['trans_bytes'] else st['trans_bytes'] // max(st['trans'], 1)
        with lock:
            if st['window']:
                st['lags'].append(st['version'] - t.version)
                st['trans'] += 1
                st['trans_bytes'] += size

    def on_update(msg):
        version = BlockUpdate.from_bytes(M.update_from_msg(msg)).version
        size = serialized_bytes(msg)
        with lock:
            st['version'] = max(st['version'], version)
            if st['window']:
                st['upd'] += 1
                st['upd_bytes'] += size

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('swfp_scale_monitor', context=context)
    for i in range(n):
        node.create_subscription(Float64MultiArray, f'/actor{i}/swfp/reward', on_reward(i), REWARD_QOS)
    node.create_subscription(DiagnosticArray, '/swfp/status', on_status, 50)
    node.create_subscription(UInt8MultiArray, '/swfp/policy_update', on_update, UPDATE_QOS)
    node.create_subscription(Float64MultiArray, '/swfp/transition', on_transition, TRANSITION_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    row = {'actors': n}
    try:
        up_learner.start()
        t0 = time.monotonic()
        while not st['learner']:
            if time.monotonic() - t0 > warm_timeout:
                raise TimeoutError('the learner did not come up')
            time.sleep(0.2)
        up_actors.start()
        while min(st['steps']) < 20:                  # every actor is stepping
            if time.monotonic() - t0 > warm_timeout:
                raise TimeoutError(f'not every actor stepped within {warm_timeout:.0f} s: {st["steps"]}')
            for p in up_learner.procs + up_actors.procs:
                if p.popen.poll() is not None:
                    raise RuntimeError(f'{p.label} exited ({p.popen.returncode}); see {run_dir / "graph.log"}')
            time.sleep(0.2)
        procs = {p.label: p.popen.pid for p in up_learner.procs + up_actors.procs}
        with lock:
            st['window'] = True
            steps0, n_status0 = sum(st['steps']), len(st['learner'])
        cpu0, w0 = {k: proc_cpu_s(pid) for k, pid in procs.items()}, time.monotonic()
        time.sleep(seconds)
        with lock:
            st['window'] = False
            steps1 = sum(st['steps'])
            statuses = st['learner'][n_status0:]
            lags, trans_bytes, upd, upd_bytes = list(st['lags']), st['trans_bytes'], st['upd'], st['upd_bytes']
        wall = time.monotonic() - w0
        cpu = {k: (proc_cpu_s(pid) - cpu0[k]) / wall for k, pid in procs.items()}
        stored = [(t, int(v['transitions'])) for t, v in statuses]
        pending = [int(v['pending']) for _, v in statuses]
        row.update(
            env_steps_per_s=(steps1 - steps0) / wall,
            learner_transitions_per_s=(stored[-1][1] - stored[0][1]) / (stored[-1][0] - stored[0][0])
            if len(stored) > 1 else float('nan'),
            backlog_mean=float(np.mean(pending)) if pending else float('nan'),
            backlog_max=int(max(pending)) if pending else -1,
            version_lag_mean=float(np.mean(lags)) if lags else float('nan'),
            version_lag_p99=float(np.percentile(lags, 99)) if lags else float('nan'),
            learner_version=int(statuses[-1][1]['version']) if statuses else -1,
            transition_bytes_per_s=trans_bytes / wall, update_bytes_per_s=upd_bytes / wall,
            update_bytes_per_s_all_actors=upd_bytes * n / wall, updates=upd,
            cpu_learner=sum(v for k, v in cpu.items() if 'learner' in k),
            cpu_policy_mean=float(np.mean([v for k, v in cpu.items() if 'policy' in k])),
            cpu_sim_mean=float(np.mean([v for k, v in cpu.items() if 'sim_bridge' in k])),
            cpu_total=float(sum(cpu.values())), window_s=wall)
    finally:
        rc = up_actors.shutdown()
        rc = up_learner.shutdown() or rc
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        logf.close()
    row['clean_shutdown'] = rc == 0
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    n = [r['actors'] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(n, [r['env_steps_per_s'] for r in rows], 'o-', label='env steps/s (actors)')
    ax[0].plot(n, [r['learner_transitions_per_s'] for r in rows], 's--', label='transitions/s stored (learner)')
    ax[0].set_xlabel('actors')
    ax[0].legend(fontsize=8)
    ax[1].plot(n, [r['backlog_mean'] for r in rows], 'o-', label='learner backlog, mean')
    ax[1].plot(n, [r['backlog_max'] for r in rows], 's--', label='learner backlog, max')
    ax[1].plot(n, [r['version_lag_mean'] for r in rows], '^-', label='version lag, mean')
    ax[1].set_xlabel('actors')
    ax[1].legend(fontsize=8)
    ax[2].plot(n, [r['cpu_learner'] for r in rows], 'o-', label='learner')
    ax[2].plot(n, [r['cpu_policy_mean'] for r in rows], 's-', label='policy node (each)')
    ax[2].plot(n, [r['cpu_sim_mean'] for r in rows], '^-', label='sim bridge (each)')
    ax[2].set_xlabel('actors')
    ax[2].set_ylabel('CPU (cores)')
    ax[2].legend(fontsize=8)
    for a in ax:
        a.set_xticks(n)
        a.grid(alpha=0.3)
    fig.suptitle('sim_finetune graph, panda_reach lockstep, one learner')
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--actors', type=int, nargs='+', default=[1, 2, 4, 8])
    ap.add_argument('--seconds', type=float, default=30.0)
    ap.add_argument('--pacing', type=int, default=None, help='max_learner_backlog (default: the demo\'s)')
    ap.add_argument('--out', default='outputs/bench_scale_out')
    args = ap.parse_args()
    from bench_ros_latency import untrained_checkpoint
    from swfp_ros.train.graph_demo import PACING
    out = Path(args.out)
    ckpt = untrained_checkpoint(out)
    rows = []
    with leased_domain():
        for n in args.actors:
            rows.append(run_once(n, ckpt, out, args.seconds, PACING if args.pacing is None else args.pacing))
            print(json.dumps(rows[-1]), flush=True)
    cols = [('actors', '{:>6d}'), ('env_steps_per_s', '{:>9.1f}'), ('learner_transitions_per_s', '{:>9.1f}'),
            ('backlog_mean', '{:>8.1f}'), ('backlog_max', '{:>7d}'), ('version_lag_mean', '{:>7.2f}'),
            ('transition_bytes_per_s', '{:>9.0f}'), ('update_bytes_per_s_all_actors', '{:>10.0f}'),
            ('cpu_learner', '{:>6.2f}'), ('cpu_policy_mean', '{:>6.2f}'), ('cpu_sim_mean', '{:>6.2f}'),
            ('cpu_total', '{:>6.2f}')]
    heads = ['actors', 'steps/s', 'stored/s', 'backlog', 'max', 'lag', 'trans B/s', 'upd B/s', 'cpu L', 'cpu P',
             'cpu S', 'cpu all']
    widths = [len(f.format(1 if 'd}' in f else 1.0)) for _, f in cols]
    print(' '.join(h.rjust(w) for h, w in zip(heads, widths)))
    for r in rows:
        print(' '.join(f.format(r[k]) for k, f in cols))
    plot(rows, out / 'scale_out.png')
    (out / 'scale_out.json').write_text(json.dumps({'seconds': args.seconds, 'rows': rows}, indent=1))
    print(f'wrote {out / "scale_out.png"}, {out / "scale_out.json"}')


if __name__ == '__main__':
    main()
