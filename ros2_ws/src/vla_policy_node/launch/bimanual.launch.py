"""Launch the VLA policy lifecycle node for a bimanual robot.

    ros2 launch vla_policy_node bimanual.launch.py [checkpoint:=/path/to/ckpt] [output_mode:=forward]

Arguments: config (parameter file, default config/bimanual.yaml of this package), checkpoint (default
$VLA_CHECKPOINT_DIR, else the shipped policy installed with this package), backend, use_sim_time,
namespace, output_mode, log_level. The node configures and activates itself (``autostart: true`` in the
config); drive it by hand with ``ros2 lifecycle set`` when it is false.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vla_policy_node")
    default_config = PathJoinSubstitution([share, "config", "bimanual.yaml"])
    shipped = PathJoinSubstitution([share, "models", "tiny-aloha-transfer-cube"])
    arguments = [
        DeclareLaunchArgument("config", default_value=default_config, description="parameter file"),
        DeclareLaunchArgument(
            "checkpoint",
            default_value=EnvironmentVariable("VLA_CHECKPOINT_DIR", default_value=shipped),
            description="checkpoint directory (default: $VLA_CHECKPOINT_DIR, else the shipped policy)",
        ),
        DeclareLaunchArgument(
            "backend", default_value="torch", description="prefix backend: torch | onnxruntime | tensorrt"
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument(
            "output_mode", default_value="trajectory", description="trajectory | forward"
        ),
        DeclareLaunchArgument("log_level", default_value="info", description="debug | info | warn | error"),
    ]
    node = LifecycleNode(
        package="vla_policy_node",
        executable="vla_policy_node",
        name="vla_policy_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("config"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "backend": LaunchConfiguration("backend"),
                "output_mode": LaunchConfiguration("output_mode"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*arguments, node])
