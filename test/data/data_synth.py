"""Synthetic demonstrations for the data tests (no MuJoCo): smooth random joint trajectories, and the standard
messages a test bag is made of."""
import numpy as np

from swfp_ros.data.bag_writer import EpisodeRecord, standard_typestore

TYPES = standard_typestore().types

RATE = 20.0
SCALE = 0.05


def synth_episode(rng, T=30, rate=RATE, scale=SCALE, success=True):
    """Joint positions driven by a smooth delta action in [-1, 1]; targets = q + delta * scale (exactly)."""
    t = np.arange(T) / rate
    phase = rng.uniform(0, 2 * np.pi, 7)
    freq = rng.uniform(0.3, 1.5, 7)
    delta = np.clip(np.sin(freq * t[:, None] * 2 * np.pi + phase) * rng.uniform(0.3, 1.2, 7), -1, 1)
    q = np.empty((T, 7))
    q[0] = rng.uniform(-1, 1, 7)
    for i in range(1, T):
        q[i] = q[i - 1] + 0.8 * scale * delta[i - 1]
    qd = np.gradient(q, axis=0) * rate
    goal = rng.uniform(-0.5, 0.5, 3)
    ee = np.cumsum(rng.normal(0, 0.01, (T, 3)), axis=0)
    task = np.concatenate([ee, np.broadcast_to(goal, (T, 3))], axis=1)
    reward = -np.linalg.norm(ee - goal, axis=1)
    return EpisodeRecord(time=t, joint_pos=q, joint_vel=qd, task=task, action_target=q + delta * scale,
                         action_delta=delta, reward=reward, success=success)


def expected_obs(ep):
    return np.concatenate([ep.joint_pos, ep.joint_vel, ep.task], axis=1)




def header(t_ns: int, frame_id: str = ''):
    """A std_msgs/Header stamped ``t_ns``."""
    return TYPES['std_msgs/msg/Header'](
        stamp=TYPES['builtin_interfaces/msg/Time'](sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id=frame_id)


def joint_state(t_ns: int, names, position, velocity=None):
    """A sensor_msgs/JointState; ``velocity`` defaults to zeros, effort is empty (as many arms publish it)."""
    position = np.asarray(position, np.float64)
    velocity = np.zeros(len(position)) if velocity is None else np.asarray(velocity, np.float64)
    return TYPES['sensor_msgs/msg/JointState'](header=header(t_ns), name=list(names), position=position,
                                               velocity=velocity, effort=np.zeros(0))


def float_array(values):
    """A std_msgs/Float64MultiArray with an empty layout."""
    return TYPES['std_msgs/msg/Float64MultiArray'](layout=TYPES['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0),
                                                   data=np.asarray(values, np.float64))
