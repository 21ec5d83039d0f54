"""Live-from-bag: `ros2 bag play BAG --clock` feeding the live node (use_sim_time), and RViz.

    ros2 launch ros2_lrm4d replay.launch.py bag:=BAG [rate:=1.0] [loop:=false] [start_delay:=3.0]
        [player:=ros2bag|lrm4d] [params_file:=FILE] [namespace:=NS] [rviz:=true|false] [log_level:=info]

`player:=lrm4d` plays the bag with this package's `lrm4d_bag_player` (rosbags; publishes /clock)
instead of `ros2 bag play`, for installs without rosbag2; it also waits for the node's
subscriptions before the first message.

This runs the real ROS node on played-back messages (rclpy, message_filters, tf2, DDS). The offline
`lrm4d replay IN OUT` drives the same core from the bag file directly, without ROS, and writes an
output bag instead. Playback starts `start_delay` seconds after launch so that the node has loaded
its model and subscribed before the first messages.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction, TimerAction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "ros2_lrm4d"
TRUE_VALUES = ("true", "1", "yes", "on")


def bag_play_command(bag: str, rate: str, loop: bool) -> list[str]:
    """`ros2 bag play` publishing /clock from the bag's time, at `rate`, looping if asked."""
    cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", str(float(rate))]
    return cmd + ["--loop"] if loop else cmd


def _bag_play(context, *args, **kwargs):
    bag = LaunchConfiguration("bag").perform(context)
    rate = LaunchConfiguration("rate").perform(context)
    loop = LaunchConfiguration("loop").perform(context).strip().lower() in TRUE_VALUES
    delay = float(LaunchConfiguration("start_delay").perform(context))
    if LaunchConfiguration("player").perform(context) == "lrm4d":
        return [Node(package=PACKAGE, executable="lrm4d_bag_player", name="lrm4d_bag_player", output="screen",
                     parameters=[{"bag": bag, "rate": float(rate), "loop": loop, "publish_clock": True,
                                  "start_delay_s": delay, "wait_for_subscribers_s": 60.0}])]
    play = ExecuteProcess(cmd=bag_play_command(bag, rate, loop), name="bag_play", output="screen")
    return [TimerAction(period=delay, actions=[play])] if delay > 0 else [play]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to play (directory or .mcap / .db3 file)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("loop", default_value="false", choices=["true", "false"], description="loop the bag"),
        DeclareLaunchArgument("start_delay", default_value="3.0", description="seconds before playback starts"),
        DeclareLaunchArgument("player", default_value="ros2bag", choices=["ros2bag", "lrm4d"],
                              description="ros2bag (`ros2 bag play`) or lrm4d (lrm4d_bag_player, no rosbag2 needed)"),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "reconstruct.yaml"),
            description="node parameters (ROS 2 parameter YAML with an 'lrm4d: ros__parameters:' section)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node (empty: none)"),
        DeclareLaunchArgument("rviz", default_value="true", choices=["true", "false"], description="start RViz"),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=["debug", "info", "warn", "error", "fatal"],
            description="log level of the node"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "reconstruct.launch.py")),
            launch_arguments={
                "params_file": LaunchConfiguration("params_file"),
                "namespace": LaunchConfiguration("namespace"),
                "use_sim_time": "true",
                "rviz": LaunchConfiguration("rviz"),
                "log_level": LaunchConfiguration("log_level"),
            }.items(),
        ),
        OpaqueFunction(function=_bag_play),
    ])
