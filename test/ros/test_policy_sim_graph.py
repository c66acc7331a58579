"""Real nodes in separate processes: sim bridge + policy node in lockstep, and the policy node alone in realtime
mode against a "robot" played by the test process (holds, e-stop, clamps, policy updates).

The policy plumbing is tested with ``stub_runtime`` (same interface as swfp_ros.algo.runtime), so these tests do not
depend on the algorithm; ``test_real_runtime_checkpoint`` runs the graph with the real algorithm when it is present.
"""
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray, UInt8MultiArray  # noqa: E402

import stub_runtime  # noqa: E402
from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.policy_node import SILENCE_S  # noqa: E402
from swfp_ros.ros.qos import ESTOP_QOS, TASK_QOS, TRANSITION_QOS, UPDATE_QOS  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.sim.panda_model import ARM_JOINTS, FINGER_JOINTS  # noqa: E402

pytestmark = pytest.mark.timeout(300)   # a hang guard; each wait has its own, shorter timeout
HERE = Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / 'config'
LABELS = TASKS['panda_reach'][1].task_labels
OBS_DIM = 14 + len(LABELS)
# The test's own collectors keep everything: a shallow history would drop commands while the test is busy.
ACTION_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
STALE_S = 1.0    # long enough that a busy machine still sends holds at the last valid state before it goes stale
HOME_Q = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 0.33, 0.785])   # a Panda posture well inside its joint limits


def stub_env():
    import os
    return {'PYTHONPATH': f'{HERE}:{os.environ.get("PYTHONPATH", "")}'}


def policy_params(ckpt, **kw):
    return {'checkpoint': str(ckpt), 'policy_loader': 'stub_runtime:load_policy', 'status_period_s': 0.2, **kw}


def node_status(box, name):
    """The latest /swfp/status values of the node called ``name``."""
    for _, msg in reversed(list(box)):
        for st in msg.status:
            if st.name == name:
                return {kv.key: kv.value for kv in st.values}
    return {}


def latest_status(box):
    """The last DiagnosticStatus collected (None before the first)."""
    return box[-1][1].status[0] if box else None


def status_values(box):
    st = latest_status(box)
    return {} if st is None else {kv.key: kv.value for kv in st.values}


def test_lockstep_graph_actions_and_transitions(launch_node, ros_node, tmp_path):
    ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', OBS_DIM)
    actions = ros_node.collect('/swfp/action', Float64MultiArray, ACTION_QOS)
    transitions = ros_node.collect('/swfp/transition', Float64MultiArray, TRANSITION_QOS)
    rewards = ros_node.collect('/swfp/reward', Float64MultiArray, ACTION_QOS)
    status = ros_node.collect('/swfp/status', DiagnosticArray, ACTION_QOS)
    bridge = launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml', params={'seed': 3})
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml', params=policy_params(ckpt),
                         env=stub_env())
    try:
        ros_node.wait_for(lambda: len(transitions) >= 120 and len(rewards) >= 120, timeout=40,
                          what='120 transitions and 120 rewards')
        ros_node.wait_for(lambda: int(node_status(status, '/sim_bridge').get('steps', 0)) >= 120
                          and int(node_status(status, '/policy_node').get('transitions', 0)) >= 120, timeout=10,
                          what='sim bridge and policy node status after 120 steps')
    finally:
        print(policy.output()[-3000:], bridge.output()[-2000:])
    assert bridge.alive() and policy.alive()
    # every transition decodes, actions are within [-1, 1], and episode ends are marked
    ts = [M.transition_from_msg(m, OBS_DIM, 7) for _, m in list(transitions)]
    assert all(np.all(np.abs(t.action) <= 1) and t.n_steps == 1 for t in ts)
    # consecutive transitions chain: next_obs of one is obs of the next, except across resets
    breaks = sum(not np.allclose(a.next_obs, b.obs) for a, b in zip(ts, ts[1:]))
    assert 1 <= breaks <= len(ts) // 2, 'episodes of <= 50 steps: the chain breaks at resets only'
    assert sum(t.terminated for t in ts) <= breaks + 1
    # the lockstep loop: every action the bridge took was one step; a transition per command at most
    bridge_counts, policy_counts = node_status(status, '/sim_bridge'), node_status(status, '/policy_node')
    assert bridge_counts['actions'] == bridge_counts['steps'] and bridge_counts['rejected_actions'] == '0'
    assert int(policy_counts['commands']) >= int(policy_counts['transitions'])
    # liveness: each lockstep decision acted on a joint state DDS delivered; the worker is not stuck in an event
    assert int(policy_counts['joint_states_received']) >= int(policy_counts['inferences']) > 0
    assert float(policy_counts['worker_busy_s']) < SILENCE_S and policy_counts['updates_received'] == '0'
    assert actions
    r = [M.reward_from_msg(m) for _, m in list(rewards)]
    assert r and all(np.isfinite(x.reward) and x.reward <= 0 for x in r)   # reach reward = -distance
    trunc = [t for t in ts if not t.terminated]
    assert trunc and all(np.all(np.isfinite(t.next_obs)) for t in trunc)
    assert policy.stop() == 0 and bridge.stop() == 0


def _robot(ros_node):
    js_pub = ros_node.node.create_publisher(JointState, '/joint_states', qos_profile_sensor_data)
    task_pub = ros_node.node.create_publisher(Float64MultiArray, '/swfp/task', TASK_QOS)
    names = list(ARM_JOINTS) + list(FINGER_JOINTS)

    def publish(q, task=None, names_=None, stamp=None):
        q = np.asarray(q, dtype=float)
        pos = np.concatenate([q, [0.0, 0.0]]) if q.size == 7 else q
        js_pub.publish(M.joint_state_msg(names_ or names[:pos.size], pos, np.zeros(pos.size), np.zeros(pos.size),
                                         stamp=stamp))
        if task is not None:
            task_pub.publish(M.task_msg(LABELS, task))
    return publish


def test_realtime_safety_holds_clamps_and_updates(launch_node, ros_node, tmp_path):
    """Each phase starts when the node's own status shows the state it tests (stale, e-stop engaged or released),
    plus one more status period for commands still in flight, so a slow machine changes the timing, not the result."""
    ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', OBS_DIM, gain=1.0)
    actions = ros_node.collect('/swfp/action', Float64MultiArray, ACTION_QOS)
    status = ros_node.collect('/swfp/status', DiagnosticArray, ACTION_QOS)
    publish = _robot(ros_node)
    estop_pub = ros_node.node.create_publisher(Bool, '/swfp/estop', ESTOP_QOS)
    update_pub = ros_node.node.create_publisher(UInt8MultiArray, '/swfp/policy_update', UPDATE_QOS)
    env = TASKS['panda_reach'][1]()
    lower, upper = env.joint_lower, env.joint_upper
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                         params=policy_params(ckpt, mode='realtime', control_rate=50.0, stale_timeout_s=STALE_S,
                                              estop_release_sources=[ros_node.node.get_fully_qualified_name()]),
                         env=stub_env())
    q = HOME_Q
    task = np.array([0.4, 0.0, 0.3, 0.5, 0.1, 0.3])
    ros_node.wait_for_subscribers('/joint_states', timeout=20)

    def values():
        return node_status(status, '/policy_node')

    def feed_until(qq, done, what, timeout=20.0, **kw):
        """Publish fresh joint states (and the task) at ~50 Hz until ``done()``."""
        t_end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > t_end:
                raise TimeoutError(f'timed out after {timeout:.0f} s waiting for {what}')
            publish(qq, task, **kw)
            time.sleep(0.02)

    def new_commands(n):
        start = len(actions)
        return lambda: len(actions) >= start + n

    def after_status(pred, what):
        """Wait until the status satisfies ``pred``, then one more status message (in-flight commands land)."""
        ros_node.wait_for(lambda: pred(values()), 20.0, what=what)
        seen = len(status)
        ros_node.wait_for(lambda: len(status) > seen, 10.0, what='the next status message')
        return len(actions)

    def commands(start):
        return [np.asarray(m.data) for _, m in list(actions)[start:]]

    def withheld(v):
        return int(v.get('stale_holds_withheld', 0))

    try:
        # 1. fresh observations -> moving commands, within max_delta of q
        start = len(actions)
        feed_until(q, new_commands(10), 'commands from fresh observations')
        cmds = commands(start)
        assert any(not np.allclose(c, q) for c in cmds)
        assert all(np.all(np.abs(c - q) <= 0.1 + 1e-9) for c in cmds)
        # 2. stale: stop publishing -> nothing is sent (no hold at a measurement that old: the arm may have moved)
        start = after_status(lambda v: withheld(v) > 0, 'the stale watchdog withholding holds')
        w = withheld(values())
        ros_node.wait_for(lambda: withheld(values()) > w + 5, 10.0, what='more withheld holds')
        assert commands(start) == [] and int(values()['safety_stale']) > 0

        def invalid_phase(bad, what, **kw):
            """Fresh states, then invalid ones: holds at the last valid position while it is fresh, then nothing."""
            feed_until(q, new_commands(3), 'commands from fresh observations again')
            seen = len(status)                       # a status sent after those: its count of withheld holds is final
            feed_until(q, lambda: len(status) > seen, 'a status from the fresh observations')
            w0, b0, h0 = withheld(values()), int(values().get('bad_joint_state', 0)), int(values().get('holds', 0))
            feed_until(bad, lambda: int(values().get('bad_joint_state', 0)) > b0, f'{what} counted', **kw)
            seen = len(status)                       # the commands sent before it have landed
            feed_until(bad, lambda: len(status) > seen, 'the next status', **kw)
            start = len(actions)
            feed_until(bad, lambda: withheld(values()) > w0, f'{what}: holds withheld once the last valid is stale',
                       **kw)
            # holds went out while the last valid state was fresh (the node's count: on a loaded machine the two
            # statuses above can take longer than stale_timeout_s, and then none arrives after `start`), and every
            # command after the moving ones in flight is a hold at the last valid position
            held = commands(start)
            assert int(values()['holds']) > h0 and all(np.allclose(c, q) for c in held), held
            quiet = after_status(lambda v: True, 'a status')
            feed_until(bad, lambda: withheld(values()) > w0 + 5, f'{what}: more withheld holds', **kw)
            assert commands(quiet) == []
        # 3. NaN joint state -> hold (at the last valid position), counted
        invalid_phase(np.full(7, np.nan), 'NaN joint states')
        assert int(values()['safety_bad_joint_state']) > 0
        # 4. wrong size (a joint missing) -> the same
        invalid_phase(q[:6], 'short joint states', names_=list(ARM_JOINTS[:6]))
        # 5. at the joint limits: commands never leave them
        q_lim = np.where(np.arange(7) % 2 == 0, upper, lower)
        start = len(actions)
        feed_until(q_lim, new_commands(10), 'commands at the limits')
        assert all(np.all(c <= upper + 1e-12) and np.all(c >= lower - 1e-12) for c in commands(start))
        # 6. e-stop (latched) -> hold even with fresh observations; release -> moves again
        estop_pub.publish(Bool(data=True))
        feed_until(q, lambda: values().get('estop') == '1', 'e-stop engaged (status)')
        seen = len(status)
        feed_until(q, lambda: len(status) > seen, 'the next status message')
        start = len(actions)
        feed_until(q, new_commands(10), 'commands during the e-stop')
        assert all(np.allclose(c, q) for c in commands(start))
        estop_pub.publish(Bool(data=False))
        feed_until(q, lambda: values().get('estop') == '0', 'e-stop released (status)')
        start = len(actions)
        feed_until(q, lambda: any(not np.allclose(c, q) for c in commands(start)), 'moving again after release')
        # 7. policy updates: a valid one is applied, corrupt / out-of-order ones rejected, commands keep flowing
        update_pub.publish(M.update_msg(stub_runtime.make_update(1, np.full(7, 0.3))))
        bad = bytearray(stub_runtime.make_update(2, np.zeros(7)))
        bad[-1] ^= 0xFF
        feed_until(q, lambda: values().get('policy_version') == '1', 'update v1 applied')
        update_pub.publish(M.update_msg(bytes(bad)))                                    # checksum
        update_pub.publish(M.update_msg(stub_runtime.make_update(5, np.zeros(7))))       # out of order
        update_pub.publish(M.update_msg(stub_runtime.make_update(2, np.zeros(3))))       # mismatched size
        feed_until(q, lambda: values().get('updates_rejected') == '3', '3 rejections')
        start = len(actions)
        feed_until(q, new_commands(10), 'commands after the rejected updates')  # the policy keeps commanding
        vals = values()
        assert vals['policy_version'] == '1' and vals['updates_applied'] == '1'
        assert int(vals['safety_stale']) > 0 and int(vals['safety_estop']) > 0
        assert int(vals['safety_bad_joint_state']) > 0 and int(vals['safety_clamp_limit']) > 0
        assert float(vals['inference_ms_p99']) > 0
        assert policy.alive()
    finally:
        print(policy.output()[-3000:])
    assert policy.stop() == 0


@pytest.mark.parametrize('stamp_age', [True, False])
def test_realtime_judges_joint_states_by_their_stamps(launch_node, ros_node, tmp_path, stamp_age):
    """Joint states that arrive now but were stamped 1 s ago (they waited in a queue) are stale: no command at all,
    counted and warned; stamped now, the policy commands. ``stamp_age: false`` judges by arrival only."""
    ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', OBS_DIM, gain=1.0)
    actions = ros_node.collect('/swfp/action', Float64MultiArray, ACTION_QOS)
    status = ros_node.collect('/swfp/status', DiagnosticArray, ACTION_QOS)
    publish = _robot(ros_node)
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml', env=stub_env(),
                         params=policy_params(ckpt, mode='realtime', control_rate=50.0, stale_timeout_s=0.5,
                                              stamp_age=stamp_age))
    ros_node.wait_for_subscribers('/joint_states', timeout=20)
    task = np.array([0.4, 0.0, 0.3, 0.5, 0.1, 0.3])

    def feed_until(done, what, age_s):
        t_end = time.monotonic() + 20.0
        while not done():
            assert time.monotonic() < t_end, f'timed out waiting for {what}'
            publish(HOME_Q, task, stamp=M.time_msg(time.time() - age_s))
            time.sleep(0.02)

    def values():
        return node_status(status, '/policy_node')
    if stamp_age:
        feed_until(lambda: int(values().get('old_joint_state_stamps', 0)) > 0, 'old stamps counted', 1.0)
        seen = len(status)
        feed_until(lambda: len(status) > seen + 2, 'two more status messages', 1.0)
        assert not actions and int(values()['safety_stale']) > 0
        assert 'before now (over stale_timeout_s 0.5)' in policy.output()
    else:
        feed_until(lambda: len(actions) >= 5, 'commands from old-stamped states judged by arrival', 1.0)
    feed_until(lambda: len(actions) >= 10, 'commands from fresh stamps', 0.0)
    assert policy.stop() == 0


def test_dry_run_publishes_preview_only(launch_node, ros_node, tmp_path):
    ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', OBS_DIM)
    actions = ros_node.collect('/swfp/action', Float64MultiArray, ACTION_QOS)
    preview = ros_node.collect('/policy_node/action_preview', Float64MultiArray, ACTION_QOS)
    publish = _robot(ros_node)
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                         params=policy_params(ckpt, mode='realtime', dry_run=True), env=stub_env())
    ros_node.wait_for_subscribers('/joint_states', timeout=20)
    t_end = time.monotonic() + 8
    while time.monotonic() < t_end and len(preview) < 5:
        publish(HOME_Q, np.zeros(6))   # a measured position inside the limits (outside them nothing is sent)
        time.sleep(0.02)
    assert len(preview) >= 5 and not actions
    assert policy.stop() == 0


def test_a_worker_stuck_in_an_inference_is_reported(launch_node, ros_node, tmp_path):
    """An inference that outlasts SILENCE_S (a stub runtime sleeping in act) turns the status to WARN, naming
    the event and the frame it is stuck in, and the node logs it; joint states keep being counted meanwhile."""
    ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', OBS_DIM, sleep_s=SILENCE_S + 3.0)
    status = ros_node.collect('/swfp/status', DiagnosticArray, 10)
    publish = _robot(ros_node)
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                         params=policy_params(ckpt, mode='realtime', warmup_iters=1), env=stub_env())

    def stuck():
        st = latest_status(status)
        return st if st is not None and 'actor worker stuck in tick' in st.message else None
    try:
        ros_node.wait_for_subscribers('/joint_states', timeout=60)
        deadline = time.monotonic() + 60
        while stuck() is None and time.monotonic() < deadline:
            publish(HOME_Q, np.zeros(6))
            time.sleep(0.05)
        st = stuck()
        assert st is not None, status_values(status)
        values = {kv.key: kv.value for kv in st.values}
        assert st.level == DiagnosticStatus.WARN and 'in act' in st.message, st.message
        assert values['worker_event'] == 'tick' and float(values['worker_busy_s']) > SILENCE_S
        assert int(values['joint_states_received']) > 0
        ros_node.wait_for(lambda: 'no commands meanwhile' in policy.output(), 10, what='the stall logged')
    finally:
        print(policy.output()[-3000:])
    assert policy.stop() == 0


def test_a_node_that_hears_no_joint_states_says_so(launch_node, ros_node, tmp_path):
    """No publisher on /joint_states at all (no driver, or the topic not remapped to its): after SILENCE_S the status
    turns WARN saying so. Then joint states stop while their publisher stays on the graph: WARN again, naming the
    publishers, and the node logs it; once they flow again the warning goes."""
    ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', OBS_DIM)
    status = ros_node.collect('/swfp/status', DiagnosticArray, 10)
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                         params=policy_params(ckpt, mode='realtime'), env=stub_env())

    def deaf():
        st = latest_status(status)
        return st is not None and 'no joint state delivered' in st.message
    try:
        ros_node.wait_for(lambda: latest_status(status) is not None
                          and 'no publisher on /joint_states' in latest_status(status).message, SILENCE_S + 60,
                          what='the missing driver reported')
        assert latest_status(status).level == DiagnosticStatus.WARN
        publish = _robot(ros_node)
        ros_node.wait_for_subscribers('/joint_states', timeout=60)
        deadline = time.monotonic() + 30
        while int(status_values(status).get('joint_states_received', 0)) < 10 and time.monotonic() < deadline:
            publish(HOME_Q, np.zeros(6))
            time.sleep(0.02)
        assert not deaf() and latest_status(status).level == DiagnosticStatus.OK, latest_status(status)
        ros_node.wait_for(deaf, SILENCE_S + 20, what='the silence reported')       # nothing published meanwhile
        st = latest_status(status)
        assert st.level == DiagnosticStatus.WARN and 'publisher(s) on /joint_states' in st.message, st.message
        assert float(status_values(status)['joint_state_age_s']) > SILENCE_S
        ros_node.wait_for(lambda: 'no joint state delivered' in policy.output(), 10, what='the silence logged')
        deadline = time.monotonic() + 30
        seen = len(status)
        while (deaf() or len(status) < seen + 2) and time.monotonic() < deadline:
            publish(HOME_Q, np.zeros(6))
            time.sleep(0.02)
        assert not deaf(), latest_status(status).message
    finally:
        print(policy.output()[-3000:])
    assert policy.stop() == 0


def _real_checkpoint(path):
    """A tiny untrained FlowPolicy checkpoint through the algorithm's own API."""
    from swfp_ros.algo.blocks import Cascade, RefinementBlock
    from swfp_ros.algo.checkpoint import save_policy
    from swfp_ros.algo.config import FlowConfig
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.normalize import ObsNormalizer
    import dataclasses
    cfg = FlowConfig()
    cfg = dataclasses.replace(cfg, **{k: v for k, v in {'hidden': 32, 'layers': 2}.items()
                                      if k in {f.name for f in dataclasses.fields(cfg)}})
    cascade = Cascade(FlowPolicy(OBS_DIM, 7, cfg))
    save_policy(str(path), cascade, ObsNormalizer(OBS_DIM), version=0)
    return path, RefinementBlock(OBS_DIM, 7, 16, 2, 0.1)


def test_real_runtime_applies_block_and_rejects_corrupt(launch_node, ros_node, tmp_path):
    pytest.importorskip('swfp_ros.algo.checkpoint')
    from swfp_ros.algo.serialize import BlockUpdate
    ckpt, block = _real_checkpoint(tmp_path / 'policy.pt')
    transitions = ros_node.collect('/swfp/transition', Float64MultiArray, TRANSITION_QOS)
    status = ros_node.collect('/swfp/status', DiagnosticArray, 10)
    update_pub = ros_node.node.create_publisher(UInt8MultiArray, '/swfp/policy_update', UPDATE_QOS)
    bridge = launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml')
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                         params={'checkpoint': str(ckpt), 'device': 'cpu', 'status_period_s': 0.2})
    try:
        ros_node.wait_for(lambda: len(transitions) >= 20, timeout=40, what='20 transitions')
        from swfp_ros.algo.checkpoint import load_policy
        parent = load_policy(str(ckpt), device='cpu').digest      # the policy the node runs
        good = BlockUpdate.from_block(1, block, parent, w2_bound=0.05).to_bytes()
        corrupt = bytearray(good)
        corrupt[len(corrupt) // 2] ^= 0xFF
        update_pub.publish(M.update_msg(bytes(corrupt)))
        update_pub.publish(M.update_msg(good))
        ros_node.wait_for(lambda: status_values(status).get('policy_version') == '1'
                          and status_values(status).get('updates_rejected') == '1', 20, what='v1 applied + 1 rejected')
        assert status_values(status)['updates_received'] == '2'
        n = len(transitions)
        ros_node.wait_for(lambda: len(transitions) >= n + 20, timeout=20, what='transitions after the update')
        assert M.transition_from_msg(transitions[-1][1]).version == 1
    finally:
        print(policy.output()[-3000:])
    assert policy.stop() == 0 and bridge.stop() == 0
