"""ROS-free core of the VLA control stack. Never imports rclpy."""

__version__ = "0.1.0"
