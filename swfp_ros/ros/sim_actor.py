"""A composed sim actor: one simulated robot's sim bridge and policy node in ONE process, on one executor thread.

``ros2 launch swfp_ros sim_finetune.launch.py compose:=true`` (and ``swfp up sim_finetune compose:=true``) start one
of these per actor namespace instead of a sim-bridge process and a policy-node process. Both nodes are the same
classes with the same names, namespace, parameter files, overrides and remappings as when they run apart, and their
topics still go over DDS, so the learner, the recorder and any tool see the same graph. In lockstep the policy node
acts on the executor thread (``act_on_executor``), so a step is: the bridge publishes, the executor delivers to the
policy, which acts and publishes, and the executor delivers back to the bridge, all on one thread. What it saves per
env step is the process boundary and the hand-off to the actor thread (README, "How far Python can go in lockstep").
What it gives up: the pair starts, stops and dies together (a fault test that kills one kills both), and an actor
stuck in a call stops the bridge and both nodes' status with it (a missing /swfp/status is then the sign).

The command line carries one section per node; each section's ROS arguments reach only its node (rclpy's per-node
``cli_args``), and what follows the sections applies to the whole process (log level, enclave)::

    sim_actor --node sim_bridge --ros-args -r __node:=sim_bridge -r __ns:=/actor0 --params-file sim_bridge.yaml \\
                  -p task:=panda_push -- \\
              --node policy_node --ros-args -r __node:=policy_node -r __ns:=/actor0 --params-file policy.yaml \\
                  -p checkpoint:=/abs/bc.pt -p act_on_executor:=true -- \\
              --ros-args --log-level info

(:meth:`swfp_ros.ros.graph.ResolvedNode.ros_args` writes it from the graph description.)
"""
from __future__ import annotations

import sys
from typing import NoReturn, Sequence

from .executors import EXIT_START_FAILED, run_nodes
from .process import end_process

NODE_FLAG = '--node'
SECTION_END = '--'
COMPONENTS = ('sim_bridge', 'policy_node')     # what this process holds, in the order they are built


def split_sections(argv: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``[--node NAME --ros-args ... --]...  [rest]`` -> ({NAME: its ``--ros-args ...``}, rest).

    Every component appears exactly once; anything else is an error with the reason."""
    sections: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] != NODE_FLAG:
            rest.append(argv[i])
            i += 1
            continue
        name = argv[i + 1] if i + 1 < len(argv) else ''
        if name not in COMPONENTS:
            raise ValueError(f'{NODE_FLAG} {name!r}: expected one of {", ".join(COMPONENTS)}')
        if name in sections:
            raise ValueError(f'{NODE_FLAG} {name} given twice')
        if i + 2 >= len(argv) or argv[i + 2] != '--ros-args':
            raise ValueError(f'{NODE_FLAG} {name} must be followed by --ros-args ... {SECTION_END}')
        try:
            end = argv.index(SECTION_END, i + 3)
        except ValueError:
            raise ValueError(f'{NODE_FLAG} {name}: its --ros-args section has no closing {SECTION_END}') from None
        sections[name] = list(argv[i + 2:end])
        i = end + 1
    missing = [c for c in COMPONENTS if c not in sections]
    if missing:
        raise ValueError(f'no {NODE_FLAG} section for {", ".join(missing)} (a sim actor holds {", ".join(COMPONENTS)})')
    return sections, rest


def main(args: Sequence[str] | None = None) -> NoReturn:
    argv = list(sys.argv if args is None else args)
    try:
        sections, rest = split_sections(argv[1:])
    except ValueError as e:
        print(f'sim_actor: failed to start: {e}', file=sys.stderr)
        end_process(EXIT_START_FAILED)

    from .policy_node import PolicyNode, autostart
    from .policy_node import is_lockstep as policy_lockstep
    from .sim_bridge_node import SimBridge
    from .sim_bridge_node import is_lockstep as bridge_lockstep
    run_nodes('sim_actor', [(lambda: SimBridge(cli_args=sections['sim_bridge']), None),
                            (lambda: PolicyNode(cli_args=sections['policy_node']), autostart)],
              args=[argv[0], *rest], lockstep=lambda nodes: bridge_lockstep(nodes[0]) and policy_lockstep(nodes[1]))


if __name__ == '__main__':
    main()
