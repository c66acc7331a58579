"""The 'pose' source: an end-effector or object pose as a cell publishes it -- Pose, PoseStamped,
PoseWithCovarianceStamped, TransformStamped or a bare Point -- read by component name wherever the message keeps it;
a component the message does not have, or a message that is no pose, is refused naming it."""
import numpy as np
import pytest
from data_synth import TYPES as T
from data_synth import float_array, header

from swfp_ros.data import BagRecorder, IngestError, SpecError, ingest

STEPS = 5


def position(k):
    return 0.1 * k, 0.2 + k, -0.3 * k


def orientation(k):
    return 0.0, 0.1 * k, 0.2 * k, 1.0


def pose(k):
    (x, y, z), (qx, qy, qz, qw) = position(k), orientation(k)
    return T['geometry_msgs/msg/Pose'](position=T['geometry_msgs/msg/Point'](x=x, y=y, z=z),
                                       orientation=T['geometry_msgs/msg/Quaternion'](x=qx, y=qy, z=qz, w=qw))


MESSAGES = {
    'geometry_msgs/msg/Pose': lambda k, t: pose(k),
    'geometry_msgs/msg/PoseStamped': lambda k, t: T['geometry_msgs/msg/PoseStamped'](header=header(t, 'base'),
                                                                                     pose=pose(k)),
    'geometry_msgs/msg/PoseWithCovarianceStamped': lambda k, t: T['geometry_msgs/msg/PoseWithCovarianceStamped'](
        header=header(t, 'base'),
        pose=T['geometry_msgs/msg/PoseWithCovariance'](pose=pose(k), covariance=np.zeros(36))),
    'geometry_msgs/msg/TransformStamped': lambda k, t: T['geometry_msgs/msg/TransformStamped'](
        header=header(t, 'base'), child_frame_id='tool', transform=T['geometry_msgs/msg/Transform'](
            translation=T['geometry_msgs/msg/Vector3'](**dict(zip('xyz', position(k)))),
            rotation=T['geometry_msgs/msg/Quaternion'](**dict(zip('xyzw', orientation(k)))))),
    'geometry_msgs/msg/Point': lambda k, t: T['geometry_msgs/msg/Point'](**dict(zip('xyz', position(k)))),
}


def write_pose_bag(path, msgtype):
    with BagRecorder(path, storage='mcap') as rec:
        for k in range(STEPS):
            t = 10**12 + k * 100_000_000
            rec.write('/ee_pose', msgtype, MESSAGES[msgtype](k, t), t)
            rec.write('/cmd', 'std_msgs/msg/Float64MultiArray', float_array([0.1 * k]), t + 1000)
    return path


def spec(components):
    return {'control_rate_hz': 10.0, 'episodes': {'per_bag': True},
            'observation': [{'source': 'pose', 'topic': '/ee_pose', 'components': components}],
            'action': {'source': 'array', 'topic': '/cmd', 'indices': [0]}}


@pytest.mark.parametrize('msgtype', [t for t in MESSAGES if t != 'geometry_msgs/msg/Point'])
def test_every_pose_message_gives_position_and_orientation_by_name(tmp_path, msgtype):
    ds = ingest([write_pose_bag(tmp_path / 'b', msgtype)], spec(['qw', 'x', 'z', 'qy']), progress=False)
    want = [[orientation(k)[3], position(k)[0], position(k)[2], orientation(k)[1]] for k in range(STEPS)]
    np.testing.assert_allclose(ds[0].obs, want, atol=1e-6)
    assert ds.obs_labels == ['/ee_pose.qw', '/ee_pose.x', '/ee_pose.z', '/ee_pose.qy']


def test_a_point_gives_its_position(tmp_path):
    ds = ingest([write_pose_bag(tmp_path / 'b', 'geometry_msgs/msg/Point')], spec(['z', 'x']), progress=False)
    np.testing.assert_allclose(ds[0].obs, [[position(k)[2], position(k)[0]] for k in range(STEPS)], atol=1e-6)


def test_a_component_the_message_does_not_have_is_refused_naming_it(tmp_path):
    bag = write_pose_bag(tmp_path / 'b', 'geometry_msgs/msg/Point')
    with pytest.raises(IngestError, match=r"component\(s\) \['qw'\] do not exist in a geometry_msgs/msg/Point"):
        ingest([bag], spec(['x', 'qw']), progress=False)
    with pytest.raises(SpecError, match=r"observation\[0\].components \['roll'\] not in"):
        ingest([bag], spec(['roll']), progress=False)


def test_a_message_that_is_no_pose_is_refused_naming_its_type(tmp_path):
    d = spec(['x'])
    d['observation'][0]['topic'] = '/cmd'
    with pytest.raises(IngestError, match='std_msgs/msg/Float64MultiArray is not a pose, point or transform'):
        ingest([write_pose_bag(tmp_path / 'b', 'geometry_msgs/msg/Pose')], d, progress=False)
