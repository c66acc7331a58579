"""Fault-injection table: what the policy node and the training graph do under faults, and whether a command broke
the safety contract or data was lost. Prints a markdown table (the README's) and a final JSON line.

    python benchmarks/bench_faults.py [--part policy|graph|all] [--out DIR]

policy: a real policy node (realtime, 50 Hz, the default 3x256 flow, untrained) against a scripted arm in this process,
    every scenario of swfp_ros/ros/fault_injection.py (the same as test/ros/test_faults_policy.py); every command in a
    fault and in the settling time after it is audited. First without update_key_file (every scenario), then a fresh
    policy node with it (the forged-update rows with the key on).
graph: the sim_finetune graph (sim bridge + policy node in /actor0, lockstep, actors not paced so the learner falls
    behind, + learner node with the default critic and small blocks), every command audited against the bridge's
    joint states, then:
    SIGKILL of the learner under load (sent / journaled before the kill / stored after the restart), SIGKILL of the sim
    bridge and of the policy node (each restarted), SIGINT of a learner that owes 20,000 critic updates and of one
    training a long block (time to the final checkpoint and to exit), and a damaged learner checkpoint at restart.
Run on a shared 2-core machine, times are indicative.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from swfp_ros.ros.domains import DomainLease

ROOT = Path(__file__).resolve().parents[1]
Q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 0.33, 0.785])
MAX_DELTA, STALE_S = 0.1, 0.5
MAX_UPDATE_BYTES = 1 << 20       # the policy's max_update_bytes in the policy part (a 3.1 MiB block exceeds it)
# A critic large enough that the learner falls behind one unpaced lockstep actor here, small and quick blocks.
GRAPH_SWFP = {'warmup_steps': 300, 'steps_per_block': 300, 'critic': {'hidden': 128, 'layers': 2},
              'block': {'hidden': 64, 'layers': 2, 'train_steps': 50, 'batch_size': 64, 'pool_size': 512}}


def lease_domain() -> DomainLease:
    """A ROS_DOMAIN_ID no test or other graph on this machine uses, set for this process and its nodes."""
    lease = DomainLease()
    os.environ.update(ROS_DOMAIN_ID=str(lease.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    os.environ.pop('ROS_LOCALHOST_ONLY', None)
    return lease


class Proc:
    """One node process in its own process group, output in a log file."""

    def __init__(self, executable: str, param_files: list, log: Path, ros_args=()):
        import subprocess

        from swfp_ros.ros.bringup import find_executable
        cmd = find_executable(executable) + ['--ros-args', *ros_args]
        for f in param_files:
            cmd += ['--params-file', str(f)]
        self.log = log
        self._f = open(log, 'ab')
        self.popen = subprocess.Popen(cmd, stdout=self._f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig):
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace=20.0):
        if self.popen.poll() is None:
            self.signal(signal.SIGINT)
            try:
                self.popen.wait(grace)
            except Exception:  # noqa: BLE001
                self.signal(signal.SIGKILL)
                self.popen.wait()
        self.signal(signal.SIGKILL)
        self._f.close()
        return self.popen.returncode


def params_file(path: Path, params: dict) -> Path:
    import yaml
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': params}}, sort_keys=False))
    return path


class Ros:
    def __init__(self, name):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)   # Ctrl-C stops the run
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self._spin, daemon=True).start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races
            pass

    def close(self):
        import rclpy
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def logged_at(log: Path, text: str) -> float | None:
    """Wall-clock time of the last line of a node's log that contains ``text`` (rcutils: [LEVEL] [epoch] ...)."""
    for line in reversed(log.read_text(errors='replace').splitlines()):
        if text in line and line.count('[') >= 2:
            return float(line.split('[')[2].split(']')[0])
    return None


def wait_for(pred, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f'timed out after {timeout:.0f} s waiting for {what}')



def sigint_learner(proc: Proc, checkpoint: Path):
    """SIGINT a learner node: (exit status, s to exit, s to its final checkpoint, the learner it left)."""
    from swfp_ros.algo.checkpoint import load_learner
    t = time.time()
    proc.signal(signal.SIGINT)
    rc = proc.popen.wait(120)
    exit_s = time.time() - t
    final_s = logged_at(proc.log, 'final checkpoint') - t
    proc.stop()
    return rc, exit_s, final_s, load_learner(str(checkpoint))

# --- part 1: the policy node against a scripted arm -------------------------------------------------------------
def policy_part(work: Path) -> list[dict]:
    from std_msgs.msg import Bool, UInt8MultiArray

    from swfp_ros.algo.blocks import Cascade
    from swfp_ros.algo.checkpoint import load_policy, save_policy
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.normalize import ObsNormalizer
    from swfp_ros.paths import config_path
    from swfp_ros.ros import fault_injection as F
    from swfp_ros.ros.qos import ESTOP_QOS, UPDATE_QOS
    from swfp_ros.sim import TASKS
    from swfp_ros.sim.panda_model import ARM_JOINTS, FINGER_JOINTS

    task = TASKS['panda_reach'][1]
    env = task()
    lower, upper = env.joint_lower, env.joint_upper
    env.close()
    obs_dim = 14 + len(task.task_labels)
    ckpt = work / 'policy.pt'
    save_policy(str(ckpt), Cascade(FlowPolicy(obs_dim, 7)), ObsNormalizer(obs_dim), version=0)
    key = os.urandom(32).hex().encode()
    key_file = work / 'update.key'
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    ros = Ros('bench_faults_arm')
    audit = F.CommandAudit(ARM_JOINTS, lower, upper, MAX_DELTA, STALE_S + F.LATENCY_MARGIN_S)
    arm = F.ScriptedArm(ros.node, ARM_JOINTS, FINGER_JOINTS, Q0, task.task_labels, [0.4, 0.0, 0.3, 0.5, 0.1, 0.3],
                        audit)
    ctx = F.Context(arm, F.StatusWatch(ros.node), ros.node.create_publisher(Bool, '/swfp/estop', ESTOP_QOS),
                    ros.node.create_publisher(UInt8MultiArray, '/swfp/policy_update', UPDATE_QOS), ros.context)
    params = {'checkpoint': str(ckpt), 'device': 'cpu', 'mode': 'realtime', 'control_rate': 50.0,
              'max_delta': MAX_DELTA, 'stale_timeout_s': STALE_S, 'status_period_s': 0.2,
              'max_update_bytes': MAX_UPDATE_BYTES, 'estop_release_sources': [ros.node.get_fully_qualified_name()]}
    runtime = load_policy(str(ckpt), device='cpu')
    # a policy without update_key_file, then one with it (the forged-update rows with the key on)
    runs = [('unkeyed', {}, F.measurement_scenarios(lower, upper, MAX_DELTA) + F.task_scenarios()
             + [F.estop_scenario()] + F.graph_scenarios(lower, upper)
             + F.update_scenarios(runtime, max_update_bytes=MAX_UPDATE_BYTES)),
            ('keyed', {'update_key_file': str(key_file)}, F.update_scenarios(runtime, key=key))]
    rows = []
    try:
        for label, extra, scenarios in runs:
            policy = Proc('policy_node', [config_path('policy.yaml'), params_file(
                work / f'policy_{label}.yaml', {**params, **extra})], work / f'policy_node_{label}.log')
            ctx.process = policy
            try:
                start = arm.policy_commands
                wait_for(lambda: arm.policy_commands >= start + 20, 120, 'the policy commanding the arm')
                for sc in scenarios:
                    row = F.run_scenario(ctx, sc)
                    row['alive'] = policy.popen.poll() is None
                    rows.append(row)
                    print(f"  {row['scenario']:<22} commands {row['commands']:4d}  violations {row['violations']}  "
                          f"holds {row['holds']:4d}  {row['counters']}  v{row['version']}  {row['observed']}",
                          flush=True)
            finally:
                policy.stop()
            warned = 'no update_key_file on a policy that commands an arm' in policy.log.read_text()
            print(f'  {label}: start-up warning about the missing key: {warned}', flush=True)
    finally:
        arm.close()
        ros.close()
    return rows


# --- part 2: the training graph ------------------------------------------------------------------------------------
def graph_part(work: Path) -> list[dict]:
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from swfp_ros.algo.checkpoint import load_learner, save_learner
    from swfp_ros.ros import fault_injection as F
    from swfp_ros.ros.journal import TransitionJournal
    from swfp_ros.ros.learner_node import JOURNAL_DIR, load_or_create_learner, swfp_config
    from swfp_ros.ros.messages import transition_size
    from swfp_ros.sim import TASKS
    from swfp_ros.sim.panda_model import ARM_JOINTS
    from swfp_ros.train.graph_demo import _config_dir

    sys.path.insert(0, str(ROOT / 'test' / 'ros'))
    from tiny_policy import write_bc_checkpoint
    task = TASKS['panda_reach'][1]
    env = task()
    lower, upper = env.joint_lower, env.joint_upper
    env.close()
    obs_dim = 14 + len(task.task_labels)
    bc = write_bc_checkpoint(work / 'bc.pt', obs_dim, 7)
    cfg = _config_dir(work / 'config', GRAPH_SWFP, {'max_learner_backlog': 0, 'status_period_s': 0.2})
    ckpt_dir = work / 'learner'
    ns = ['-r', '__ns:=/actor0']
    learner_params = params_file(work / 'learner_params.yaml', {
        'checkpoint_dir': str(ckpt_dir), 'base_checkpoint': str(bc), 'device': 'cpu', 'status_period_s': 0.2})
    bridge_params = params_file(work / 'bridge_params.yaml', {'seed': 3})
    policy_params = params_file(work / 'policy_params.yaml', {'checkpoint': str(bc), 'device': 'cpu'})

    def start(kind):
        if kind == 'learner':
            return Proc('learner_node', [cfg / 'learner.yaml', learner_params], work / 'learner.log')
        if kind == 'bridge':
            return Proc('sim_bridge', [cfg / 'sim_bridge.yaml', bridge_params], work / 'bridge.log', ns)
        return Proc('policy_node', [cfg / 'policy.yaml', policy_params], work / 'policy.log', ns)

    ros = Ros('bench_faults_graph')
    status = F.StatusWatch(ros.node)
    audit = F.CommandAudit(ARM_JOINTS, lower, upper, MAX_DELTA, STALE_S + F.LATENCY_MARGIN_S, sees_every_state=False)

    ros.node.create_subscription(JointState, '/actor0/joint_states',
                                 lambda m, i: audit.measured(m, F.source_time(i)), F.monitor_qos())
    ros.node.create_subscription(Float64MultiArray, '/actor0/swfp/action',
                                 lambda m, i: audit.command(m.data, F.source_time(i)), 1000)
    procs = {}
    rows = []

    def latest(name):
        return status.fresh(name, timeout=30)

    def journal_on_disk():
        j = TransitionJournal(ckpt_dir / JOURNAL_DIR, transition_size(obs_dim, 7), obs_dim, 7)
        n = j.first_transition + j.written
        j.close()
        return n

    def row(name, fault, reaction, data, final=False):
        checked, violations, unverified = audit.judge(final=final)
        r = {'scenario': name, 'fault': fault, 'commands': checked, 'violations': len(violations),
             'examples': violations[:3], 'reaction': reaction, 'data': {**data, 'unverified_commands': unverified}}
        rows.append(r)
        print(f"  {name:<24} commands {r['commands']:5d}  violations {r['violations']} {r['examples']}  {reaction}; "
              f"{data}", flush=True)
        audit.reset()

    try:
        procs['learner'] = start('learner')
        latest('/learner_node')
        procs['bridge'], procs['policy'] = start('bridge'), start('policy')
        def backlog():
            st = latest('/learner_node')
            return int(st.get('journaled', 0)) - int(st.get('transitions', 0))
        wait_for(lambda: backlog() >= 300, 300, 'a backlog of 300 transitions')
        audit.judge()
        audit.reset()

        # 1. SIGKILL of the learner under load
        before = latest('/learner_node')
        sent_at_kill = int(latest('/actor0/policy_node')['transitions'])
        procs['learner'].signal(signal.SIGKILL)
        procs['learner'].popen.wait()
        journaled = journal_on_disk()                     # what the learner had acknowledged
        time.sleep(5.0)
        sent_while_down = int(latest('/actor0/policy_node')['transitions']) - sent_at_kill
        procs['learner'] = start('learner')
        wait_for(lambda: latest('/learner_node').get('resumed') == 'true', 120, 'the learner resumed')
        catch_up = wait_for(lambda: int(latest('/learner_node')['transitions']) >= journaled, 600,
                            'the journaled transitions stored')
        after = latest('/learner_node')
        row('learner_sigkill', 'SIGKILL of the learner under load (backlog '
            f"{int(before['journaled']) - int(before['transitions'])} on disk)",
            f"resumed, stored all {journaled} journaled in {catch_up:.0f} s; actors kept acting",
            {'sent_before_kill': sent_at_kill, 'journaled_before_kill': journaled,
             'stored_before_kill': int(before['transitions']), 'stored_after_restart': int(after['transitions']),
             'lost': max(0, journaled - int(after['transitions'])), 'sent_while_down': sent_while_down})

        # 2. SIGKILL of the sim bridge, restarted
        t0 = int(latest('/actor0/policy_node')['transitions'])
        procs['bridge'].signal(signal.SIGKILL)
        procs['bridge'].popen.wait()
        time.sleep(3.0)
        procs['bridge'] = start('bridge')
        wait_for(lambda: int(latest('/actor0/policy_node')['transitions']) >= t0 + 50, 120, 'acting again')
        p = latest('/actor0/policy_node')
        row('bridge_sigkill', 'SIGKILL of the sim bridge, restarted after 3 s',
            f"policy waited (lockstep timeouts {p.get('lockstep_timeouts', 0)}), acting again",
            {'transitions_dropped_by_policy': int(p.get('transitions_dropped', 0)), 'lost': 0})

        # 3. SIGKILL of the policy node, restarted
        procs['policy'].signal(signal.SIGKILL)
        procs['policy'].popen.wait()
        time.sleep(3.0)
        procs['policy'] = start('policy')
        lv = int(latest('/learner_node')['version'])
        wait_for(lambda: int(latest('/actor0/policy_node').get('policy_version', -1)) >= lv
                 and int(latest('/actor0/policy_node').get('transitions', 0)) >= 50, 120, 'the restarted policy')
        p = latest('/actor0/policy_node')
        row('policy_sigkill', 'SIGKILL of the policy node, restarted after 3 s',
            f"restarted policy took the learner's latched base + blocks: v{p['policy_version']} (learner v{lv} at "
            f"the restart, v{latest('/learner_node')['version']} now)",
            {'updates_rejected': int(p.get('updates_rejected', 0)), 'lost': 0})

        # 4. SIGINT of the learner with a backlog; the actor stops too, so that the restarted learner's catch-up ends
        wait_for(lambda: backlog() >= 300, 300, 'a backlog of 300 transitions')
        b = latest('/learner_node')
        t = time.time()
        procs['learner'].signal(signal.SIGINT)
        rc = procs['learner'].popen.wait(60)
        exit_s = time.time() - t
        final_s = logged_at(procs['learner'].log, 'final checkpoint') - t
        for k in ('policy', 'bridge'):
            procs.pop(k).stop()
        journaled = journal_on_disk()
        final = load_learner(str(ckpt_dir / 'learner.pt'))
        procs['learner'] = start('learner')
        wait_for(lambda: latest('/learner_node').get('resumed') == 'true', 120, 'the learner resumed')
        wait_for(lambda: int(latest('/learner_node')['transitions']) >= journaled, 600, 'the backlog stored')
        row('learner_sigint_backlog', f"SIGINT of the learner, {int(b['journaled']) - int(b['transitions'])} "
            'transitions waiting', f'final checkpoint ({final.counters.transitions} stored) after {final_s:.2f} s, '
            f'exit {rc} after {exit_s:.2f} s; the rest stored after the restart', {'journaled': journaled, 'lost': 0},
            final=True)

        # 5. SIGINT while a resumed learner works off 20,000 owed critic updates (what the old node left behind)
        procs.pop('learner').stop()
        legacy = work / 'legacy'
        learner, _ = load_or_create_learner(legacy / 'learner.pt', str(bc), swfp_config(
            {'critic.hidden': 64, 'critic.layers': 2, 'critic.batch_size': 64, 'warmup_steps': 10 ** 6}), 'cpu')
        rng = np.random.default_rng(0)
        n = 40_000
        learner.add_transitions(rng.normal(size=(n, obs_dim)), rng.uniform(-1, 1, (n, 7)), -rng.random(n),
                                rng.normal(size=(n, obs_dim)), np.zeros(n, bool), np.ones(n))
        save_learner(str(legacy / 'learner.pt'), learner)
        lp = params_file(work / 'legacy_params.yaml', {'checkpoint_dir': str(legacy), 'device': 'cpu',
                                                       'status_period_s': 0.2})
        proc = Proc('learner_node', [cfg / 'learner.yaml', lp], work / 'legacy.log')
        wait_for(lambda: int(latest('/learner_node').get('critic_updates', 0)) >= 50, 300, 'the catch-up under way')
        mtime = (legacy / 'learner.pt').stat().st_mtime
        rc, exit_s, final_s, final = sigint_learner(proc, legacy / 'learner.pt')
        row('learner_sigint_catch_up', 'SIGINT while working off 20,000 owed critic updates',
            f"final checkpoint {'written' if (legacy / 'learner.pt').stat().st_mtime > mtime else 'NOT written'} "
            f"after {final_s:.2f} s, exit {rc} after {exit_s:.2f} s",
            {'critic_updates_saved': final.counters.critic_updates, 'still_owed': int(final.counters.owed_updates),
             'lost': 0}, final=True)

        # 6. SIGINT while a block trains (20,000 train steps: minutes)
        slow = work / 'slow_block'
        learner, _ = load_or_create_learner(slow / 'learner.pt', str(bc), swfp_config(
            {'critic.hidden': 64, 'critic.layers': 2, 'critic.batch_size': 64, 'warmup_steps': 300,
             'block.train_steps': 20_000}), 'cpu')
        n = 400
        learner.add_transitions(rng.normal(size=(n, obs_dim)), rng.uniform(-1, 1, (n, 7)), -rng.random(n),
                                rng.normal(size=(n, obs_dim)), np.zeros(n, bool), np.ones(n))
        learner.counters.owed_updates = 0.0      # no critic catch-up first: the block is due at once
        save_learner(str(slow / 'learner.pt'), learner)
        sp = params_file(work / 'slow_params.yaml', {'checkpoint_dir': str(slow), 'device': 'cpu',
                                                     'status_period_s': 0.2})
        proc = Proc('learner_node', [cfg / 'learner.yaml', sp], work / 'slow_block.log')
        wait_for(lambda: latest('/learner_node').get('phase') == 'block', 300, 'the block under way')
        time.sleep(1.0)
        rc, exit_s, final_s, final = sigint_learner(proc, slow / 'learner.pt')
        row('learner_sigint_block', 'SIGINT while a block trains (20,000 train steps)',
            f'final checkpoint after {final_s:.2f} s (block still due: '
            f'{final.counters.next_block_at <= final.counters.env_steps}), exit {rc} after {exit_s:.2f} s',
            {'blocks_trained': final.counters.blocks_trained, 'lost': 0}, final=True)

        # 7. a damaged learner checkpoint at restart
        path = ckpt_dir / 'learner.pt'
        good = path.read_bytes()
        path.write_bytes(good[:len(good) // 2])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        proc = Proc('learner_node', [cfg / 'learner.yaml', learner_params], work / 'damaged.log')
        rc = proc.popen.wait(120)
        proc.stop()
        message = [ln for ln in (work / 'damaged.log').read_text().splitlines() if 'cannot start' in ln]
        untouched = hashlib.sha256(path.read_bytes()).hexdigest() == digest
        path.write_bytes(good)
        row('damaged_checkpoint', 'learner.pt cut to half its size, learner restarted',
            f"exit {rc}: {message[-1].split('cannot start: ')[-1][:90] if message else '?'}...; file "
            f"{'left as it was' if untouched else 'CHANGED'}", {'lost': 0})
    finally:
        for p in procs.values():
            p.stop()
        ros.close()
    return rows


def table(policy_rows, graph_rows) -> str:
    lines = ['| fault | commands checked | violations | holds | counters / data | reaction |',
             '| --- | --- | --- | --- | --- | --- |']
    for r in policy_rows:
        counters = ', '.join(f'{k} +{v}' for k, v in r['counters'].items()) or '-'
        reaction = r['expect'] + ('' if r['version'] == r['version_before'] else
                                  f" (version {r['version_before']} -> {r['version']})")
        reaction += ''.join(f'; {k}: {v}' for k, v in r['observed'].items())
        lines.append(f"| {r['fault']} | {r['commands']} | {r['violations']} | {r['holds']} | {counters} | "
                     f"{reaction} |")
    for r in graph_rows:
        data = ', '.join(f'{k} {v}' for k, v in r['data'].items())
        lines.append(f"| {r['fault']} | {r['commands']} | {r['violations']} | - | {data} | {r['reaction']} |")
    return '\n'.join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--part', choices=('policy', 'graph', 'all'), default='all')
    ap.add_argument('--out', default=None, help='work folder (default: a temporary one, removed at the end)')
    args = ap.parse_args()
    os.environ.setdefault('MUJOCO_GL', 'egl')
    lease = lease_domain()
    work = Path(args.out or tempfile.mkdtemp(prefix='bench_faults_'))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rows = {'policy': [], 'graph': []}
    try:
        for part, run in (('policy', policy_part), ('graph', graph_part)):
            if args.part in (part, 'all'):
                (work / part).mkdir(exist_ok=True)
                rows[part] = run(work / part)
    finally:
        lease.release()
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    policy_rows, graph_rows = rows['policy'], rows['graph']
    print(table(policy_rows, graph_rows))
    rows = policy_rows + graph_rows
    print(json.dumps({'rows': len(rows), 'violations': sum(r['violations'] for r in rows),
                      'lost': sum(r.get('data', {}).get('lost', 0) for r in rows),
                      'wall_s': round(time.monotonic() - t0, 1)}))


if __name__ == '__main__':
    main()
