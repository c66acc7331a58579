"""Message conversion: the topic contract's layouts, round trips and validation (no nodes)."""
import numpy as np
import pytest

pytest.importorskip('std_msgs.msg')

from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.sim.panda_model import ARM_JOINTS, FINGER_JOINTS  # noqa: E402


def test_joint_state_by_name_any_order_and_extras():
    names = list(ARM_JOINTS) + list(FINGER_JOINTS)
    pos = np.arange(9, dtype=float)
    vel = -np.arange(9, dtype=float)
    perm = np.random.default_rng(0).permutation(9)
    msg = M.joint_state_msg([names[i] for i in perm], pos[perm], vel[perm], np.zeros(9))
    q, qd = M.arm_from_joint_state(msg, ARM_JOINTS)
    assert np.array_equal(q, pos[:7]) and np.array_equal(qd, vel[:7])


def test_joint_state_missing_names_listed():
    msg = M.joint_state_msg(list(ARM_JOINTS[:5]), np.zeros(5))
    with pytest.raises(M.MessageError) as e:
        M.arm_from_joint_state(msg, ARM_JOINTS)
    assert 'panda_joint6' in str(e.value) and 'panda_joint7' in str(e.value)


def test_joint_state_bad_lengths_and_nan():
    msg = M.joint_state_msg(list(ARM_JOINTS), np.zeros(7))
    msg.position = [0.0] * 6
    with pytest.raises(M.MessageError):
        M.arm_from_joint_state(msg, ARM_JOINTS)
    msg = M.joint_state_msg(list(ARM_JOINTS), [np.nan] + [0.0] * 6)
    with pytest.raises(M.MessageError):
        M.arm_from_joint_state(msg, ARM_JOINTS)
    # empty velocity is allowed by sensor_msgs/JointState
    q, qd = M.arm_from_joint_state(M.joint_state_msg(list(ARM_JOINTS), np.ones(7)), ARM_JOINTS)
    assert np.array_equal(qd, np.zeros(7))


def test_task_roundtrip_and_label_check():
    labels = ('ee_x', 'ee_y', 'ee_z', 'goal_x', 'goal_y', 'goal_z')
    msg = M.task_msg(labels, np.arange(6.0))
    assert msg.layout.dim[0].label == 'ee_x,ee_y,ee_z,goal_x,goal_y,goal_z'
    got_labels, vec = M.task_from_msg(msg, labels)
    assert got_labels == labels and np.array_equal(vec, np.arange(6.0))
    with pytest.raises(M.MessageError, match='do not match'):
        M.task_from_msg(msg, labels + ('obj_x',))
    msg.data = [0.0] * 5
    with pytest.raises(M.MessageError):
        M.task_from_msg(msg)
    with pytest.raises(M.MessageError):
        M.task_msg(labels, np.zeros(5))


def test_reward_roundtrip_and_validation():
    r = M.reward_from_msg(M.reward_msg(-0.25, False, True, 50))
    assert (r.reward, r.terminated, r.truncated, r.step, r.done) == (-0.25, False, True, 50, True)
    bad = M.reward_msg(0.0, False, False, 1)
    bad.data = [0.0, 0.5, 0.0, 1.0]
    with pytest.raises(M.MessageError):
        M.reward_from_msg(bad)
    bad.data = [0.0, 0.0, 0.0]
    with pytest.raises(M.MessageError):
        M.reward_from_msg(bad)


def _transition(obs_dim=20, act_dim=7):
    rng = np.random.default_rng(1)
    return M.Transition(obs=rng.normal(size=obs_dim), action=rng.uniform(-1, 1, act_dim), reward=-0.3,
                        next_obs=rng.normal(size=obs_dim), terminated=True, n_steps=1, version=3, actor_id=2)


def test_transition_layout_is_documented_order():
    t = _transition()
    data = M.pack_transition(t)
    o, a = 20, 7
    assert data.size == M.transition_size(o, a) == 2 * o + a + 5
    assert np.array_equal(data[:o], t.obs) and np.array_equal(data[o:o + a], t.action)
    assert data[o + a] == t.reward and np.array_equal(data[o + a + 1:2 * o + a + 1], t.next_obs)
    assert list(data[-4:]) == [1.0, 1.0, 3.0, 2.0]


def test_transition_msg_roundtrip():
    t = _transition()
    msg = M.transition_msg(t)
    assert [d.label for d in msg.layout.dim] == ['obs_dim', 'act_dim']
    assert [d.size for d in msg.layout.dim] == [20, 7]
    u = M.transition_from_msg(msg, 20, 7)
    for f in ('obs', 'action', 'next_obs'):
        assert np.array_equal(getattr(u, f), getattr(t, f))
    assert (u.reward, u.terminated, u.n_steps, u.version, u.actor_id) == (-0.3, True, 1, 3, 2)


def test_transition_validation():
    msg = M.transition_msg(_transition())
    with pytest.raises(M.MessageError, match='obs_dim'):
        M.transition_from_msg(msg, obs_dim=23)
    data = list(msg.data)
    msg.data = data[:-1]
    with pytest.raises(M.MessageError):
        M.transition_from_msg(msg)
    msg.data = data
    msg.data[25] = np.nan
    with pytest.raises(M.MessageError):
        M.transition_from_msg(msg)
    with pytest.raises(M.MessageError):
        M.pack_transition(M.Transition(np.zeros(3), np.array([2.0]), 0.0, np.zeros(3), False))
    with pytest.raises(M.MessageError):
        M.pack_transition(M.Transition(np.zeros(3), np.zeros(1), 0.0, np.zeros(3), False, n_steps=0))
    bad = M.pack_transition(_transition())
    bad[-3] = 0.0                                   # n_steps
    with pytest.raises(M.MessageError):
        M.unpack_transition(bad, 20, 7)


def test_update_bytes_roundtrip():
    payload = bytes(range(256)) * 10
    msg = M.update_msg(payload)
    assert M.update_from_msg(msg) == payload
    msg.layout.dim[0].size = 3
    with pytest.raises(M.MessageError):
        M.update_from_msg(msg)
    with pytest.raises(M.MessageError):
        M.update_from_msg(M.update_msg(b''))


def test_action_and_trajectory():
    msg = M.action_msg(np.arange(7.0), ARM_JOINTS)
    assert np.array_equal(M.action_from_msg(msg, 7), np.arange(7.0))
    with pytest.raises(M.MessageError):
        M.action_from_msg(msg, 6)
    msg.data[0] = float('nan')
    with pytest.raises(M.MessageError):
        M.action_from_msg(msg, 7)
    traj = M.trajectory_msg(ARM_JOINTS, np.zeros((3, 7)), dt=0.05)
    assert len(traj.points) == 3
    assert [p.time_from_start.nanosec for p in traj.points] == [50_000_000, 100_000_000, 150_000_000]


def test_time_roundtrip():
    assert abs(M.time_to_sec(M.time_msg(12.345678901)) - 12.345678901) < 1e-9
