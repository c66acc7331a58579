"""Ingestion throughput (messages/s) on a ~100k-message demo bag, MCAP and sqlite3.

The bag is the project's own demo layout (write_demo_bag: /clock, /joint_states, /swfp/task, /swfp/action,
/swfp/reward, /swfp/episode; ~6 messages per control step) with synthetic smooth episodes, ingested with the default
Panda spec. Prints one line per storage and a final JSON line with the figures.

    python benchmarks/bench_ingest.py [--messages 100000] [--repeat 1]
"""
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

from swfp_ros.data import default_panda_spec, ingest, write_demo_bag  # noqa: E402
from swfp_ros.data.bag_writer import EpisodeRecord  # noqa: E402
from swfp_ros.data.spec import PANDA_JOINTS, REACH_TASK_LABELS  # noqa: E402

RATE, SCALE, T = 20.0, 0.05, 200
MSGS_PER_STEP = 5  # clock, joint_states, task, action, reward (+ episode once per episode)


def episodes(n_msgs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_eps = max(1, round(n_msgs / (T * MSGS_PER_STEP)))
    for _ in range(n_eps):
        t = np.arange(T) / RATE
        delta = np.clip(np.sin(t[:, None] * rng.uniform(1, 6, 7) + rng.uniform(0, 6, 7)), -1, 1)
        q = rng.uniform(-1, 1, 7) + np.cumsum(0.8 * SCALE * delta, axis=0)
        task = np.concatenate([rng.normal(size=(T, 3)), np.broadcast_to(rng.normal(size=3), (T, 3))], 1)
        yield EpisodeRecord(time=t, joint_pos=q, joint_vel=np.gradient(q, axis=0) * RATE, task=task,
                            action_target=q + SCALE * delta, action_delta=delta, reward=rng.normal(size=T),
                            success=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--messages', type=int, default=100_000)
    ap.add_argument('--repeat', type=int, default=1, help='ingest each bag this many times; the best is reported')
    args = ap.parse_args()
    spec = default_panda_spec(action_scale=SCALE)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ('mcap', 'sqlite3'):
            bag = Path(tmp) / f'bench_{storage}'
            t0 = time.perf_counter()
            info = write_demo_bag(bag, episodes(args.messages), PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage=storage)
            t_write = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in bag.iterdir())
            best = None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                ds, report = ingest([bag], spec, progress=False, return_report=True)
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            n = report.messages
            results[storage] = {
                'bag_messages': info['messages'], 'messages_read': n, 'bag_mb': round(size / 1e6, 2), 'steps': ds.num_steps, 'episodes': len(ds),
                'ingest_s': round(best, 3), 'ingest_msgs_per_s': round(n / best),
                'bag_msgs_per_s': round(info['messages'] / best), 'steps_per_s': round(ds.num_steps / best),
                'write_s': round(t_write, 3), 'write_msgs_per_s': round(info['messages'] / t_write),
            }
            r = results[storage]
            print(f'{storage:8s} bag of {info["messages"]} msgs ({r["bag_mb"]} MB), {n} on the spec\'s topics, '
                  f'{r["steps"]} steps: ingest {r["ingest_s"]:.2f} s = {r["ingest_msgs_per_s"]:,} msgs read/s '
                  f'({r["bag_msgs_per_s"]:,} bag msgs/s); write {r["write_msgs_per_s"]:,} msgs/s')
    print(json.dumps({'benchmark': 'ingest', 'cpus': os.cpu_count(), 'python': platform.python_version(),
                      'results': results}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
