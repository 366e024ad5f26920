"""vla_sim: the ALOHA bimanual simulation (gym-aloha, MuJoCo) as a ROS 2 robot, scripted demonstrations
and closed-loop evaluation. ``aloha_env``, ``commands``, ``scripted_expert`` and ``demos`` are ROS-free;
``sim_node`` and ``eval_loop`` use rclpy."""

__version__ = "0.1.0"
