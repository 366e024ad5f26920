"""ROS 2 node package of the VLA control stack (thin layer over the ROS-free core)."""
