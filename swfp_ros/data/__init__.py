"""Demonstration datasets and rosbag2 recording / ingestion: the rosbags library, no ROS runtime."""
