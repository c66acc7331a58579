#!/usr/bin/env python3
"""Print swfp_ros's pinned Python requirements (setup.py's, read without running it), one per line:
``pip install -r <(python3 scripts/requirements.py)`` before ``colcon build`` on a ROS 2 install, where colcon
installs the package itself but not its PyPI dependencies (torch, mujoco, rosbags, ...: no rosdep keys).

    python3 scripts/requirements.py                # install_requires (a ROS install provides rclpy and the messages)
    python3 scripts/requirements.py --extra ros    # + the ROS 2 Kilted wheels (a machine without a ROS install)
"""
import argparse
import ast
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / 'setup.py'


def pins(extras=()) -> list[str]:
    tree = ast.parse(SETUP.read_text())
    lists = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
             and node.targets[0].id in ('INSTALL_REQUIRES', 'EXTRAS_REQUIRE')}
    unknown = set(extras) - set(lists['EXTRAS_REQUIRE'])
    if unknown:
        raise SystemExit(f'requirements.py: no extra {", ".join(sorted(unknown))} in setup.py; extras: '
                         f'{", ".join(lists["EXTRAS_REQUIRE"])}')
    return lists['INSTALL_REQUIRES'] + [r for e in extras for r in lists['EXTRAS_REQUIRE'][e]]


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--extra', action='append', default=[], help='also an extra of setup.py (ros, test, ...)')
    print('\n'.join(pins(parser.parse_args().extra)))
