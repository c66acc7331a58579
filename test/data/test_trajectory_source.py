"""Demonstrations recorded on an arm driven by a joint_trajectory_controller: the commands are JointTrajectory
messages, joints by name in the controller's order, each a few points ahead. The 'trajectory' source reads one
point, or interpolates the points at a time from start; what is malformed is refused naming the field."""
import numpy as np
import pytest
from data_synth import TYPES, header, joint_state

from swfp_ros.data import BagRecorder, IngestError, ingest

ARM = ['j1', 'j2', 'j3']                     # the order /joint_states uses
CONTROLLER = ['j3', 'j1', 'j2']              # the order the controller's joint_names use
POINT_TIMES = (0.05, 0.10, 0.15)             # s from the trajectory's start
STEPS = 6
TOPIC = '/joint_trajectory_controller/joint_trajectory'


def target(k: int, j: str, point: int) -> float:
    """The position the k-th command gives joint j at its point-th point (distinct for every k, j, point)."""
    return 0.1 * k + {'j1': 1.0, 'j2': 2.0, 'j3': 3.0}[j] + 0.01 * (point + 1)


def point(positions, seconds):
    empty = np.zeros(0)
    return TYPES['trajectory_msgs/msg/JointTrajectoryPoint'](
        positions=np.asarray(positions, float), velocities=empty, accelerations=empty, effort=empty,
        time_from_start=TYPES['builtin_interfaces/msg/Duration'](sec=int(seconds), nanosec=round(seconds % 1 * 1e9)))


def write_arm_bag(path, points=None):
    """/joint_states at the arm's order and one JointTrajectory per step; ``points(k)`` overrides the k-th command's
    points (a list of (positions, seconds))."""
    with BagRecorder(path, storage='mcap') as rec:
        for k in range(STEPS):
            t = 10**12 + k * 100_000_000
            rec.write('/joint_states', 'sensor_msgs/msg/JointState', joint_state(t, ARM, [0.1 * k] * 3), t)
            pts = points(k) if points else [([target(k, j, i) for j in CONTROLLER], s)
                                            for i, s in enumerate(POINT_TIMES)]
            rec.write(TOPIC, 'trajectory_msgs/msg/JointTrajectory', TYPES['trajectory_msgs/msg/JointTrajectory'](
                header=header(t), joint_names=CONTROLLER, points=[point(p, s) for p, s in pts]), t + 1000)
    return path


def spec(**action):
    return {'control_rate_hz': 10.0, 'episodes': {'per_bag': True},
            'observation': [{'source': 'joint_state', 'topic': '/joint_states', 'joints': ARM}],
            'action': {'source': 'trajectory', 'topic': TOPIC, 'joints': ARM, 'clip': False, **action}}


@pytest.mark.parametrize('when, expected', [
    ({'point': 'first'}, lambda k, j: target(k, j, 0)),
    ({'time_from_start': 0.075}, lambda k, j: (target(k, j, 0) + target(k, j, 1)) / 2),   # halfway, 1st to 2nd
    ({'time_from_start': 0.14}, lambda k, j: 0.2 * target(k, j, 1) + 0.8 * target(k, j, 2)),
    ({'time_from_start': 0.0}, lambda k, j: target(k, j, 0)),                               # before the first
    ({'time_from_start': 0.3}, lambda k, j: target(k, j, 2)),                               # past the last
])
def test_trajectory_commands_become_actions_by_joint_name(tmp_path, when, expected):
    ds = ingest([write_arm_bag(tmp_path / 'arm')], spec(**when), progress=False)
    want = np.array([[expected(k, j) for j in ARM] for k in range(STEPS)])
    np.testing.assert_allclose(ds[0].actions, want, atol=1e-9)
    assert ds.action_labels == [f'{j}.traj_positions' for j in ARM]


@pytest.mark.parametrize('points, message', [
    (lambda k: [], 'trajectory has no points'),
    (lambda k: [([1.0, 2.0], 0.05)], 'points[].positions has 2 values for 3 joints'),
])
def test_a_malformed_trajectory_is_refused_naming_the_field(tmp_path, points, message):
    bag = write_arm_bag(tmp_path / 'arm', points)
    with pytest.raises(IngestError) as ei:
        ingest([bag], spec(point='first'), progress=False)
    assert message in str(ei.value) and TOPIC in str(ei.value)


def test_a_joint_the_controller_does_not_command_is_refused_naming_it(tmp_path):
    bag = write_arm_bag(tmp_path / 'arm')
    d = spec(point='first')
    d['action']['joints'] = ['j1', 'j4']
    with pytest.raises(IngestError, match=r"joint\(s\) \['j4'\] not in joint_names \['j3', 'j1', 'j2'\]"):
        ingest([bag], d, progress=False)
