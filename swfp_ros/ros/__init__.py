"""ROS 2 layer: nodes, message conversion, graph bring-up. The only sub-package that imports rclpy."""
