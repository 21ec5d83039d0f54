"""The live node in a real ROS 2 (launch_testing): proof of life, then faults, one launch each.

Every scenario starts `reconstruct.launch.py` (rviz:=false; the shipped params file, or a copy of
it with a few values changed, passed as params_file:=) and `lrm4d_bag_player` with a synthetic
6-camera driving bag (Image, CameraInfo, /tf, /tf_static at their recorded rate, 8 s at 10 Hz),
and a probe node listens to the outputs:

- proof_of_life (shipped params): `~/gaussians` PointCloud2 with the documented fields in the
  fixed frame, `~/predicted/front/image_raw` in the frame `lrm4d/front_optical` whose transform
  from the fixed frame is on /tf at the image's stamp, its 32FC1 depth beside it, the moving part
  (`~/gaussians/dynamic`), /diagnostics with input rates of all six cameras, and only the watched
  view rendered (`predicted_views_on_demand`: /diagnostics `predicted_views` is "front").
- qos_reliable_into_best_effort: a reliable publisher into our best-effort subscription: works.
- qos_best_effort_into_reliable: a best-effort publisher into a reliable subscription (input_qos
  reliable) cannot connect: no output, and /diagnostics says why (WARN, qos_incompatible).
- late_tf: no TF for the first 3 s: frames are dropped with a tf counter, then outputs arrive.
- sim_time: use_sim_time:=true with the player's /clock: outputs arrive and the node's clock is
  the bag's (diagnostics stamped in 2023, the bag's time, not today).
- loop_short_bag: a 4.8 s bag played over and over (`loop:=true`): its stamps jump back 4.7 s,
  less than `jump_back_s`; the window resets and clouds keep coming across several loops.
- ctrl_c_while_reconstructing: reconstructions made slow (four 2048 x 2048 virtual cameras rendered
  on the CPU, watched or not: `predicted_views_on_demand` false); the test ends while one runs, so shutdown's SIGINT (what `ros2 launch` sends on Ctrl-C) lands in it.
After every scenario: all processes exited with 0 and printed no traceback.

Run: `launch_test tests/ros/test_live_node.py`, or `python -m pytest tests/ros` with ROS 2 sourced
and this package built (colcon); skipped where rclpy or launch_testing is missing (CI).
"""

from __future__ import annotations

import json
import os
import signal
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
import launch_testing.markers  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

TIMEOUT_S = 90.0
CAMERAS = ("front", "front_left", "front_right", "back", "back_left", "back_right")  # config/reconstruct.yaml
BAG_START_S = 1_700_000_000  # synth_bag.STAMP_BASE_NS: the synthetic bag's clock (Nov 2023)
SLOW = {"device": "cpu", "render_max_side": 2048, "predicted_views_on_demand": False, "virtual_cameras_json": json.dumps([  # seconds per window on a CPU
    {"name": f"chase{i}", "width": 2048, "height": 2048, "fx": 1000, "fy": 1000, "cx": 1024, "cy": 1024, "follow": "front"}
    for i in range(4)])}
SCENARIOS = {  # name: (node parameter changes, player parameters)
    "proof_of_life": ({}, {}),
    "qos_reliable_into_best_effort": ({}, {"image_qos": "reliable"}),
    "qos_best_effort_into_reliable": ({"input_qos": "reliable"}, {"image_qos": "sensor_data"}),
    "late_tf": ({}, {"tf_delay_s": 3.0}),
    "sim_time": ({"use_sim_time": True}, {"publish_clock": True}),
    "loop_short_bag": ({}, {"loop": True}),
    "ctrl_c_while_reconstructing": (SLOW, {}),
    "repeated_ctrl_c_while_reconstructing": (SLOW, {}),
}


def _share() -> str:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return get_package_share_directory("ros2_lrm4d")
    except PackageNotFoundError:
        pytest.skip("ros2_lrm4d is not built and sourced (colcon build; source install/setup.bash)")


def _params_file(share: str, changes: dict, out_dir: Path) -> str:
    """The shipped params file, or a copy of it with `changes` (use_sim_time goes to the launch file)."""
    shipped = os.path.join(share, "config", "reconstruct.yaml")
    changes = {k: v for k, v in changes.items() if k != "use_sim_time"}
    if not changes:
        return shipped
    data = yaml.safe_load(Path(shipped).read_text())
    data["lrm4d"]["ros__parameters"].update(changes)
    path = out_dir / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.launch_test
@launch_testing.markers.keep_alive
@launch_testing.parametrize("scenario", list(SCENARIOS))
def generate_test_description(scenario):
    from ros2_lrm4d.synth_bag import write_synthetic_bag

    share = _share()
    node_changes, player_params = SCENARIOS[scenario]
    work = Path(tempfile.mkdtemp(prefix=f"lrm4d_{scenario}_"))
    bag = work / "drive"
    frames = 48 if scenario == "loop_short_bag" else 80  # 4.8 s / 8 s at 10 Hz
    write_synthetic_bag(bag, "driving", width=64, height=64, frames=frames, seed=0)
    reconstruct = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "reconstruct.launch.py")),
        launch_arguments={"rviz": "false", "params_file": _params_file(share, node_changes, work),
                          "use_sim_time": str(node_changes.get("use_sim_time", False)).lower()}.items())
    player = Node(package="ros2_lrm4d", executable="lrm4d_bag_player", name="lrm4d_bag_player", output="screen",
                  parameters=[{"bag": str(bag), "wait_for_subscribers_s": 60.0, "start_delay_s": 1.0,
                              "exit_when_done": False, **player_params}])  # alive until shutdown
    return LaunchDescription([reconstruct, player, launch_testing.actions.ReadyToTest()]), {}


class Probe:
    """Subscribes to the node's outputs and keeps what arrives."""

    def __init__(self, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image, PointCloud2
        from tf2_msgs.msg import TFMessage

        self.node, self.clouds, self.images, self.diagnostics = node, [], [], []
        self.depths, self.dynamic, self.tf = [], [], []
        self.subs = [
            node.create_subscription(PointCloud2, "/lrm4d/gaussians", self.clouds.append, 10),
            node.create_subscription(Image, "/lrm4d/predicted/front/image_raw", self.images.append, 10),
            node.create_subscription(Image, "/lrm4d/predicted/front/depth", self.depths.append, 10),
            node.create_subscription(PointCloud2, "/lrm4d/gaussians/dynamic", self.dynamic.append, 10),
            node.create_subscription(TFMessage, "/tf", self.tf.append, 100),
            node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10),
        ]

    def values(self) -> dict[str, str]:
        """Key/values of the last /diagnostics message."""
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values} if self.diagnostics else {}

    def rates(self) -> dict[str, float]:
        return {k.split("/", 1)[1]: float(v) for k, v in self.values().items() if k.startswith("input_rate_hz/")}

    def spin_until(self, condition, timeout_s: float = TIMEOUT_S) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if condition():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.1)
        return condition()

    def close(self) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)


class TestLiveNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.node = rclpy.create_node("lrm4d_test_probe")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.destroy_node()
        rclpy.shutdown()

    def setUp(self) -> None:
        self.probe = Probe(self.node)

    def tearDown(self) -> None:
        self.probe.close()

    def assert_outputs(self) -> None:
        from ros2_lrm4d.convert import GAUSSIAN3D_FIELDS

        p = self.probe
        self.assertTrue(p.spin_until(lambda: p.clouds and p.images and any(r > 0 for r in p.rates().values())),
                        f"within {TIMEOUT_S} s: {len(p.clouds)} clouds, {len(p.images)} images, rates {p.rates()}")
        cloud = p.clouds[-1]
        self.assertEqual(tuple(f.name for f in cloud.fields), GAUSSIAN3D_FIELDS)
        self.assertTrue(all(f.datatype == 7 and f.count == 1 for f in cloud.fields))  # FLOAT32
        self.assertEqual((cloud.header.frame_id, cloud.point_step), ("map", 4 * len(GAUSSIAN3D_FIELDS)))
        self.assertGreater(cloud.width * cloud.height, 0)
        self.assertEqual(p.images[-1].encoding, "rgb8")
        self.assertTrue(set(CAMERAS) <= set(p.rates()), f"input rates reported for {sorted(p.rates())}")
        self.assertTrue(all(5.0 < p.rates()[c] < 15.0 for c in CAMERAS), f"a 10 Hz bag, rates {p.rates()}")
        print(f"[probe] {len(p.clouds)} clouds (last {cloud.width} Gaussians), {len(p.images)} front images, "
              f"input rates {p.rates()}", flush=True)

    def test_scenario(self, scenario, proc_info) -> None:
        p = self.probe
        if scenario in ("proof_of_life", "qos_reliable_into_best_effort"):
            self.assert_outputs()
            if scenario == "proof_of_life":
                self.assertTrue(p.spin_until(lambda: p.depths and p.dynamic), "no depth image or dynamic cloud")
                image = p.images[-1]
                self.assertEqual(image.header.frame_id, "lrm4d/front_optical")
                ours = {(t.child_frame_id, t.header.stamp.sec, t.header.stamp.nanosec): t.header.frame_id
                        for m in p.tf for t in m.transforms}
                self.assertEqual(ours.get((image.header.frame_id, image.header.stamp.sec, image.header.stamp.nanosec)), "map",
                                 "the predicted view's frame is not on /tf at its stamp")
                self.assertEqual((p.depths[-1].encoding, p.depths[-1].header.frame_id), ("32FC1", "lrm4d/front_optical"))
                # predicted views on demand: the probe watches only the front camera's topics
                p.spin_until(lambda: "predicted_views" in p.values(), timeout_s=10.0)  # the next /diagnostics after a window
                self.assertEqual(p.values().get("predicted_views"), "front", f"diagnostics {p.values()}")
        elif scenario == "loop_short_bag":
            stamps = lambda: [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in p.clouds]  # noqa: E731
            loops = lambda: sum(b < a - 1.0 for a, b in zip(stamps(), stamps()[1:]))  # noqa: E731
            self.assertTrue(p.spin_until(lambda: loops() >= 3, timeout_s=60.0),
                            f"clouds stopped: {len(p.clouds)} clouds, {loops()} loops seen, diagnostics {p.values()}")
            print(f"[probe] {len(p.clouds)} clouds over {loops()} loops of a 4.8 s bag", flush=True)
        elif scenario == "qos_best_effort_into_reliable":
            self.assertTrue(p.spin_until(lambda: int(p.values().get("qos_incompatible", 0)) > 0),
                            f"no qos_incompatible in /diagnostics: {p.values()}")
            status = p.diagnostics[-1].status[0]
            self.assertEqual(status.level, b"\x01")
            self.assertIn("incompatible QoS (RELIABILITY)", status.message)
            p.spin_until(lambda: False, timeout_s=5.0)
            self.assertEqual((p.clouds, p.rates().get("front", 0.0)), ([], 0.0))  # nothing gets through
            print(f"[probe] diagnostics: {status.message}", flush=True)
        elif scenario == "late_tf":
            self.assert_outputs()
            drops = {k: int(v) for k, v in p.values().items() if k.startswith("dropped/tf")}
            self.assertTrue(drops and sum(drops.values()) > 0, f"no TF drops counted: {p.values()}")
            first = min(c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in p.clouds)
            self.assertGreater(first, BAG_START_S + 2.5)  # nothing from the TF-less start was published
            print(f"[probe] TF drops {drops}; first cloud at bag time +{first - BAG_START_S:.2f} s", flush=True)
        elif scenario == "sim_time":
            self.assert_outputs()
            stamp = p.diagnostics[-1].header.stamp.sec
            self.assertTrue(BAG_START_S <= stamp <= BAG_START_S + 60, f"diagnostics stamped {stamp}, not bag time")
            print(f"[probe] node clock follows /clock: diagnostics stamped {stamp} (bag starts {BAG_START_S})", flush=True)
        elif scenario in ("ctrl_c_while_reconstructing", "repeated_ctrl_c_while_reconstructing"):
            # one window done (its latency is known), then stop while the next one runs
            self.assertTrue(p.spin_until(lambda: int(p.values().get("windows", 0)) >= 1 and p.values().get("reconstructing") == "true"),
                            f"never saw a reconstruction running after a finished one: {p.values()}")
            v = p.values()
            self.assertGreater(float(v["window_latency_s"]), 1.0)  # slow enough for SIGINT to land inside one
            print(f"[probe] stopping while reconstructing: {v['windows']} window(s) done, latency {v['window_latency_s']} s, "
                  f"stages { {k: x for k, x in v.items() if k.startswith('stage_s/')} }", flush=True)
            if scenario == "repeated_ctrl_c_while_reconstructing":
                node = next(name for name in proc_info.process_names() if "lrm4d_node" in name)
                for _ in range(3):
                    os.kill(proc_info[node].pid, signal.SIGINT)
                    time.sleep(0.2)
                proc_info.assertWaitForShutdown(process=node, timeout=15)
        else:
            self.fail(f"unknown scenario {scenario}")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_clean_exit(self, proc_info, proc_output, scenario) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)  # 0 for every process, after SIGINT
        text = "".join(process_output.text.decode(errors="replace") for process_output in proc_output)
        self.assertNotIn("Traceback", text)
        if "ctrl_c_while_reconstructing" in scenario:  # the SIGINT did land inside a reconstruction
            self.assertIn("a reconstruction is still running after 2 s: exiting without it", text)
