"""ros2_lrm4d: thin ROS shells around lrm4d_core (live node, rosbag2 replay, conversions, TF).

They only move data between ROS and the core; no model or math code lives here, and this package
is never imported by lrm4d_core.

In a colcon build this file is not installed: rosidl generates the ``ros2_lrm4d`` Python package
(with ``ros2_lrm4d.msg``) and CMakeLists.txt merges the shell modules into it, so this file must
hold nothing but this docstring. Outside ROS (pip), ``ros2_lrm4d.msg`` does not exist; the
message definitions ship as text in ``ros2_lrm4d/msg_defs/`` for registration with rosbags.
"""
