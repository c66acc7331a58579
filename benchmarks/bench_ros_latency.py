"""ROS-graph benchmark: obs -> action latency through ROS vs raw inference, lockstep env steps/s through the graph vs
in-process, and control-tick jitter and the longest tick gap while block updates are swapped in (five in 8 s). Prints a
final JSON line.

Usage: python benchmarks/bench_ros_latency.py [--steps 400] [--device cpu]
Uses an untrained FlowPolicy checkpoint of the default size (timing does not depend on the weights).
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
CONFIG = ROOT / 'config'


def make_checkpoint(path, obs_dim):
    from swfp_ros.algo.blocks import Cascade
    from swfp_ros.algo.checkpoint import save_policy
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.normalize import ObsNormalizer
    save_policy(str(path), Cascade(FlowPolicy(obs_dim, 7)), ObsNormalizer(obs_dim), version=0)


def untrained_checkpoint(directory, task: str = 'panda_reach') -> str:
    """An untrained default-size policy for ``task`` written to ``directory``/policy.pt (throughput does not depend on
    the weights); returns its path."""
    from swfp_ros.sim import TASKS
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / 'policy.pt'
    make_checkpoint(path, 14 + len(TASKS[task][1].task_labels))
    return str(path)


def start(exe, params: dict, env, namespace: str = ''):
    import yaml
    f = tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False)
    yaml.safe_dump({'/**': {'ros__parameters': params}}, f)
    f.close()
    base = CONFIG / ('policy.yaml' if exe == 'policy_node' else 'sim_bridge.yaml')
    cmd = [str(Path(sys.executable).parent / exe), '--ros-args', *(['-r', f'__ns:=/{namespace}'] if namespace else []),
           '--params-file', str(base), '--params-file', f.name]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def pct(x, q):
    return float(np.percentile(np.asarray(x) * 1e3, q)) if len(x) else float('nan')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=400)
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(60, 101)))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, UInt8MultiArray

    from swfp_ros.algo.blocks import RefinementBlock
    from swfp_ros.algo.checkpoint import load_policy
    from swfp_ros.algo.serialize import BlockUpdate
    from swfp_ros.ros import messages as M
    from swfp_ros.ros.qos import TASK_QOS, UPDATE_QOS
    from swfp_ros.sim import TASKS, make_env

    labels = TASKS['panda_reach'][1].task_labels
    obs_dim = 14 + len(labels)
    tmp = Path(tempfile.mkdtemp())
    ckpt = tmp / 'policy.pt'
    make_checkpoint(ckpt, obs_dim)
    result = {'device': args.device}

    # 1. raw inference and the in-process runner
    rt = load_policy(str(ckpt), args.device)
    env = make_env('panda_reach')
    obs, _ = env.reset(seed=0)
    raw = []
    for _ in range(50):
        rt.act(obs)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        t = time.perf_counter()
        a = rt.act(obs)
        raw.append(time.perf_counter() - t)
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            obs, _ = env.reset()
    inproc_sps = args.steps / (time.perf_counter() - t0)
    result.update(raw_inference_ms_p50=pct(raw, 50), raw_inference_ms_p99=pct(raw, 99),
                  inprocess_steps_per_s=inproc_sps)

    env_vars = dict(os.environ)
    rclpy.init()
    node = rclpy.create_node('bench')
    procs = []
    try:
        # 2. lockstep graph throughput
        trans, lock_status = [], []
        node.create_subscription(DiagnosticArray, '/swfp/status',
                                 lambda m: lock_status.append(m) if m.status[0].name.endswith('policy_node') else None,
                                 10)
        node.create_subscription(Float64MultiArray, '/swfp/transition', lambda m: trans.append(time.perf_counter()),
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        procs.append(start('sim_bridge', {}, env_vars))
        procs.append(start('policy_node', {'checkpoint': str(ckpt), 'device': args.device,
                                            'max_learner_backlog': 0}, env_vars))
        deadline = time.monotonic() + 60
        while len(trans) < 20 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        n0, t0 = len(trans), time.perf_counter()
        while len(trans) < n0 + args.steps and time.monotonic() < deadline + 60:
            rclpy.spin_once(node, timeout_sec=0.05)
        graph_sps = (len(trans) - n0) / (time.perf_counter() - t0)
        result.update(graph_lockstep_steps_per_s=graph_sps, graph_to_inprocess_ratio=graph_sps / inproc_sps)
        t = time.monotonic()
        while not lock_status and time.monotonic() - t < 3.0:
            rclpy.spin_once(node, timeout_sec=0.05)
        if lock_status:   # inside the policy node: observation arrival -> action published, lockstep
            vals = {kv.key: kv.value for kv in lock_status[-1].status[0].values}
            result.update(lockstep_node_obs_to_action_ms_p50=float(vals['obs_to_action_ms_p50']),
                          lockstep_node_obs_to_action_ms_p99=float(vals['obs_to_action_ms_p99']))
        for p in procs:
            stop(p)
        procs.clear()

        # 3. realtime: obs -> action latency through ROS, tick jitter with a block swap
        js_pub = node.create_publisher(JointState, '/joint_states', qos_profile_sensor_data)
        task_pub = node.create_publisher(Float64MultiArray, '/swfp/task', TASK_QOS)
        upd_pub = node.create_publisher(UInt8MultiArray, '/swfp/policy_update', UPDATE_QOS)
        acts, status = [], []
        node.create_subscription(Float64MultiArray, '/swfp/action', lambda m: acts.append(time.perf_counter()),
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, '/swfp/status', lambda m: status.append(m), 10)
        procs.append(start('policy_node', {'checkpoint': str(ckpt), 'device': args.device, 'mode': 'realtime',
                                           'control_rate': 50.0, 'stale_timeout_s': 1.0}, env_vars))
        names, pos, vel, eff = env.unwrapped.joint_state()
        task_pub.publish(M.task_msg(labels, env.unwrapped.task_vector()))
        deadline = time.monotonic() + 60
        while node.count_subscribers('/joint_states') < 1 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)

        # latency: publish a joint state, measure time to the next action (policy acts on its 50 Hz tick, so this
        # includes up to one tick of waiting: "tick-aligned"); the policy node's own obs_to_action figure (status)
        # measures from the observation's arrival or the tick, whichever is later, to the publication.
        lat = []
        for i in range(150):
            js_pub.publish(M.joint_state_msg(names, pos, vel, eff))
            n, t = len(acts), time.perf_counter()
            while len(acts) == n and time.perf_counter() - t < 1.0:
                rclpy.spin_once(node, timeout_sec=0.001)
            if len(acts) > n:
                lat.append(acts[-1] - t)
            time.sleep(0.005)
        result.update(ros_obs_to_action_ms_p50=pct(lat, 50), ros_obs_to_action_ms_p99=pct(lat, 99))

        def ticks(seconds, swaps=0):
            """Tick intervals over ``seconds`` of joint states, with ``swaps`` block updates spread over them; also
            the longest interval ending within 1 s after each swap was published."""
            acts.clear()
            t0 = time.perf_counter()
            swap_times = [t0 + seconds * (i + 1) / (swaps + 1) for i in range(swaps)]
            sent = []
            while time.perf_counter() < t0 + seconds:
                js_pub.publish(M.joint_state_msg(names, pos, vel, eff))
                if len(sent) < swaps and time.perf_counter() > swap_times[len(sent)]:
                    block = RefinementBlock(obs_dim, 7, 128, 2, 0.1)
                    update = BlockUpdate.from_block(track.version + 1, block, track.digest, 0.0125)
                    track.apply_update(update)
                    upd_pub.publish(M.update_msg(update.to_bytes()))
                    sent.append(time.perf_counter())
                rclpy.spin_once(node, timeout_sec=0.005)
            t = np.asarray(acts)
            per_swap = [float(np.diff(t)[(t[1:] > ts) & (t[1:] < ts + 1.0)].max(initial=0.0)) for ts in sent]
            return np.diff(t), per_swap
        track = load_policy(str(ckpt), 'cpu')   # the node's policy, for the blocks' versions and parent digests
        track.compile_updates = False           # no compile thread in the measuring process
        base, _ = ticks(3.0)
        swap, per_swap = ticks(8.0, swaps=5)
        result.update(tick_period_ms_nominal=20.0,
                      tick_jitter_ms_p99_baseline=pct(np.abs(base - 0.02), 99),
                      tick_max_gap_ms_baseline=float(base.max() * 1e3) if base.size else float('nan'),
                      tick_jitter_ms_p99_with_swaps=pct(np.abs(swap - 0.02), 99),
                      tick_max_gap_ms_per_swap=[round(g * 1e3, 1) for g in per_swap])
        t = time.monotonic()
        while time.monotonic() - t < 1.5:
            rclpy.spin_once(node, timeout_sec=0.05)
        if status:
            vals = {kv.key: kv.value for kv in status[-1].status[0].values}
            result.update(node_inference_ms_p50=float(vals['inference_ms_p50']),
                          node_inference_ms_p99=float(vals['inference_ms_p99']),
                          node_obs_to_action_ms_p50=float(vals['obs_to_action_ms_p50']),
                          node_obs_to_action_ms_p99=float(vals['obs_to_action_ms_p99']),
                          policy_version_after_swap=int(vals['policy_version']))
    finally:
        for p in procs:
            stop(p)
        node.destroy_node()
        rclpy.try_shutdown()
    for k, v in result.items():
        print(f'{k:36s} {v:.3f}' if isinstance(v, float) else f'{k:36s} {v}')
    print(json.dumps(result))


if __name__ == '__main__':
    main()
