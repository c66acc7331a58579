"""The ONE description of the swfp_ros node graphs.

Two ways in read this module and nothing else:

* ``launch/*.launch.py`` (a ROS 2 install, ``ros2 launch swfp_ros sim_finetune.launch.py``) turn it into
  ``DeclareLaunchArgument`` and ``launch_ros.actions.Node`` actions with :func:`launch_description`;
* :mod:`swfp_ros.ros.bringup` (``swfp up sim_finetune``, pip-only machines) resolves it to command lines with
  :func:`resolve`.

This module is pure data + pure functions: it imports neither rclpy nor launch at module level (``launch`` and
``launch_ros`` are imported inside :func:`launch_description` only).

Values inside a node description are either literals or :class:`Arg` references to a declared argument. Every
argument has a ``type`` used both ways: ``launch_ros.parameter_descriptions.ParameterValue(value_type=...)`` in the
launch files, and the typed parameter YAML that the bring-up writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

PACKAGE = 'swfp_ros'


@dataclass(frozen=True)
class Arg:
    """A reference to a declared argument's value."""
    name: str


@dataclass(frozen=True)
class PackageConfigDir:
    """Default value meaning "the package's installed config/ directory"."""

    def __str__(self) -> str:  # how --help shows it
        return '<share/swfp_ros/config>'


PACKAGE_CONFIG_DIR = PackageConfigDir()
Value = Union[Arg, str, int, float, bool]


@dataclass(frozen=True)
class Argument:
    name: str
    default: Any               # str / bool / int / float, or PACKAGE_CONFIG_DIR
    description: str
    type: type = str           # str, bool, int or float
    choices: tuple[str, ...] | None = None

    def parse(self, text: str) -> Any:
        """Command-line text -> typed value (the same rules as a launch argument, then ParameterValue)."""
        if self.choices is not None and text not in self.choices:
            raise ValueError(f'argument {self.name}:={text!r}: expected one of {", ".join(self.choices)}')
        if self.type is bool:
            low = text.strip().lower()
            if low in ('true', '1', 'yes', 'on'):
                return True
            if low in ('false', '0', 'no', 'off'):
                return False
            raise ValueError(f'argument {self.name}:={text!r}: expected true or false')
        if self.type in (int, float):
            try:
                return self.type(text)
            except ValueError:
                raise ValueError(f'argument {self.name}:={text!r}: expected {self.type.__name__}') from None
        return text

    def launch_default(self) -> str:
        """The default as launch's DeclareLaunchArgument text (bools lower-case, as launch writes them)."""
        if self.type is bool:
            return 'true' if self.default else 'false'
        return str(self.default)


@dataclass(frozen=True)
class NodeSpec:
    executable: str
    name: str
    param_files: tuple[str, ...] = ()                       # file names inside the `config` directory
    parameters: tuple[tuple[str, Value], ...] = ()          # overrides, applied after the files
    remappings: tuple[tuple[str, Value], ...] = ()
    namespaced: bool = True                                 # under the `namespace` argument (actors); False: global
    condition: str | None = None                            # a bool argument: start only when true
    package: str = PACKAGE


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    arguments: tuple[Argument, ...]
    nodes: tuple[NodeSpec, ...]

    def argument(self, name: str) -> Argument:
        for a in self.arguments:
            if a.name == name:
                return a
        raise KeyError(f'graph {self.name!r} has no argument {name!r}; '
                       f'arguments: {", ".join(a.name for a in self.arguments)}')


# ---------------------------------------------------------------------------------------------- the arguments
def _common_arguments(use_sim_time: bool) -> list[Argument]:
    return [
        Argument('namespace', '', 'ROS namespace of the actor nodes (sim bridge / policy): their own topics '
                 '(joint_states, swfp/action, swfp/task, swfp/reward) go under it, while /swfp/transition, '
                 '/swfp/policy_update, /swfp/estop and the learner and recorder stay global, so that several actors '
                 'feed one learner. Empty: no namespace.'),
        Argument('actor_id', 0, 'Integer tag of this actor\'s transitions (policy node); give each actor its own.',
                 type=int),
        Argument('checkpoint', '', 'BC (base policy) checkpoint loaded by the policy node and used by the learner '
                 'as its base when it has no checkpoint of its own yet. Empty: the value in the config files.'),
        Argument('device', 'auto', 'torch device of the policy and learner nodes: auto (CUDA when present), cpu, '
                 'cuda, cuda:N.'),
        Argument('config', PACKAGE_CONFIG_DIR, 'Directory holding the parameter files (sim_bridge.yaml, '
                 'policy.yaml, learner.yaml, recorder.yaml); default: the package\'s config/.'),
        Argument('checkpoint_dir', 'swfp_checkpoints/learner', 'Directory of the learner\'s own checkpoints; a '
                 'restarted learner resumes from it.'),
        Argument('transition_bag', '', 'Optional rosbag2 (directory, .mcap or .db3) of recorded /swfp/transition '
                 'messages that pre-fills the learner\'s replay buffer. Empty: none.'),
        Argument('record_bag', False, 'Start the recorder node, which writes the live topics to a rosbag2.',
                 type=bool),
        Argument('bag_path', '', 'Output directory of the recorded bag (must not exist). Empty: '
                 'swfp_bag_<date>_<time> in the working directory.'),
        Argument('bag_storage', 'mcap', 'Storage of the recorded bag.', choices=('mcap', 'sqlite3')),
        Argument('use_sim_time', use_sim_time, 'Use /clock (simulation time) in every node.', type=bool),
        Argument('log_level', 'info', 'ROS log level of every node.',
                 choices=('debug', 'info', 'warn', 'error', 'fatal')),
    ]


def _learner(extra_params: Sequence[tuple[str, Value]] = ()) -> NodeSpec:
    return NodeSpec('learner_node', 'learner_node', param_files=('learner.yaml',), namespaced=False, parameters=(
        ('base_checkpoint', Arg('checkpoint')), ('checkpoint_dir', Arg('checkpoint_dir')),
        ('transition_bag', Arg('transition_bag')), ('device', Arg('device')), ('use_sim_time', Arg('use_sim_time')),
        *extra_params))


def _recorder() -> NodeSpec:
    return NodeSpec('recorder_node', 'recorder_node', param_files=('recorder.yaml',), namespaced=False,
                    condition='record_bag', parameters=(
                        ('output', Arg('bag_path')), ('storage', Arg('bag_storage')),
                        ('use_sim_time', Arg('use_sim_time'))))


SIM_FINETUNE = Graph(
    name='sim_finetune',
    description='Online SWFP fine-tuning in MuJoCo: sim bridge + policy node + learner node '
                '(+ recorder node when record_bag is true), on simulation time.',
    arguments=(
        Argument('task', 'panda_reach', 'MuJoCo task of the sim bridge.', choices=('panda_reach', 'panda_push')),
        Argument('mode', 'lockstep', 'Sim bridge stepping: lockstep (one control step per action, fast training) '
                 'or realtime (physics at wall-clock rate with the latest command, like a robot).',
                 choices=('lockstep', 'realtime')),
        Argument('seed', 0, 'Random seed of the sim bridge.', type=int),
        *_common_arguments(use_sim_time=True),
    ),
    nodes=(
        NodeSpec('sim_bridge', 'sim_bridge', param_files=('sim_bridge.yaml',), parameters=(
            ('task', Arg('task')), ('mode', Arg('mode')), ('seed', Arg('seed')),
            ('use_sim_time', Arg('use_sim_time')))),
        NodeSpec('policy_node', 'policy_node', param_files=('policy.yaml',), parameters=(
            ('checkpoint', Arg('checkpoint')), ('device', Arg('device')), ('actor_id', Arg('actor_id')),
            ('use_sim_time', Arg('use_sim_time')))),
        _learner(),
        _recorder(),
    ),
)

REAL_ARM = Graph(
    name='real_arm',
    description='A real arm: policy node + learner node; the policy\'s /swfp/action and /joint_states are '
                'remapped to the robot\'s topics; dry_run (commands to a debug topic only) by default.',
    arguments=(
        Argument('command_topic', '/forward_position_controller/commands', 'The robot controller\'s command '
                 'topic (std_msgs/Float64MultiArray, e.g. ros2_control forward_command_controller); /swfp/action '
                 'is remapped to it.'),
        Argument('joint_states_topic', '/joint_states', 'The robot\'s sensor_msgs/JointState topic.'),
        Argument('dry_run', True, 'Publish commands to a debug topic only, never to the robot. Set false to move '
                 'the arm.', type=bool),
        *_common_arguments(use_sim_time=False),
    ),
    nodes=(
        NodeSpec('policy_node', 'policy_node', param_files=('policy.yaml',), parameters=(
            ('checkpoint', Arg('checkpoint')), ('device', Arg('device')), ('dry_run', Arg('dry_run')),
            ('actor_id', Arg('actor_id')), ('use_sim_time', Arg('use_sim_time'))),
            remappings=(('/swfp/action', Arg('command_topic')), ('/joint_states', Arg('joint_states_topic')))),
        _learner(),
        _recorder(),
    ),
)

GRAPHS: dict[str, Graph] = {g.name: g for g in (SIM_FINETUNE, REAL_ARM)}


def get_graph(name: str) -> Graph:
    try:
        return GRAPHS[name]
    except KeyError:
        raise KeyError(f'unknown graph {name!r}; graphs: {", ".join(GRAPHS)}') from None


def validate(graph: Graph) -> None:
    """Every Arg reference names a declared argument; conditions are bool arguments; names are unique."""
    names = [a.name for a in graph.arguments]
    if len(set(names)) != len(names):
        raise ValueError(f'graph {graph.name}: duplicate argument names')
    if len({n.name for n in graph.nodes}) != len(graph.nodes):
        raise ValueError(f'graph {graph.name}: duplicate node names')
    for node in graph.nodes:
        for _, v in (*node.parameters, *node.remappings):
            if isinstance(v, Arg):
                graph.argument(v.name)
        if node.condition is not None and graph.argument(node.condition).type is not bool:
            raise ValueError(f'graph {graph.name}: condition {node.condition} of {node.name} is not a bool argument')


for _g in GRAPHS.values():
    validate(_g)


# ---------------------------------------------------------------------------------------------- bring-up side
@dataclass
class ResolvedNode:
    """A node with every argument substituted: what the bring-up starts."""
    executable: str
    name: str
    namespace: str                       # '' or '/ns'
    param_files: list[Path]
    parameters: dict[str, Any]           # typed overrides, applied after the files
    remappings: list[tuple[str, str]]
    log_level: str
    package: str = PACKAGE

    def ros_args(self, overrides_file: Path | None = None) -> list[str]:
        """``--ros-args`` for this node; ``overrides_file`` holds :attr:`parameters` (see :func:`overrides_yaml`)."""
        args = ['--ros-args', '-r', f'__node:={self.name}']
        if self.namespace:
            args += ['-r', f'__ns:={self.namespace}']
        for f in self.param_files:
            args += ['--params-file', str(f)]
        if overrides_file is not None:
            args += ['--params-file', str(overrides_file)]
        for src, dst in self.remappings:
            args += ['-r', f'{src}:={dst}']
        args += ['--log-level', self.log_level]
        return args

    def overrides_yaml(self) -> str:
        import yaml
        return yaml.safe_dump({'/**': {'ros__parameters': dict(self.parameters)}}, sort_keys=False)


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``['task:=panda_push', 'record_bag:=true']`` -> dict (the ``ros2 launch`` syntax)."""
    out = {}
    for item in items:
        if ':=' not in item:
            raise ValueError(f'expected name:=value, got {item!r}')
        k, v = item.split(':=', 1)
        out[k.strip()] = v
    return out


def resolve_arguments(graph: Graph, given: Mapping[str, str],
                      config_dir: Callable[[], Path] | None = None) -> dict[str, Any]:
    """Typed values of all arguments: the given texts parsed, defaults for the rest."""
    unknown = set(given) - {a.name for a in graph.arguments}
    if unknown:
        raise KeyError(f'graph {graph.name!r} has no argument(s) {", ".join(sorted(unknown))}; '
                       f'arguments: {", ".join(a.name for a in graph.arguments)}')
    values: dict[str, Any] = {}
    for a in graph.arguments:
        if a.name in given:
            values[a.name] = a.parse(given[a.name])
        elif a.default is PACKAGE_CONFIG_DIR:
            values[a.name] = PACKAGE_CONFIG_DIR
        else:
            values[a.name] = a.default
    return values


def _namespace(ns: str) -> str:
    ns = str(ns).strip().strip('/')
    return f'/{ns}' if ns else ''


def resolve(graph: Graph, given: Mapping[str, str]) -> list[ResolvedNode]:
    """The nodes to start for ``given`` argument texts (conditions applied, parameter files located)."""
    from swfp_ros.paths import config_path

    values = resolve_arguments(graph, given)

    def value(v: Value) -> Any:
        return values[v.name] if isinstance(v, Arg) else v

    def param_file(name: str) -> Path:
        cfg = values.get('config', PACKAGE_CONFIG_DIR)
        if cfg is PACKAGE_CONFIG_DIR:
            try:
                return config_path(name)
            except FileNotFoundError:
                raise
            except OSError as e:  # ament_index_python raises OSError when AMENT_PREFIX_PATH is unset
                source = Path(__file__).resolve().parents[2] / 'config' / name
                if source.is_file():
                    return source
                raise FileNotFoundError(f'no config file {name!r} in the package config/ ({e})') from e
        path = Path(cfg).expanduser() / name
        if not path.is_file():
            raise FileNotFoundError(f'config:={cfg}: no parameter file {name} there')
        return path.resolve()

    nodes = []
    for spec in graph.nodes:
        if spec.condition is not None and not values[spec.condition]:
            continue
        nodes.append(ResolvedNode(
            executable=spec.executable, name=spec.name, package=spec.package,
            namespace=_namespace(values.get('namespace', '')) if spec.namespaced else '',
            param_files=[param_file(f) for f in spec.param_files],
            parameters={k: value(v) for k, v in spec.parameters},
            remappings=[(src, str(value(dst))) for src, dst in spec.remappings],
            log_level=str(values.get('log_level', 'info'))))
    return nodes


# ---------------------------------------------------------------------------------------------- launch side
def launch_description(graph_name: str):
    """A ``launch.LaunchDescription`` of the graph (for ``ros2 launch``; needs launch + launch_ros)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue
    from launch_ros.substitutions import FindPackageShare

    graph = get_graph(graph_name)
    entities: list = []
    for a in graph.arguments:
        if a.default is PACKAGE_CONFIG_DIR:
            default = PathJoinSubstitution([FindPackageShare(PACKAGE), 'config'])
        else:
            default = a.launch_default()
        kwargs = {'choices': list(a.choices)} if a.choices else {}
        entities.append(DeclareLaunchArgument(a.name, default_value=default, description=a.description, **kwargs))

    def value(v: Value, typ: type | None = None):
        if isinstance(v, Arg):
            arg_type = graph.argument(v.name).type
            return ParameterValue(LaunchConfiguration(v.name), value_type=typ or arg_type)
        return v

    for spec in graph.nodes:
        params: list = [PathJoinSubstitution([LaunchConfiguration('config'), f]) for f in spec.param_files]
        if spec.parameters:
            params.append({k: value(v) for k, v in spec.parameters})
        remaps = [(src, LaunchConfiguration(dst.name) if isinstance(dst, Arg) else dst)
                  for src, dst in spec.remappings]
        kwargs = {}
        if spec.condition is not None:
            kwargs['condition'] = IfCondition(LaunchConfiguration(spec.condition))
        if spec.namespaced:
            kwargs['namespace'] = LaunchConfiguration('namespace')
        entities.append(Node(
            package=spec.package, executable=spec.executable, name=spec.name,
            parameters=params, remappings=remaps, output='screen', emulate_tty=True,
            ros_arguments=['--log-level', LaunchConfiguration('log_level')], **kwargs))
    return LaunchDescription(entities)
