"""The policy node's own guards as pure logic (swfp_ros/ros/guards.py): other publishers on the command topic, and who
may release the e-stop. test_faults_policy.py runs them in a real node against real second nodes."""
import pytest

from swfp_ros.ros.guards import (RELEASE_SOURCE_TIMEOUT_S, UNKNOWN_NODE, CommandPublisherWatch, Endpoint,
                                 EstopReleaseGuard, fully_qualified, node_names)

OWN = Endpoint('/arm1/policy_node', b'own')


def test_fully_qualified_names():
    assert fully_qualified('/', 'operator') == '/operator'
    assert fully_qualified('/arm1', 'policy_node') == '/arm1/policy_node'
    assert fully_qualified('/_NODE_NAMESPACE_UNKNOWN_', '_NODE_NAME_UNKNOWN_') == UNKNOWN_NODE


def test_other_publishers_on_the_command_topic():
    watch = CommandPublisherWatch('/arm1/policy_node')
    assert watch.update([OWN]) == [] and watch.current == ()
    intruder = Endpoint('/intruder', b'i1')
    assert watch.update([OWN, intruder]) == ['/intruder']
    assert watch.update([intruder, OWN]) == []                   # reported as new once
    assert watch.current == ('/intruder',) and len(watch.seen) == 1
    assert watch.update([OWN]) == [] and watch.current == ()    # gone: no longer current, still counted as seen
    # a second node under this node's own name: which endpoint is ours is unknown, the extra one is reported
    assert watch.update([OWN, Endpoint('/arm1/policy_node', b'dup')]) == ['/arm1/policy_node']
    assert watch.current == ('/arm1/policy_node',) and len(watch.seen) == 2
    # a participant the graph cannot name
    assert watch.update([OWN, Endpoint(UNKNOWN_NODE, b'raw')]) == [UNKNOWN_NODE]


def test_release_sources_are_fully_qualified_node_names():
    assert node_names(['']) == () and node_names(None) == ()
    assert node_names(['operator', '/arm1/panel', ' ']) == ('/operator', '/arm1/panel')
    for bad in ('two words', '/ns/'):
        with pytest.raises(ValueError, match='not a node name'):
            node_names([bad])


def test_estop_release_only_from_a_configured_source():
    guard = EstopReleaseGuard(node_names(['/operator']))
    names = {b'op': '/operator', b'x': '/intruder'}
    guard.release(b'x', 0.0)
    guard.release(b'op', 0.0)
    assert [(d.source, d.allowed) for d in guard.decide(names, 0.0)] == [('/intruder', False), ('/operator', True)]
    assert not guard.pending
    # without configured sources every release is refused
    nobody = EstopReleaseGuard(node_names(['']))
    nobody.release(b'op', 0.0)
    assert [d.allowed for d in nobody.decide(names, 0.0)] == [False]


def test_release_from_a_sender_the_graph_cannot_name_yet():
    guard = EstopReleaseGuard(('/operator',))
    guard.release(b'late', 10.0)          # its node name has not arrived
    guard.release(b'op', 10.0)
    assert guard.decide({b'op': '/operator'}, 10.5) == [] and guard.pending      # the second waits behind the first
    d = guard.decide({b'late': '/operator', b'op': '/operator'}, 10.6)           # named now: decided in order
    assert [(x.source, x.allowed) for x in d] == [('/operator', True), ('/operator', True)]
    guard.release(b'ghost', 20.0)          # never named: refused once it has waited long enough
    assert guard.decide({}, 20.0 + RELEASE_SOURCE_TIMEOUT_S - 0.1) == []
    assert [(x.source, x.allowed) for x in guard.decide({}, 20.0 + RELEASE_SOURCE_TIMEOUT_S)] == [
        (UNKNOWN_NODE, False)]
    # an engage makes the releases waiting before it moot: the latest message counts
    guard.release(b'late', 30.0)
    guard.engaged()
    assert not guard.pending and guard.decide({b'late': '/operator'}, 30.1) == []
