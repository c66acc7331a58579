"""The SWFP algorithm: pure torch + numpy, no ROS, no simulator."""
