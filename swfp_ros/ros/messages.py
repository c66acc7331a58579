"""Message conversion for the swfp topic contract: pure functions over numpy arrays and ROS message objects.

Nothing here creates nodes or touches rclpy; the message classes are imported lazily inside each builder, so the
unpack/validate side works on any object with the same fields (handy for tests and for rosbags-deserialised messages).
Every ``*_from_msg`` / ``unpack_*`` raises :class:`MessageError` (a ``ValueError``) with a readable reason.

Layouts (all ``std_msgs/Float64MultiArray`` unless stated):

``/joint_states`` (sensor_msgs/JointState)
    Read BY NAME: :func:`arm_from_joint_state` picks ``joint_names`` out of ``msg.name`` in any order, ignores extra
    joints (fingers, other arms) and reports every missing name at once.

``/swfp/task``
    ``layout.dim[0].label`` = the task labels joined by commas (e.g. ``"ee_x,ee_y,ee_z,goal_x,goal_y,goal_z"``),
    ``dim[0].size`` = ``dim[0].stride`` = number of labels; ``data`` = the task vector in that order. The consumer
    validates the labels against the ones its policy was trained with.

``/swfp/reward``
    ``layout.dim[0].label`` = ``"reward,terminated,truncated,step"``, size 4; ``data`` = [reward, terminated (0/1),
    truncated (0/1), step] where ``step`` is the episode step count AFTER the action (1 for the first action).

``/swfp/transition`` (TRANSITION packed layout, version 1)
    ``layout.dim`` = [(label ``"obs_dim"``, size = obs_dim, stride = total), (label ``"act_dim"``, size = act_dim,
    stride = act_dim)], ``data_offset`` = 0, and ``data`` (length ``total = 2 * obs_dim + act_dim + 5``) =

    ========================  ===========  ===============================================================
    slice                     name         meaning
    ========================  ===========  ===============================================================
    [0, o)                    obs          observation s the action was chosen from (raw, not normalised)
    [o, o+a)                  action       executed action in policy units, in [-1, 1]
    o+a                       reward       reward summed over the ``n_steps`` control steps (undiscounted)
    [o+a+1, 2o+a+1)           next_obs     observation after the action (the terminal one at an episode end)
    2o+a+1                    terminated   1.0 if the episode terminated (success), else 0.0 (truncation is 0)
    2o+a+2                    n_steps      control steps the action covered (>= 1; > 1 for action chunks)
    2o+a+3                    version      policy version (number of accepted updates) that chose the action
    2o+a+4                    actor_id     which actor (policy node) produced it, a small integer
    ========================  ===========  ===============================================================

``/swfp/policy_update`` (std_msgs/UInt8MultiArray)
    ``layout.dim[0].label`` = ``"swfp_update"``, size = number of bytes; ``data`` = the algorithm's serialised
    update (blocks + version + checksum, produced and validated by ``swfp_ros.algo``; opaque here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# The actor's data types (swfp_ros.actor, pure Python), re-exported: the wire format packs exactly these.
from swfp_ros.actor.types import RewardInfo, Transition  # noqa: F401

REWARD_LABELS = ('reward', 'terminated', 'truncated', 'step')
TRANSITION_DIM_LABELS = ('obs_dim', 'act_dim')
TRANSITION_TAIL = 5          # reward, terminated, n_steps, version, actor_id
UPDATE_LABEL = 'swfp_update'


class MessageError(ValueError):
    """A message that does not match the topic contract."""


# --- helpers ------------------------------------------------------------------------------------------------------
def _dim(label: str, size: int, stride: int):
    from std_msgs.msg import MultiArrayDimension
    return MultiArrayDimension(label=label, size=int(size), stride=int(stride))


def _f64_array(labels_dims: Sequence[tuple[str, int, int]], data: np.ndarray):
    from std_msgs.msg import Float64MultiArray
    msg = Float64MultiArray()
    msg.layout.dim = [_dim(*d) for d in labels_dims]
    msg.layout.data_offset = 0
    msg.data = np.ascontiguousarray(data, dtype=np.float64).ravel().tolist()
    return msg


def _data(msg) -> np.ndarray:
    return np.asarray(msg.data, dtype=np.float64)


def _flag(x: float, name: str) -> bool:
    if x not in (0.0, 1.0):
        raise MessageError(f'{name} must be 0 or 1, got {x}')
    return bool(x)


# --- /joint_states ------------------------------------------------------------------------------------------------
def arm_from_joint_state(msg, joint_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(positions, velocities) of ``joint_names``, looked up by name in a sensor_msgs/JointState.

    Velocities may be absent (an empty ``velocity`` field is allowed by the message definition): zeros are returned.
    Raises MessageError listing every missing joint, on inconsistent field lengths, and on non-finite values.
    """
    names = list(msg.name)
    if len(set(names)) != len(names):
        raise MessageError(f'duplicate joint names in JointState: {names}')
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise MessageError(f'JointState lacks joints {missing} (has {names})')
    position = np.asarray(msg.position, dtype=np.float64)
    velocity = np.asarray(msg.velocity, dtype=np.float64)
    if position.shape != (len(names),):
        raise MessageError(f'JointState has {len(names)} names but {position.size} positions')
    if velocity.size not in (0, len(names)):
        raise MessageError(f'JointState has {len(names)} names but {velocity.size} velocities')
    idx = np.array([index[n] for n in joint_names], dtype=np.int64)
    q = position[idx]
    qd = velocity[idx] if velocity.size else np.zeros(len(idx))
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
        raise MessageError('JointState has non-finite positions or velocities for the arm joints')
    return q, qd


def joint_state_msg(names: Sequence[str], position, velocity=None, effort=None, stamp=None):
    """A sensor_msgs/JointState (``stamp``: a builtin_interfaces/Time or None)."""
    from sensor_msgs.msg import JointState
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = np.asarray(position, dtype=np.float64).tolist()
    msg.velocity = [] if velocity is None else np.asarray(velocity, dtype=np.float64).tolist()
    msg.effort = [] if effort is None else np.asarray(effort, dtype=np.float64).tolist()
    return msg


# --- /swfp/task ---------------------------------------------------------------------------------------------------
def task_msg(labels: Sequence[str], vector) -> object:
    vector = np.asarray(vector, dtype=np.float64).ravel()
    if vector.size != len(labels):
        raise MessageError(f'task vector has {vector.size} values for {len(labels)} labels')
    if any(',' in lab for lab in labels):
        raise MessageError(f'task labels may not contain commas: {list(labels)}')
    return _f64_array([(','.join(labels), len(labels), len(labels))], vector)


def task_from_msg(msg, expected_labels: Sequence[str] | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """(labels, vector) of a /swfp/task message; with ``expected_labels``, the labels must match exactly."""
    dims = list(msg.layout.dim)
    if not dims or not dims[0].label:
        raise MessageError('task message has no labelled layout (layout.dim[0].label = comma-joined labels)')
    labels = tuple(dims[0].label.split(','))
    data = _data(msg)
    if data.size != len(labels) or dims[0].size != len(labels):
        raise MessageError(f'task message has {data.size} values, layout size {dims[0].size}, '
                           f'for {len(labels)} labels')
    if expected_labels is not None and tuple(expected_labels) != labels:
        raise MessageError(f'task labels {list(labels)} do not match the expected {list(expected_labels)}')
    if not np.all(np.isfinite(data)):
        raise MessageError('task vector has non-finite values')
    return labels, data


# --- /swfp/reward -------------------------------------------------------------------------------------------------
def reward_msg(reward: float, terminated: bool, truncated: bool, step: int):
    return _f64_array([(','.join(REWARD_LABELS), 4, 4)],
                      np.array([reward, float(terminated), float(truncated), float(step)]))


def reward_from_msg(msg) -> RewardInfo:
    dims = list(msg.layout.dim)
    if dims and dims[0].label and dims[0].label != ','.join(REWARD_LABELS):
        raise MessageError(f'reward layout label {dims[0].label!r} != {",".join(REWARD_LABELS)!r}')
    data = _data(msg)
    if data.size != 4:
        raise MessageError(f'reward message needs 4 values {REWARD_LABELS}, got {data.size}')
    if not np.all(np.isfinite(data)):
        raise MessageError('reward message has non-finite values')
    return RewardInfo(float(data[0]), _flag(data[1], 'terminated'), _flag(data[2], 'truncated'), int(data[3]))


# --- /swfp/action (Float64MultiArray of absolute joint targets) ------------------------------------------------------
def action_msg(targets, joint_names: Sequence[str] | None = None):
    """Absolute joint targets, one per arm joint (what forward_command_controller takes). The optional label names
    the joints (comma-joined) for humans; consumers must not rely on it (forward_command_controller ignores it)."""
    targets = np.asarray(targets, dtype=np.float64).ravel()
    label = ','.join(joint_names) if joint_names else 'joint_targets'
    return _f64_array([(label, targets.size, targets.size)], targets)


def action_from_msg(msg, n_joints: int) -> np.ndarray:
    data = _data(msg)
    if data.size != n_joints:
        raise MessageError(f'action has {data.size} values, expected {n_joints} joint targets')
    if not np.all(np.isfinite(data)):
        raise MessageError('action has non-finite values')
    return data


def trajectory_msg(joint_names: Sequence[str], targets, dt: float, stamp=None):
    """trajectory_msgs/JointTrajectory: ``targets`` (H, n) absolute positions, point k at (k+1)*dt from start."""
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    msg = JointTrajectory()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.joint_names = list(joint_names)
    for k, row in enumerate(targets):
        t = (k + 1) * dt
        sec = int(t)
        msg.points.append(JointTrajectoryPoint(positions=row.tolist(),
                                               time_from_start=Duration(sec=sec, nanosec=int(round((t - sec) * 1e9)))))
    return msg


# --- /swfp/transition ---------------------------------------------------------------------------------------------
def transition_size(obs_dim: int, act_dim: int) -> int:
    return 2 * obs_dim + act_dim + TRANSITION_TAIL


def pack_transition(t: Transition) -> np.ndarray:
    """The flat float64 vector of the TRANSITION layout (see the module docstring)."""
    obs = np.asarray(t.obs, dtype=np.float64).ravel()
    nxt = np.asarray(t.next_obs, dtype=np.float64).ravel()
    act = np.asarray(t.action, dtype=np.float64).ravel()
    if obs.shape != nxt.shape:
        raise MessageError(f'obs has {obs.size} values but next_obs {nxt.size}')
    if int(t.n_steps) < 1:
        raise MessageError(f'n_steps must be >= 1, got {t.n_steps}')
    out = np.concatenate([obs, act, [t.reward], nxt,
                          [float(bool(t.terminated)), float(int(t.n_steps)), float(int(t.version)),
                           float(int(t.actor_id))]])
    if not np.all(np.isfinite(out)):
        raise MessageError('transition has non-finite values')
    if np.any(np.abs(act) > 1.0 + 1e-6):
        raise MessageError('transition action must be in [-1, 1] policy units')
    return out


def unpack_transition(data, obs_dim: int, act_dim: int) -> Transition:
    data = np.asarray(data, dtype=np.float64).ravel()
    o, a = int(obs_dim), int(act_dim)
    if data.size != transition_size(o, a):
        raise MessageError(f'transition has {data.size} values, expected {transition_size(o, a)} '
                           f'for obs_dim={o}, act_dim={a}')
    if not np.all(np.isfinite(data)):
        raise MessageError('transition has non-finite values')
    action = data[o:o + a]
    if np.any(np.abs(action) > 1.0 + 1e-6):
        raise MessageError('transition action outside [-1, 1]')
    tail = data[2 * o + a + 1:]
    n_steps = tail[1]
    if n_steps < 1 or n_steps != int(n_steps):
        raise MessageError(f'transition n_steps must be a positive integer, got {n_steps}')
    return Transition(obs=data[:o].copy(), action=action.copy(), reward=float(data[o + a]),
                      next_obs=data[o + a + 1:2 * o + a + 1].copy(), terminated=_flag(tail[0], 'terminated'),
                      n_steps=int(n_steps), version=int(tail[2]), actor_id=int(tail[3]))


def transition_msg(t: Transition):
    data = pack_transition(t)
    o, a = np.asarray(t.obs).size, np.asarray(t.action).size
    return _f64_array([(TRANSITION_DIM_LABELS[0], o, data.size), (TRANSITION_DIM_LABELS[1], a, a)], data)


def transition_from_msg(msg, obs_dim: int | None = None, act_dim: int | None = None) -> Transition:
    """Unpack a /swfp/transition message; dims come from its layout and must match ``obs_dim``/``act_dim`` if given."""
    dims = list(msg.layout.dim)
    if len(dims) < 2 or tuple(d.label for d in dims[:2]) != TRANSITION_DIM_LABELS:
        raise MessageError(f'transition layout must start with dims labelled {TRANSITION_DIM_LABELS}, '
                           f'got {[d.label for d in dims]}')
    o, a = int(dims[0].size), int(dims[1].size)
    if obs_dim is not None and o != obs_dim:
        raise MessageError(f'transition obs_dim {o} != expected {obs_dim}')
    if act_dim is not None and a != act_dim:
        raise MessageError(f'transition act_dim {a} != expected {act_dim}')
    return unpack_transition(msg.data, o, a)


# --- /swfp/policy_update --------------------------------------------------------------------------------------------
def update_msg(payload: bytes):
    from std_msgs.msg import UInt8MultiArray
    msg = UInt8MultiArray()
    msg.layout.dim = [_dim(UPDATE_LABEL, len(payload), len(payload))]
    msg.data = bytes(payload)
    return msg


def update_from_msg(msg) -> bytes:
    """The serialised update bytes (validation of their content is the algorithm's job: PolicyRuntime.apply_update)."""
    dims = list(msg.layout.dim)
    if dims and dims[0].label not in ('', UPDATE_LABEL):
        raise MessageError(f'policy update layout label {dims[0].label!r} != {UPDATE_LABEL!r}')
    data = msg.data
    payload = bytes(data) if not isinstance(data, np.ndarray) else data.astype(np.uint8).tobytes()
    if not payload:
        raise MessageError('empty policy update')
    if dims and dims[0].size not in (0, len(payload)):
        raise MessageError(f'policy update layout says {dims[0].size} bytes, carries {len(payload)}')
    return payload


# --- diagnostics --------------------------------------------------------------------------------------------------
def status_msg(name: str, hardware_id: str, message: str, values: dict, warn: bool = False, stamp=None):
    """diagnostic_msgs/DiagnosticArray with one status (OK or WARN) whose key/values are ``values`` as strings."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    status = DiagnosticStatus(level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK, name=name,
                              hardware_id=hardware_id, message=message,
                              values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


# --- time ---------------------------------------------------------------------------------------------------------
def time_msg(seconds: float):
    """builtin_interfaces/Time for a non-negative time in seconds."""
    from builtin_interfaces.msg import Time
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def time_to_sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9
