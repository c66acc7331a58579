"""Every node's parameters, seen from another process through the parameter services (what ``ros2 param describe``
and ``ros2 param set`` call): each declared parameter has a description, read-only exactly where the node's table
says it is read at start; a set of a read-only parameter is refused, an out-of-range value is refused with the range,
and a live one applies -- shown by its effect: every node starts with its status timer at an hour, and its first
/swfp/status arrives only after ``status_period_s`` is set live.
"""
import os
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402

import stub_runtime  # noqa: E402
from swfp_ros.ros import learner_node, policy_node, recorder_node, sim_bridge_node, task_node  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.sim.tasks import SUCCESS_DISTANCE  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402

HERE = Path(__file__).resolve().parent
HOUR = 3600.0


def call(ros_node, future, what: str, timeout: float = 30.0):
    ros_node.wait_for(future.done, timeout, what=what)
    return future.result()


def first_answer(ros_node, request, what: str, timeout: float = 60.0):
    """A query re-sent until answered: a request sent before the node spins, or before the service's reply path is
    matched by discovery, is never answered."""
    futures = []

    def answered():
        if not futures or ros_node.node.get_clock().now().nanoseconds - futures[-1][0] > 2e9:
            futures.append((ros_node.node.get_clock().now().nanoseconds, request()))
        return any(f.done() for _, f in futures)
    ros_node.wait_for(answered, timeout, what=what)
    return next(f.result() for _, f in futures if f.done())


def node_setup(name: str, tmp_path: Path):
    """(executable, parameters, the node's ParamSpec table, a read-only parameter with a valid new value)."""
    if name == 'learner_node':
        bc = write_bc_checkpoint(tmp_path / 'bc.pt', 3, 2)
        # the former names update_period / backlog_period still work (with a deprecation warning)
        params = {'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(bc), 'device': 'cpu',
                  'status_period_s': HOUR, 'update_period': 0.05, 'swfp': SMALL_SWFP}
        return params, learner_node.PARAMS + learner_node.swfp_params(), ('queue_depth', 10)
    if name == 'policy_node':
        obs_dim = 14 + len(TASKS['panda_reach'][1].task_labels)
        ckpt = stub_runtime.write_checkpoint(tmp_path / 'stub.json', obs_dim)
        params = {'checkpoint': str(ckpt), 'policy_loader': 'stub_runtime:load_policy', 'autostart': False,
                  'status_period_s': HOUR}
        return params, policy_node.PARAMS, ('autostart', True)
    if name == 'sim_bridge':
        return {'status_period_s': HOUR}, sim_bridge_node.PARAMS, ('seed', 3)
    if name == 'recorder_node':
        params = {'output': str(tmp_path / 'bag'), 'topics': ['/swfp/estop'], 'status_period': HOUR}
        return params, recorder_node.PARAMS, ('storage', 'sqlite3')
    params = {'status_period_s': HOUR}
    return params, task_node.task_params(TASKS, SUCCESS_DISTANCE), ('monitor', True)


@pytest.mark.parametrize('name', ['learner_node', 'policy_node', 'sim_bridge', 'recorder_node', 'task_node'])
def test_parameters_described_refused_and_live(name, ros_node, launch_node, tmp_path):
    params, specs, (read_only, new_value) = node_setup(name, tmp_path)
    proc = launch_node(name, params=params, env={'PYTHONPATH': f'{HERE}:{os.environ.get("PYTHONPATH", "")}'})
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    client = AsyncParameterClient(ros_node.node, f'/{name}')
    ros_node.wait_for(lambda: client.services_are_ready() or not proc.alive(), 60.0, what=f'{name} parameter services')
    assert proc.alive(), proc.output()

    names = [s.name for s in specs]
    listed = first_answer(ros_node, client.list_parameters, 'list_parameters').result.names
    assert set(names) <= set(listed)
    described = call(ros_node, client.describe_parameters(names), 'describe_parameters').descriptors
    for spec, d in zip(specs, described):
        assert d.name == spec.name
        assert d.description == spec.description and d.description
        assert d.read_only == (spec.applies == 'start'), spec.name
        if spec.low is not None and not spec.dynamic_typing:
            bounds = list(d.integer_range) + list(d.floating_point_range)
            assert bounds and bounds[0].from_value == spec.low, spec.name

    result = call(ros_node, client.set_parameters([Parameter(read_only, value=new_value)]), 'set read-only')
    assert not result.results[0].successful
    assert 'read-only' in result.results[0].reason
    result = call(ros_node, client.set_parameters([Parameter('status_period_s', value=0.0)]), 'set out of range')
    assert not result.results[0].successful and 'out of range' in result.results[0].reason

    if name == 'policy_node':
        check_configure_parameters(ros_node, client, name)
    if name == 'learner_node':
        got = call(ros_node, client.get_parameters(['update_period_s']), 'get').values[0].double_value
        assert got == 0.05
        assert 'update_period is deprecated: use update_period_s' in proc.output()

    assert not [m for _, m in list(status) if any(s.name == f'/{name}' for s in m.status)]
    result = call(ros_node, client.set_parameters([Parameter('status_period_s', value=0.1)]), 'set live')
    assert result.results[0].successful, result.results[0].reason
    ros_node.wait_for(lambda: any(s.name == f'/{name}' for _, m in list(status) for s in m.status), 20.0,
                      what=f'/swfp/status from {name} after the live change')
    got = call(ros_node, client.get_parameters(['status_period_s']), 'get').values[0].double_value
    assert got == 0.1
    assert proc.alive(), proc.output()


def check_configure_parameters(ros_node, client, name):
    """A parameter read at configure: set while unconfigured applies; once configured it is refused with why."""
    result = call(ros_node, client.set_parameters([Parameter('deterministic', value=True)]), 'set unconfigured')
    assert result.results[0].successful, result.results[0].reason
    change = ros_node.node.create_client(ChangeState, f'/{name}/change_state')
    assert change.wait_for_service(timeout_sec=20.0)
    configure = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE))
    reply = call(ros_node, change.call_async(configure), 'configure')
    assert reply.success
    result = call(ros_node, client.set_parameters([Parameter('deterministic', value=False)]), 'set configured')
    assert not result.results[0].successful
    assert 'read at configure' in result.results[0].reason and 'the node is configured' in result.results[0].reason
    got = call(ros_node, client.get_parameters(['deterministic']), 'get').values[0].bool_value
    assert got is True


def test_every_parameter_in_its_yaml_file_with_a_comment():
    """config/<node>.yaml holds every declared parameter and nothing else, each with a comment on its line or the
    line above, at the node's own default (a node started without the file behaves as with it)."""
    tables = {'learner': learner_node.PARAMS + learner_node.swfp_params(), 'policy': policy_node.PARAMS,
              'recorder': recorder_node.PARAMS, 'sim_bridge': sim_bridge_node.PARAMS,
              'task_node': task_node.task_params(TASKS, SUCCESS_DISTANCE)}
    for stem, specs in tables.items():
        path = HERE.parents[1] / 'config' / f'{stem}.yaml'
        keys, stack, lines = set(), [], path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r'^( *)([A-Za-z_]\w*):(.*)$', line)
            if not m or m.group(2) == 'ros__parameters':
                continue
            depth = len(m.group(1)) // 2
            stack = stack[:max(depth - 2, 0)]
            nested = i + 1 < len(lines) and lines[i + 1].startswith(' ' * (len(m.group(1)) + 2))
            if not m.group(3).strip() and nested and not lines[i + 1].strip().startswith('#'):
                stack.append(m.group(2))           # a mapping (swfp:, swfp.block:)
                continue
            keys.add('.'.join(stack + [m.group(2)]))
            assert '#' in line or lines[i - 1].strip().startswith('#'), f'{path.name}: {line.strip()} has no comment'
        names = {s.name for s in specs}
        assert keys == names, f'{path.name}: missing {names - keys}, not declared {keys - names}'
        values = flatten(yaml.safe_load(path.read_text())['/**']['ros__parameters'])
        differ = {s.name: (values[s.name], s.default) for s in specs if values[s.name] != s.default}
        assert not differ, f'{path.name}: (file, node default) differ for {differ}'


def test_the_policy_nodes_defaults_are_the_actor_loops():
    """ActorConfig() in a library user's runner behaves as a policy node started without parameters, but for one
    default: the node paces on the learner's backlog (it runs beside a learner node); the library's loop does not,
    since an in-process runner has no backlog reports and would wait learner_wait_s for one at every activation."""
    from dataclasses import MISSING, fields

    from swfp_ros.actor import ActorConfig
    node = {s.name: s.default for s in policy_node.PARAMS}
    loop = {f.name: f.default for f in fields(ActorConfig) if f.default is not MISSING}
    assert {name: (node[name], value) for name, value in loop.items() if node[name] != value} == {
        'max_learner_backlog': (32, 0)}


def flatten(tree: dict, prefix: str = '') -> dict:
    """{'swfp': {'block': {'delta': 0.1}}} -> {'swfp.block.delta': 0.1}"""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


@pytest.mark.parametrize('node, value', [('policy_node', {'max_update_bytes': 0}), ('sim_bridge', {'mode': 'fast'})])
def test_a_value_refused_at_start_ends_it_in_one_line(node, value, launch_node):
    """A parameter given out of its range or choices ends the start with status 3 and one line naming it — the
    user's input, not a bug, so no traceback."""
    process = launch_node(node, params=value)
    assert process.proc.wait(timeout=60) == 3, process.output()
    out = process.output()
    name = next(iter(value))
    assert f'{node}: failed to start: ' in out and name in out and 'Traceback' not in out, out
