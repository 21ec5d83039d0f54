"""ros2_lrm4d.tf: the replay TfBuffer against transforms composed independently with pytransform3d.

Tree: map -> odom (static), odom -> base_link (moving, 10 Hz), base_link -> cam (static, optical
rotation), base_link -> lidar (static). TF messages are rosbags tf2_msgs/TFMessage dataclasses.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from pytransform3d import rotations as pr
from pytransform3d import transformations as pt

from ros2_lrm4d.msgdefs import RosbagsFactory, make_typestore
from ros2_lrm4d.tf import Extrapolation, LinkMissing, Tf2Lookup, TfBuffer, TfLookupError

S = 1_000_000_000
FACTORY = RosbagsFactory(make_typestore())


def pq(translation, q_wxyz) -> np.ndarray:
    return np.concatenate([np.asarray(translation, float), pr.norm_vector(np.asarray(q_wxyz, float))])


def tf_message(edges):
    """edges: [(parent, child, stamp_ns, pq (x y z qw qx qy qz))] -> tf2_msgs/TFMessage (ROS x,y,z,w order)."""
    make = FACTORY.make
    transforms = []
    for parent, child, stamp, p in edges:
        transform = make(
            "geometry_msgs/msg/Transform",
            translation=make("geometry_msgs/msg/Vector3", x=p[0], y=p[1], z=p[2]),
            rotation=make("geometry_msgs/msg/Quaternion", x=p[4], y=p[5], z=p[6], w=p[3]),
        )
        transforms.append(make("geometry_msgs/msg/TransformStamped", header=FACTORY.header(parent, stamp),
                               child_frame_id=child, transform=transform))
    return make("tf2_msgs/msg/TFMessage", transforms=transforms)


MAP_ODOM = pq([1.0, -2.0, 0.0], pr.quaternion_from_axis_angle([0, 0, 1, 0.3]))
BASE_CAM = pq([0.2, 0.0, 0.5], pr.quaternion_from_matrix(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)))
BASE_LIDAR = pq([0.0, 0.1, 0.8], pr.quaternion_from_axis_angle([1, 0, 0, 0.1]))
TIMES = [int(i * 0.1 * S) + 1000 * S for i in range(11)]  # 1000.0 .. 1001.0 s


def odom_base(i: int) -> np.ndarray:
    """A base moving and turning; yaw steps of 0.2 rad and a roll wobble so SLERP is not trivial."""
    yaw, roll = 0.2 * i, 0.05 * (-1) ** i
    q = pr.concatenate_quaternions(pr.quaternion_from_axis_angle([0, 0, 1, yaw]), pr.quaternion_from_axis_angle([1, 0, 0, roll]))
    return pq([0.5 * i, 0.1 * i * i, 0.01 * i], q)


def filled_buffer(**kwargs) -> TfBuffer:
    buf = TfBuffer(**kwargs)
    assert buf.add(tf_message([("map", "odom", 0, MAP_ODOM), ("base_link", "cam", 0, BASE_CAM),
                               ("base_link", "lidar", 0, BASE_LIDAR)]), static=True) == 0
    for i, t in enumerate(TIMES):  # one message per sample, as on /tf
        assert buf.add(tf_message([("odom", "base_link", t, odom_base(i))]), static=False) == 0
    return buf


def expected_odom_base(stamp: int) -> np.ndarray:
    """Independent interpolation: linear translation, pytransform3d SLERP of the rotation."""
    i = max(k for k, t in enumerate(TIMES) if t <= stamp)
    if TIMES[i] == stamp:
        return pt.transform_from_pq(odom_base(i))
    a = (stamp - TIMES[i]) / (TIMES[i + 1] - TIMES[i])
    p0, p1 = odom_base(i), odom_base(i + 1)
    q = pr.quaternion_slerp(p0[3:], p1[3:], a, shortest_path=True)
    return pt.transform_from_pq(np.concatenate([(1 - a) * p0[:3] + a * p1[:3], q]))


def expected_map_cam(stamp: int) -> np.ndarray:
    # pytransform3d: concat(A2B, B2C) = B2C @ A2B; cam2map = odom2map @ base2odom @ cam2base
    cam2base, base2odom, odom2map = pt.transform_from_pq(BASE_CAM), expected_odom_base(stamp), pt.transform_from_pq(MAP_ODOM)
    return pt.concat(pt.concat(cam2base, base2odom), odom2map)


@pytest.mark.parametrize("stamp", [TIMES[0], TIMES[3], TIMES[3] + 37_000_000, TIMES[7] + 99_999_999, TIMES[-1] - 1, TIMES[-1]])
def test_chain_interpolated(stamp):
    buf = filled_buffer()
    cam_to_map = buf.lookup("map", "cam", stamp)
    np.testing.assert_allclose(cam_to_map, expected_map_cam(stamp), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "map", stamp), pt.invert_transform(expected_map_cam(stamp)), atol=1e-12)
    # a point at 2 m on the optical axis lands where the independent chain puts it
    point = np.array([0.0, 0.0, 2.0, 1.0])
    np.testing.assert_allclose(cam_to_map @ point, expected_map_cam(stamp) @ point, atol=1e-12)


def test_common_ancestor_and_static_edges_at_any_time():
    buf = filled_buffer()
    lidar_in_cam = pt.concat(pt.transform_from_pq(BASE_LIDAR), pt.invert_transform(pt.transform_from_pq(BASE_CAM)))
    for stamp in (0, TIMES[0] - 50 * S, TIMES[-1] + 3600 * S):  # far outside the dynamic range: only static edges used
        np.testing.assert_allclose(buf.lookup("cam", "lidar", stamp), lidar_in_cam, atol=1e-12)
        np.testing.assert_allclose(buf.lookup("odom", "map", stamp), pt.invert_transform(pt.transform_from_pq(MAP_ODOM)), atol=1e-12)
    np.testing.assert_array_equal(buf.lookup("cam", "cam", 0), np.eye(4))
    np.testing.assert_allclose(buf.lookup("/map", "/cam", TIMES[2]), expected_map_cam(TIMES[2]), atol=1e-12)


def test_extrapolation_raises_and_tolerance_clamps():
    buf = filled_buffer()
    with pytest.raises(Extrapolation, match=r"odom -> base_link at 999\.999999999 s is 0\.000000 s before the oldest"):
        buf.lookup("map", "cam", TIMES[0] - 1)
    with pytest.raises(Extrapolation, match="after the newest"):
        buf.lookup("cam", "map", TIMES[-1] + 1)
    tolerant = filled_buffer(extrapolation_tolerance_s=0.05)
    np.testing.assert_allclose(tolerant.lookup("map", "cam", TIMES[-1] + 40_000_000), expected_map_cam(TIMES[-1]), atol=1e-12)
    with pytest.raises(Extrapolation):
        tolerant.lookup("map", "cam", TIMES[-1] + 60_000_000)
    assert issubclass(Extrapolation, TfLookupError) and issubclass(LinkMissing, TfLookupError)


def test_missing_links():
    buf = filled_buffer()
    with pytest.raises(LinkMissing, match=r"frame 'gripper' does not exist"):
        buf.lookup("map", "gripper", TIMES[1])
    buf.add(tf_message([("world", "gps", 0, MAP_ODOM)]), static=True)
    with pytest.raises(LinkMissing, match=r"'map' and 'gps' are not connected.*'map' and 'world'"):
        buf.lookup("map", "gps", TIMES[1])
    with pytest.raises(LinkMissing):
        TfBuffer().lookup("map", "cam", 0)


def test_history_bounded_and_bad_input_ignored():
    buf = TfBuffer(cache_duration_s=1.0)
    rate = 100
    for k in range(20 * rate):  # 20 s at 100 Hz
        buf.add(tf_message([("odom", "base_link", k * S // rate, pq([k, 0, 0], [1, 0, 0, 0]))]), static=False)
    edge = buf._edges["base_link"]
    assert len(edge.times) == rate + 1 and len(edge.poses) == rate + 1
    assert edge.times[0] == 19 * S - S // rate and edge.times[-1] == 20 * S - S // rate  # newest - 1 s .. newest
    with pytest.raises(Extrapolation):
        buf.lookup("odom", "base_link", 5 * S)
    # too old for the window, repeated stamp, zero quaternion, non-finite, self-parent: ignored and counted
    bad = tf_message([
        ("odom", "base_link", 2 * S, pq([0, 0, 0], [1, 0, 0, 0])),
        ("odom", "base_link", edge.times[-1], pq([0, 0, 0], [1, 0, 0, 0])),
        ("odom", "base_link", 30 * S, np.array([0, 0, 0, 0, 0, 0, 0.0])),
        ("odom", "base_link", 30 * S, np.array([np.nan, 0, 0, 1, 0, 0, 0.0])),
        ("odom", "odom", 30 * S, pq([0, 0, 0], [1, 0, 0, 0])),
    ])
    assert buf.add(bad, static=False) == 5
    assert len(edge.times) == rate + 1
    # out-of-order sample inside the window is inserted in place
    late = edge.times[-1] - S // (2 * rate)
    assert buf.add(tf_message([("odom", "base_link", late, pq([-1, 0, 0], [1, 0, 0, 0]))]), static=False) == 0
    np.testing.assert_allclose(buf.lookup("odom", "base_link", late)[:3, 3], [-1, 0, 0])


def test_reparenting_replaces_edge():
    buf = filled_buffer()
    buf.add(tf_message([("map", "base_link", TIMES[0], pq([9, 9, 9], [1, 0, 0, 0]))]), static=True)
    np.testing.assert_allclose(buf.lookup("map", "base_link", 12345)[:3, 3], [9, 9, 9])


# ------------------------------------------------------------------------------------ Tf2Lookup
class _FakeTf2Error(Exception):
    pass


def _tf2_exceptions():
    """Stand-ins with tf2's class names and hierarchy (tf2_ros is not installed here)."""
    base = type("TransformException", (Exception,), {})
    return {name: type(name, (base,), {}) for name in
            ("LookupException", "ConnectivityException", "ExtrapolationException", "InvalidArgumentException")} | {"TransformException": base}


def test_tf2_lookup_maps_exceptions(monkeypatch):
    rclpy = types.ModuleType("rclpy")
    rclpy_time = types.ModuleType("rclpy.time")
    rclpy_time.Time = lambda nanoseconds: ("time", nanoseconds)
    monkeypatch.setitem(sys.modules, "rclpy", rclpy)
    monkeypatch.setitem(sys.modules, "rclpy.time", rclpy_time)
    exc = _tf2_exceptions()
    ok = tf_message([("map", "cam", 5, BASE_CAM)]).transforms[0]

    class Buffer:
        raise_next = None

        def lookup_transform_core(self, target, source, time):
            assert (target, source, time) == ("map", "cam", ("time", 5))
            if self.raise_next:
                raise self.raise_next("tf2 says no")
            return ok

    fake = Buffer()
    lookup = Tf2Lookup(fake)
    np.testing.assert_allclose(lookup.lookup("/map", "cam", 5), pt.transform_from_pq(BASE_CAM), atol=1e-12)
    for name, ours in [("LookupException", LinkMissing), ("ConnectivityException", LinkMissing),
                       ("ExtrapolationException", Extrapolation), ("InvalidArgumentException", TfLookupError)]:
        fake.raise_next = exc[name]
        with pytest.raises(ours, match="tf2 says no"):
            lookup.lookup("map", "cam", 5)
    fake.raise_next = _FakeTf2Error
    with pytest.raises(_FakeTf2Error):
        lookup.lookup("map", "cam", 5)


@pytest.mark.ros
def test_tf2_lookup_real_buffer():
    import tf2_ros
    from geometry_msgs.msg import TransformStamped

    buffer = tf2_ros.Buffer()
    for t, x in ((1 * S, 0.0), (2 * S, 1.0)):
        ts = TransformStamped()
        ts.header.frame_id, ts.child_frame_id = "odom", "base_link"
        ts.header.stamp.sec = t // S
        ts.transform.translation.x = x
        ts.transform.rotation.w = 1.0
        buffer.set_transform(ts, "test")
    lookup = Tf2Lookup(buffer)
    np.testing.assert_allclose(lookup.lookup("odom", "base_link", 3 * S // 2)[:3, 3], [0.5, 0, 0])
    with pytest.raises(Extrapolation):
        lookup.lookup("odom", "base_link", 3 * S)
    with pytest.raises(LinkMissing):
        lookup.lookup("odom", "nowhere", S)
