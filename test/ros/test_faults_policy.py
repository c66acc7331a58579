"""Fault injection against a real policy node in realtime mode (a tiny real FlowPolicy checkpoint), black-box over
its topics: a scripted arm (this process) follows its commands and reports faulty joint states, task vectors, an
e-stop, forged or broken policy updates (with and without an update key), a second node publishing on the command
topic and an e-stop release from a node that may not release it. Every command the node sends in a fault and in the
second after it is audited against the safety contract (swfp_ros/ros/fault_injection.py); each fault must also move
its counter on /swfp/status. benchmarks/bench_faults.py prints the same scenarios as a table."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
from std_msgs.msg import Bool, UInt8MultiArray  # noqa: E402

from swfp_ros.algo.checkpoint import load_policy  # noqa: E402
from swfp_ros.ros import fault_injection as F  # noqa: E402
from swfp_ros.ros.qos import ESTOP_QOS, UPDATE_QOS  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.sim.panda_model import ARM_JOINTS, FINGER_JOINTS  # noqa: E402
from tiny_policy import write_bc_checkpoint  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'
TASK = TASKS['panda_reach'][1]
OBS_DIM = 14 + len(TASK.task_labels)
MAX_DELTA, STALE_S = 0.1, 0.5
Q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 0.33, 0.785])
MAX_UPDATE_BYTES = 1 << 20


@pytest.fixture
def make_rig(launch_node, ros_node, tmp_path):
    """``make_rig(key=None)``: a policy node in realtime mode commanding a scripted arm; with ``key`` it applies only
    updates signed with it. The test node is its one e-stop release source."""
    arms = []

    def make(key: bytes | None = None):
        env = TASK()
        lower, upper = env.joint_lower, env.joint_upper
        env.close()
        ckpt = write_bc_checkpoint(tmp_path / 'policy.pt', OBS_DIM, 7)
        audit = F.CommandAudit(ARM_JOINTS, lower, upper, MAX_DELTA, STALE_S + F.LATENCY_MARGIN_S)
        arm = F.ScriptedArm(ros_node.node, ARM_JOINTS, FINGER_JOINTS, Q0, TASK.task_labels,
                            [0.4, 0.0, 0.3, 0.5, 0.1, 0.3], audit)
        arms.append(arm)
        ctx = F.Context(arm, F.StatusWatch(ros_node.node),
                        ros_node.node.create_publisher(Bool, '/swfp/estop', ESTOP_QOS),
                        ros_node.node.create_publisher(UInt8MultiArray, '/swfp/policy_update', UPDATE_QOS),
                        ros_node.context)
        params = {'checkpoint': str(ckpt), 'device': 'cpu', 'mode': 'realtime', 'control_rate': 50.0,
                  'max_delta': MAX_DELTA, 'stale_timeout_s': STALE_S, 'status_period_s': 0.2,
                  'max_update_bytes': MAX_UPDATE_BYTES,
                  'estop_release_sources': [ros_node.node.get_fully_qualified_name()]}
        if key is not None:
            key_file = tmp_path / 'update.key'
            key_file.write_bytes(key)
            key_file.chmod(0o600)
            params['update_key_file'] = str(key_file)
        policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml', params=params)
        ros_node.wait_for(lambda: arm.policy_commands >= 20, 60.0, what='the policy commanding the arm')
        ctx.bounds, ctx.runtime, ctx.process = (lower, upper), load_policy(str(ckpt), device='cpu'), policy
        return ctx

    yield make
    for arm in arms:
        arm.close()
    for p in launch_node.processes:
        print(p.output()[-3000:])


@pytest.fixture
def rig(make_rig):
    return make_rig()


def check(rows, require_commands=True):
    bad = [r for r in rows if r['violations'] or any(v <= 0 for v in r['counters'].values())
           or (require_commands and r['commands'] == 0)]
    assert not bad, '\n'.join(str(r) for r in bad)


def test_measurement_faults(rig):
    rows = [F.run_scenario(rig, sc) for sc in F.measurement_scenarios(*rig.bounds, MAX_DELTA)]
    check(rows)
    by = {r['scenario']: r for r in rows}
    assert by['shuffled_names']['holds'] == 0            # read by name: a shuffled order is not a fault
    assert all(by[k]['holds'] > 0 for k in ('nan_joint', 'wrong_size', 'missing_name'))
    assert by['beyond_limit_far']['holds'] == 0 and by['stale']['holds'] == 0     # nothing sent: no hold either
    assert rig.process.alive()


def test_task_estop_and_graph_faults(rig, ros_node):
    rows = [F.run_scenario(rig, sc) for sc in F.task_scenarios() + [F.estop_scenario()]]
    check(rows)
    assert all(r['holds'] > 0 for r in rows)
    q = rig.arm.q.copy()                                  # released: the policy moves the arm again
    ros_node.wait_for(lambda: not np.allclose(rig.arm.q, q), 10.0, what='the arm moving after the release')
    rows = {r['scenario']: r for r in (F.run_scenario(rig, sc) for sc in F.graph_scenarios(*rig.bounds))}
    check(rows.values())
    second = rows['second_publisher']
    assert second['observed']['reported'].startswith('WARN') and '/intruder' in second['observed']['reported']
    assert second['observed']['after'] == 'OK: active'                   # reported while it exists, not after
    assert rig.arm.foreign_commands > 0                                  # the arm did receive its commands
    release = rows['foreign_estop_release']
    assert release['observed']['refused_from'] == '/intruder' and release['observed']['estop_after_refusal'] == '1'
    assert release['holds'] > 0
    assert 'no update_key_file on a policy that commands an arm' in rig.process.output()   # realtime, no key


def test_update_faults(rig):
    scenarios = F.update_scenarios(rig.runtime, max_update_bytes=MAX_UPDATE_BYTES)
    rows = [F.run_scenario(rig, sc) for sc in scenarios]
    check(rows)
    rejected, accepted = rows[:-1], rows[-1]
    assert all(list(r['counters'].values()) == [1] and r['version'] == r['version_before'] == 0
               for r in rejected), rejected
    # without a key, a forged block within its claim is applied: what update_key_file is for
    assert accepted['scenario'] == 'forged_accepted' and accepted['version'] == 1, accepted
    assert rig.process.alive()


def test_signed_update_faults(make_rig):
    key = np.random.default_rng().bytes(32).hex().encode()
    rig = make_rig(key)
    rows = [F.run_scenario(rig, sc) for sc in F.update_scenarios(rig.runtime, key=key)]
    check(rows)
    assert [(r['scenario'], r['counters'], r['version']) for r in rows] == [
        ('unsigned', {'updates_rejected_unsigned': 1}, 0), ('other_key', {'updates_rejected_bad_signature': 1}, 0),
        ('altered', {'updates_rejected_bad_signature': 1}, 0), ('signed', {'updates_applied': 1}, 1)], rows
    out = rig.process.output()
    assert 'only those signed with update_key_file' in out and 'no update_key_file' not in out
