"""swfp_ros: ament_python package, installable by colcon (ROS 2 workspace) and by pip (pip-only machine).

Every third-party dependency is pinned here and only here; the reason for each pin is beside it.
"""
import os
import stat
import sys
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'swfp_ros'

# Executables launch_ros must find under <prefix>/lib/swfp_ros/ (name -> module:function). Their entry points catch
# Ctrl-C before the node's (slow to import) module is imported: see swfp_ros/ros/process.py.
NODE_EXECUTABLES = {name: f'swfp_ros.ros.process:{name}'
                    for name in ('policy_node', 'learner_node', 'sim_bridge', 'recorder_node', 'task_node',
                                 'sim_actor')}
CONSOLE_SCRIPTS = {'swfp': 'swfp_ros.cli:main', **NODE_EXECUTABLES}

INSTALL_REQUIRES = [
    # The CPU build on pip-only machines; a CUDA build of the same release elsewhere. 2.13.0 is the release
    # this project is tested with (the one these machines ship); newer minors are untested.
    'torch==2.13.0',
    # MuJoCo 4.0.0 is tested; the Panda MJCF we take from gymnasium-robotics loads on any 3.x/4.x, and we do not
    # use gymnasium-robotics' own env classes (they break on mujoco >= 3.12), only its model files.
    'mujoco==4.0.0',
    # gymnasium 1.x API (terminated/truncated, env_checker); 1.4.0 is the one gymnasium-robotics 1.4.2 accepts.
    'gymnasium==1.4.0',
    # Source of the Franka Panda MJCF + meshes (kitchen_franka/franka_assets), Apache-2.0.
    'gymnasium-robotics==1.4.2',
    # Pure-Python rosbag2 reader/writer (sqlite3 + MCAP, formats v4-v9); rosbag2_py is not on PyPI.
    'rosbags==0.11.9',
    # rosbags' own dependencies, which we import too: apsw (a sqlite3 bag's embedded metadata), lz4 and zstd (the
    # chunks of an MCAP file whose recorder never finished it, read without rosbags).
    'apsw',
    'lz4',
    'backports.zstd; python_version < "3.14"',
    # Checkpoint container: tensors as raw bytes behind a JSON header, so loading a (downloaded) checkpoint can
    # never execute code from it, unlike torch.load's pickles. 0.8.0 is the release tested.
    'safetensors==0.8.0',
    'numpy>=1.26,<3',
    'pyyaml>=6.0',
    'transforms3d==0.4.2',
    'tqdm>=4.66',
    'tensorboard>=2.16',
    'matplotlib>=3.8',
    # GIF/PNG writing for offscreen renders.
    'imageio>=2.34',
    'pillow>=10',
]

EXTRAS_REQUIRE = {
    # ROS 2 Kilted from the ros-kilted-* PyPI wheels (x86_64 Linux, CPython 3.10-3.13). On a machine with a ROS 2
    # install, skip this extra and source the system's setup.bash instead. Fast DDS is the only RMW shipped there.
    'ros': [
        'ros-kilted-rclpy==9.1.2',
        'ros-kilted-rmw-fastrtps-cpp==9.3.3',
        'ros-kilted-ament-index-python==1.11.0',
        'ros-kilted-std-msgs==5.5.1',
        'ros-kilted-std-srvs==5.5.1',
        'ros-kilted-sensor-msgs==5.5.1',
        'ros-kilted-trajectory-msgs==5.5.1',
        'ros-kilted-geometry-msgs==5.5.1',
        'ros-kilted-diagnostic-msgs==5.5.1',
        'ros-kilted-lifecycle-msgs==2.3.0',
        'ros-kilted-rosgraph-msgs==2.3.0',
    ],
    # SAC-from-scratch, DSRL and residual-RL baselines of the benchmark (all three are SB3's SAC).
    'baselines': ['stable-baselines3==2.9.2'],
    # The OGBench manipulation task (cube_single): OGBench's UR5e + Robotiq scene, task definitions and scripted
    # oracle ship in its wheel (no dataset is downloaded). OGBench builds its scene with dm_control's MJCF library.
    # ogbench 1.2.2 + dm_control 1.0.50 are the releases tested on mujoco 4.0.0 (dm_control requires mujoco >= 3.17).
    'ogbench': ['ogbench==1.2.2', 'dm-control==1.0.50'],
    'test': ['pytest>=8', 'pytest-timeout>=2.3'],
}


def lib_wrappers():
    """Shell wrappers <prefix>/lib/swfp_ros/<node> -> <prefix>/bin/<node>, for wheel installs only.

    A wheel (pip) puts console scripts in <prefix>/bin and ignores setup.cfg's install_scripts; colcon runs
    `setup.py install`, which honours setup.cfg and writes the real scripts to lib/swfp_ros itself.
    """
    if 'bdist_wheel' not in sys.argv:
        return []
    out_dir = os.path.join('build', 'lib_wrappers')
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in NODE_EXECUTABLES:
        path = os.path.join(out_dir, name)
        with open(path, 'w') as f:
            f.write(f'#!/bin/sh\nexec "$(dirname "$(readlink -f "$0")")/../../bin/{name}" "$@"\n')
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        paths.append(path)
    return [(f'lib/{PACKAGE}', paths)]


def bin_wrapper():
    """<prefix>/bin/swfp for `setup.py install` (what colcon runs): setup.cfg sends every console script to
    lib/swfp_ros/, where launch_ros finds the nodes but which is not on PATH after `source install/setup.bash`;
    <prefix>/bin is (colcon adds it when it exists). A wheel (pip) puts `swfp` in bin/ itself."""
    if 'bdist_wheel' in sys.argv:
        return []
    out_dir = os.path.join('build', 'bin_wrapper')
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'swfp')
    with open(path, 'w') as f:
        f.write(f'#!/bin/sh\nexec "$(dirname "$(readlink -f "$0")")/../lib/{PACKAGE}/swfp" "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return [('bin', [path])]


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml')),
        (f'share/{PACKAGE}/config/sros2', glob('config/sros2/*.xml')),
        *lib_wrappers(),
        *bin_wrapper(),
    ],
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    zip_safe=False,
    maintainer='swfp_ros maintainers',
    maintainer_email='swfp-ros@example.org',
    description='Stepwise Flow Policy (SWFP): safe online RL fine-tuning of flow-matching robot policies on ROS 2.',
    license='Apache-2.0',
    entry_points={'console_scripts': [f'{name} = {target}' for name, target in CONSOLE_SCRIPTS.items()]},
)
