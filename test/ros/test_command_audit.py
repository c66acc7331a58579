"""The fault suite's command audit (no nodes): it must flag every command that breaks the safety contract and no
command that keeps it, whatever order the messages arrive in."""
import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg')

from swfp_ros.ros import fault_injection as F  # noqa: E402
from swfp_ros.ros import messages as M  # noqa: E402

NAMES = [f'j{i}' for i in range(3)]
LOWER, UPPER = -np.ones(3), np.ones(3)


def audit():
    return F.CommandAudit(NAMES, LOWER, UPPER, max_delta=0.1, window_s=0.5)


def js(q, names=NAMES):
    return M.joint_state_msg(names, q)


WINDOW = 'rad from every valid joint state of the last 0.5 s'


def test_flags_what_breaks_the_contract_and_nothing_else():
    a = audit()
    q = np.array([0.2, -0.3, 0.9])
    a.measured(js(q), 10.0)
    a.command(q + 0.1, 10.01)                        # the edge of max_delta
    a.command(q, 10.6)                               # a hold on a state older than the window: no motion asked
    a.command(q + [0.0, 0.0, 0.11], 10.02)           # 0.11 from the measurement; above the upper limit too
    a.command(q + [0.0, 0.15, 0.0], 10.03)           # 0.15 from the measurement
    a.command(q + 0.05, 10.7)                        # a move on a state older than the window
    a.command([np.nan, 0, 0], 10.04)
    a.command([0.0, 0.0], 10.05)
    checked, violations, unverified = a.judge(final=True)
    assert checked == 7 and unverified == 0
    assert violations == ['outside the limits by 0.010 rad',
                          f'0.150 {WINDOW} (joint 2; none within max_delta)',
                          f'inf {WINDOW} (the newest within max_delta sent 0.70 s before it)',   # a stale decision
                          'non-finite', '2 values']


def test_late_joint_state_and_invalid_ones():
    a = audit()
    q = np.array([0.0, 0.5, -0.5])
    a.command(q + 0.08, 5.01)                        # arrives before the state it was computed from (sent at 5.0)
    a.measured(js(q), 5.0)
    a.measured(js([0.0, 1.5, 0.0]), 5.02)            # 0.5 past a limit: invalid
    a.command([0.0, 1.0, 0.0], 5.03)                 # the limit, 0.5 from the invalid state: a violation
    a.measured(js([0.0, np.nan, 0.0]), 5.04)
    a.measured(js(q, names=['j0', 'j1', 'x']), 5.05)
    a.command(q, 5.06)                               # a hold at the last valid state
    assert a.judge(final=True) == (3, [f'0.500 {WINDOW} (joint 2; none within max_delta)'], 0)


def test_estop_allows_holds_only():
    a = audit()
    q = np.array([0.1, 0.1, 0.1])
    a.measured(js(q), 1.0)
    a.estopped = True
    a.command(q, 1.01)
    a.command(q + 0.01, 1.02)
    a.estopped = False
    a.command(q + 0.01, 1.03)
    assert a.judge(final=True) == (3, ['moved during an e-stop'], 0)


def test_judges_a_command_once_a_later_state_arrived():
    a = audit()
    a.measured(js(np.zeros(3)), 1.0)
    a.command(np.zeros(3), 1.0)
    a.command(np.full(3, 0.5), 1.05)
    assert a.judge() == (0, [], 0)                  # no state sent after either has arrived yet
    a.measured(js(np.zeros(3)), 1.02)
    assert a.judge() == (1, [], 0)
    a.reset()
    assert a.judge(final=True) == (1, [f'0.500 {WINDOW} (joint 1; none within max_delta)'], 0)


def test_a_state_sent_after_the_command_does_not_excuse_it():
    """The arm that followed a 0.3 rad jump reports the jump's target: the jump is still a violation."""
    a = audit()
    q = np.zeros(3)
    a.measured(js(q), 7.0)
    a.command(q + 0.3, 7.01)
    a.measured(js(q + 0.3), 7.02)
    assert a.judge(final=True) == (1, [f'0.300 {WINDOW} (joint 1; none within max_delta)'], 0)


def test_a_monitor_that_can_miss_states_reports_unverified_commands():
    """Moves with no joint state at all in their window: a violation for the arm's own audit (it sees every state it
    sends: the node moved on stale data), unverified for a monitor that can miss states."""
    stale = f'inf {WINDOW} (the newest within max_delta sent 2.00 s before it)'
    for sees_every_state, expected in ((True, (2, [stale], 0)),
                                       (False, (2, [], 1))):
        a = F.CommandAudit(NAMES, LOWER, UPPER, max_delta=0.1, window_s=0.5, sees_every_state=sees_every_state)
        a.measured(js(np.zeros(3)), 1.0)
        a.command(np.full(3, 0.05), 1.01)
        a.command(np.full(3, 0.05), 3.0)
        assert a.judge(final=True) == expected
