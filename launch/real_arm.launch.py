"""A real arm under ros2_control: per arm a policy node (realtime) + a task node; learn:=true adds the learner and the
task monitor; dry_run:=true (commands to policy_node/action_preview only) by default.

    ros2 launch swfp_ros real_arm.launch.py checkpoint:=/path/to/policy.pt goal:=0.5,0.1,0.3 dry_run:=false
    ros2 launch swfp_ros real_arm.launch.py checkpoint:=/path/to/policy.pt namespace:=arm1,arm2 mock_arm:=true

The graph (arguments, nodes, parameter files, remappings, exit rules) is described once, in swfp_ros/ros/graph.py;
this file and `swfp up real_arm` (pip-only machines, no ros2 launch) both build from that description.
`ros2 launch swfp_ros real_arm.launch.py --show-args` lists the arguments.
"""
from swfp_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description('real_arm')
