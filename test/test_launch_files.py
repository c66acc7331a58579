"""launch/*.launch.py build their arguments and nodes from swfp_ros/ros/graph.py, with real launch/launch_ros APIs.

launch and launch_ros are not on PyPI. With them importable (a ROS 2 install) the real LaunchDescription is built
and checked; otherwise minimal recording stand-ins with the real names are installed in sys.modules, so the same
code path runs, and an AST check confirms that only launch/launch_ros names that exist in the real packages are used
(checked once against ros2/launch 3.7.1 and ros2/launch_ros sources: every name and keyword below is real).
"""
import ast
import importlib.util
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
    'launch.actions': {'DeclareLaunchArgument', 'IncludeLaunchDescription', 'GroupAction'},
    'launch.conditions': {'IfCondition', 'UnlessCondition'},
    'launch.substitutions': {'LaunchConfiguration', 'PathJoinSubstitution', 'TextSubstitution'},
    'launch_ros.actions': {'Node', 'PushRosNamespace'},
    'launch_ros.parameter_descriptions': {'ParameterValue', 'ParameterFile'},
    'launch_ros.substitutions': {'FindPackageShare'},
}
NODE_KWARGS = {'executable', 'package', 'name', 'namespace', 'exec_name', 'parameters', 'remappings',
               'ros_arguments', 'arguments', 'condition', 'output', 'emulate_tty'}
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
    for parent, child in (('launch', 'actions'), ('launch', 'conditions'), ('launch', 'substitutions'),
                          ('launch_ros', 'actions'), ('launch_ros', 'parameter_descriptions'),
                          ('launch_ros', 'substitutions')):
        setattr(sys.modules[parent], child, sys.modules[f'{parent}.{child}'])
    return classes


@pytest.mark.parametrize('name', sorted(LAUNCH_FILES))
def test_launch_file_builds_the_graph(name, monkeypatch):
    g = graph.get_graph(name)
    if _real_launch():
        from launch.actions import DeclareLaunchArgument
        from launch_ros.actions import Node
        ld = _load(LAUNCH_FILES[name]).generate_launch_description()
        assert [a.name for a in ld.get_launch_arguments()] == [a.name for a in g.arguments]
        assert len([e for e in ld.entities if isinstance(e, Node)]) == len(g.nodes)
        assert all(isinstance(e, (DeclareLaunchArgument, Node)) for e in ld.entities)
        return
    classes = _stand_ins(monkeypatch)
    ld = _load(LAUNCH_FILES[name]).generate_launch_description()
    assert isinstance(ld, classes['LaunchDescription'])
    entities = ld.args[0]
    declared = [e for e in entities if isinstance(e, classes['DeclareLaunchArgument'])]
    nodes = [e for e in entities if isinstance(e, classes['Node'])]
    assert [d.args[0] for d in declared] == [a.name for a in g.arguments]
    for d, a in zip(declared, g.arguments):
        assert set(d.kwargs) <= DECLARE_KWARGS and d.kwargs['description'] == a.description
        if a.name == 'config':   # the package's config dir, found through the ament index
            sub = d.kwargs['default_value']
            assert isinstance(sub, classes['PathJoinSubstitution'])
            assert isinstance(sub.args[0][0], classes['FindPackageShare']) and sub.args[0][1] == 'config'
        else:
            assert d.kwargs['default_value'] == a.launch_default()
    assert len(nodes) == len(g.nodes)
    for n, spec in zip(nodes, g.nodes):
        assert set(n.kwargs) <= NODE_KWARGS
        assert (n.kwargs['package'], n.kwargs['executable'], n.kwargs['name']) == ('swfp_ros', spec.executable,
                                                                                   spec.name)
        files = [p for p in n.kwargs['parameters'] if isinstance(p, classes['PathJoinSubstitution'])]
        assert [f.args[0][1] for f in files] == list(spec.param_files)
        assert all(isinstance(f.args[0][0], classes['LaunchConfiguration']) and f.args[0][0].args[0] == 'config'
                   for f in files)
        overrides = n.kwargs['parameters'][-1]
        assert set(overrides) == {k for k, _ in spec.parameters} and 'use_sim_time' in overrides
        for v in overrides.values():
            assert isinstance(v, classes['ParameterValue']) and 'value_type' in v.kwargs
        assert [src for src, _ in n.kwargs['remappings']] == [src for src, _ in spec.remappings]
        if spec.condition:
            cond = n.kwargs['condition']
            assert isinstance(cond, classes['IfCondition']) and cond.args[0].args[0] == spec.condition
        else:
            assert 'condition' not in n.kwargs
        assert ('namespace' in n.kwargs) == spec.namespaced


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
    assert {n.executable for n in real.nodes} == {'policy_node', 'learner_node', 'recorder_node'}
    policy = next(n for n in real.nodes if n.executable == 'policy_node')
    assert ('/swfp/action', graph.Arg('command_topic')) in policy.remappings
