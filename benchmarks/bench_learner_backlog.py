"""Learner backlog of the default sim_finetune graph (lockstep, the package's config files), with the default pacing
(policy.yaml's max_learner_backlog) and with pacing off. Prints a final JSON line.

The graph runs under `swfp up sim_finetune` (default) or, with ``--launcher ros2-launch``, under real
`ros2 launch swfp_ros sim_finetune.launch.py` (needs a ROS 2 install with swfp_ros in a sourced colcon workspace).

Per setting: transitions/s reaching the learner, and the backlog it reports on /swfp/learner_backlog (transitions
received but not yet trained on): median, 99th percentile and maximum over the run, and the value at its end.

Usage: python benchmarks/bench_learner_backlog.py [--seconds 90] [--launcher swfp-up|ros2-launch]
Uses an untrained BC checkpoint of the default size (timing does not depend on the weights).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


LAUNCHERS = {'swfp-up': lambda: [str(Path(sys.executable).parent / 'swfp'), 'up', 'sim_finetune'],
             'ros2-launch': lambda: ['ros2', 'launch', 'swfp_ros', 'sim_finetune.launch.py']}


def run(ckpt: Path, seconds: float, tmp: Path, pacing: int | None, launcher: str) -> dict:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, Int64

    args = [f'checkpoint:={ckpt}', f'checkpoint_dir:={tmp / f"learner_{pacing}"}', 'device:=cpu']
    if pacing is not None:
        from swfp_ros.paths import config_path
        from swfp_ros.train.graph_demo import _config_dir
        import yaml
        learner = yaml.safe_load(config_path('learner.yaml').read_text())['/**']['ros__parameters']['swfp']
        args.append(f'config:={_config_dir(tmp / f"config_{pacing}", learner, {"max_learner_backlog": pacing})}')
    up = subprocess.Popen([*LAUNCHERS[launcher](), *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp)
    rclpy.init()
    node = rclpy.create_node('bench_backlog')
    backlog, transitions = [], []
    node.create_subscription(Int64, '/swfp/learner_backlog', lambda m: backlog.append(int(m.data)),
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    node.create_subscription(Float64MultiArray, '/swfp/transition', lambda m: transitions.append(time.monotonic()),
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    try:
        deadline = time.monotonic() + 120
        while not transitions and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        t0 = time.monotonic()
        backlog.clear()
        n0 = len(transitions)
        while time.monotonic() - t0 < seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
        rate = (len(transitions) - n0) / (time.monotonic() - t0)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        os.killpg(up.pid, signal.SIGINT)
        up.wait(120)
    b = np.array(backlog or [0])
    return {'transitions_per_s': rate, 'backlog_p50': float(np.percentile(b, 50)),
            'backlog_p99': float(np.percentile(b, 99)), 'backlog_max': int(b.max()), 'backlog_end': int(b[-1])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=90.0)
    ap.add_argument('--launcher', choices=sorted(LAUNCHERS), default='swfp-up')
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
    save_policy(str(tmp / 'bc.pt'), Cascade(FlowPolicy(obs_dim, 7)), ObsNormalizer(obs_dim), version=0)
    result = {'seconds': args.seconds, 'launcher': args.launcher}
    for name, pacing in (('default', None), ('off', 0)):
        for k, v in run(tmp / 'bc.pt', args.seconds, tmp, pacing, args.launcher).items():
            result[f'{name}_{k}'] = v
    for k, v in result.items():
        print(f'{k:32s} {v:.3f}' if isinstance(v, float) else f'{k:32s} {v}')
    print(json.dumps(result))


if __name__ == '__main__':
    main()
