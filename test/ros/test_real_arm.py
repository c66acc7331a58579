"""The real_arm graph end to end, through `swfp up`, against mock ros2_control arms (the sim bridge in hardware mode:
joint_states at 100 Hz, Float64MultiArray on forward_position_controller/commands, no task, reward or clock).

The observer here is the test's own: it computes the end effector by forward kinematics of the published joint
states with MuJoCo directly (not the project's task node or kinematics code), and checks every command against the
joint states the policy could have measured.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, Int32  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from swfp_ros.ros.fault_injection import source_time  # noqa: E402
from swfp_ros.train.graph_demo import _config_dir  # noqa: E402
from test_multi_actor import statuses  # noqa: E402
from tiny_policy import SMALL_SWFP  # noqa: E402
from up_process import finish, process_gone, started_pids  # noqa: E402

ARM = tuple(f'panda_joint{i}' for i in range(1, 8))
MAX_DELTA = 0.1                     # config/policy.yaml
# A command is judged against the joint states sent in this window before it: the policy commands nothing from joint
# states older than its stale_timeout_s (0.5 s, config/policy.yaml).
CHECK_WINDOW_S = 0.6
JOINT_STATE_RATE = 100.0      # the mock arm's joint_state_rate (config/sim_bridge.yaml)
# Best effort like the publisher, but a deep history: on a busy machine the observer must not drop the very joint
# state a command was filtered against.
JOINT_STATES_QOS = QoSProfile(depth=5000, reliability=ReliabilityPolicy.BEST_EFFORT)
DEEP = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SWFP = Path(sys.executable).parent / 'swfp'


@pytest.fixture(scope='module')
def reach_policy(tmp_path_factory):
    """Reach policies: ``bc.pt`` (BC from 50 expert demos, noise 0.1, chunks of 4) and ``ft/learner.pt`` (that BC
    fine-tuned online by `swfp finetune`, in-process: 1000 env steps, 3 blocks). About a minute on 2 shared cores."""
    out = tmp_path_factory.mktemp('reach_policy')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    run = lambda *a: subprocess.run([str(SWFP), *a], check=True, env=env, capture_output=True, text=True)  # noqa
    run('demos', '--task', 'panda_reach', '--episodes', '50', '--noise', '0.1', '--epsilon', '0', '--seed', '7',
        '--out', str(out / 'demos.npz'))
    run('pretrain', '--data', str(out / 'demos.npz'), '--out', str(out / 'bc.pt'), '--steps', '2000', '--chunk', '4',
        '--threads', '1')
    run('finetune', '--bc', str(out / 'bc.pt'), '--task', 'panda_reach', '--out', str(out / 'ft'), '--env-steps',
        '1000', '--num-envs', '2', '--eval-every', '1000', '--eval-episodes', '10', '--set', 'warmup_steps=300',
        '--set', 'steps_per_block=300', '--set', 'block.train_steps=100', '--device', 'cpu', '--threads', '1')
    return out


class ArmObserver:
    """Joint states and commands of one arm, with the end effector by MuJoCo forward kinematics."""

    def __init__(self, ros_node, ns=''):
        import mujoco
        from swfp_ros.sim.panda_model import default_panda_xml
        self.mujoco = mujoco
        self.model = mujoco.MjModel.from_xml_string(default_panda_xml())
        self.data = mujoco.MjData(self.model)
        self.qadr = [self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, j)] for j in ARM]
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, 'end_effector')
        self.js = ros_node.collect(f'{ns}/joint_states', JointState, JOINT_STATES_QOS)
        self.commands = ros_node.collect(f'{ns}/forward_position_controller/commands', Float64MultiArray, DEEP)
        # (source time, value) on the senders' clock, for check_commands
        self.js_sent: list = []
        self.commands_sent: list = []
        ros_node.node.create_subscription(
            JointState, f'{ns}/joint_states', lambda m, i: self.js_sent.append((source_time(i), self.arm_q(m))),
            JOINT_STATES_QOS)
        ros_node.node.create_subscription(
            Float64MultiArray, f'{ns}/forward_position_controller/commands',
            lambda m, i: self.commands_sent.append((source_time(i), np.asarray(m.data))), DEEP)

    def fk(self, q):
        self.data.qpos[self.qadr] = q
        self.mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy()

    def arm_q(self, msg):
        index = {n: i for i, n in enumerate(msg.name)}
        return np.array([msg.position[index[j]] for j in ARM])

    def ee_since(self, t0):
        return [(t, self.fk(self.arm_q(m))) for t, m in list(self.js) if t >= t0]

    def checkable(self, sent_times=None, window_s=CHECK_WINDOW_S) -> int:
        """How many commands check_commands() judges: those sent ``window_s`` after this observer's first joint state
        (its subscription can match the arm later than the policy node's does, on a loaded machine seconds later).
        ``sent_times``: the commands' source times; by default those of the commands this observer collected."""
        js_times = [t for t, _ in list(self.js_sent)]
        if sent_times is None:
            sent_times = [t for t, _ in list(self.commands_sent)]
        return sum(t >= min(js_times) + window_s for t in sent_times) if js_times else 0

    def check_commands(self, window_s=CHECK_WINDOW_S):
        """Every command within max_delta of a joint state the policy could have measured: one sent in the
        ``window_s`` before the command was sent (the policy commands nothing from joint states older than
        stale_timeout_s = 0.5 s). Times are the senders' (source timestamps), so the order of this observer's
        callbacks does not matter. Best-effort joint states this observer missed (a gap longer than 1.5 periods)
        may have been the one the policy measured: a command may then also be within max_delta of any point the
        arm passed through in the gap, bounded by the largest move between the two states around it. Returns the
        number checked (those after the observer's first joint states)."""
        js = sorted(self.js_sent, key=lambda x: x[0])
        times = np.array([t for t, _ in js])
        checked = 0
        for t, cmd in sorted(self.commands_sent, key=lambda x: x[0]):
            assert cmd.shape == (7,) and np.all(np.isfinite(cmd))
            if t < times[0] + window_s:
                continue
            checked += 1
            lo, hi = np.searchsorted(times, t - window_s), np.searchsorted(times, t, side='right')
            recent = [q for _, q in js[lo:hi]]
            assert recent, 'a command without a joint state before it'
            gap_moves = [np.abs(js[k + 1][1] - js[k][1]).max() for k in range(max(lo - 1, 0), min(hi, len(js) - 1))
                         if js[k + 1][0] - js[k][0] > 1.5 / JOINT_STATE_RATE]
            closest = min(np.abs(cmd - q).max() for q in recent)
            assert closest <= MAX_DELTA + max(gap_moves, default=0.0) + 1e-9, (cmd, closest, len(recent), gap_moves)
        return checked


def _up(tmp_path, env, *assignments):
    log = open(tmp_path / 'up.log', 'w+')
    proc = subprocess.Popen([str(SWFP), 'up', 'real_arm', 'mock_arm:=true', 'dry_run:=false', 'device:=cpu',
                             *assignments], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                            start_new_session=True)
    return proc, log


def _finish(proc, log) -> str:
    """After a failure: Ctrl-C to `swfp up` (it stops its nodes, which run in their own process groups), then the
    shared helper's SIGKILL of whatever is left of its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    return finish(proc, log)


def _ctrl_c_twice(proc):
    """What a terminal Ctrl-C pressed twice does: SIGINT to the whole process group, twice within 100 ms."""
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)


def _all_exited_cleanly(out, names):
    for name in names:
        assert re.search(rf'^\[swfp up\] {re.escape(name)} exited with status 0$', out, re.M), (name, out[-3000:])


def _goals(n, seed=3):
    """Goals from the reach task's goal box, at least 10 cm apart."""
    from swfp_ros.sim.tasks import PandaReachEnv
    rng, goals = np.random.default_rng(seed), []
    while len(goals) < n:
        g = rng.uniform(PandaReachEnv.goal_low, PandaReachEnv.goal_high)
        if all(np.linalg.norm(g - h) >= 0.1 for h in goals):
            goals.append(g)
    return goals


def _goal_msg(g):
    msg = PoseStamped()
    msg.header.frame_id = 'panda_link0'
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, g)
    return msg


START_UP_S = 5.0    # the rate is judged from this long after the first command: the learner is still loading then


def test_real_arm_reaches_20_goals_with_the_task_monitor(reach_policy, tmp_path, ros_env, ros_node):
    """learn:=true with a list of 20 goals for about a minute: the task monitor runs an episode per goal and the
    policy brings the arm home in between. Commands flow, never faster than the control rate (how close to it a
    loaded machine keeps them: benchmarks/bench_real_arm.py's command intervals), each within max_delta of the
    measured position; the end effector gets within 5 cm of >= 80 % of the goals — by the test's own forward
    kinematics of the joint states, episode k (goal k mod 20) judged between the starts of episodes k and k + 1, for
    k = 1..20 (swfp/episode is used as a clock only; episode 0 may start before the test's subscription is matched);
    the recorded bag holds the command topic; the learner node, fresh on the same fine-tuned checkpoint, continues it
    (its late-joiner base is applied, no update refused); a double Ctrl-C to the process group stops every node with
    status 0 and the learner's final checkpoint written."""
    arm = ArmObserver(ros_node)
    episodes = ros_node.collect('/swfp/episode', Int32, DEEP)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    goals = _goals(20)
    proc, log = _up(tmp_path, ros_env, f'checkpoint:={reach_policy / "ft" / "learner.pt"}', 'learn:=true',
                    'goal:=' + ';'.join(','.join(f'{x:.4f}' for x in g) for g in goals),
                    f'checkpoint_dir:={tmp_path / "ckpt"}', 'record_bag:=true', f'bag_path:={tmp_path / "bag"}')
    try:
        ros_node.wait_for(lambda: len(arm.commands_sent) > 0, 90.0, what='the first command')
        started = lambda: {m.data: t for t, m in list(episodes)}  # noqa: E731
        ros_node.wait_for(lambda: len(goals) + 1 in started(), 240.0, what='episodes 1..20 done (the 21st started)')
        ros_node.wait_for(lambda: arm.checkable() > 800, 30.0, what='800 commands the observer can judge')
        sent_end = time.time()          # the senders' clock: source timestamps are this host's wall clock
        nodes = statuses(status)
        _ctrl_c_twice(proc)
        rc = proc.wait(timeout=60)
    finally:
        out = _finish(proc, log)
    assert rc == 0, out[-3000:]
    _all_exited_cleanly(out, ['mock_arm', 'task_node', 'policy_node', 'learner_node', 'recorder_node'])
    assert re.search(r'^\[learner_node\] .*final checkpoint', out, re.M)
    assert (tmp_path / 'ckpt' / 'learner.pt').is_file()
    # the learner continues the fine-tuned checkpoint at its version: its late-joiner base is the policy node's own
    assert re.search(r'^\[policy_node\] .*policy update applied', out, re.M) and 'update rejected' not in out, out
    starts = started()
    assert set(range(1, len(goals) + 2)) <= set(starts), sorted(starts)
    closest = [min(np.linalg.norm(e - goals[k % len(goals)]) for t, e in arm.ee_since(starts[k]) if t <= starts[k + 1])
               for k in range(1, len(goals) + 1)]
    reached = [d < 0.05 for d in closest]
    print('closest approach to each goal (m):', np.round(closest, 3))
    # The rate the policy commanded at, on its own send times (this observer's callbacks can stall on a loaded
    # machine: then one second of receptions holds 10 commands and the next 30). Only its upper bound is asserted
    # (one command per tick, no second sender): a process descheduled on shared cores skips ticks.
    sent = np.array(sorted(t for t, _ in arm.commands_sent))
    sent_start = sent[0] + START_UP_S
    per_second = np.histogram(sent, bins=np.arange(sent_start, sent_end, 1.0))[0]
    print(f'goals reached: {sum(reached)} of {len(goals)} in {sent_end - sent_start:.0f} s; commands per second: '
          f'min {per_second.min()}, mean {per_second.mean():.1f}')
    for name, keys in (('/task_node', ('episodes', 'successes', 'time_limits')), ('/mock_arm', ('steps', 'actions')),
                       ('/policy_node', ('ticks', 'ticks_coalesced', 'holds', 'safety_stale', 'stale_holds_withheld',
                                         'stale_commands_withheld', 'obs_to_action_ms', 'inference_ms', 'chunk_'))):
        print(name, {k: v for k, v in nodes.get(name, {}).items() if k.startswith(keys)})
    assert sent_end - sent_start >= 40 and per_second.mean() <= 22, per_second
    assert arm.check_commands() > 800
    assert sum(reached) >= 16, reached

    from swfp_ros.data import inspect_bag
    summary = inspect_bag(tmp_path / 'bag')       # metadata.yaml written by the recorder's clean close
    counts = {t.topic: t.count for t in summary.topics}
    assert counts.get('/forward_position_controller/commands', 0) > 800 and '/swfp/action' not in counts, counts
    assert counts.get('/joint_states', 0) > 1000 and counts.get('/swfp/reward', 0) > 100 and not summary.warnings


def test_real_arm_learns_with_the_task_monitor_and_survives_the_learner(reach_policy, tmp_path, ros_env, ros_node):
    """learn:=true: the task monitor's episodes (goal list, time limit, home posture in between) feed the learner,
    whose block the policy applies; the learner SIGKILLed -> the arm keeps acting with the last accepted policy and
    the learner is restarted (respawn_learner) and resumes; a double Ctrl-C ends everything with status 0 and the
    final checkpoint written. update_key_file:= gives learner and policy one key: the learner signs, the policy
    applies only signed updates (test_signed_updates.py shows it rejecting a forged one)."""
    arm = ArmObserver(ros_node)
    key_file = tmp_path / 'update.key'
    key_file.write_text(os.urandom(32).hex())
    key_file.chmod(0o600)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    cfg = _config_dir(tmp_path / 'config', SMALL_SWFP)
    goals = ';'.join(','.join(f'{x:.3f}' for x in g) for g in _goals(4, seed=5))
    proc, log = _up(tmp_path, ros_env, f'checkpoint:={reach_policy / "bc.pt"}', 'learn:=true',
                    'respawn_learner:=true', f'update_key_file:={key_file}',
                    f'goal:={goals}', f'config:={cfg}', f'checkpoint_dir:={tmp_path / "ckpt"}')
    try:
        s = lambda name: statuses(status).get(name, {})  # noqa: E731
        # the learner's status may lag the policy's: wait for each node's own report
        ros_node.wait_for(lambda: int(s('/task_node').get('episodes', 0)) >= 3
                          and int(s('/policy_node').get('homing_steps', 0)) > 0
                          and int(s('/policy_node').get('policy_version', 0)) >= 1
                          and int(s('/learner_node').get('blocks_accepted', 0)) >= 1, 150.0,
                          what='3 monitored episodes, a return home and a learner block applied')
        learner = s('/learner_node')
        assert int(learner['env_steps']) >= SMALL_SWFP['warmup_steps'], learner
        assert learner['signed'] == 'true' and s('/policy_node')['signed_updates'] == '1', (learner, s('/policy_node'))
        applied = int(s('/policy_node').get('updates_applied', 0))
        pid = started_pids(log_text(log))['learner_node']
        os.killpg(pid, signal.SIGKILL)
        n = len(arm.commands)
        ros_node.wait_for(lambda: len(arm.commands) >= n + 40, 20.0, what='commands while the learner is dead')
        ros_node.wait_for(lambda: log_text(log).count('started learner_node') == 2, 20.0, what='the learner restarted')
        ros_node.wait_for(lambda: s('/learner_node').get('resumed') == 'true', 60.0, what='the learner resumed')
        ros_node.wait_for(lambda: int(s('/policy_node').get('updates_applied', 0)) > applied, 30.0,
                          what="the resumed learner's signed snapshot applied")
        assert int(s('/policy_node').get('updates_rejected', 0)) == 0
        for node in ('policy_node', 'task_node', 'learner_node'):
            assert_sros2_policy_grants(ros_node.node, node)
        ros_node.wait_for(lambda: arm.checkable() > 200, 60.0, what='200 commands the observer can judge')
        _ctrl_c_twice(proc)
        rc = proc.wait(timeout=60)
    finally:
        out = _finish(proc, log)
    assert rc == 0, out[-3000:]
    assert 'the actors keep acting with their last accepted policy' in out
    _all_exited_cleanly(out, ['mock_arm', 'task_node', 'policy_node', 'learner_node'])
    assert re.search(r'^\[learner_node\] .*final checkpoint', out, re.M)
    assert (tmp_path / 'ckpt' / 'learner.pt').is_file()
    assert arm.check_commands() > 200
    assert all(process_gone(p) for p in started_pids(out).values())


SROS2_POLICY = Path(__file__).resolve().parents[2] / 'config' / 'sros2' / 'swfp_policy.xml'


def assert_sros2_policy_grants(graph_node, node: str, ns: str = '/'):
    """Every topic ``node`` publishes or subscribes and every service it serves on the running graph is allowed to
    it by the example SROS2 policy (whose profiles are written for namespace /arm1: resolved here in ``ns``, the way
    sros2 resolves relative and ~ names). Also: only the learner may publish policy updates."""
    import xml.etree.ElementTree as ET

    def resolve(name):
        if name.startswith('/'):
            return name
        base = ns.rstrip('/')
        return f'{base}/{node}/{name[2:]}' if name.startswith('~/') else f'{base}/{name}'

    root = ET.parse(SROS2_POLICY).getroot()
    profile = next(p for p in root.iter('profile') if p.get('node') == node)
    allowed = {kind: set() for kind in ('publish', 'subscribe', 'reply')}
    for group in profile:
        for kind in allowed:
            if group.get(kind) == 'ALLOW':
                allowed[kind] |= {resolve(e.text.strip()) for e in group}
    used = {'publish': graph_node.get_publisher_names_and_types_by_node(node, ns),
            'subscribe': graph_node.get_subscriber_names_and_types_by_node(node, ns),
            'reply': graph_node.get_service_names_and_types_by_node(node, ns)}
    for kind, endpoints in used.items():
        names = {name for name, _types in endpoints}
        assert names, (node, kind, 'no endpoints seen')
        assert names <= allowed[kind], (node, kind, sorted(names - allowed[kind]))
    publishers_of_updates = {p.get('node') for p in root.iter('profile')
                             for group in p if group.get('publish') == 'ALLOW'
                             for e in group if e.text.strip() == '/swfp/policy_update'}
    assert publishers_of_updates == {'learner_node'}, publishers_of_updates


def log_text(log) -> str:
    log.flush()
    return Path(log.name).read_text()


def test_two_arms_in_their_namespaces_from_one_call(reach_policy, tmp_path, ros_env, ros_node):
    """namespace:=arm1,arm2: one `swfp up` call drives two mock arms on their own controller topics, each towards the
    goal given on its own swfp/goal (36 cm apart: an arm within 8 cm of its goal follows its own, not the other's);
    nothing is commanded on the un-namespaced topic."""
    arms = {ns: ArmObserver(ros_node, f'/{ns}') for ns in ('arm1', 'arm2')}
    plain = ros_node.collect('/forward_position_controller/commands', Float64MultiArray, DEEP)
    goals = {'arm1': np.array([0.5, 0.15, 0.3]), 'arm2': np.array([0.4, -0.2, 0.25])}
    for ns, g in goals.items():
        ros_node.node.create_publisher(PoseStamped, f'/{ns}/swfp/goal', LATCHED).publish(_goal_msg(g))
    proc, log = _up(tmp_path, ros_env, f'checkpoint:={reach_policy / "ft" / "learner.pt"}', 'namespace:=arm1,arm2')
    try:
        def reached(ns):   # the end effector within 8 cm of this arm's goal at some point (the test's own FK)
            return any(np.linalg.norm(e - goals[ns]) < 0.08 for _, e in arms[ns].ee_since(0.0))
        ros_node.wait_for(lambda: reached('arm1') and reached('arm2'), 90.0, what='both arms at their own goals')
        ros_node.wait_for(lambda: min(a.checkable() for a in arms.values()) > 20, 30.0,
                          what='20 commands to each arm that its observer can judge')
        _ctrl_c_twice(proc)
        rc = proc.wait(timeout=60)
    finally:
        out = _finish(proc, log)
    assert rc == 0, out[-3000:]
    _all_exited_cleanly(out, [f'{ns}/{n}' for ns in arms for n in ('mock_arm', 'task_node', 'policy_node')])
    assert all(a.check_commands() > 20 for a in arms.values()) and not plain


def test_real_arm_on_a_joint_trajectory_controller(reach_policy, tmp_path, ros_env, ros_node):
    """command_type:=trajectory on the joint_trajectory_controller's topic: each chunk goes out as one JointTrajectory
    (the arm's joints by name, points a control period apart, each within max_delta of the one before it and the first
    of a joint state the policy could have measured); the mock arm follows it to the goal, and nothing is sent to the
    forward controller's topic."""
    arm = ArmObserver(ros_node)
    trajectories = []
    ros_node.node.create_subscription(JointTrajectory, '/joint_trajectory_controller/joint_trajectory',
                                      lambda m, i: trajectories.append((source_time(i), m)), DEEP)
    goal = np.array([0.5, 0.15, 0.3])
    ros_node.node.create_publisher(PoseStamped, '/swfp/goal', LATCHED).publish(_goal_msg(goal))
    proc, log = _up(tmp_path, ros_env, f'checkpoint:={reach_policy / "ft" / "learner.pt"}', 'command_type:=trajectory',
                    'command_topic:=joint_trajectory_controller/joint_trajectory')
    try:
        ros_node.wait_for(lambda: any(np.linalg.norm(e - goal) < 0.08 for _, e in arm.ee_since(0.0)), 90.0,
                          what='the arm at the goal')
        ros_node.wait_for(lambda: arm.checkable([t for t, _ in list(trajectories)]) >= 15, 30.0,
                          what='15 trajectories the observer can judge')
        _ctrl_c_twice(proc)
        rc = proc.wait(timeout=60)
    finally:
        out = _finish(proc, log)
    assert rc == 0, out[-3000:]
    _all_exited_cleanly(out, ['mock_arm', 'task_node', 'policy_node'])
    assert not arm.commands, 'a command on the forward controller\'s topic'
    for t, msg in list(trajectories):
        assert tuple(msg.joint_names) == ARM and 1 <= len(msg.points) <= 4
        points = np.array([pt.positions for pt in msg.points])
        assert points.shape == (len(msg.points), 7) and np.all(np.isfinite(points))
        times = [pt.time_from_start.sec + 1e-9 * pt.time_from_start.nanosec for pt in msg.points]
        assert np.allclose(times, 0.05 * np.arange(1, len(times) + 1)), times     # one control period apart
        assert np.all(np.abs(np.diff(points, axis=0)) <= MAX_DELTA + 1e-9), points
        arm.commands_sent.append((t, points[0]))
    assert arm.check_commands() >= 15


def test_a_policy_that_cannot_start_ends_the_graph_with_the_reason(tmp_path, ros_env):
    proc, log = _up(tmp_path, ros_env)           # no checkpoint
    try:
        rc = proc.wait(timeout=90)
    finally:
        out = _finish(proc, log)
    assert rc == 3, out[-3000:]
    assert 'policy_node exited with status 3; shutting the graph down' in out, out[-3000:]
    assert all(process_gone(p) for p in started_pids(out).values())
