"""Live reconstruction: the `lrm4d` node, and RViz with config/lrm4d.rviz.

    ros2 launch ros2_lrm4d reconstruct.launch.py [params_file:=FILE] [namespace:=NS]
        [use_sim_time:=true|false] [rviz:=true|false] [log_level:=info]

The node's outputs are its private topics (~/gaussians ...): /lrm4d/gaussians without a namespace,
/NS/lrm4d/gaussians with one (the RViz config shows the topics without a namespace).
"""

from __future__ import annotations

import os
import tempfile

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "ros2_lrm4d"
NODE_NAME = "lrm4d"
TRUE_VALUES = ("true", "1", "yes", "on")


def node_parameters_file(path: str, namespace: str) -> str:
    """The params file as the node will match it.

    A section keyed `lrm4d:` (as config/reconstruct.yaml has it) applies only to the node named
    /lrm4d; under a namespace the node is /NS/lrm4d, so the section is re-keyed `/**/lrm4d` in a
    temporary copy. Files already using wildcards or full names are passed through unchanged.
    """
    if not namespace.strip("/"):
        return path
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    keys = [k for k in data if isinstance(k, str) and k.strip("/") == NODE_NAME]
    if not keys:
        return path
    for key in keys:
        data[f"/**/{NODE_NAME}"] = data.pop(key)
    fd, out = tempfile.mkstemp(prefix="lrm4d_params_", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, default_flow_style=None, sort_keys=False)
    return out


def _node(context, *args, **kwargs):
    namespace = LaunchConfiguration("namespace").perform(context).strip()
    params_file = node_parameters_file(LaunchConfiguration("params_file").perform(context), namespace)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).strip().lower() in TRUE_VALUES
    log_level = LaunchConfiguration("log_level").perform(context).strip()
    return [
        Node(
            package=PACKAGE,
            executable="lrm4d_node",
            name=NODE_NAME,
            **({"namespace": namespace} if namespace.strip("/") else {}),
            parameters=[params_file, {"use_sim_time": use_sim_time}],
            ros_arguments=["--log-level", log_level],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "reconstruct.yaml"),
            description="node parameters (ROS 2 parameter YAML with an 'lrm4d: ros__parameters:' section)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node (empty: none)"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", choices=["true", "false"],
            description="use /clock (true when playing a bag with --clock)"),
        DeclareLaunchArgument("rviz", default_value="true", choices=["true", "false"], description="start RViz"),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=["debug", "info", "warn", "error", "fatal"],
            description="log level of the node"),
        OpaqueFunction(function=_node),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(share, "config", "lrm4d.rviz")],
            parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
            condition=IfCondition(LaunchConfiguration("rviz")),
            output="screen",
        ),
    ])
