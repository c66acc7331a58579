"""The ONE description of the swfp_ros node graphs.

Two ways in read this module and nothing else:

* ``launch/*.launch.py`` (a ROS 2 install, ``ros2 launch swfp_ros sim_finetune.launch.py``) turn it into
  ``DeclareLaunchArgument`` actions and, once the arguments are known, ``launch_ros.actions.Node`` actions of the
  nodes :func:`resolve` returns, with exit handlers (:func:`launch_description`);
* :mod:`swfp_ros.ros.bringup` (``swfp up sim_finetune``, pip-only machines) resolves it to command lines with
  :func:`resolve`.

Both therefore start the same processes with the same parameters, and apply the same exit rules: a node whose
``required`` is true ends the graph when it exits (with the reason); a node that is not required (the learner) ends
it only when it fails to start (exit status ``EXIT_START_FAILED``); otherwise the actors keep acting with their last
accepted policy, and the node is restarted when its ``respawn`` value is true.

``namespace`` may list several namespaces (``arm1,arm2``): the actor nodes (``namespaced``) are started once per
namespace, with ``actor_id`` counting up from the given one; the learner and the recorder stay single and global.

A :class:`Composition` puts several of an actor's nodes in one process when its bool argument is true (sim_finetune's
``compose``: the sim bridge and the policy node in one ``sim_actor`` process per namespace); each node keeps its own
parameter files, overrides and remappings (:meth:`ResolvedNode.ros_args`).

This module is pure data + pure functions: it imports neither rclpy nor launch at module level (``launch`` and
``launch_ros`` are imported inside :func:`launch_description` and :func:`launch_nodes` only).

Values inside a node description are literals, :class:`Arg` references to a declared argument, or :class:`Computed`
values derived from all the argument values; a parameter whose value resolves to None is not overridden (the
parameter files' value stands). Every argument has a ``type``: its text (from the command line or
from launch) is parsed into a typed parameter value the same way for both.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

PACKAGE = 'swfp_ros'
EXIT_START_FAILED = 3          # swfp_ros.ros.executors.EXIT_START_FAILED (this module does not import rclpy)
RESPAWN_DELAY_S = 2.0
# Seconds a node gets between its SIGINT and a SIGKILL, under both ways in. 10 s is ros2 launch's own default
# (SIGTERM after 5 s, SIGKILL 5 s later; the nodes treat SIGTERM as one more stop request). The learner gets more: its
# stop waits for the block in training (5-6 s at the default size on 2 loaded cores), then writes its final checkpoint.
STOP_TIMEOUT_S = 10.0
LEARNER_STOP_TIMEOUT_S = 30.0
LAUNCH_SIGKILL_TIMEOUT_S = 5.0  # ros2 launch: SIGTERM after stop_timeout_s - this, SIGKILL at stop_timeout_s
# Simulated robot i is seeded seed + this * i, whether it has a bridge of its own or shares one (sim_bridge_node).
ROBOT_SEED_STRIDE = 1000


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


@dataclass(frozen=True)
class Computed:
    """A value computed from the typed values of all arguments (and the node's namespace, '' or '/ns')."""
    fn: Callable[[Mapping[str, Any], str], Any]


Value = Union[Arg, Computed, str, int, float, bool, list]


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
    required: bool = True                                   # its exit ends the graph (else only a failed start does)
    respawn: Value = False                                  # restart it when it exits (not required nodes)
    stop_timeout_s: float = STOP_TIMEOUT_S                  # SIGINT -> SIGKILL at shutdown


@dataclass(frozen=True)
class Composition:
    """Namespaced nodes of a graph started in ONE process (per namespace) when the bool argument ``condition`` is
    true: ``executable`` builds them (in the order of ``nodes``) from one ``--node NAME --ros-args ... --`` section
    each. The process is required when any of them is, and never respawned."""
    executable: str
    name: str
    nodes: tuple[str, ...]                                  # NodeSpec names
    condition: str


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    arguments: tuple[Argument, ...]
    nodes: tuple[NodeSpec, ...]
    compositions: tuple[Composition, ...] = ()

    def argument(self, name: str) -> Argument:
        for a in self.arguments:
            if a.name == name:
                return a
        raise KeyError(f'graph {self.name!r} has no argument {name!r}; '
                       f'arguments: {", ".join(a.name for a in self.arguments)}')


# ---------------------------------------------------------------------------------------------- the arguments
def _common_arguments(use_sim_time: bool) -> list[Argument]:
    return [
        Argument('namespace', '', 'ROS namespace of the actor nodes: their own topics (joint_states, swfp/action, '
                 'swfp/task, swfp/reward) go under it, while /swfp/transition, /swfp/policy_update, /swfp/estop and '
                 'the learner and recorder stay global, so that several actors feed one learner. A comma-separated '
                 'list (arm1,arm2) starts the actor nodes once per namespace. Empty: no namespace.'),
        Argument('actor_id', 0, 'Integer tag of the actor\'s transitions (policy node); with several namespaces, '
                 'the first one\'s (the next ones count up).', type=int),
        Argument('checkpoint', '', 'BC (base policy) checkpoint loaded by the policy node and used by the learner '
                 'as its base when it has no checkpoint of its own yet. Empty: the value in the config files.'),
        Argument('device', 'auto', 'torch device of the policy and learner nodes: auto (CUDA when present), cpu, '
                 'cuda, cuda:N.'),
        Argument('config', PACKAGE_CONFIG_DIR, 'Directory holding every node\'s parameter file (sim_bridge.yaml, '
                 'policy.yaml, learner.yaml, recorder.yaml, task_node.yaml: a copy of the package\'s config/ to '
                 'edit); default: the package\'s config/.'),
        Argument('checkpoint_dir', 'swfp_checkpoints/learner', 'Directory of the learner\'s own checkpoints; a '
                 'restarted learner resumes from it.'),
        Argument('log_dir', '', 'Directory of the learner\'s TensorBoard event files (critic, blocks, replay, '
                 'times). Empty: the value in the config files (none by default).'),
        Argument('transition_bag', '', 'Optional rosbag2 (directory, .mcap or .db3) of recorded /swfp/transition '
                 'messages that pre-fills the learner\'s replay buffer. Empty: the value in the config files (none '
                 'by default).'),
        Argument('record_bag', False, 'Start the recorder node, which writes the live topics to a rosbag2.',
                 type=bool),
        Argument('bag_path', '', 'Output directory of the recorded bag (must not exist). Empty: '
                 'swfp_bag_<date>_<time> in the working directory.'),
        Argument('bag_storage', 'mcap', 'Storage of the recorded bag.', choices=('mcap', 'sqlite3')),
        Argument('use_sim_time', use_sim_time, 'Use /clock (simulation time) in every node.', type=bool),
        Argument('log_level', 'info', 'ROS log level of every node.',
                 choices=('debug', 'info', 'warn', 'error', 'fatal')),
        Argument('respawn_learner', False, 'Restart the learner when it dies (it resumes from checkpoint_dir); the '
                 'actors keep acting with their last accepted policy meanwhile.', type=bool),
        Argument('update_key_file', '', 'Key file shared by the learner and the policy nodes (at least 32 bytes, '
                 'chmod 600): the learner signs every policy update with it and the policy nodes apply only updates '
                 'signed with it. Empty: the value in the config files (none by default: updates are not '
                 'authenticated).'),
        Argument('estop_release_sources', '', 'Comma-separated fully qualified names of the nodes whose '
                 '/swfp/estop false releases an engaged e-stop (e.g. /operator_panel); anyone may engage it. Empty: '
                 'the value in the config files (none by default: a release is refused and reported).'),
        Argument('enclave_root', '', 'SROS2 (DDS security): run each node in its own enclave, <enclave_root>/'
                 '<namespace>/<node name> (e.g. /swfp/arm1/policy_node), so that each gets its own certificate and '
                 'topic permissions; needs ROS_SECURITY_ENABLE=true and a keystore (README, "DDS security"). Empty: '
                 'no enclave given (security off, or the whole process in ROS_SECURITY_ENCLAVE_OVERRIDE).'),
    ]


def _given(name: str) -> Computed:
    """The argument's value when given, else the parameter files' value (None: not overridden)."""
    return Computed(lambda v, ns: v[name] or None)


UPDATE_KEY_FILE = ('update_key_file', _given('update_key_file'))
ESTOP_RELEASE_SOURCES = ('estop_release_sources', Computed(
    lambda v, ns: [s.strip() for s in v['estop_release_sources'].split(',') if s.strip()] or None))


def _learner(extra_params: Sequence[tuple[str, Value]] = (), condition: str | None = None) -> NodeSpec:
    return NodeSpec('learner_node', 'learner_node', param_files=('learner.yaml',), namespaced=False,
                    required=False, respawn=Arg('respawn_learner'), condition=condition,
                    stop_timeout_s=LEARNER_STOP_TIMEOUT_S, parameters=(
        ('base_checkpoint', _given('checkpoint')), ('checkpoint_dir', Arg('checkpoint_dir')),
        ('transition_bag', _given('transition_bag')), ('device', Arg('device')),
        ('use_sim_time', Arg('use_sim_time')), ('log_dir', _given('log_dir')), UPDATE_KEY_FILE, *extra_params))


def _recorder(extra_params: Sequence[tuple[str, Value]] = ()) -> NodeSpec:
    return NodeSpec('recorder_node', 'recorder_node', param_files=('recorder.yaml',), namespaced=False,
                    condition='record_bag', parameters=(
                        ('output', Arg('bag_path')), ('storage', Arg('bag_storage')),
                        ('use_sim_time', Arg('use_sim_time')), *extra_params))


SIM_FINETUNE = Graph(
    name='sim_finetune',
    description='Online SWFP fine-tuning in MuJoCo: sim bridge + policy node + learner node '
                '(+ recorder node when record_bag is true), on simulation time.',
    arguments=(
        Argument('task', 'panda_reach', 'MuJoCo task of the sim bridge, and the task whose observations the policy '
                 'node expects.', choices=('panda_reach', 'panda_push')),
        Argument('mode', 'lockstep', 'Sim bridge stepping: lockstep (one control step per action, fast training) '
                 'or realtime (physics at wall-clock rate with the latest command, like a robot).',
                 choices=('lockstep', 'realtime')),
        Argument('seed', 0, 'Random seed of the sim bridge; with several namespaces the i-th one\'s bridge gets seed + '
                 f'{ROBOT_SEED_STRIDE}·i.', type=int),
        Argument('compose', False, 'Run each actor\'s sim bridge and policy node in one process (sim_actor) on one '
                 'executor thread, the policy acting on that thread in lockstep: more env steps/s than two processes '
                 '(README, "How far Python can go in lockstep"). Same nodes, names, parameters and topics; the pair '
                 'starts, stops and fails together.', type=bool),
        *_common_arguments(use_sim_time=True),
    ),
    nodes=(
        NodeSpec('sim_bridge', 'sim_bridge', param_files=('sim_bridge.yaml',), parameters=(
            ('task', Arg('task')), ('mode', Arg('mode')), ('seed', Arg('seed')),
            ('use_sim_time', Arg('use_sim_time')))),
        NodeSpec('policy_node', 'policy_node', param_files=('policy.yaml',), parameters=(
            ('task', Arg('task')), ('checkpoint', _given('checkpoint')), ('device', Arg('device')),
            ('actor_id', Arg('actor_id')), ('use_sim_time', Arg('use_sim_time')), UPDATE_KEY_FILE,
            ESTOP_RELEASE_SOURCES,
            # composed in lockstep: act on the executor thread the bridge also runs on (no hand-off per message)
            ('act_on_executor', Computed(lambda v, ns: True if v['compose'] and v['mode'] == 'lockstep' else None)))),
        _learner(),
        _recorder(),
    ),
    compositions=(Composition('sim_actor', 'sim_actor', ('sim_bridge', 'policy_node'), condition='compose'),),
)

def namespaces(values: Mapping[str, Any]) -> list[str]:
    """The actor namespaces ('' or '/ns' each) of the ``namespace`` argument (comma-separated)."""
    names = [_namespace(n) for n in str(values.get('namespace', '')).split(',')]
    if len(names) > 1 and '' in names:
        raise ValueError(f'namespace:={values.get("namespace")!r}: an empty entry in a list of namespaces')
    if len(set(names)) != len(names):
        raise ValueError(f'namespace:={values.get("namespace")!r}: duplicate namespaces')
    return names


def _in_namespace(topic: str, ns: str) -> str:
    return topic if topic.startswith('/') else f'{ns}/{topic}'


def real_arm_topics(values: Mapping[str, Any], _ns: str = '') -> list[str]:
    """What the real-arm recorder records: per arm its joint states, the command topic actually used (the debug
    topic in dry-run), task, reward, episode and goal; then the learner's shared topics."""
    topics = []
    for ns in namespaces(values):
        command = (f'{ns}/policy_node/action_preview' if values['dry_run']
                   else _in_namespace(str(values['command_topic']), ns))
        topics += [_in_namespace(str(values['joint_states_topic']), ns), command,
                   *(f'{ns}/swfp/{t}' for t in ('task', 'reward', 'episode', 'goal'))]
    return topics + ['/swfp/transition', '/swfp/policy_update', '/swfp/estop']


def _goal_list(text: str) -> list[float]:
    """'x,y,z' or 'x1,y1,z1;x2,y2,z2' (m) -> a flat list; '' -> [0.0] (the parameter's "none")."""
    text = str(text).strip()
    if not text:
        return [0.0]
    values = [float(v) for v in text.replace(';', ',').split(',') if v.strip()]
    if not values or len(values) % 3:
        raise ValueError(f'goal list {text!r}: expected x,y,z triples separated by ; (metres)')
    return values


REAL_ARM = Graph(
    name='real_arm',
    description='A real arm (ros2_control): per arm a policy node in realtime mode + a task node (end effector by '
                'forward kinematics of the joint states, goal from swfp/goal or goal:=); learn:=true adds the '
                'learner and turns the task node into a task monitor (rewards, episodes, home posture between them); '
                'dry_run (commands to a debug topic only) by default; mock_arm:=true adds a simulated ros2_control '
                'arm (the sim bridge in hardware mode) to try it without hardware.',
    arguments=(
        Argument('command_topic', 'forward_position_controller/commands', 'The controller\'s command topic, '
                 'relative to the arm\'s namespace unless absolute: std_msgs/Float64MultiArray for '
                 'forward_position_controller, trajectory_msgs/JointTrajectory (command_type:=trajectory) for '
                 'joint_trajectory_controller/joint_trajectory. The policy\'s swfp/action is remapped to it.'),
        Argument('joint_states_topic', 'joint_states', 'The arm\'s sensor_msgs/JointState topic, relative to the '
                 'arm\'s namespace unless absolute.'),
        Argument('command_type', 'float64_array', 'What the controller takes: float64_array (one position target '
                 'per control step) or trajectory (a JointTrajectory per action chunk).',
                 choices=('float64_array', 'trajectory')),
        Argument('dry_run', True, 'Publish commands to a debug topic (policy_node/action_preview) only, never to '
                 'the robot. Set false to move the arm.', type=bool),
        Argument('mode', 'realtime', 'Policy stepping: realtime (a control-rate timer with the latest joint state: '
                 'a robot) or lockstep (one decision per new joint state and reward: a simulator that waits).',
                 choices=('realtime', 'lockstep')),
        Argument('control_rate', 20.0, 'Control rate of the policy and task nodes (Hz); must match training.',
                 type=float),
        Argument('goal', '', 'Reach goal(s) x,y,z in metres in the robot base frame; several as x1,y1,z1;x2,y2,z2 '
                 '(the task monitor cycles through them). Empty: goals come from the swfp/goal topic '
                 '(geometry_msgs/PoseStamped); without a goal the arm holds.'),
        Argument('learn', False, 'Fine-tune online: start the learner and let the task node publish rewards and '
                 'episodes (task monitor), bringing the arm home between episodes.', type=bool),
        Argument('model_path', '', 'MJCF of the arm for the task node\'s forward kinematics (and the mock arm). '
                 'Empty: the simulation\'s Panda.'),
        Argument('mock_arm', False, 'Also start a simulated ros2_control arm per namespace (the sim bridge in '
                 'hardware mode: joint_states, forward_position_controller/commands or '
                 'joint_trajectory_controller/joint_trajectory), to run this graph without hardware.', type=bool),
        *_common_arguments(use_sim_time=False),
    ),
    nodes=(
        NodeSpec('sim_bridge', 'mock_arm', param_files=('sim_bridge.yaml',), condition='mock_arm', parameters=(
            ('mode', 'hardware'), ('command_type', Arg('command_type')), ('model_path', Arg('model_path')),
            ('publish_clock', False), ('use_sim_time', Arg('use_sim_time')))),
        NodeSpec('task_node', 'task_node', param_files=('task_node.yaml',), parameters=(
            ('goals', Computed(lambda v, ns: _goal_list(v['goal']))), ('monitor', Arg('learn')),
            ('control_rate', Arg('control_rate')), ('model_path', Arg('model_path')),
            ('use_sim_time', Arg('use_sim_time'))),
            remappings=(('joint_states', Arg('joint_states_topic')),)),
        NodeSpec('policy_node', 'policy_node', param_files=('policy.yaml',), parameters=(
            ('checkpoint', _given('checkpoint')), ('device', Arg('device')), ('dry_run', Arg('dry_run')),
            ('mode', Arg('mode')), ('control_rate', Arg('control_rate')), ('command_type', Arg('command_type')),
            ('actor_id', Arg('actor_id')), ('use_sim_time', Arg('use_sim_time')), UPDATE_KEY_FILE,
            ESTOP_RELEASE_SOURCES),
            remappings=(('swfp/action', Arg('command_topic')), ('joint_states', Arg('joint_states_topic')))),
        _learner(condition='learn'),
        _recorder((('topics', Computed(real_arm_topics)),)),
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
    specs = {n.name: n for n in graph.nodes}
    for comp in graph.compositions:
        if graph.argument(comp.condition).type is not bool:
            raise ValueError(f'graph {graph.name}: condition {comp.condition} of {comp.name} is not a bool argument')
        for name in comp.nodes:
            if name not in specs or not specs[name].namespaced or specs[name].condition is not None:
                raise ValueError(f'graph {graph.name}: {comp.name} composes {name!r}, which is not an unconditional '
                                 f'namespaced node of the graph')


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
    required: bool = True
    respawn: bool = False
    stop_timeout_s: float = STOP_TIMEOUT_S
    enclave: str = ''                    # SROS2 enclave ('' = none given)
    components: list[ResolvedNode] = field(default_factory=list)   # a Composition's nodes (this is their process)

    @property
    def label(self) -> str:
        return (self.namespace.strip('/') + '/' if self.namespace else '') + self.name

    def ros_args(self) -> list[str]:
        """The arguments after the executable, so a printed command line works on its own: for a node
        :meth:`node_args` then :meth:`process_args`; for a composition, one ``--node NAME <node_args> --`` section
        per component (:meth:`component_sections`), then the process's ``--ros-args``."""
        if self.components:
            return [*self.component_sections(), '--ros-args', *self.process_args()]
        return [*self.node_args(), *self.process_args()]

    def node_args(self) -> list[str]:
        """``--ros-args`` of this node alone: its name and namespace, the parameter files, then :attr:`parameters`
        inline (``-p name:=value``, after the files: the last value given wins), then the remappings."""
        args = ['--ros-args', '-r', f'__node:={self.name}']
        if self.namespace:
            args += ['-r', f'__ns:={self.namespace}']
        for f in self.param_files:
            args += ['--params-file', str(f)]
        for name, value in self.parameters.items():
            args += ['-p', f'{name}:={inline_value(value)}']
        for src, dst in self.remappings:
            args += ['-r', f'{src}:={dst}']
        return args

    def component_sections(self) -> list[str]:
        return [a for c in self.components for a in ('--node', c.name, *c.node_args(), '--')]

    def process_args(self) -> list[str]:
        """The process's own ROS arguments (after ``--ros-args``): log level and enclave."""
        return ['--log-level', self.log_level, *self.enclave_args()]

    def enclave_args(self) -> list[str]:
        return ['--enclave', self.enclave] if self.enclave else []



def inline_value(value: Any) -> str:
    """A parameter value as ``-p name:=VALUE`` takes it: YAML in flow style (quoted where a string would read as
    another type)."""
    import yaml
    text = yaml.safe_dump(value, default_flow_style=True, width=float('inf')).strip()
    return text[:-len('...')].strip() if text.endswith('\n...') else text


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
    unknown = sorted(set(given) - {a.name for a in graph.arguments})
    if unknown:
        meant = dict(misspelt_arguments(graph, unknown))
        names = [f'{n} (did you mean {meant[n]}:=?)' if n in meant else n for n in unknown]
        raise KeyError(f'graph {graph.name!r} has no argument(s) {", ".join(names)}; '
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


def _enclave(root: str, ns: str, name: str) -> str:
    """'/swfp', '/arm1', 'policy_node' -> '/swfp/arm1/policy_node'; no root: ''."""
    root = root.strip().rstrip('/')
    if not root:
        return ''
    return ('' if root.startswith('/') else '/') + root + ns + '/' + name


def resolve(graph: Graph, given: Mapping[str, str]) -> list[ResolvedNode]:
    """The nodes to start for ``given`` argument texts (conditions applied, parameter files located)."""
    from swfp_ros.paths import config_path

    values = resolve_arguments(graph, given)
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
        for i, ns in enumerate(namespaces(values) if spec.namespaced else ['']):
            def value(v: Value) -> Any:
                if isinstance(v, Arg):
                    return values[v.name]
                return v.fn(values, ns) if isinstance(v, Computed) else v
            params = {k: value(v) for k, v in spec.parameters}
            params = {k: v for k, v in params.items() if v is not None}
            # the i-th actor: its own actor id, and its own simulated episodes (as one bridge seeds its robots)
            for key, step in (('actor_id', 1), ('seed', ROBOT_SEED_STRIDE)):
                if i and key in params:
                    params[key] = int(params[key]) + step * i
            nodes.append(ResolvedNode(
                executable=spec.executable, name=spec.name, package=spec.package, namespace=ns,
                param_files=[param_file(f) for f in spec.param_files], parameters=params,
                remappings=[(src, str(value(dst))) for src, dst in spec.remappings],
                log_level=str(values.get('log_level', 'info')), required=spec.required,
                respawn=bool(value(spec.respawn)), stop_timeout_s=spec.stop_timeout_s,
                enclave=_enclave(values.get('enclave_root', ''), ns, spec.name)))
    for comp in graph.compositions:
        if values[comp.condition]:
            nodes = _compose(comp, nodes, values)
    return nodes


def _compose(comp: Composition, nodes: list[ResolvedNode], values: Mapping[str, Any]) -> list[ResolvedNode]:
    """``nodes`` with each namespace's members of ``comp`` replaced by one process holding them, where the first
    member was."""
    out = []
    for node in nodes:
        if node.name not in comp.nodes:
            out.append(node)
        elif node.name == comp.nodes[0]:
            members = {n.name: n for n in nodes if n.namespace == node.namespace and n.name in comp.nodes}
            components = [members[name] for name in comp.nodes]
            out.append(ResolvedNode(
                executable=comp.executable, name=comp.name, namespace=node.namespace, param_files=[], parameters={},
                remappings=[], log_level=node.log_level, required=any(c.required for c in components),
                stop_timeout_s=max(c.stop_timeout_s for c in components),
                enclave=_enclave(values.get('enclave_root', ''), node.namespace, comp.name), components=components))
    return out


# ---------------------------------------------------------------------------------------------- launch side
def exit_verdict(node: ResolvedNode, returncode: int | None) -> tuple[bool, str]:
    """(end the graph?, message) when ``node`` exited with ``returncode``: the one rule of both ways in."""
    if node.required:
        return True, f'{node.label} exited with status {returncode}; shutting the graph down'
    if returncode == EXIT_START_FAILED:
        return True, f'{node.label} failed to start (status {returncode}); shutting the graph down'
    then = f'restarting it in {RESPAWN_DELAY_S:g} s' if node.respawn else 'not restarting it (respawn off)'
    return False, (f'{node.label} exited with status {returncode}; the actors keep acting with their last accepted '
                   f'policy; {then}')


def misspelt_arguments(graph: Graph, names: Sequence[str]) -> list[tuple[str, str]]:
    """(name, the declared argument it probably meant) for each undeclared name close to a declared one.

    ros2 launch passes on argument names a launch file does not declare (they may be meant for an enclosing launch
    file), so ``chekpoint:=x`` would be ignored without a word; ``swfp up`` rejects unknown names, naming these."""
    declared = [a.name for a in graph.arguments]
    return [(name, close[0]) for name in names if name not in declared
            for close in [difflib.get_close_matches(name, declared, n=1, cutoff=0.8)] if close]


class GraphEnded(RuntimeError):
    """Raised by a node's exit handler under ``ros2 launch`` when the exit rule ends the graph.

    launch has no action that shuts it down with a failure status (``Shutdown`` ends it with status 0); an exception
    from an event handler does: launch logs ``Caught exception in launch ...: <the reason>``, shuts every node down
    as for a Ctrl-C, and ``ros2 launch`` exits with status 1, like ``swfp up`` (non-zero) in the same case."""


def launch_description(graph_name: str):
    """A ``launch.LaunchDescription`` of the graph (for ``ros2 launch``; needs launch + launch_ros).

    The arguments are declared up front; the nodes are made once launch knows the arguments' values
    (``OpaqueFunction``), by :func:`resolve` — the bring-up's own resolution — so both ways in start the same
    processes. Each node gets an ``OnProcessExit`` handler applying :func:`exit_verdict`: the launch ends, with the
    reason and status 1 (:class:`GraphEnded`), when a required node exits or any node fails to start."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import PathJoinSubstitution
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
    entities.append(OpaqueFunction(function=launch_nodes, args=[graph_name]))
    return LaunchDescription(entities)


def launch_nodes(context, graph_name: str) -> list:
    """The launch actions of the graph's nodes for the argument values in ``context`` (see launch_description)."""
    from launch.actions import LogInfo, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.logging import get_logger
    from launch_ros.actions import Node

    graph = get_graph(graph_name)
    given = {a.name: context.launch_configurations[a.name] for a in graph.arguments
             if a.name in context.launch_configurations}
    for name, meant in misspelt_arguments(graph, context.launch_configurations):
        get_logger('launch.user').warning(f'{name}:= is not an argument of {graph.name} and is ignored; did you '
                                          f'mean {meant}:=? (ros2 launch {graph.name}.launch.py --show-args)')
    actions: list = []
    for rn in resolve(graph, given):
        if rn.components:     # a composition: each node's own arguments in its section, none for the process
            kwargs = {'arguments': rn.component_sections()}
        else:
            kwargs = {'name': rn.name, 'parameters': [*(str(f) for f in rn.param_files), dict(rn.parameters)],
                      'remappings': list(rn.remappings), **({'namespace': rn.namespace} if rn.namespace else {})}
        node = Node(package=rn.package, executable=rn.executable, ros_arguments=rn.process_args(),
                    output='screen', emulate_tty=True, respawn=rn.respawn, respawn_delay=RESPAWN_DELAY_S,
                    sigterm_timeout=str(rn.stop_timeout_s - LAUNCH_SIGKILL_TIMEOUT_S),
                    sigkill_timeout=str(LAUNCH_SIGKILL_TIMEOUT_S), **kwargs)

        def on_exit(event, ctx, rn=rn):
            if ctx.is_shutdown:
                return None
            stop, message = exit_verdict(rn, event.returncode)
            if stop:
                raise GraphEnded(message)
            return [LogInfo(msg=message)]
        actions += [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]
    return actions
