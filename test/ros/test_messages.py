"""Message conversion: the topic contract's layouts, round trips and validation (no nodes)."""
import dataclasses

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


def test_builders_take_sequences_and_keep_stamps():
    """What a node hands the builders as it has them (lists, a 2-D row) comes out as the message's flat fields, and
    a given stamp is the header's."""
    stamp = M.time_msg(3.25)
    js = M.joint_state_msg(['a', 'b'], [0.5, 1], velocity=[2, 3], effort=(4, 5), stamp=stamp)
    assert (js.header.stamp.sec, js.header.stamp.nanosec) == (3, 250_000_000)
    assert list(js.position) == [0.5, 1.0] and list(js.velocity) == [2.0, 3.0] and list(js.effort) == [4.0, 5.0]
    bare = M.joint_state_msg(['a'], [0.0])
    assert (bare.header.stamp.sec, bare.header.stamp.nanosec) == (0, 0) and not bare.velocity and not bare.effort
    labels, vector = M.task_from_msg(M.task_msg(['x', 'y'], [[1, 2]]))
    assert labels == ('x', 'y') and vector.tolist() == [1.0, 2.0]
    assert M.action_from_msg(M.action_msg([[1, 2, 3]]), 3).tolist() == [1.0, 2.0, 3.0]
    one = M.trajectory_msg(['a', 'b'], [0.25, 0.5], dt=0.1)          # one point given as a flat row
    assert [list(p.positions) for p in one.points] == [[0.25, 0.5]]
    assert (one.header.stamp.sec, one.header.stamp.nanosec) == (0, 0)


def test_status_message():
    msg = M.status_msg('/arm1/policy_node', 'panda', 'holding', {'holds': 3, 'rate_hz': 19.5}, warn=True,
                       stamp=M.time_msg(7.0))
    (status,) = msg.status
    assert (status.level, status.name, status.hardware_id, status.message) == (status.WARN, '/arm1/policy_node',
                                                                              'panda', 'holding')
    assert [(kv.key, kv.value) for kv in status.values] == [('holds', '3'), ('rate_hz', '19.5')]
    assert msg.header.stamp.sec == 7
    assert M.status_msg('n', 'h', 'ok', {}).status[0].level == status.OK


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
    with pytest.raises(M.MessageError, match='commas'):          # the layout label is the labels comma-joined
        M.task_msg(('ee_x', 'goal_x,y'), np.zeros(2))


def test_reward_roundtrip_and_validation():
    msg = M.reward_msg(-0.25, False, True, 50)
    # the layout other tools read (ros2 topic echo, rosbag readers): one dim of 4 values, no offset
    assert [(d.label, d.size, d.stride) for d in msg.layout.dim] == [(','.join(M.REWARD_LABELS), 4, 4)]
    assert msg.layout.data_offset == 0
    r = M.reward_from_msg(msg)
    assert (r.reward, r.terminated, r.truncated, r.step, r.done) == (-0.25, False, True, 50, True)
    bad = M.reward_msg(0.0, False, False, 1)
    bad.data = [0.0, 0.5, 0.0, 1.0]
    with pytest.raises(M.MessageError):
        M.reward_from_msg(bad)
    bad.data = [0.0, 0.0, 0.0]
    with pytest.raises(M.MessageError):
        M.reward_from_msg(bad)


def _transition(obs_dim=20, act_dim=7, terminated=True):
    # every trailing field distinct, so that a decoder reading one from another's slot fails
    rng = np.random.default_rng(1)
    return M.Transition(obs=rng.normal(size=obs_dim), action=rng.uniform(-1, 1, act_dim), reward=-0.3,
                        next_obs=rng.normal(size=obs_dim), terminated=terminated, n_steps=4, version=3, actor_id=2)


def test_transition_layout_is_documented_order():
    t = _transition()
    data = M.pack_transition(t)
    o, a = 20, 7
    assert data.size == M.transition_size(o, a) == 2 * o + a + 5
    assert np.array_equal(data[:o], t.obs) and np.array_equal(data[o:o + a], t.action)
    assert data[o + a] == t.reward and np.array_equal(data[o + a + 1:2 * o + a + 1], t.next_obs)
    assert list(data[-4:]) == [1.0, 4.0, 3.0, 2.0]


@pytest.mark.parametrize('terminated', [True, False])
def test_transition_msg_roundtrip(terminated):
    t = _transition(terminated=terminated)
    msg = M.transition_msg(t)
    assert [d.label for d in msg.layout.dim] == ['obs_dim', 'act_dim']
    assert [d.size for d in msg.layout.dim] == [20, 7]
    u = M.transition_from_msg(msg, 20, 7)
    for f in ('obs', 'action', 'next_obs'):
        assert np.array_equal(getattr(u, f), getattr(t, f))
    assert (u.reward, u.terminated, u.n_steps, u.version, u.actor_id) == (-0.3, terminated, 4, 3, 2)


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
    assert len(traj.points) == 3 and list(traj.joint_names) == list(ARM_JOINTS)
    assert [p.time_from_start.nanosec for p in traj.points] == [50_000_000, 100_000_000, 150_000_000]
    slow = M.trajectory_msg(ARM_JOINTS, np.zeros((2, 7)), dt=0.6, stamp=M.time_msg(12.5))
    assert [(p.time_from_start.sec, p.time_from_start.nanosec) for p in slow.points] == [(0, 600_000_000),
                                                                                        (1, 200_000_000)]
    assert (slow.header.stamp.sec, slow.header.stamp.nanosec) == (12, 500_000_000)


def test_time_roundtrip():
    assert abs(M.time_to_sec(M.time_msg(12.345678901)) - 12.345678901) < 1e-9


def _joint_state(**change):
    names = list(ARM_JOINTS) + list(FINGER_JOINTS)
    msg = M.joint_state_msg(names, np.zeros(9), np.zeros(9))
    for field, value in change.items():
        setattr(msg, field, value)
    return lambda: M.arm_from_joint_state(msg, ARM_JOINTS)


def _task(label='ee_x,ee_y', data=(0.0, 0.0)):
    msg = M.task_msg(('ee_x', 'ee_y'), np.zeros(2))
    msg.layout.dim[0].label, msg.data = label, list(data)
    return lambda: M.task_from_msg(msg)


def _reward(label=','.join(M.REWARD_LABELS), data=(0.0, 0.0, 0.0, 1.0)):
    msg = M.reward_msg(0.0, False, False, 1)
    msg.layout.dim[0].label, msg.data = label, list(data)
    return lambda: M.reward_from_msg(msg)


def _transition_msg(labels=('obs_dim', 'act_dim'), at=None, value=None, obs_dim=None, act_dim=None):
    msg = M.transition_msg(_transition(3, 2))
    msg.layout.dim = msg.layout.dim[:len(labels)]
    for d, label in zip(msg.layout.dim, labels):
        d.label = label
    if at is not None:
        msg.data[at] = value
    return lambda: M.transition_from_msg(msg, obs_dim, act_dim)


def _packed(**change):
    t = M.Transition(obs=np.zeros(3), action=np.zeros(2), reward=0.0, next_obs=np.zeros(3), terminated=False)
    return lambda: M.pack_transition(dataclasses.replace(t, **change))


def _update(label=M.UPDATE_LABEL, size=None, payload=b'abc'):
    msg = M.update_msg(payload)
    msg.layout.dim[0].label = label
    if size is not None:
        msg.layout.dim[0].size = size
    return lambda: M.update_from_msg(msg)


# obs 3, act 2: transition data = obs 0..2, action 3..4, reward 5, next_obs 6..8, terminated 9, n_steps 10, ...
MALFORMED = {
    'joint state: a name twice': (_joint_state(name=list(ARM_JOINTS) + ['panda_joint1', 'f']), 'duplicate'),
    'joint state: velocities short': (_joint_state(velocity=[0.0] * 8), '8 velocities'),
    'joint state: NaN velocity of an arm joint': (_joint_state(velocity=[0.0] * 6 + [np.nan, 0.0, 0.0]), 'non-finite'),
    'task: no labels': (_task(label=''), 'no labelled layout'),
    'task: a NaN': (_task(data=(0.0, np.nan)), 'non-finite'),
    'reward: another layout': (_reward(label='r,done'), 'layout label'),
    'reward: a NaN': (_reward(data=(np.nan, 0.0, 0.0, 1.0)), 'non-finite'),
    'reward: truncated 2': (_reward(data=(0.0, 0.0, 2.0, 1.0)), 'truncated must be 0 or 1'),
    'transition: other layout labels': (_transition_msg(labels=('obs', 'act')), 'layout must start'),
    'transition: one layout dim': (_transition_msg(labels=('obs_dim',)), 'layout must start'),
    'transition: another act_dim': (_transition_msg(act_dim=3), 'act_dim 2 != expected 3'),
    'transition: action 1.5': (_transition_msg(at=3, value=1.5), 'outside'),
    'transition: NaN reward': (_transition_msg(at=5, value=np.nan), 'non-finite'),
    'transition: n_steps 1.5': (_transition_msg(at=10, value=1.5), 'positive integer'),
    'packing: next_obs of another size': (_packed(next_obs=np.zeros(4)), 'next_obs'),
    'packing: n_steps 0': (_packed(n_steps=0), 'n_steps'),
    'packing: NaN next_obs': (_packed(next_obs=np.array([0.0, np.nan, 0.0])), 'non-finite'),
    'packing: action -1.01': (_packed(action=np.array([0.0, -1.01])), r'\[-1, 1\]'),
    'update: another label': (_update(label='bytes'), 'layout label'),
    'update: no bytes': (_update(payload=b''), 'empty'),
}


@pytest.mark.parametrize('case', MALFORMED, ids=list(MALFORMED))
def test_each_malformed_message_is_refused_for_what_is_wrong_with_it(case):
    parse, reason = MALFORMED[case]
    with pytest.raises(M.MessageError, match=reason):
        parse()


def test_what_the_checks_must_let_through():
    names = list(ARM_JOINTS) + list(FINGER_JOINTS)
    finger_nan = M.joint_state_msg(names, np.zeros(9), [0.0] * 8 + [np.nan])     # only the arm joints matter
    assert np.array_equal(M.arm_from_joint_state(finger_nan, ARM_JOINTS)[1], np.zeros(7))
    edge = dataclasses.replace(_transition(3, 2), action=np.array([1.0, -1.0]), n_steps=1)
    assert np.array_equal(M.transition_from_msg(M.transition_msg(edge), 3, 2).action, [1.0, -1.0])
    assert _update(label='')() == b'abc' and _update(size=0)() == b'abc'    # an update's layout may be left empty
