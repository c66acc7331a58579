"""Policy node + learner node for a real arm; /swfp/action remapped to the robot's command topic, dry_run:=true by default.

    ros2 launch swfp_ros real_arm.launch.py command_topic:=/forward_position_controller/commands checkpoint:=/path/to/bc.pt dry_run:=false

The graph (arguments, nodes, parameter files, remappings) is described once, in swfp_ros/ros/graph.py; this file and
`swfp up real_arm` (pip-only machines, no ros2 launch) both build from that description.
`ros2 launch swfp_ros real_arm.launch.py --show-args` lists the arguments.
"""
from swfp_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description('real_arm')
