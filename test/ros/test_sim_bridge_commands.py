"""What the sim bridge makes of a command message, without a ROS graph: the joint targets of a Float64MultiArray or of
a JointTrajectory (by joint name, in the arm's order), the refusals, and how its mock joint_trajectory_controller
follows a trajectory in time."""
import re

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from swfp_ros.ros import messages as M
from swfp_ros.ros.sim_bridge_node import command_targets, timed_targets, trajectory_target

ARM = [f'panda_joint{i}' for i in range(1, 8)]


def trajectory(names, rows, times=None):
    msg = JointTrajectory(joint_names=list(names))
    for k, row in enumerate(rows):
        t = (k + 1) * 0.05 if times is None else times[k]
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                               time_from_start=Duration(sec=int(t), nanosec=round(t % 1 * 1e9))))
    return msg


def test_targets_of_an_array_and_of_a_trajectory_in_the_arms_joint_order():
    [target] = command_targets(M.action_msg(np.arange(7.0), ARM), 'float64_array', ARM)
    assert np.array_equal(target, np.arange(7.0))
    # joints in another order, with one the arm does not have: taken by name
    names = ['panda_finger_joint1', *reversed(ARM)]
    rows = [[9.0, *reversed(np.arange(7.0) + 10 * k)] for k in range(3)]
    targets = command_targets(trajectory(names, rows), 'trajectory', ARM)
    assert len(targets) == 3 and all(np.array_equal(t, np.arange(7.0) + 10 * k) for k, t in enumerate(targets))


@pytest.mark.parametrize('msg, command_type, problem', [
    (M.action_msg(np.arange(6.0), ARM[:6]), 'float64_array', 'has 6 values, expected 7'),
    (M.action_msg(np.array([0, 0, np.nan, 0, 0, 0, 0.0]), ARM), 'float64_array', 'non-finite'),
    (trajectory(ARM[1:], [np.zeros(6)]), 'trajectory', re.escape("lacks joints ['panda_joint1']")),
    (trajectory(ARM, []), 'trajectory', 'no points'),
    (trajectory(ARM, [np.zeros(7), [0, 0, 0, np.inf, 0, 0, 0]]), 'trajectory', 'non-finite'),
    (trajectory(ARM, [np.zeros(7), np.zeros(6)]), 'trajectory', 'wrong size'),
])
def test_a_command_that_is_not_a_valid_one_is_refused(msg, command_type, problem):
    with pytest.raises(M.MessageError, match=problem):
        command_targets(msg, command_type, ARM)


def test_a_trajectory_controller_needs_times_that_increase_from_above_zero():
    rows = [np.zeros(7), np.ones(7)]
    assert [t for t, _ in timed_targets(trajectory(ARM, rows, [0.05, 1.5]), ARM)] == [0.05, 1.5]
    for times in ([0.0, 0.1], [0.1, 0.1], [0.2, 0.1]):
        with pytest.raises(M.MessageError, match='increase from > 0'):
            timed_targets(trajectory(ARM, rows, times), ARM)


def test_a_trajectory_is_followed_linearly_from_where_it_began():
    start = np.zeros(7)
    points = [(0.5, np.full(7, 1.0)), (1.0, np.full(7, 3.0)), (2.0, np.full(7, 4.0))]
    expected = {0.0: 0.0, 0.25: 0.5, 0.5: 1.0, 0.75: 2.0, 1.0: 3.0, 1.5: 3.5, 5.0: 4.0}
    for elapsed, value in expected.items():
        assert np.allclose(trajectory_target(start, points, elapsed), value), elapsed
