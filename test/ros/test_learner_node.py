"""Learner node in a real process: transitions in, accepted blocks out (transient local), bad messages rejected,
resume from its checkpoint after being killed.

The algorithm is substituted (``SWFP_LEARNER_IMPL``) by a tiny deterministic learner with the same interface as
``swfp_ros.algo.learner`` (add_transitions validates, update() returns BlockUpdates after warm-up / every
steps_per_block transitions), so these tests exercise the node — threads, QoS, checkpoints, counters — in seconds.
"""
import textwrap

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, UInt8MultiArray

from swfp_ros.ros import messages

OBS, ACT = 3, 2
FAKE_LEARNER = textwrap.dedent('''
    import os, pickle, tempfile
    import numpy as np

    class BlockUpdate:
        def __init__(self, version):
            self.version = version
        def to_bytes(self):
            return b'SWFP' + self.version.to_bytes(4, 'little')

    class Learner:
        def __init__(self, cfg, obs_dim=3, act_dim=2):
            self.warmup, self.spb = cfg.warmup_steps, cfg.steps_per_block
            self.obs_dim, self.act_dim = obs_dim, act_dim
            self.replay_size = 0
            self.version = 0
            self._next = self.warmup

        @classmethod
        def from_bc_checkpoint(cls, path, cfg, device='cpu'):
            assert os.path.isfile(path), path
            return cls(cfg)

        def add_transitions(self, obs, action, reward, next_obs, terminated, n_steps):
            obs, action, reward = np.asarray(obs), np.asarray(action), np.asarray(reward)
            if obs.shape[1] != self.obs_dim or action.shape[1] != self.act_dim:
                raise ValueError('wrong size')
            if not (np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))):
                raise ValueError('NaN')
            self.replay_size += len(obs)

        def update(self):
            out = []
            while self.replay_size >= self._next:
                self.version += 1
                self._next += self.spb
                out.append(BlockUpdate(self.version))
            return out

    def save_learner(learner, path):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, 'wb') as f:
            pickle.dump(learner, f)
        os.replace(tmp, path)

    def load_learner(path, device='cpu'):
        with open(path, 'rb') as f:
            return pickle.load(f)
''')

LATCHED = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def learner_setup(tmp_path, launch_node):
    (tmp_path / 'fake_swfp_learner.py').write_text(FAKE_LEARNER)
    (tmp_path / 'bc.pt').write_bytes(b'bc')
    import os
    env = {'SWFP_LEARNER_IMPL': 'fake_swfp_learner',
           'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])}
    params = {'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(tmp_path / 'bc.pt'),
              'checkpoint_every': 1, 'status_period': 0.2, 'update_period': 0.01,
              'swfp': {'warmup_steps': 20, 'steps_per_block': 10}}

    def start():
        return launch_node('learner_node', params=params, env=env)
    return start


def transition(i: int):
    return messages.transition_msg(messages.Transition(
        obs=np.full(OBS, 0.1 * i), action=np.full(ACT, 0.5), reward=1.0, next_obs=np.full(OBS, 0.1 * (i + 1)),
        terminated=False, n_steps=1, version=0, actor_id=0))


def learner_status(box) -> dict:
    for _, msg in reversed(list(box)):
        for st in msg.status:
            if st.name.endswith('learner_node'):
                return {kv.key: kv.value for kv in st.values}
    return {}


def publish(ros_node, n: int, start: int = 0):
    pub = ros_node.node.create_publisher(Float64MultiArray, '/swfp/transition', QoSProfile(depth=1000))
    ros_node.wait_for(lambda: pub.get_subscription_count() > 0, 30.0, what='learner subscription')
    for i in range(start, start + n):
        pub.publish(transition(i))
    return pub


def test_transitions_blocks_bad_messages(ros_node, learner_setup):
    proc = learner_setup()
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    pub = publish(ros_node, 25)
    # bad messages: NaN, wrong size, wrong layout, action out of range -> rejected, nothing stored
    nan = transition(0)
    nan.data = [float('nan')] + list(nan.data[1:])
    short = transition(0)
    short.data = list(short.data[:-1])
    nolayout = Float64MultiArray(data=[1.0, 2.0])
    wrongdims = transition(0)
    wrongdims.layout.dim = [MultiArrayDimension(label='obs_dim', size=4, stride=15),
                            MultiArrayDimension(label='act_dim', size=2, stride=2)]
    for m in (nan, short, nolayout, wrongdims):
        pub.publish(m)
    ros_node.wait_for(lambda: learner_status(status).get('accepted') == '25'
                      and learner_status(status).get('rejected') == '4', 30.0, what='25 accepted, 4 rejected')
    s = learner_status(status)
    assert s['replay_size'] == '25' and s['received'] == '29', s
    assert proc.alive(), proc.output()
    # warm-up 20 -> block v1 published; a late subscriber still receives it (transient local)
    ros_node.wait_for(lambda: learner_status(status).get('blocks_published') == '1', 20.0, what='a block')
    late = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    ros_node.wait_for(lambda: len(late) >= 1, 15.0, what='the block on a late subscriber')
    assert messages.update_from_msg(late[0][1]) == b'SWFP' + (1).to_bytes(4, 'little')
    publish(ros_node, 10, start=25)   # 35 -> v2
    ros_node.wait_for(lambda: len(late) >= 2, 15.0, what='the second block')
    late2 = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    ros_node.wait_for(lambda: len(late2) >= 2, 15.0, what='both blocks on a second late subscriber')
    assert [messages.update_from_msg(m)[4] for _, m in late2] == [1, 2]
    assert proc.stop() == 0, proc.output()
    assert 'final checkpoint' in proc.log_path.read_text()


def test_resume_after_kill(ros_node, learner_setup, tmp_path):
    proc = learner_setup()
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    publish(ros_node, 25)
    ros_node.wait_for(lambda: learner_status(status).get('blocks_published') == '1'
                      and int(learner_status(status).get('checkpoints', '0')) >= 3, 30.0, what='block + checkpoint')
    proc.kill()                       # a crash: no final checkpoint
    assert (tmp_path / 'ckpt' / 'learner.pt').is_file()
    status.clear()
    proc2 = learner_setup()
    ros_node.wait_for(lambda: learner_status(status).get('resumed') == 'true', 30.0, what='resumed learner')
    s = learner_status(status)
    assert s['restarts'] == '1' and s['replay_size'] == '25' and s['version'] == '1', s
    assert int(s['accepted']) == 25, s
    # the restarted learner re-publishes the kept block for late joiners, and continues counting
    late = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    ros_node.wait_for(lambda: len(late) >= 1, 15.0, what='republished block')
    publish(ros_node, 5, start=25)
    ros_node.wait_for(lambda: learner_status(status).get('accepted') == '30'
                      and learner_status(status).get('version') == '2', 20.0, what='counters continue')
    assert proc2.stop() == 0, proc2.output()
