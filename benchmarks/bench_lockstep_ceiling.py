"""What a lockstep env step costs through rclpy, between two processes or within one, and how much is the nodes' own.

Lockstep exchanges between a simulator and a policy, one robot (``--task``: panda_reach, the lightest simulator
step, or panda_push), no learner, each measured for
``--seconds`` and interleaved per trial with the in-process loop (``act`` + ``env.step``, one torch thread,
bench_robots_per_bridge.in_process) so that every ratio comes from one run:

- bare: one Float64MultiArray each way per env step (observation, reward and done; joint targets), both processes
  spinning rclpy's EventsExecutor, nothing else: the ceiling of any rclpy lockstep path between two processes;
- contract: the topic contract's messages (reward, task and joint states from the simulator; the joint targets and the
  transition from the policy), built and parsed by swfp_ros.ros.messages, still without the nodes (no actor loop,
  safety filter, worker thread or status);
- bare, one process and contract, one process: the same between two nodes in one process on one executor (what the
  process boundary costs);
- graph: the sim bridge and the policy node themselves (bench_robots_per_bridge.graph), each in its process as
  launched;
- sim_actor, worker thread: the same two nodes composed in one process (the ``sim_actor`` executable with the command
  line ``compose:=true`` gives it) but with the policy acting on its worker thread (``act_on_executor: false``);
- sim_actor: as launched with ``compose:=true``, the policy acting on the executor thread the bridge runs on.
  Every topic still goes over DDS, through the actor loop and the safety filter.

Usage: python benchmarks/bench_lockstep_ceiling.py [--task panda_reach] [--trials 3] [--seconds 10]
                                                  [--out outputs/bench_ceiling]
Uses an untrained default-size flow (throughput does not depend on the weights). Prints one JSON line per trial, a
table, and a JSON line of all trials.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
ONE_PROCESS = ', one process'
VARIANTS = ('bare', 'contract', 'bare' + ONE_PROCESS, 'contract' + ONE_PROCESS)
GRAPHS = ('graph', 'sim_actor, worker thread', 'sim_actor')
WARMUP_STEPS = 50


def _qos():
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _floats(values):
    from std_msgs.msg import Float64MultiArray
    msg = Float64MultiArray()
    msg.data = np.asarray(values, dtype=np.float64).tolist()
    return msg


def add_simulator(node, variant: str, task: str):
    """On ``node``: step one env per joint-targets message and publish what the policy needs. Returns (publish the
    first state, the step counter, whether the policy's side has matched)."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from swfp_ros.ros import messages as M
    from swfp_ros.sim import make_env
    env = make_env(task).unwrapped
    env.reset(seed=0)
    if variant == 'contract':
        reward_pub = node.create_publisher(Float64MultiArray, 'ceiling/reward', _qos())
        task_pub = node.create_publisher(Float64MultiArray, 'ceiling/task', _qos())
        state_pub = node.create_publisher(JointState, 'ceiling/joint_states', _qos())

        def publish(reward: float, done: bool):   # in the sim bridge's order: reward, then task and joint states
            reward_pub.publish(M.reward_msg(reward, done, False, env.elapsed_steps))
            task_pub.publish(M.task_msg(env.task_labels, env.task_vector()))
            names, pos, vel, eff = env.joint_state()
            state_pub.publish(M.joint_state_msg(names, pos, vel, eff, stamp=M.time_msg(env.sim_time)))

        def targets_of(msg):
            return M.action_from_msg(msg, len(env.joint_names))
    else:
        state_pub = node.create_publisher(Float64MultiArray, 'ceiling/state', _qos())

        def publish(reward: float, done: bool):
            state_pub.publish(_floats([*env.observation(), reward, float(done)]))

        def targets_of(msg):
            return np.asarray(msg.data)
    steps = [0]

    def on_targets(msg):
        _, reward, terminated, truncated, _ = env.step_joint_targets(targets_of(msg))
        steps[0] += 1
        if terminated or truncated:
            env.reset()
        publish(reward, terminated)

    node.create_subscription(Float64MultiArray, 'ceiling/targets', on_targets, _qos())

    def matched() -> bool:
        return state_pub.get_subscription_count() > 0 and node.count_publishers('ceiling/targets') > 0

    return lambda: publish(0.0, False), steps, matched


def add_policy(node, variant: str, checkpoint: str, task: str) -> None:
    """On ``node``: act on each observation and publish joint targets (and, for the contract, the transition)."""
    import torch
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from swfp_ros.actor.types import Transition
    from swfp_ros.algo.checkpoint import load_policy
    from swfp_ros.ros import messages as M
    from swfp_ros.sim import make_env
    torch.set_num_threads(1)
    runtime = load_policy(checkpoint, 'cpu')
    env = make_env(task).unwrapped     # for the joint names, limits and task labels only
    names, n = list(env.joint_names), len(env.joint_names)
    targets_pub = node.create_publisher(Float64MultiArray, 'ceiling/targets', _qos())

    def command(obs: np.ndarray) -> np.ndarray:
        action = runtime.act(obs[None])[0]
        targets = np.clip(obs[:n] + env.action_scale * action, env.joint_lower, env.joint_upper)
        targets_pub.publish(M.action_msg(targets, names) if variant == 'contract' else _floats(targets))
        return action

    if variant != 'contract':
        node.create_subscription(Float64MultiArray, 'ceiling/state',
                                 lambda msg: command(np.asarray(msg.data[:-2], dtype=np.float32)), _qos())
        return
    transition_pub = node.create_publisher(Float64MultiArray, 'ceiling/transition', _qos())
    # A step's three messages arrive on three topics in no fixed order: act when all three are in.
    held = {'received': 0, 'last': None}

    def received(**values):
        held.update(values)
        held['received'] += 1
        if held['received'] < 3:
            return
        held['received'] = 0
        obs = np.concatenate([held['q'], held['qd'], held['task']]).astype(np.float32)
        action = command(obs)
        if held['last'] is not None:
            transition_pub.publish(M.transition_msg(Transition(*held['last'], held['reward'], obs, held['done'])))
        held['last'] = (obs, action)

    def on_reward(msg):
        info = M.reward_from_msg(msg)
        received(reward=info.reward, done=info.terminated)

    def on_joint_state(msg):
        q, qd = M.arm_from_joint_state(msg, names)
        received(q=q, qd=qd)

    node.create_subscription(Float64MultiArray, 'ceiling/reward', on_reward, _qos())
    node.create_subscription(Float64MultiArray, 'ceiling/task',
                             lambda msg: received(task=M.task_from_msg(msg, env.task_labels)[1]), _qos())
    node.create_subscription(JointState, 'ceiling/joint_states', on_joint_state, _qos())


def run_side(side: str, variant: str, checkpoint: str, task: str, seconds: float) -> None:
    """One process of an exchange: 'simulator' or 'policy' (the two-process variants), or 'both' (one process, one
    executor, two nodes). The process holding the simulator prints env steps/s over ``seconds`` as JSON; the policy
    process runs until SIGINT. Both spin spin_once in a loop, as the nodes do (executors.run_node):
    EventsExecutor.spin() delivered nothing here."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.experimental import EventsExecutor
    rclpy.init()
    executor = EventsExecutor()
    nodes = {role: rclpy.create_node(f'ceiling_{role}') for role in
             (('simulator', 'policy') if side == 'both' else (side,))}
    for node in nodes.values():
        executor.add_node(node)
    if 'policy' in nodes:
        add_policy(nodes['policy'], variant, checkpoint, task)
    if 'simulator' not in nodes:
        try:
            while rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        return
    first_state, steps, matched = add_simulator(nodes['simulator'], variant, task)
    while not matched():
        executor.spin_once(timeout_sec=0.05)
    time.sleep(0.5)                               # the policy's other subscriptions match too
    first_state()
    while steps[0] < WARMUP_STEPS:
        executor.spin_once(timeout_sec=0.05)
    first, start = steps[0], time.perf_counter()
    while time.perf_counter() - start < seconds:
        executor.spin_once(timeout_sec=0.05)
    print(json.dumps({'steps_per_s': (steps[0] - first) / (time.perf_counter() - start)}), flush=True)


def exchange(variant: str, checkpoint: str, task: str, seconds: float) -> float:
    """Env steps/s of one lockstep exchange, in processes of this script: a policy and a simulator, or one with both."""
    kind = variant.removesuffix(ONE_PROCESS)
    me = [sys.executable, __file__, '--variant', kind, '--checkpoint', checkpoint, '--task', task,
          '--seconds', str(seconds)]
    acting = None if variant.endswith(ONE_PROCESS) else subprocess.Popen([*me, '--side', 'policy'])
    side = 'simulator' if acting is not None else 'both'
    try:
        sim = subprocess.run([*me, '--side', side], capture_output=True, text=True, timeout=seconds + 120)
    except subprocess.TimeoutExpired as e:     # its captured output is bytes whatever text= says
        stderr = (e.stderr or b'').decode(errors='replace').strip()[-2000:]
        raise RuntimeError(f'the {variant} exchange did not finish in {seconds + 120:.0f} s: {stderr}') from None
    finally:
        if acting is not None:
            acting.send_signal(signal.SIGINT)
            try:
                acting.wait(30)
            except subprocess.TimeoutExpired:
                acting.kill()
                acting.wait()
    if sim.returncode != 0:
        raise RuntimeError(f'the {variant} exchange failed (exit {sim.returncode}): {sim.stderr.strip()[-2000:]}')
    return json.loads(sim.stdout.strip().splitlines()[-1])['steps_per_s']


def main() -> int:
    from swfp_ros.sim import BRIDGE_TASKS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--task', choices=BRIDGE_TASKS, default='panda_reach')
    ap.add_argument('--trials', type=int, default=3)
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--out', default='outputs/bench_ceiling')
    ap.add_argument('--side', choices=('simulator', 'policy', 'both'), help=argparse.SUPPRESS)
    ap.add_argument('--variant', choices=('bare', 'contract'), help=argparse.SUPPRESS)
    ap.add_argument('--checkpoint', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        run_side(args.side, args.variant, args.checkpoint, args.task, args.seconds)
        return 0

    import torch

    from bench_robots_per_bridge import graph, in_process
    from bench_ros_latency import untrained_checkpoint
    from bench_scale_out import leased_domain
    out = Path(args.out)
    checkpoint = untrained_checkpoint(out, args.task)
    torch.set_num_threads(1)     # as the policy node runs (torch_threads: 1)
    rows = []
    with leased_domain():        # the exchanges' processes inherit its ROS_DOMAIN_ID
        import rclpy
        rclpy.init()
        node = rclpy.create_node('bench_lockstep_ceiling')
        try:
            for trial in range(args.trials):
                row = {'trial': trial, 'inprocess': in_process(checkpoint, 1, 2000, args.task)}
                for variant in VARIANTS:
                    row[variant] = exchange(variant, checkpoint, args.task, args.seconds)
                row['graph'] = graph(node, checkpoint, 1, 'separate', args.seconds, args.task)['steps_per_s']
                row['sim_actor, worker thread'] = graph(node, checkpoint, 1, 'composed', args.seconds, args.task,
                                                        act_on_executor=False)['steps_per_s']
                row['sim_actor'] = graph(node, checkpoint, 1, 'composed', args.seconds, args.task)['steps_per_s']
                rows.append(row)
                print(json.dumps(row), flush=True)
        except RuntimeError as e:      # an exchange that failed or hung: its own words, no traceback
            print(f'bench_lockstep_ceiling: {e}', file=sys.stderr)
            return 1
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    columns = (*VARIANTS, *GRAPHS)
    print(f'{"trial":>5} {"in-process/s":>12} | ' + ' | '.join(f'{k + " steps/s (ratio)":>34}' for k in columns))
    for r in rows:
        print(f'{r["trial"]:>5d} {r["inprocess"]:>12.1f} | ' + ' | '.join(
            f'{r[k]:>26.1f} ({r[k] / r["inprocess"]:.2f})' for k in columns))
    (out / 'lockstep_ceiling.json').write_text(json.dumps({'task': args.task, 'seconds': args.seconds, 'rows': rows},
                                                          indent=1))
    print(json.dumps({'task': args.task, 'rows': rows}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
