"""The parameter table every node declares from (swfp_ros.ros.params), on in-process rclpy nodes: the descriptors
`ros2 param describe` shows, the values a node starts with, the refusals at start and on a set, former names, live and
configure-time changes. test_node_params.py checks the same through another process's parameter services, node by
node; this file covers each rule of the table once, fast."""
import math

import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.parameter import Parameter  # noqa: E402

from swfp_ros.ros.executors import StartRefused  # noqa: E402
from swfp_ros.ros.params import (CONFIGURE_NOTE, LIVE_NOTE, START_NOTE, ParamSpec,  # noqa: E402
                                 declare_params, set_period)


@pytest.fixture
def make_node(ros_env):
    """Nodes with the given parameter overrides (as a YAML file or --ros-args -p would give them), all in one
    context that is shut down after the test."""
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(**overrides):
        node = rclpy.create_node(f'params_{len(nodes)}', context=context,
                                 parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node
    try:
        yield make
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def set_one(node, name, value):
    return node.set_parameters([Parameter(name, value=value)])[0]


def test_descriptors_carry_description_range_choices_and_when_it_applies():
    count = ParamSpec('count', 3, 'how many', low=1, high=9).descriptor()
    assert count.description == 'how many' and count.read_only and count.additional_constraints == START_NOTE
    assert [(r.from_value, r.to_value) for r in count.integer_range] == [(1, 9)] and not count.floating_point_range
    at_least = ParamSpec('depth', 10, 'queue depth', low=1).descriptor()
    assert [(r.from_value, r.to_value) for r in at_least.integer_range] == [(1, 2**31 - 1)]
    at_most = ParamSpec('offset', 0, 'offset', high=5).descriptor()
    assert [(r.from_value, r.to_value) for r in at_most.integer_range] == [(-(2**31 - 1), 5)]

    period = ParamSpec('period_s', 0.5, 'period', 'live', low=0.01).descriptor()
    assert not period.read_only and period.additional_constraints == LIVE_NOTE
    assert [(r.from_value, r.to_value) for r in period.floating_point_range] == [(0.01, math.inf)]
    gain = ParamSpec('gain', 1.0, 'gain', high=2.0).descriptor()
    assert [(r.from_value, r.to_value) for r in gain.floating_point_range] == [(-math.inf, 2.0)]

    mode = ParamSpec('mode', 'a', 'mode', 'configure', choices=('a', 'b')).descriptor()
    assert not mode.read_only and mode.additional_constraints == f'one of: a | b; {CONFIGURE_NOTE}'
    loose = ParamSpec('lr', 0.1, 'learning rate', low=0.0, dynamic_typing=True).descriptor()
    assert loose.dynamic_typing and not loose.integer_range and not loose.floating_point_range
    assert not ParamSpec('flag', False, 'a flag').descriptor().dynamic_typing


def test_a_table_row_that_cannot_be_declared_is_refused_when_written():
    with pytest.raises(ValueError, match='applies must be start, live or configure'):
        ParamSpec('x', 1, 'x', applies='always')
    with pytest.raises(ValueError, match='flag: a range on a boolean'):
        ParamSpec('flag', False, 'flag', low=0).descriptor()


def test_what_rclpy_cannot_check_is_checked_here():
    mode = ParamSpec('mode', 'a', 'mode', choices=('a', 'b'))
    assert mode.problem('b') == ''
    assert mode.problem('c') == "mode must be one of a, b, got 'c'"
    lr = ParamSpec('lr', 0.1, 'learning rate', low=0.0, high=1.0, dynamic_typing=True)
    assert [lr.problem(v) for v in (0.0, 1, 1.0, 0.5)] == [''] * 4          # bounds inclusive, an int for a double
    assert lr.problem(-0.1) == 'lr must be in [0.0, 1.0], got -0.1'
    assert lr.problem(1.5) == 'lr must be in [0.0, 1.0], got 1.5'
    assert lr.problem(True) == 'lr must be a number, got True'
    assert lr.problem('0.5') == "lr must be a number, got '0.5'"
    at_least = ParamSpec('lr', 0.1, 'lr', low=0.0, dynamic_typing=True)
    assert at_least.problem(1e9) == '' and at_least.problem(-1.0) == 'lr must be >= 0.0, got -1.0'
    at_most = ParamSpec('lr', 0.1, 'lr', high=1.0, dynamic_typing=True)
    assert at_most.problem(-1e9) == '' and at_most.problem(2) == 'lr must be <= 1.0, got 2'
    assert ParamSpec('anything', 0.1, 'no range', dynamic_typing=True).problem('text') == ''


TABLE = [ParamSpec('depth', 10, 'queue depth', low=1),
         ParamSpec('period_s', 0.5, 'status period', 'live', low=0.01),
         ParamSpec('gain', 1.0, 'gain', 'live', low=0.0, high=2.0),
         ParamSpec('mode', 'a', 'mode', 'configure', choices=('a', 'b')),
         ParamSpec('window_s', 2.0, 'window', low=0.1, former='window')]


def test_a_node_starts_with_its_defaults_or_the_values_given(make_node):
    assert declare_params(make_node(), TABLE) == {'depth': 10, 'period_s': 0.5, 'gain': 1.0, 'mode': 'a',
                                                  'window_s': 2.0}
    given = declare_params(make_node(depth=20, mode='b', gain=2.0), TABLE)
    assert (given['depth'], given['mode'], given['gain'], given['period_s']) == (20, 'b', 2.0, 0.5)


@pytest.mark.parametrize('overrides, named', [({'depth': 0}, 'parameter depth'), ({'gain': 2.5}, 'parameter gain'),
                                              ({'depth': 'ten'}, 'parameter depth'),
                                              ({'mode': 'c'}, "mode must be one of a, b, got 'c'")])
def test_a_value_not_allowed_at_start_is_refused_naming_it(make_node, overrides, named):
    with pytest.raises(StartRefused, match=named):
        declare_params(make_node(**overrides), TABLE)


def test_a_former_name_still_works_unless_the_new_one_is_given(make_node):
    node = make_node(window=5.0)
    assert declare_params(node, TABLE)['window_s'] == 5.0
    assert node.get_parameter('window').value == 5.0
    assert node.describe_parameter('window').read_only
    both = make_node(window=5.0, window_s=3.0)
    assert declare_params(both, TABLE)['window_s'] == 3.0
    with pytest.raises(StartRefused, match='parameter window_s'):   # the old name's value is checked like the new
        declare_params(make_node(window=0.0), TABLE)


def test_a_set_applies_live_or_is_refused_with_the_reason(make_node):
    applied = []

    def on_live(changes):
        applied.append(changes)
        return 'gain 0 would stall the arm' if changes.get('gain') == 0.0 else ''
    node = make_node()
    declare_params(node, TABLE, on_live=on_live)

    result = node.set_parameters_atomically([Parameter('period_s', value=0.2), Parameter('gain', value=1.5)])
    assert result.successful and applied == [{'period_s': 0.2, 'gain': 1.5}]
    assert node.get_parameter('period_s').value == 0.2

    refused = set_one(node, 'gain', 0.0)
    assert not refused.successful and refused.reason == 'gain 0 would stall the arm'
    assert node.get_parameter('gain').value == 1.5

    read_only = set_one(node, 'depth', 20)
    assert not read_only.successful and 'read-only' in read_only.reason
    assert node.get_parameter('depth').value == 10
    out_of_range = set_one(node, 'gain', 3.0)
    assert not out_of_range.successful and node.get_parameter('gain').value == 1.5
    assert set_one(node, 'use_sim_time', True).successful        # rclpy's own parameter passes the callback
    assert applied[-1] == {'gain': 0.0}                           # neither refused set reached on_live

    both = node.set_parameters_atomically([Parameter('period_s', value=0.3), Parameter('mode', value='b')])
    assert both.successful and applied[-1] == {'period_s': 0.3}   # on_live gets the live ones only
    wrong = node.set_parameters_atomically([Parameter('period_s', value=0.4), Parameter('mode', value='c')])
    assert not wrong.successful and wrong.reason == "mode must be one of a, b, got 'c'"
    assert node.get_parameter('period_s').value == 0.3 and applied[-1] == {'period_s': 0.3}


def test_a_configure_parameter_is_set_only_while_unconfigured(make_node):
    configured = []
    node = make_node()
    declare_params(node, TABLE, on_live=lambda changes: pytest.fail(f'not live: {changes}'),
                   configure_refusal=lambda: 'the node is configured' if configured else '')
    assert set_one(node, 'mode', 'b').successful and node.get_parameter('mode').value == 'b'
    configured.append(True)
    refused = set_one(node, 'mode', 'a')
    assert not refused.successful and refused.reason == f'mode is {CONFIGURE_NOTE}: the node is configured'
    assert node.get_parameter('mode').value == 'b'


def test_a_live_period_change_takes_the_new_period(make_node):
    node = make_node()
    timer = node.create_timer(3600.0, lambda: None)
    set_period(timer, 0.25)
    assert timer.timer_period_ns == 250_000_000
    assert 0 < timer.time_until_next_call() <= 250_000_000        # not still at the hour the old period set
