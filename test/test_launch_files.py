"""launch/*.launch.py build their arguments and nodes from swfp_ros/ros/graph.py, with real launch/launch_ros APIs:
the arguments are declared, and an OpaqueFunction makes the nodes that graph.resolve() returns for the arguments'
values (the bring-up's own resolution), each with an exit handler that ends the launch (with the reason) when a
required node exits or any node fails to start.

launch and launch_ros are not on PyPI. With them importable (a ROS 2 install) the real LaunchDescription is built
and checked; otherwise minimal recording stand-ins with the real names are installed in sys.modules, so the same
code path runs, and an AST check confirms that only launch/launch_ros names that exist in the real packages are used
(checked once against ros2/launch 3.7.1 and ros2/launch_ros sources: every name and keyword below is real).
"""
import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

from swfp_ros.ros import graph

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = {'sim_finetune': REPO / 'launch' / 'sim_finetune.launch.py',
                'real_arm': REPO / 'launch' / 'real_arm.launch.py'}
# module -> names, as they exist in ros2/launch and ros2/launch_ros (Jazzy / Kilted / Rolling)
REAL_API = {
    'launch': {'LaunchDescription', 'LaunchContext'},
    'launch.actions': {'DeclareLaunchArgument', 'IncludeLaunchDescription', 'GroupAction', 'OpaqueFunction',
                       'RegisterEventHandler', 'EmitEvent', 'LogInfo'},
    'launch.event_handlers': {'OnProcessExit'},
    'launch.events': {'Shutdown'},
    'launch.logging': {'get_logger'},
    'launch.conditions': {'IfCondition', 'UnlessCondition'},
    'launch.substitutions': {'LaunchConfiguration', 'PathJoinSubstitution', 'TextSubstitution'},
    'launch_ros.actions': {'Node', 'PushRosNamespace'},
    'launch_ros.parameter_descriptions': {'ParameterValue', 'ParameterFile'},
    'launch_ros.substitutions': {'FindPackageShare'},
}
NODE_KWARGS = {'executable', 'package', 'name', 'namespace', 'exec_name', 'parameters', 'remappings',
               'ros_arguments', 'arguments', 'condition', 'output', 'emulate_tty', 'respawn', 'respawn_delay',
               'sigterm_timeout', 'sigkill_timeout'}   # the last two: ExecuteProcess's, through Node's **kwargs
DECLARE_KWARGS = {'default_value', 'description', 'choices'}


def _real_launch() -> bool:
    try:
        import launch
        import launch_ros  # noqa: F401
    except ImportError:
        return False
    return hasattr(launch, 'LaunchDescription')   # not the repo's launch/ directory seen as a namespace package


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Rec:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stand_ins(monkeypatch):
    classes = {}
    monkeypatch.setitem(sys.modules, 'launch_ros', types.ModuleType('launch_ros'))
    for mod, names in REAL_API.items():
        m = types.ModuleType(mod)
        for n in names:
            classes[n] = type(n, (_Rec,), {})
            setattr(m, n, classes[n])
        monkeypatch.setitem(sys.modules, mod, m)
    warnings = []
    sys.modules['launch.logging'].get_logger = lambda name: types.SimpleNamespace(
        warning=lambda msg: warnings.append((name, msg)))
    classes['warnings'] = warnings
    for parent, child in (('launch', 'actions'), ('launch', 'conditions'), ('launch', 'substitutions'),
                          ('launch', 'event_handlers'), ('launch', 'events'), ('launch', 'logging'),
                          ('launch_ros', 'actions'), ('launch_ros', 'parameter_descriptions'),
                          ('launch_ros', 'substitutions')):
        setattr(sys.modules[parent], child, sys.modules[f'{parent}.{child}'])
    return classes


class _Context:
    def __init__(self, configurations, is_shutdown=False):
        self.launch_configurations, self.is_shutdown = configurations, is_shutdown


class _Exit:
    def __init__(self, returncode):
        self.returncode = returncode


def _given(g, **overrides):
    """Launch configurations as launch holds them: every argument's text (its default unless overridden)."""
    out = {a.name: a.launch_default() for a in g.arguments}
    out['config'] = str(REPO / 'config')
    return {**out, **overrides}


@pytest.mark.parametrize('name', sorted(LAUNCH_FILES))
def test_launch_file_builds_the_graph(name, monkeypatch):
    g = graph.get_graph(name)
    overrides = {'checkpoint': '/x/bc.pt', 'namespace': 'arm1,arm2', 'record_bag': 'true', 'enclave_root': '/swfp'}
    if name == 'real_arm':
        overrides.update(learn='true', command_topic='/robot/cmd', respawn_learner='true')
    else:
        overrides.update(compose='true')      # the actors as composed processes (plain nodes: real_arm)
    if _real_launch():
        from launch.actions import DeclareLaunchArgument, OpaqueFunction
        ld = _load(LAUNCH_FILES[name]).generate_launch_description()
        assert [a.name for a in ld.get_launch_arguments()] == [a.name for a in g.arguments]
        assert all(isinstance(e, (DeclareLaunchArgument, OpaqueFunction)) for e in ld.entities)
        return
    classes = _stand_ins(monkeypatch)
    ld = _load(LAUNCH_FILES[name]).generate_launch_description()
    assert isinstance(ld, classes['LaunchDescription'])
    entities = ld.args[0]
    declared = [e for e in entities if isinstance(e, classes['DeclareLaunchArgument'])]
    assert [d.args[0] for d in declared] == [a.name for a in g.arguments]
    for d, a in zip(declared, g.arguments):
        assert set(d.kwargs) <= DECLARE_KWARGS and d.kwargs['description'] == a.description
        if a.name == 'config':   # the package's config dir, found through the ament index
            sub = d.kwargs['default_value']
            assert isinstance(sub, classes['PathJoinSubstitution'])
            assert isinstance(sub.args[0][0], classes['FindPackageShare']) and sub.args[0][1] == 'config'
        else:
            assert d.kwargs['default_value'] == a.launch_default()
    opaque = entities[-1]
    assert isinstance(opaque, classes['OpaqueFunction']) and len(entities) == len(declared) + 1
    # a misspelt argument name (ros2 launch passes it on silently) is warned about; a foreign one is not
    actions = opaque.kwargs['function'](_Context({**_given(g, **overrides), 'chekpoint': '/y.pt', 'robot': 'x'}),
                                        *opaque.kwargs['args'])
    assert classes['warnings'] == [('launch.user', f'chekpoint:= is not an argument of {name} and is ignored; did '
                                    f'you mean checkpoint:=? (ros2 launch {name}.launch.py --show-args)')]
    nodes = actions[0::2]
    expected = graph.resolve(g, _given(g, **overrides))
    assert len(nodes) == len(expected) and all(isinstance(n, classes['Node']) for n in nodes)
    for n, rn, handler in zip(nodes, expected, actions[1::2]):
        assert set(n.kwargs) <= NODE_KWARGS
        assert (n.kwargs['package'], n.kwargs['executable']) == ('swfp_ros', rn.executable)
        if rn.components:    # no process-wide name, namespace, parameters or remaps: each node's are in its section
            assert n.kwargs['arguments'] == rn.component_sections()
            assert not {'name', 'namespace', 'parameters', 'remappings'} & set(n.kwargs)
        else:
            assert n.kwargs['name'] == rn.name and n.kwargs.get('namespace', '') == rn.namespace
            assert n.kwargs['parameters'] == [*(str(f) for f in rn.param_files), rn.parameters]
            assert n.kwargs['remappings'] == rn.remappings
        assert n.kwargs['respawn'] == rn.respawn
        # SIGKILL (SIGTERM timeout + SIGKILL timeout after the SIGINT) when swfp up would send it
        assert float(n.kwargs['sigterm_timeout']) + float(n.kwargs['sigkill_timeout']) == rn.stop_timeout_s
        assert n.kwargs['ros_arguments'] == ['--log-level', 'info', *rn.enclave_args()]
        # the exit rule: required nodes and failed starts end the launch with the reason; a dead learner does not
        assert isinstance(handler, classes['RegisterEventHandler'])
        on_exit = handler.args[0]
        assert isinstance(on_exit, classes['OnProcessExit']) and on_exit.kwargs['target_action'] is n
        # ending the graph raises (ros2 launch then exits with status 1, the reason logged); else a log line
        for rc in (1, graph.EXIT_START_FAILED):
            if rn.required or rc == graph.EXIT_START_FAILED:
                with pytest.raises(graph.GraphEnded, match=rf'^{re.escape(rn.label)} .*status {rc}\)?; shutting'):
                    on_exit.kwargs['on_exit'](_Exit(rc), _Context({}))
            else:
                logged = on_exit.kwargs['on_exit'](_Exit(rc), _Context({}))
                assert [type(a) for a in logged] == [classes['LogInfo']], rn.name
                assert 'keep acting' in logged[0].kwargs['msg']
        assert on_exit.kwargs['on_exit'](_Exit(3), _Context({}, is_shutdown=True)) is None
    names = [(rn.namespace, rn.executable) for rn in expected]
    actor = 'policy_node' if name == 'real_arm' else 'sim_actor'
    assert ('/arm1', actor) in names and ('/arm2', actor) in names and ('', 'learner_node') in names
    learner = next(rn for rn in expected if rn.executable == 'learner_node')
    assert not learner.required and learner.respawn == (name == 'real_arm')
    assert learner.stop_timeout_s == graph.LEARNER_STOP_TIMEOUT_S > graph.STOP_TIMEOUT_S    # its final checkpoint


@pytest.mark.parametrize('mode', ['lockstep', 'realtime'])
def test_compose_puts_each_actors_bridge_and_policy_in_one_process(mode):
    """compose:=true: per namespace one sim_actor process whose sections are exactly the two nodes' own arguments
    as they would run apart (plus act_on_executor in lockstep), and which the executable's parser splits back."""
    pytest.importorskip('rclpy')
    from swfp_ros.ros.sim_actor import split_sections
    g = graph.get_graph('sim_finetune')
    given = _given(g, namespace='arm1,arm2', mode=mode, checkpoint='/x/bc.pt', log_level='warn',
                   enclave_root='/swfp')
    apart = graph.resolve(g, given)
    composed = graph.resolve(g, {**given, 'compose': 'true'})
    assert [rn.label for rn in composed] == ['arm1/sim_actor', 'arm2/sim_actor', 'learner_node']
    for rn in composed[:2]:
        bridge, policy = (next(a for a in apart if a.namespace == rn.namespace and a.name == name)
                          for name in ('sim_bridge', 'policy_node'))
        assert rn.required and not rn.respawn and rn.enclave == f'/swfp{rn.namespace}/sim_actor'
        sections, rest = split_sections(rn.ros_args())
        assert sections['sim_bridge'] == bridge.node_args()
        if mode == 'lockstep':
            assert sections['policy_node'] == policy.node_args() + ['-p', 'act_on_executor:=true']
        else:                # act_on_executor is refused in realtime: left to the parameter file (false)
            assert sections['policy_node'] == policy.node_args()
        assert rest == ['--ros-args', '--log-level', 'warn', '--enclave', f'/swfp{rn.namespace}/sim_actor']
    assert composed[2].ros_args() == apart[-1].ros_args()
    assert all('act_on_executor' not in rn.parameters for rn in apart)


@pytest.mark.parametrize('compose', ['false', 'true'])
def test_the_task_reaches_the_bridge_and_the_policy(compose):
    """task:=panda_push once reached the sim bridge only: the policy node, left on panda_reach, expected reach's
    observations and failed to configure."""
    g = graph.get_graph('sim_finetune')
    nodes = graph.resolve(g, _given(g, task='panda_push', compose=compose, namespace='arm1,arm2'))
    actors = [c for rn in nodes for c in (rn.components or [rn]) if rn.namespace]
    assert sorted(rn.name for rn in actors) == ['policy_node', 'policy_node', 'sim_bridge', 'sim_bridge']
    assert all(rn.parameters['task'] == 'panda_push' for rn in actors)


def test_only_real_launch_apis_are_used():
    sources = [REPO / 'swfp_ros' / 'ros' / 'graph.py', *LAUNCH_FILES.values()]
    for path in sources:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] in ('launch',
                                                                                                  'launch_ros'):
                names = {a.name for a in node.names}
                assert node.module in REAL_API and names <= REAL_API[node.module], (path, node.module, names)
            if isinstance(node, ast.Import):
                assert not any(a.name.split('.')[0] in ('launch', 'launch_ros') for a in node.names), path
    for path in LAUNCH_FILES.values():
        tree = ast.parse(path.read_text())
        fns = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert 'generate_launch_description' in fns


def test_graph_descriptions_are_consistent():
    for g in graph.GRAPHS.values():
        graph.validate(g)
        names = {a.name for a in g.arguments}
        assert {'namespace', 'checkpoint', 'device', 'config', 'record_bag', 'use_sim_time'} <= names
        for a in g.arguments:
            assert a.description and a.description.endswith('.')
    assert graph.get_graph('sim_finetune').argument('use_sim_time').default is True
    assert 'task' in {a.name for a in graph.SIM_FINETUNE.arguments}
    real = graph.get_graph('real_arm')
    assert real.argument('dry_run').default is True and real.argument('use_sim_time').default is False
    assert real.argument('mode').default == 'realtime' and real.argument('learn').default is False
    assert {n.executable for n in real.nodes} == {'sim_bridge', 'task_node', 'policy_node', 'learner_node',
                                                  'recorder_node'}
    policy = next(n for n in real.nodes if n.executable == 'policy_node')
    # relative sources: the remaps also match under a namespace (/arm1/swfp/action)
    assert ('swfp/action', graph.Arg('command_topic')) in policy.remappings
    assert ('joint_states', graph.Arg('joint_states_topic')) in policy.remappings


def test_real_arm_recorder_records_the_command_topic_in_use():
    g = graph.get_graph('real_arm')
    values = graph.resolve_arguments(g, {'namespace': 'arm1,arm2', 'dry_run': 'false'})
    topics = graph.real_arm_topics(values)
    assert {'/arm1/forward_position_controller/commands', '/arm2/forward_position_controller/commands',
            '/arm1/joint_states', '/swfp/transition'} <= set(topics) and '/swfp/action' not in topics
    values = graph.resolve_arguments(g, {'command_topic': '/robot/cmd', 'dry_run': 'false'})
    assert '/robot/cmd' in graph.real_arm_topics(values)
    values = graph.resolve_arguments(g, {})
    assert '/policy_node/action_preview' in graph.real_arm_topics(values)   # dry-run: the debug topic


@pytest.mark.parametrize('name', sorted(LAUNCH_FILES))
def test_update_key_and_estop_release_sources_reach_the_nodes(name):
    """update_key_file:= goes to the learner and every policy node, estop_release_sources:= to every policy node;
    left empty, neither is overridden (the parameter files' values stand)."""
    g = graph.get_graph(name)
    given = {'namespace': 'arm1,arm2', 'learn': 'true'} if name == 'real_arm' else {'namespace': 'arm1,arm2'}
    nodes = graph.resolve(g, _given(g, **given, update_key_file='/keys/swfp.key',
                                    estop_release_sources='/operator, /arm1/panel'))
    policies = [rn for rn in nodes if rn.executable == 'policy_node']
    learner = next(rn for rn in nodes if rn.executable == 'learner_node')
    assert len(policies) == 2 and learner.parameters['update_key_file'] == '/keys/swfp.key'
    for rn in policies:
        assert rn.parameters['update_key_file'] == '/keys/swfp.key'
        assert rn.parameters['estop_release_sources'] == ['/operator', '/arm1/panel']
    for rn in graph.resolve(g, _given(g, **given)):
        assert 'update_key_file' not in rn.parameters and 'estop_release_sources' not in rn.parameters, rn.name


def test_enclave_root_gives_each_node_its_own_enclave():
    """SROS2: enclave_root:=/swfp -> --enclave /swfp/<namespace>/<node> on every node (launch passes the same
    ros_arguments, checked above); none without it."""
    g = graph.get_graph('real_arm')
    nodes = graph.resolve(g, _given(g, namespace='arm1,arm2', learn='true', enclave_root='/swfp'))
    enclaves = {rn.enclave for rn in nodes}
    assert {'/swfp/arm1/policy_node', '/swfp/arm2/policy_node', '/swfp/arm1/task_node', '/swfp/learner_node'} <= \
        enclaves and len(enclaves) == len(nodes)
    policy = next(rn for rn in nodes if rn.enclave == '/swfp/arm1/policy_node')
    assert policy.ros_args()[-2:] == ['--enclave', '/swfp/arm1/policy_node']
    assert all('--enclave' not in rn.ros_args() for rn in graph.resolve(g, _given(g, learn='true')))


def test_the_goal_argument_reaches_the_task_node_as_triples():
    """goal:= on the real-arm graph: 'x,y,z' or triples separated by ';' (spaces allowed) become the task node's flat
    goals list; '' (or blanks) is the parameter's "none", [0.0]; anything not in triples is refused with the reason."""
    g = graph.get_graph('real_arm')

    def goals(text):
        return next(rn for rn in graph.resolve(g, _given(g, goal=text)) if rn.name == 'task_node').parameters['goals']
    assert goals('0.5,0,0.3') == [0.5, 0.0, 0.3]
    assert goals(' 0.5, 0.0, 0.3 ; 0.4,0.1,0.35; ') == [0.5, 0.0, 0.3, 0.4, 0.1, 0.35]
    assert goals('') == goals('  ') == [0.0]
    for bad in ('0.5,0.1', '0.5,0,0.3;0.4', ';'):
        with pytest.raises(ValueError, match='expected x,y,z triples separated by ;'):
            goals(bad)


def test_namespaces_and_enclave_root_are_normalised():
    """' /arm1/ , arm2' names the namespaces /arm1 and /arm2, and enclave_root 'swfp/' is the enclave root /swfp; a
    list with an empty entry or naming one namespace twice is refused."""
    g = graph.get_graph('real_arm')
    for bad, problem in (('arm1,,arm2', 'an empty entry'), ('arm1, /arm1/', 'duplicate namespaces')):
        with pytest.raises(ValueError, match=problem):
            graph.resolve(g, _given(g, namespace=bad))
    nodes = graph.resolve(g, _given(g, namespace=' /arm1/ , arm2', enclave_root='swfp/'))
    assert sorted(rn.namespace for rn in nodes if rn.name == 'policy_node') == ['/arm1', '/arm2']
    assert {rn.enclave for rn in nodes if rn.name == 'policy_node'} == {'/swfp/arm1/policy_node',
                                                                      '/swfp/arm2/policy_node'}
