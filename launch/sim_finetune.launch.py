"""MuJoCo sim bridge + policy node + learner node (+ recorder when record_bag:=true), on sim time.

    ros2 launch swfp_ros sim_finetune.launch.py task:=panda_reach checkpoint:=/path/to/bc.pt record_bag:=true

The graph (arguments, nodes, parameter files, remappings, exit rules) is described once, in swfp_ros/ros/graph.py;
this file and `swfp up sim_finetune` (pip-only machines, no ros2 launch) both build from that description.
`ros2 launch swfp_ros sim_finetune.launch.py --show-args` lists the arguments.
"""
from swfp_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description('sim_finetune')
