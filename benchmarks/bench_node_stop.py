"""How fast each node process ends after a Ctrl-C: SIGINT -> its 'stopped in' log line (its own cleanup done) ->
process exit, per node (its executable's entry point, the package's config files, an untrained default-size BC).

ros2 launch SIGKILLs a node 10 s after its SIGINT by default (the graph gives the learner 30 s), so the exit must
not wait for the interpreter's finalisation, which the nodes skip (swfp_ros/ros/process.py: end_process). Each node
runs both ways, interleaved: as shipped, and with end_process's os._exit replaced by sys.exit (the interpreter's
normal exit, finalisation included, as before end_process).

Usage: python benchmarks/bench_node_stop.py [--repeats 3]     (prints a table, then a JSON line)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NODES = {   # executable -> (config file, parameter overrides)
    'sim_bridge': ('sim_bridge.yaml', {}),
    'task_node': ('task_node.yaml', {}),
    'policy_node': ('policy.yaml', {'checkpoint': '{bc}', 'device': 'cpu'}),
    'learner_node': ('learner.yaml', {'base_checkpoint': '{bc}', 'checkpoint_dir': '{tmp}/ckpt_{i}', 'device': 'cpu'}),
    'recorder_node': ('recorder.yaml', {'output': '{tmp}/bag_{i}', 'topics': ['/swfp/status']}),
}


def stop_once(executable: str, bc: Path, tmp: Path, i: int, finalise: bool) -> dict:
    import yaml
    from swfp_ros.paths import config_path
    config, params = NODES[executable]
    params = {k: v.format(bc=bc, tmp=tmp, i=i) if isinstance(v, str) else v for k, v in params.items()}
    overrides = tmp / f'{executable}_{i}.yaml'
    overrides.write_text(yaml.safe_dump({'/**': {'ros__parameters': {**params, 'status_period': 0.2}}}))
    patch = 'import os, sys; os._exit = sys.exit; ' if finalise else ''
    cmd = [sys.executable, '-c', f'{patch}from swfp_ros.ros.process import {executable}; {executable}()',
           '--ros-args', '--params-file', str(config_path(config)), '--params-file', str(overrides)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1', 'RCUTILS_LOGGING_BUFFERED_STREAM': '1'})
    seen: dict[str, float] = {}

    def pump():
        for raw in proc.stdout:
            if b': stopped in ' in raw:
                seen.setdefault('stopped in', time.monotonic())
    threading.Thread(target=pump, daemon=True).start()
    running = _wait_for_status(f'/{executable}', 120.0)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(120)
    t_exit = time.monotonic()
    return {'running': running, 'rc': rc, 'cleanup_s': seen.get('stopped in', float('nan')) - t0,
            'after_cleanup_s': t_exit - seen.get('stopped in', float('nan')), 'sigint_to_exit_s': t_exit - t0}


_node = None


def _wait_for_status(name: str, timeout: float) -> bool:
    """Until a /swfp/status from the node ``name`` arrives."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    global _node
    if _node is None:
        rclpy.init()
        _node = rclpy.create_node('bench_node_stop')
        _node.seen = set()
        _node.create_subscription(DiagnosticArray, '/swfp/status',
                                  lambda m: _node.seen.update(s.name for s in m.status), 10)
    _node.seen.clear()
    deadline = time.monotonic() + timeout
    while name not in _node.seen and time.monotonic() < deadline:
        rclpy.spin_once(_node, timeout_sec=0.05)
    return name in _node.seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(60, 101)))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    from swfp_ros.algo.blocks import Cascade
    from swfp_ros.algo.checkpoint import save_policy
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.normalize import ObsNormalizer
    from swfp_ros.sim import TASKS
    tmp = Path(tempfile.mkdtemp())
    obs_dim = 14 + len(TASKS['panda_reach'][1].task_labels)
    bc = tmp / 'bc.pt'
    save_policy(str(bc), Cascade(FlowPolicy(obs_dim, 7)), ObsNormalizer(obs_dim), version=0)
    result = {}
    print(f'{"node":14s} {"SIGINT->stopped":>16s} {"stopped->exit":>14s} {"with finalisation":>18s}   '
          f'(medians of {args.repeats}, s)')
    for executable in NODES:
        runs = {False: [], True: []}
        for i in range(args.repeats):
            for finalise in (False, True):
                r = stop_once(executable, bc, tmp, 2 * i + finalise, finalise)
                if not r['running'] or r['rc'] != 0:
                    raise SystemExit(f'{executable}: run {i} did not come up or ended with status {r["rc"]}')
                runs[finalise].append(r)
        med = {'cleanup_s': statistics.median(r['cleanup_s'] for r in runs[False]),
               'after_cleanup_s': statistics.median(r['after_cleanup_s'] for r in runs[False]),
               'after_cleanup_with_finalisation_s': statistics.median(r['after_cleanup_s'] for r in runs[True])}
        result[executable] = med
        print(f'{executable:14s} {med["cleanup_s"]:16.2f} {med["after_cleanup_s"]:14.2f} '
              f'{med["after_cleanup_with_finalisation_s"]:18.2f}')
    print(json.dumps(result))


if __name__ == '__main__':
    main()
