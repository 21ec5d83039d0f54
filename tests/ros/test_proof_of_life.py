"""Proof of life of the live node in a real ROS 2 (launch_testing; Isaac ROS "pol" style).

Starts `reconstruct.launch.py` (rviz:=false, the shipped params file, the embedded default
model) and `lrm4d_bag_player` with a synthetic 6-camera driving bag (Image, CameraInfo, /tf,
/tf_static at their recorded rate, best-effort images as the node expects), then checks within
`TIMEOUT_S`: `~/gaussians` PointCloud2 with the documented fields in the fixed frame,
`~/predicted/<camera>/image_raw`, /diagnostics with input rates; after shutdown (SIGINT, like
Ctrl-C) every process exited with 0 and printed no traceback.

Run: `launch_test tests/ros/test_proof_of_life.py`, or `python -m pytest tests/ros` with ROS 2
sourced and this package built (colcon); skipped where rclpy or launch_testing is missing.
"""

from __future__ import annotations

import os
import tempfile
import time
import unittest
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs ROS 2 (rclpy)")
pytest.importorskip("launch_testing", reason="needs ROS 2 launch_testing")

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

TIMEOUT_S = 120.0
CAMERAS = ("front", "front_left", "front_right", "back", "back_left", "back_right")  # config/reconstruct.yaml


def _share() -> str:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return get_package_share_directory("ros2_lrm4d")
    except PackageNotFoundError:
        pytest.skip("ros2_lrm4d is not built and sourced (colcon build; source install/setup.bash)")


@pytest.mark.launch_test
@launch_testing.markers.keep_alive
def generate_test_description():
    from ros2_lrm4d.synth_bag import write_synthetic_bag

    share = _share()
    bag = Path(tempfile.mkdtemp(prefix="lrm4d_pol_")) / "drive"
    write_synthetic_bag(bag, "driving", width=64, height=64, frames=80, seed=0)  # 8 s at 10 Hz
    reconstruct = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "reconstruct.launch.py")),
        launch_arguments={"rviz": "false"}.items())
    player = Node(package="ros2_lrm4d", executable="lrm4d_bag_player", name="lrm4d_bag_player", output="screen",
                  parameters=[{"bag": str(bag), "wait_for_subscribers_s": 60.0, "start_delay_s": 1.0}])
    return LaunchDescription([reconstruct, player, launch_testing.actions.ReadyToTest()]), {"bag": bag}


class TestProofOfLife(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.node = rclpy.create_node("lrm4d_pol_probe")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_outputs_arrive(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image, PointCloud2

        from ros2_lrm4d.convert import GAUSSIAN3D_FIELDS

        clouds, images, rates = [], [], {}

        def on_diagnostics(msg) -> None:
            for status in msg.status:
                for kv in status.values:
                    if kv.key.startswith("input_rate_hz/"):
                        rates[kv.key.split("/", 1)[1]] = float(kv.value)

        subs = [
            self.node.create_subscription(PointCloud2, "/lrm4d/gaussians", clouds.append, 10),
            self.node.create_subscription(Image, "/lrm4d/predicted/front/image_raw", images.append, 10),
            self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10),
        ]
        end = time.monotonic() + TIMEOUT_S
        while time.monotonic() < end and not (clouds and images and any(r > 0 for r in rates.values())):
            rclpy.spin_once(self.node, timeout_sec=0.1)
        for sub in subs:
            self.node.destroy_subscription(sub)

        self.assertTrue(clouds, f"no /lrm4d/gaussians within {TIMEOUT_S} s")
        cloud = clouds[-1]
        self.assertEqual(tuple(f.name for f in cloud.fields), GAUSSIAN3D_FIELDS)
        self.assertTrue(all(f.datatype == 7 and f.count == 1 for f in cloud.fields))  # FLOAT32
        self.assertEqual(cloud.header.frame_id, "map")
        self.assertGreater(cloud.width * cloud.height, 0)
        self.assertEqual(cloud.point_step, 4 * len(GAUSSIAN3D_FIELDS))
        self.assertTrue(images, f"no /lrm4d/predicted/front/image_raw within {TIMEOUT_S} s")
        self.assertEqual(images[-1].encoding, "rgb8")
        self.assertGreater(images[-1].width, 0)
        self.assertTrue(set(CAMERAS) <= set(rates), f"input rates reported for {sorted(rates)}")
        self.assertTrue(any(r > 0 for r in rates.values()), f"input rates {rates}")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_clean_exit(self, proc_info, proc_output) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)  # 0 for every process, after SIGINT
        for process_output in proc_output:
            self.assertNotIn("Traceback", process_output.text.decode(errors="replace"))
