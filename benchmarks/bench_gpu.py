"""The GPU path, measured in one short run (prepared to fit a few minutes of a borrowed GPU; each part has its own
budget). Exits 0 with a message when no CUDA device is present.

1. Inference at batch 1 on the GPU (default flow 3x256, K = 4; cascades of 0 and 16 blocks): PolicyRuntime.act,
   host->device->host included, replaying its CUDA graph (the default on cuda) and with ``cuda_graph=False`` (the
   compiled forward launched op by op), p50 / p99, and the largest difference between their deterministic actions.
2. Learner on the GPU (default sizes): critic updates/s (batch 256) and the seconds one JKO block takes (300 steps),
   with the CPU figures of the same calls for the ratio (CPU: 1 thread, fewer calls).
3. A learner checkpoint moved CPU -> GPU -> CPU: saved on CPU, resumed on cuda, trained a little, saved, resumed on
   CPU: same policy (deterministic actions equal to 1e-5 between the GPU learner and its CPU copy), same counters.
4. The policy node with ``device: cuda`` in a lockstep graph (sim bridge + policy node): env steps/s and the node's
   own inference figures (/swfp/status), the device it reports.

Usage: python benchmarks/bench_gpu.py [--quick] [--skip-graph]   (prints a final JSON line)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
OBS_DIM, ACT_DIM = 17, 7


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def act_times(rt, obs, calls: int) -> list[float]:
    for _ in range(50):
        rt.act(obs)
    torch.cuda.synchronize()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        rt.act(obs)                       # returns numpy: includes the device -> host copy (a sync)
        times.append(time.perf_counter() - t)
    return times


def inference(n_blocks: int, calls: int) -> dict:
    """PolicyRuntime.act at batch 1 on cuda, replaying its CUDA graph and running the compiled forward itself
    (cuda_graph=False), interleaved in rounds so that drifting clocks weigh on both alike."""
    from bench_inference import make_runtime
    from swfp_ros.algo.runtime import PolicyRuntime
    cpu = make_runtime(n_blocks)
    graphed = PolicyRuntime(cpu.cascade, cpu.normalizer, device='cuda', seed=0)
    plain = PolicyRuntime(cpu.cascade, cpu.normalizer, device='cuda', seed=0, cuda_graph=False)
    obs = np.random.default_rng(1).normal(size=OBS_DIM).astype(np.float32)
    t_graph, t_plain = [], []
    for _ in range(4):
        t_graph += act_times(graphed, obs, calls // 4)
        t_plain += act_times(plain, obs, calls // 4)
    diff = max(float(np.abs(graphed.act(o, deterministic=True) - plain.act(o, deterministic=True)).max())
               for o in np.random.default_rng(2).normal(size=(32, OBS_DIM)).astype(np.float32))
    return {'blocks': n_blocks, 'forward': [graphed.forward_kind, plain.forward_kind],
            'act_ms_p50': pct(t_plain, 50), 'act_ms_p99': pct(t_plain, 99),
            'cuda_graph_ms_p50': pct(t_graph, 50), 'cuda_graph_ms_p99': pct(t_graph, 99),
            'cuda_graph_max_abs_diff': diff}


def filled_learner(device: str, n: int):
    """A default-size learner on ``device`` with ``n`` random transitions and no block due (its warm-up set past
    them: the figures time the calls themselves, not the schedule)."""
    from swfp_ros.algo.config import SwfpConfig
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.learner import Learner
    from swfp_ros.algo.normalize import ObsNormalizer
    torch.manual_seed(0)
    learner = Learner(FlowPolicy(OBS_DIM, ACT_DIM), ObsNormalizer(OBS_DIM), SwfpConfig(warmup_steps=2 * n),
                      device=device)
    rng = np.random.default_rng(0)
    learner.add_transitions(rng.normal(size=(n, OBS_DIM)), rng.uniform(-1, 1, size=(n, ACT_DIM)), rng.normal(size=n),
                            rng.normal(size=(n, OBS_DIM)), np.zeros(n, bool))
    assert learner.counters.env_steps < learner.counters.next_block_at
    learner.counters.owed_updates = 0.0
    return learner


def learner_figures(device: str, critic_updates: int, blocks: int) -> dict:
    """Critic updates/s and block seconds through the learner's own calls (update() draws its minibatches and their
    next actions as a fine-tuning run does)."""
    learner = filled_learner(device, 4096)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    learner.counters.owed_updates = 5
    learner.update()
    sync()
    t = time.perf_counter()
    learner.counters.owed_updates = critic_updates
    learner.update()
    sync()
    critic_per_s = critic_updates / (time.perf_counter() - t)
    block_s = []
    for _ in range(blocks):
        sync()
        t = time.perf_counter()
        learner._improve()
        sync()
        block_s.append(time.perf_counter() - t)
    return {'device': device, 'critic_updates_per_s': critic_per_s, 'block_s': block_s,
            'critic_updates': learner.counters.critic_updates, 'blocks_accepted': learner.counters.blocks_accepted}


def checkpoint_round_trip(tmp: Path, device: str = 'cuda') -> dict:
    """Saved on CPU, resumed on ``device``, trained there (critic updates and a block), saved, resumed on CPU."""
    from swfp_ros.algo.checkpoint import load_learner, save_learner
    learner = filled_learner('cpu', 2048)
    save_learner(str(tmp / 'cpu.pt'), learner)
    t = time.perf_counter()
    moved = load_learner(str(tmp / 'cpu.pt'), device=device)
    load_s = time.perf_counter() - t
    moved.counters.owed_updates = 20
    moved.update()
    moved._improve()
    save_learner(str(tmp / 'moved.pt'), moved)
    back = load_learner(str(tmp / 'moved.pt'), device='cpu')
    s = torch.as_tensor(np.random.default_rng(1).normal(size=(64, OBS_DIM)), dtype=torch.float32)
    with torch.no_grad():
        a_moved = moved.policy.sample(moved.normalizer(s.to(device)), torch.zeros(64, ACT_DIM, device=device)).cpu()
        a_cpu = back.policy.sample(back.normalizer(s), torch.zeros(64, ACT_DIM))
    return {'load_s': load_s, 'critic_updates': back.counters.critic_updates, 'blocks': len(back.policy.blocks),
            'counters_equal': back.counters == moved.counters,
            'max_abs_action_diff': float((a_moved - a_cpu).abs().max())}


def policy_node_on_cuda(steps: int) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray

    from bench_ros_latency import start, stop, untrained_checkpoint
    from bench_scale_out import leased_domain
    ckpt = untrained_checkpoint(tempfile.mkdtemp())
    result = {}
    with leased_domain():
        rclpy.init()
        node = rclpy.create_node('bench_gpu')
        trans, status = [], []
        node.create_subscription(Float64MultiArray, '/swfp/transition', lambda m: trans.append(time.perf_counter()),
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, '/swfp/status', lambda m: status.append(m), 10)
        procs = [start('sim_bridge', {}, dict(os.environ)),
                 start('policy_node', {'checkpoint': ckpt, 'device': 'cuda', 'max_learner_backlog': 0},
                       dict(os.environ))]
        try:
            deadline = time.monotonic() + 90
            while len(trans) < 20 and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
            n0, t0 = len(trans), time.perf_counter()
            while len(trans) < n0 + steps and time.monotonic() < deadline + 60:
                rclpy.spin_once(node, timeout_sec=0.05)
            result['graph_lockstep_steps_per_s'] = (len(trans) - n0) / (time.perf_counter() - t0)
            t = time.monotonic()
            while time.monotonic() - t < 1.5:
                rclpy.spin_once(node, timeout_sec=0.05)
            for m in reversed(status):
                if m.status[0].name.endswith('policy_node'):
                    v = {kv.key: kv.value for kv in m.status[0].values}
                    result.update(device=v['device'], forward=v['forward'],
                                  node_inference_ms_p50=float(v['inference_ms_p50']),
                                  node_inference_ms_p99=float(v['inference_ms_p99']),
                                  node_obs_to_action_ms_p50=float(v['obs_to_action_ms_p50']))
                    break
        finally:
            for p in procs:
                stop(p)
            node.destroy_node()
            rclpy.try_shutdown()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='fewer calls (a smoke run)')
    ap.add_argument('--skip-graph', action='store_true', help='no ROS graph (part 4)')
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print('bench_gpu: no CUDA device here (torch.cuda.is_available() is False); nothing measured.')
        return 0
    torch.set_num_threads(1)
    calls = 300 if args.quick else 2000
    out = {'gpu': torch.cuda.get_device_name(0), 'torch': torch.__version__}
    t0 = time.perf_counter()
    out['inference'] = [inference(n, calls) for n in (0, 16)]
    for r in out['inference']:
        print(f'inference, {r["blocks"]:2d} blocks: act without CUDA graph p50 {r["act_ms_p50"]:.3f} / p99 '
              f'{r["act_ms_p99"]:.3f} ms; with it p50 {r["cuda_graph_ms_p50"]:.3f} / p99 {r["cuda_graph_ms_p99"]:.3f} ms '
              f'({r["act_ms_p50"] / r["cuda_graph_ms_p50"]:.1f}x; |diff| {r["cuda_graph_max_abs_diff"]:.1e}; '
              f'forward {r["forward"]})', flush=True)
    out['learner_cuda'] = learner_figures('cuda', 100 if args.quick else 500, 1 if args.quick else 2)
    out['learner_cpu'] = learner_figures('cpu', 20 if args.quick else 50, 1)
    for r in (out['learner_cuda'], out['learner_cpu']):
        print(f'learner on {r["device"]}: {r["critic_updates_per_s"]:.1f} critic updates/s, block '
              f'{", ".join(f"{s:.2f}" for s in r["block_s"])} s', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out['checkpoint_round_trip'] = checkpoint_round_trip(Path(tmp), 'cuda')
    print(f'checkpoint CPU -> GPU -> CPU: {out["checkpoint_round_trip"]}', flush=True)
    if not args.skip_graph:
        out['policy_node_cuda'] = policy_node_on_cuda(300 if args.quick else 1000)
        print(f'policy node on cuda: {out["policy_node_cuda"]}', flush=True)
    out['wall_s'] = time.perf_counter() - t0
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
