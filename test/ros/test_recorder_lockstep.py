"""A bag recorded live from the lockstep graph (sim bridge + policy node + recorder, on simulation time) re-ingests
with the shipped spec into one step per recorded action, each paired with the state it was computed from and the
reward it earned (checked against the policy node's own /swfp/transition stream)."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

import stub_runtime  # noqa: E402
from test_policy_sim_graph import node_status  # noqa: E402
from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.qos import TRANSITION_QOS  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402

pytestmark = pytest.mark.timeout(120) if hasattr(pytest.mark, 'timeout') else []
HERE = Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / 'config'
OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)
ACTIONS = 400


def _unobserved_actions(bag, max_staleness_ns=100_000_000) -> int:
    """Actions after the first episode start with no /joint_states or /swfp/task recorded in the 0.1 s before them
    (the spec's max_staleness): what ingest must drop as stale, read from the bag's stamps alone."""
    from swfp_ros.data import open_bag
    latest, started, count = {}, False, 0
    with open_bag(bag) as b:
        for topic, _type, t, _raw in b.messages(['/joint_states', '/swfp/task', '/swfp/action', '/swfp/episode']):
            if topic == '/swfp/episode':
                started = True
            elif topic == '/swfp/action':
                count += started and any(t - latest.get(s, -10 ** 18) > max_staleness_ns
                                         for s in ('/joint_states', '/swfp/task'))
            else:
                latest[topic] = t
    return count


def test_lockstep_bag_reingests_every_recorded_step(launch_node, ros_node, tmp_path):
    import os

    from swfp_ros.data import ingest
    from swfp_ros.data.inspect import inspect_bag

    bag = tmp_path / 'bag'
    ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', OBS_DIM)
    transitions = ros_node.collect('/swfp/transition', Float64MultiArray, TRANSITION_QOS)
    actions = ros_node.collect('/swfp/action', Float64MultiArray, QoSProfile(depth=1000,
                                                                            reliability=ReliabilityPolicy.RELIABLE))
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    recorder = launch_node('recorder_node', params_file=CONFIG / 'recorder.yaml',
                           params={'output': str(bag), 'use_sim_time': True, 'discovery_period_s': 0.2,
                                   'status_period_s': 0.2})
    bridge = launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml', params={'seed': 3})
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                         params={'checkpoint': str(ckpt), 'policy_loader': 'stub_runtime:load_policy'},
                         env={'PYTHONPATH': f'{HERE}:{os.environ.get("PYTHONPATH", "")}'})
    ros_node.wait_for(lambda: len(actions) >= ACTIONS, timeout=60, what=f'{ACTIONS} actions')
    # held messages are written as they become ready, not all at the close (a killed recorder would lose them)
    ros_node.wait_for(lambda: int(node_status(status, '/recorder_node').get('count/swfp/action', 0)) >= ACTIONS // 2,
                      timeout=30, what='the recorder writing actions while it records')
    assert policy.stop() == 0 and bridge.stop() == 0
    assert recorder.stop() == 0, recorder.output()[-3000:]

    recorded = {t.topic: t.count for t in inspect_bag(bag).topics}
    dataset, report = ingest(bag, CONFIG / 'ingest_panda_reach.yaml', progress=False, return_report=True)
    dropped = report.bags[0].dropped
    # no action shares its tick with another (the defect: duplicate or decimated action timestamps) ...
    assert not {'duplicate_action_timestamp', 'decimated_to_control_rate'} & set(dropped), dropped
    # ... so an action lacks a step only before the first recorded episode start, or when the recorder itself lost
    # the state it was computed from (best-effort /joint_states dropped in transport while the machine is loaded)
    assert dataset.num_steps + dropped.get('before_first_episode', 0) + _unobserved_actions(bag) \
        == recorded['/swfp/action'], (recorded, dropped)
    assert dataset.num_steps >= 100, (recorded, dropped)

    # each step pairs the observation the action was computed from with the reward that action earned
    by_obs = {}
    for _, m in list(transitions):
        t = M.transition_from_msg(m, OBS_DIM, 7)
        by_obs[np.asarray(t.obs, np.float32).tobytes()] = t
    matched = 0
    for ep in dataset:
        # a step right before a dropped one takes that one's reward too (ingest keeps the latest before the next step)
        followed_by_a_gap = np.append(np.diff(ep.timestamps) > 1.5 / 20.0, False)
        for obs, action, reward, gap in zip(ep.obs, ep.actions, ep.rewards, followed_by_a_gap):
            t = by_obs.get(obs.tobytes())
            if t is None:
                continue
            matched += 1
            np.testing.assert_allclose(action, t.action, atol=1e-5)
            if not gap:
                assert reward == pytest.approx(t.reward, abs=1e-5)
    # Not every step can match: this test's subscription may match the policy's publisher after its first
    # transitions went out, and a step whose joint state the recorder lost in transport (best effort, a loaded
    # machine) carries the previous one, within the spec's max_staleness (measured at load 4: 227 of 271 steps
    # matched, 410 transitions received). Half of them is far from the nothing a broken pairing gives.
    assert matched >= 0.5 * min(dataset.num_steps, len(by_obs)), (matched, dataset.num_steps, len(by_obs))
