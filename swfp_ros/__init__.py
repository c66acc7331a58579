"""swfp_ros: Stepwise Flow Policy fine-tuning of flow-matching robot policies, as a ROS 2 package.

Sub-packages, from the inside out (only ``ros`` imports rclpy):
    algo   -- the SWFP algorithm: flow policy, JKO refinement blocks, critic, replay, learner (torch + numpy)
    sim    -- MuJoCo Franka Panda tasks as gymnasium environments, scripted experts, offscreen rendering
    data   -- demonstration datasets and rosbag2 recording / ingestion (the `rosbags` library, no ROS runtime)
    train  -- training workspaces and runners: BC pre-training, in-process online fine-tuning, baselines, evaluation
    ros    -- the ROS 2 nodes (policy, learner, sim bridge, recorder), message conversion, graph bring-up
"""
__version__ = '0.1.0'
