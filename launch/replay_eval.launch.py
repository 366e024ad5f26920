"""Replay evaluation on a ROS 2 install: the policy node (use_sim_time, forward output), the recorder of its
commands and the bag player with /clock, as three processes. Score afterwards with
``vla-bag replay-eval`` (which runs the same three processes itself) or offline.

    ros2 launch launch/replay_eval.launch.py bag:=BAG checkpoint:=DIR out:=DIR [rate:=1.0] [blending:=none]

Checked by hand with the ROS 2 Kilted launch stack installed from source; it uses only the plain launch API.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    RegisterEventHandler,
    TimerAction,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution

CONTROLLER_TOPICS = [
    "/left_arm_controller/commands",
    "/right_arm_controller/commands",
    "/claw_controller/commands",
]


def generate_launch_description() -> LaunchDescription:
    bag = LaunchConfiguration("bag")
    checkpoint = LaunchConfiguration("checkpoint")
    out = LaunchConfiguration("out")
    rate = LaunchConfiguration("rate")
    blending = LaunchConfiguration("blending")
    node = ExecuteProcess(
        cmd=[
            "vla_policy_node",
            "--ros-args",
            "-p",
            ["checkpoint:=", checkpoint],
            "-p",
            "use_sim_time:=true",
            "-p",
            "autostart:=true",
            "-p",
            "output_mode:=forward",
            "-p",
            "forward_hold:=stop",
            "-p",
            ["blending:=", blending],
            "-p",
            "seed:=0",
        ],
        output="screen",
    )
    recorder = ExecuteProcess(
        cmd=[
            "vla-bag",
            "record",
            "--use-sim-time",
            "--out",
            PathJoinSubstitution([out, "node_output"]),
            *CONTROLLER_TOPICS,
            "/vla_policy_node/action_chunk",
        ],
        output="screen",
    )
    player = ExecuteProcess(
        cmd=[
            "vla-bag",
            "play",
            bag,
            "--clock",
            "--rate",
            rate,
            "--delay",
            "1.0",
            "--exclude",
            *CONTROLLER_TOPICS,
        ],
        output="screen",
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="episode bag to play"),
            DeclareLaunchArgument("checkpoint", description="checkpoint directory"),
            DeclareLaunchArgument("out", description="output directory (node_output bag)"),
            DeclareLaunchArgument("rate", default_value="1.0"),
            DeclareLaunchArgument("blending", default_value="none"),
            node,
            # give the node time to load and configure, then record, then play
            TimerAction(period=8.0, actions=[recorder]),
            TimerAction(period=10.0, actions=[player]),
            RegisterEventHandler(
                OnProcessExit(
                    target_action=player,
                    on_exit=[
                        TimerAction(period=1.0, actions=[EmitEvent(event=Shutdown(reason="bag finished"))]),
                    ],
                )
            ),
        ]
    )
