"""Real-arm graph benchmark: `swfp up real_arm mock_arm:=true` (policy node in realtime + task node + a mock
ros2_control arm publishing joint_states at 100 Hz), with and without the asynchronous next chunk. Prints a final
JSON line.

Figures, per setting (``async_chunks`` true / false):
  node_obs_to_command_ms_p50/p99   inside the policy node: from the tick (with the freshest joint state) or the joint
                                   state's arrival, whichever is later, to the command's publication (its status)
  chunk_start_delay_ms_p50/p99     tick -> publication of a chunk's first step (the chunk boundary)
  chunk_step_delay_ms_p50/p99      tick -> publication of a later step of the chunk
  measurement_age_ms_p50/p99       outside: a command's arrival minus the stamp of the newest joint state published
                                   before it (the age of the measurement the arm is commanded from; includes up to
                                   one 10 ms joint-state period)
  command_interval_ms_p1/p99/max   outside: time between consecutive commands (nominal 50 ms at 20 Hz)

Usage: python benchmarks/bench_real_arm.py [--seconds 30] [--chunk 4] [--device cpu]
Uses an untrained FlowPolicy of the default size with chunks of ``--chunk`` actions (timing does not depend on the
weights); the goal is fixed and in reach.
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


def make_checkpoint(path, obs_dim, chunk):
    from swfp_ros.algo.blocks import Cascade
    from swfp_ros.algo.checkpoint import save_policy
    from swfp_ros.algo.config import FlowConfig
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.normalize import ObsNormalizer
    save_policy(str(path), Cascade(FlowPolicy(obs_dim, 7 * chunk, FlowConfig(chunk=chunk))), ObsNormalizer(obs_dim),
                version=0)


def pct(x, q):
    return float(np.percentile(np.asarray(x), q)) if len(x) else float('nan')


def run(setting: bool, ckpt: Path, seconds: float, device: str, tmp: Path) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from swfp_ros.train.graph_demo import _config_dir
    cfg = _config_dir(tmp / f'config_{setting}', {}, {'async_chunks': setting})
    up = subprocess.Popen([str(Path(sys.executable).parent / 'swfp'), 'up', 'real_arm', 'mock_arm:=true',
                           'dry_run:=false', f'checkpoint:={ckpt}', f'config:={cfg}', f'device:={device}',
                           'goal:=0.5,0.1,0.3'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    rclpy.init()
    node = rclpy.create_node('bench_real_arm')
    js, cmds, status = [], [], []
    node.create_subscription(JointState, '/joint_states',
                             lambda m: js.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9),
                             qos_profile_sensor_data)
    node.create_subscription(Float64MultiArray, '/forward_position_controller/commands',
                             lambda m: cmds.append(time.time()), QoSProfile(depth=1000,
                                                                              reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, '/swfp/status',
                             lambda m: status.append(m) if m.status[0].name == '/policy_node' else None, 10)
    try:
        deadline = time.monotonic() + 120
        while len(cmds) < 40 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        js.clear()
        cmds.clear()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            rclpy.spin_once(node, timeout_sec=0.01)
        values = {kv.key: kv.value for kv in status[-1].status[0].values} if status else {}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
    stamps = np.array(js)
    ages = [(t - stamps[stamps <= t].max()) * 1e3 for t in cmds if np.any(stamps <= t)]
    gaps = np.diff(cmds) * 1e3
    out = {'commands': len(cmds)}
    for key in ('obs_to_action_ms', 'chunk_start_delay_ms', 'chunk_step_delay_ms', 'inference_ms'):
        for q in ('p50', 'p99'):
            out[f'node_{key}_{q}'] = float(values.get(f'{key}_{q}', 'nan'))
    out.update(measurement_age_ms_p50=pct(ages, 50), measurement_age_ms_p99=pct(ages, 99),
               command_interval_ms_p1=pct(gaps, 1), command_interval_ms_p99=pct(gaps, 99),
               command_interval_ms_max=float(gaps.max()) if gaps.size else float('nan'),
               prefetched_chunks=int(values.get('prefetched_chunks', 0)),
               prefetch_late=int(values.get('prefetch_late', 0)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=30.0)
    ap.add_argument('--chunk', type=int, default=4)
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(60, 101)))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    from swfp_ros.sim import TASKS
    tmp = Path(tempfile.mkdtemp())
    ckpt = tmp / 'policy.pt'
    make_checkpoint(ckpt, 14 + len(TASKS['panda_reach'][1].task_labels), args.chunk)
    result = {'chunk': args.chunk, 'device': args.device, 'seconds': args.seconds}
    for setting in (True, False):
        for k, v in run(setting, ckpt, args.seconds, args.device, tmp).items():
            result[f'{"async" if setting else "sync"}_{k}'] = v
    for k, v in result.items():
        print(f'{k:40s} {v:.3f}' if isinstance(v, float) else f'{k:40s} {v}')
    print(json.dumps(result))


if __name__ == '__main__':
    main()
