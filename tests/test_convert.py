"""ros2_lrm4d.convert and msgdefs: every conversion against an independent construction.

Messages are rosbags dataclasses (as in the replay), plain namespaces with bytes / array.array data
(as rclpy gives), and CDR round trips decoded by mcap_ros2's dynamic decoder.
"""

from __future__ import annotations

import array
import io
import math
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from lrm4d_core.gaussians import CHANNEL_LAYOUT, Gaussians3D, Gaussians4D
from ros2_lrm4d import convert as cv
from ros2_lrm4d.msgdefs import GAUSSIAN_CLOUD4D, RclpyFactory, RosbagsFactory, gaussian_cloud4d_msg_text, make_typestore

try:
    import cv2
except ImportError:  # undistortion tests that need OpenCV skip
    cv2 = None

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="needs opencv (cv2)")


@pytest.fixture(scope="module")
def typestore():
    return make_typestore()


@pytest.fixture(scope="module")
def factory(typestore):
    return RosbagsFactory(typestore)


def mcap_decode(typestore, typename: str, raw: bytes):
    """Independent CDR decoder: mcap_ros2's dynamic decoder from the ros2msg schema text."""
    from mcap_ros2._dynamic import generate_dynamic

    schema, _ = typestore.generate_msgdef(typename, ros_version=2)
    return generate_dynamic(typename.replace("/msg/", "/"), schema)[typename.replace("/msg/", "/")](bytes(raw))


# ------------------------------------------------------------------------------------------ images
RNG = np.random.default_rng(0)
H, W, PAD = 5, 7, 3
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
MONO16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)


def raw_image(encoding: str, container: str, bigendian: bool = False):
    """Message bytes built by hand: pixels in the encoding's channel order, then PAD junk bytes per row."""
    pixels = {
        "rgb8": RGB,
        "bgr8": RGB[:, :, ::-1],
        "rgba8": np.concatenate([RGB, np.full((H, W, 1), 7, np.uint8)], axis=2),
        "bgra8": np.concatenate([RGB[:, :, ::-1], np.full((H, W, 1), 9, np.uint8)], axis=2),
        "mono8": RGB[:, :, 0],
        "mono16": MONO16.astype(">u2" if bigendian else "<u2"),
    }[encoding]
    rows = np.ascontiguousarray(pixels).reshape(H, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((H, PAD), 0xAB, np.uint8)], axis=1)
    data = {"numpy": padded.reshape(-1), "bytes": padded.tobytes(), "array": array.array("B", padded.tobytes()),
            "list": padded.reshape(-1).tolist()}[container]
    return SimpleNamespace(height=H, width=W, encoding=encoding, is_bigendian=int(bigendian), step=padded.shape[1], data=data)


def expected_rgb(encoding: str) -> np.ndarray:
    if encoding == "mono8":
        return np.repeat(RGB[:, :, :1], 3, axis=2)
    if encoding == "mono16":
        return np.repeat((MONO16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    return RGB


@pytest.mark.parametrize("container", ["numpy", "bytes", "array", "list"])
@pytest.mark.parametrize("encoding", cv.IMAGE_ENCODINGS)
def test_image_encodings_with_padded_step(encoding, container):
    out = cv.image_to_rgb(raw_image(encoding, container))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected_rgb(encoding))


def test_mono16_big_endian():
    np.testing.assert_array_equal(cv.image_to_rgb(raw_image("mono16", "bytes", bigendian=True)), expected_rgb("mono16"))


def test_rosbags_image_message(typestore, factory):
    msg = raw_image("bgr8", "numpy")
    img = factory.make("sensor_msgs/msg/Image", header=factory.header("cam", 5), height=H, width=W,
                       encoding="bgr8", is_bigendian=0, step=msg.step, data=msg.data)
    back = typestore.deserialize_cdr(typestore.serialize_cdr(img, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(cv.image_to_rgb(back), RGB)


def test_unsupported_encoding_is_clear():
    msg = raw_image("rgb8", "bytes")
    msg.encoding = "bayer_rggb8"
    with pytest.raises(cv.UnsupportedEncoding, match=r"'bayer_rggb8'.*rgb8, bgr8, rgba8, bgra8, mono8, mono16") as info:
        cv.image_to_rgb(msg)
    assert isinstance(info.value, cv.ConversionError) and isinstance(info.value, ValueError)


def test_truncated_or_bad_step_rejected():
    msg = raw_image("rgb8", "bytes")
    msg.data = msg.data[:-(W * 3 + PAD + 1)]
    with pytest.raises(cv.ConversionError, match="data has"):
        cv.image_to_rgb(msg)
    msg = raw_image("rgb8", "bytes")
    msg.step = W * 3 - 1
    with pytest.raises(cv.ConversionError, match="step"):
        cv.image_to_rgb(msg)


# ------------------------------------------------------------------------------ compressed images
def smooth_rgb(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], axis=-1).astype(np.uint8)


def pil_bytes(array_: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array_).save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8", "", "PNG"])
def test_png_exact(fmt):
    rgb = smooth_rgb()
    out = cv.compressed_to_rgb(SimpleNamespace(format=fmt, data=array.array("B", pil_bytes(rgb, "PNG"))))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8", "bgra8; jpeg compressed bgr8"])
def test_jpeg_within_tolerance(fmt):
    rgb = smooth_rgb()
    out = cv.compressed_to_rgb(SimpleNamespace(format=fmt, data=np.frombuffer(pil_bytes(rgb, "JPEG", quality=95), np.uint8)))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - rgb.astype(int))
    assert diff.mean() < 2.0 and diff.max() < 20


def test_png_grey_16bit_and_alpha():
    grey16 = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 41).astype(np.uint16)
    out = cv.compressed_to_rgb(SimpleNamespace(format="mono16; png compressed ", data=pil_bytes(grey16, "PNG")))
    np.testing.assert_array_equal(out, np.repeat((grey16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2))
    rgba = np.concatenate([smooth_rgb(), np.full((32, 48, 1), 17, np.uint8)], axis=2)
    np.testing.assert_array_equal(cv.compressed_to_rgb(SimpleNamespace(format="png", data=pil_bytes(rgba, "PNG"))), smooth_rgb())
    grey8 = smooth_rgb()[:, :, 0]
    out = cv.compressed_to_rgb(SimpleNamespace(format="mono8; png compressed ", data=pil_bytes(grey8, "PNG")))
    np.testing.assert_array_equal(out, np.repeat(grey8[:, :, None], 3, axis=2))


@pytest.mark.parametrize("fmt, pattern", [
    ("16UC1; compressedDepth png", "depth"),
    ("tiff", r"'tiff'.*jpeg, png"),
    ("bayer_rggb8; jpeg compressed bgr8", r"source encoding 'bayer_rggb8'"),
])
def test_compressed_unsupported_formats(fmt, pattern):
    with pytest.raises(cv.UnsupportedEncoding, match=pattern):
        cv.compressed_to_rgb(SimpleNamespace(format=fmt, data=pil_bytes(smooth_rgb(), "PNG")))


def test_compressed_garbage_and_empty():
    with pytest.raises(cv.ConversionError, match="could not be decoded"):
        cv.compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"\xff\xd8 not really a jpeg"))
    with pytest.raises(cv.ConversionError, match="could not be decoded"):  # a valid image, not jpeg/png
        cv.compressed_to_rgb(SimpleNamespace(format="", data=pil_bytes(smooth_rgb(), "BMP")))
    with pytest.raises(cv.ConversionError, match="no data"):
        cv.compressed_to_rgb(SimpleNamespace(format="png", data=b""))


# ---------------------------------------------------------------------------------- camera info
def camera_info(factory, k, d=(), model="plumb_bob", width=64, height=48, binning=(0, 0), roi=(0, 0, 0, 0)):
    return factory.make(
        "sensor_msgs/msg/CameraInfo", header=factory.header("cam", 0), height=height, width=width,
        distortion_model=model, d=np.asarray(d, np.float64), k=np.asarray(k, np.float64).reshape(9),
        r=np.eye(3).reshape(9), p=np.zeros(12), binning_x=binning[0], binning_y=binning[1],
        roi=factory.make("sensor_msgs/msg/RegionOfInterest", x_offset=roi[0], y_offset=roi[1], height=roi[3],
                         width=roi[2], do_rectify=False),
    )


K0 = np.array([[50.0, 0.0, 31.5], [0.0, 52.0, 23.5], [0.0, 0.0, 1.0]])


def test_camera_info_k(typestore, factory):
    msg = camera_info(factory, K0, d=[0.0] * 5)
    msg = typestore.deserialize_cdr(typestore.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo"), "sensor_msgs/msg/CameraInfo")
    intr = cv.camera_info_to_intrinsics(msg)
    np.testing.assert_array_equal(intr.K, K0)
    assert (intr.width, intr.height, intr.distortion_model, intr.distorted) == (64, 48, "plumb_bob", False)
    # rclpy-like message, ROS 1 field names K/D also accepted
    ros1 = SimpleNamespace(K=list(K0.reshape(9)), D=[], width=64, height=48, distortion_model="")
    np.testing.assert_array_equal(cv.camera_info_to_intrinsics(ros1).K, K0)


def test_camera_info_roi_and_binning(factory):
    intr = cv.camera_info_to_intrinsics(camera_info(factory, K0, binning=(2, 2), roi=(8, 4, 40, 32)))
    assert (intr.width, intr.height) == (20, 16)
    np.testing.assert_allclose(intr.K, [[25.0, 0, (31.5 - 8) / 2], [0, 26.0, (23.5 - 4) / 2], [0, 0, 1]])


@pytest.mark.parametrize("k, size, pattern", [
    (np.zeros(9), (64, 48), "focal lengths must be positive"),
    (K0, (0, 0), "not calibrated"),
    (np.where(K0 == 50.0, np.nan, K0), (64, 48), "non-finite"),
    (K0 + np.array([[0, 0, 0], [0, 0, 0], [0.1, 0, 0]]), (64, 48), "last row"),
])
def test_camera_info_invalid(factory, k, size, pattern):
    with pytest.raises(cv.InvalidCameraInfo, match=pattern):
        cv.camera_info_to_intrinsics(camera_info(factory, k, width=size[0], height=size[1]))


def test_undistort_zero_d_is_identity_and_size_checked(factory):
    intr = cv.camera_info_to_intrinsics(camera_info(factory, K0, d=[0.0] * 5))
    rgb = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out, k = cv.undistort(rgb, intr)
    assert out is rgb
    np.testing.assert_array_equal(k, K0)
    with pytest.raises(cv.InvalidCameraInfo, match="64x48 but the image is 63x48"):
        cv.undistort(rgb[:, :63], intr)


def test_unsupported_distortion_is_clear(factory, monkeypatch):
    rgb = np.zeros((48, 64, 3), np.uint8)
    unknown = cv.camera_info_to_intrinsics(camera_info(factory, K0, d=[0.1, 0.0, 0.0], model="kannala_brandt_weird"))
    with pytest.raises(cv.UnsupportedDistortion, match=r"'kannala_brandt_weird'.*supported: plumb_bob"):
        cv.undistort(rgb, unknown)
    bad_length = cv.camera_info_to_intrinsics(camera_info(factory, K0, d=[0.1, 0.0, 0.0], model="plumb_bob"))
    with pytest.raises(cv.UnsupportedDistortion, match="3 non-zero coefficients"):
        cv.undistort(rgb, bad_length)
    monkeypatch.setattr(cv, "_cv2", lambda: None)
    fisheye = cv.camera_info_to_intrinsics(camera_info(factory, K0, d=[0.1, 0.01, 0.0, 0.0], model="equidistant"))
    with pytest.raises(cv.UnsupportedDistortion, match="opencv-python-headless"):
        cv.undistort(rgb, fisheye)


def blob(h: int, w: int, center: tuple[float, float], sigma: float = 1.5) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    g = np.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / (2 * sigma**2))
    return np.repeat((g * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)


def centroid(img: np.ndarray) -> np.ndarray:
    w = img[:, :, 0].astype(float)
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(w * x).sum() / w.sum(), (w * y).sum() / w.sum()])


@needs_cv2
def test_undistort_plumb_bob_moves_points_to_pinhole_positions(factory):
    """A dot drawn where the plumb_bob model (written out here) sends a pinhole pixel comes back there."""
    k1, k2, p1, p2, k3 = -0.25, 0.08, 0.002, -0.001, 0.0
    intr = cv.camera_info_to_intrinsics(camera_info(factory, K0, d=[k1, k2, p1, p2, k3]))
    target = np.array([52.0, 38.0])  # undistorted pixel
    xn, yn = (target[0] - K0[0, 2]) / K0[0, 0], (target[1] - K0[1, 2]) / K0[1, 1]
    r2 = xn * xn + yn * yn
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    distorted = blob(48, 64, (K0[0, 0] * xd + K0[0, 2], K0[1, 1] * yd + K0[1, 2]))
    out, k = cv.undistort(distorted, intr)
    np.testing.assert_array_equal(k, K0)
    assert np.linalg.norm(centroid(out) - target) < 0.3
    reference = cv2.undistort(distorted, K0, intr.D)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 2


@needs_cv2
def test_undistort_equidistant_matches_cv2_fisheye(factory):
    d = [0.05, -0.01, 0.002, 0.0]
    intr = cv.camera_info_to_intrinsics(camera_info(factory, K0, d=d, model="equidistant"))
    rgb = blob(48, 64, (20.0, 12.0), sigma=3.0)
    out, _ = cv.undistort(rgb, intr)
    reference = cv2.fisheye.undistortImage(rgb, K0, np.asarray(d), Knew=K0)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 2


# ------------------------------------------------------------------------------ PointCloud2 (3D)
def random_gaussians3d(n: int = 9) -> Gaussians3D:
    gen = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=torch.float64), dim=-1)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    scales = torch.tensor([0.01, 0.02, 0.05], dtype=torch.float64) * (1 + torch.rand(n, 3, generator=gen, dtype=torch.float64))
    covars = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    colors = torch.rand(n, 3, generator=gen)
    colors[0] = torch.tensor([1.0, 0.0, 0.5])
    colors[1] = torch.tensor([-0.2, 1.7, 0.0])  # out of range: clamped
    return Gaussians3D(
        means=torch.randn(n, 3, generator=gen), covars=covars.float(), opacities=torch.rand(n, generator=gen),
        colors=colors, velocities=torch.randn(n, 3, generator=gen),
    )


def numpy_records(msg) -> np.ndarray:
    """Decode with a dtype built here from the message's field list (independent of convert.py)."""
    codes = {7: "f4", 6: "u4", 2: "u1"}
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": [f.name for f in msg.fields], "formats": [order + codes[f.datatype] for f in msg.fields],
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    return np.frombuffer(bytes(msg.data), dtype=dtype, count=msg.width * msg.height)


def test_pointcloud2_round_trip_independent_decoders(typestore, factory):
    g = random_gaussians3d()
    msg = cv.gaussians_to_pointcloud2(g, "map", 1_700_000_000_123_456_789, factory)
    raw = typestore.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")
    decoded = mcap_decode(typestore, "sensor_msgs/msg/PointCloud2", raw)
    assert [f.name for f in decoded.fields] == list(cv.GAUSSIAN3D_FIELDS)
    assert all(f.datatype == 7 and f.count == 1 for f in decoded.fields)
    assert (decoded.point_step, decoded.row_step, decoded.height, decoded.width) == (60, 60 * len(g), 1, len(g))
    assert decoded.header.frame_id == "map" and decoded.is_dense
    assert (decoded.header.stamp.sec, decoded.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    rec = numpy_records(decoded)
    np.testing.assert_array_equal(np.stack([rec["x"], rec["y"], rec["z"]], -1), g.means.numpy())
    np.testing.assert_array_equal(rec["opacity"], g.opacities.numpy())
    np.testing.assert_array_equal(np.stack([rec["vel_x"], rec["vel_y"], rec["vel_z"]], -1), g.velocities.numpy())
    # packed colour: the float32 whose bits are 0x00RRGGBB
    bits = rec["rgb"].view(np.uint32)
    c = np.clip(np.rint(g.colors.numpy().astype(np.float64) * 255), 0, 255).astype(np.uint32)
    np.testing.assert_array_equal(bits, (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2])
    assert bits[0] == 0x00FF0080 and bits[1] == 0x0000FF00
    # scale/rotation rebuild the covariance: R(q) diag(s)^2 R(q)^T
    s = np.stack([rec[f"scale_{i}"] for i in range(3)], -1).astype(np.float64)
    q = np.stack([rec[f"rot_{i}"] for i in range(4)], -1).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-6)
    from pytransform3d.rotations import matrix_from_quaternion  # (w, x, y, z)

    for i in range(len(g)):
        r = matrix_from_quaternion(q[i])
        np.testing.assert_allclose(r @ np.diag(s[i] ** 2) @ r.T, g.covars[i].numpy(), atol=1e-7)
    np.testing.assert_allclose(np.sort(s, -1), np.sqrt(np.linalg.eigvalsh(g.covars.double().numpy())), rtol=1e-5)
    # our decoder on the rosbags-deserialized message agrees
    back = typestore.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
    arrays = cv.pointcloud2_to_arrays(back)
    for name in cv.GAUSSIAN3D_FIELDS:
        np.testing.assert_array_equal(arrays[name].view(np.uint32), rec[name].view(np.uint32))
    np.testing.assert_array_equal(cv.unpack_rgb(arrays["rgb"]), c.astype(np.uint8))


def test_pointcloud2_not_dense_when_non_finite(factory):
    g = random_gaussians3d(3)
    g = Gaussians3D(g.means.clone(), g.covars, g.opacities, g.colors, g.velocities)
    g.means[1, 0] = float("nan")
    msg = cv.gaussians_to_pointcloud2(g, "map", 0, factory)
    assert not msg.is_dense
    assert len(cv.pointcloud2_to_arrays(msg)["x"]) == 3
    assert len(cv.pointcloud2_to_arrays(msg, skip_nans=True)["x"]) == 2


def test_pointcloud2_decoder_on_foreign_layout(factory):
    """2 x 3 big-endian cloud, point_step and row_step padding, a uint8[3] field and a float64 field."""
    rows, cols, point_step, row_step = 2, 3, 24, 3 * 24 + 5
    xyz = RNG.standard_normal((rows, cols, 3)).astype(">f4")
    intensity = RNG.standard_normal((rows, cols)).astype(">f8")
    label = RNG.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    data = np.full((rows, row_step), 0xEE, np.uint8)
    for r in range(rows):
        for c in range(cols):
            o = c * point_step
            data[r, o : o + 12] = np.frombuffer(xyz[r, c].tobytes(), np.uint8)
            data[r, o + 12 : o + 15] = label[r, c]
            data[r, o + 16 : o + 24] = np.frombuffer(intensity[r, c : c + 1].tobytes(), np.uint8)  # keep >f8
    fields = [factory.point_field(n, 4 * i, 7, 1) for i, n in enumerate("xyz")]
    fields += [factory.point_field("label", 12, 2, 3), factory.point_field("intensity", 16, 8, 1)]
    msg = factory.make("sensor_msgs/msg/PointCloud2", header=factory.header("lidar", 0), height=rows, width=cols,
                       fields=fields, is_bigendian=True, point_step=point_step, row_step=row_step,
                       data=data.reshape(-1)[:-5], is_dense=True)  # last row without its padding
    out = cv.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(out["y"], xyz[..., 1].reshape(-1))
    np.testing.assert_array_equal(out["label"], label.reshape(-1, 3))
    np.testing.assert_array_equal(out["intensity"], intensity.reshape(-1))
    assert out["intensity"].dtype.isnative
    fields.append(factory.point_field("oops", 22, 7, 1))
    msg.fields = fields
    with pytest.raises(cv.ConversionError, match="'oops'.*overruns point_step 24"):
        cv.pointcloud2_to_arrays(msg)


# ------------------------------------------------------------------------------ GaussianCloud4D
def test_gaussian4d_fields_follow_channel_layout():
    sizes = [n for _, n in CHANNEL_LAYOUT]
    assert sum(sizes) == len(cv.GAUSSIAN4D_FIELDS) == 20
    groups, i = [], 0
    for n in sizes:
        groups.append(cv.GAUSSIAN4D_FIELDS[i : i + n])
        i += n
    assert groups == [("x", "y", "z"), ("t",), ("r", "g", "b"), ("scale_x", "scale_y", "scale_z"), ("scale_t",),
                      ("ql_w", "ql_x", "ql_y", "ql_z"), ("qr_w", "qr_x", "qr_y", "qr_z"), ("opacity",)]
    text = gaussian_cloud4d_msg_text()
    assert "point_step = 80" in text
    words = set(text.replace("#", " ").split())
    assert set(cv.GAUSSIAN4D_FIELDS) <= words


def test_gaussian_cloud4d_registered_serialized_deserialized(typestore, factory):
    assert GAUSSIAN_CLOUD4D in typestore.types
    gen = torch.Generator().manual_seed(2)
    n = 11
    g = Gaussians4D(
        means=torch.randn(n, 4, generator=gen), scales=torch.rand(n, 4, generator=gen),
        q_left=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        q_right=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        opacities=torch.rand(n, generator=gen), colors=torch.rand(n, 3, generator=gen),
    )
    msg = cv.gaussians4d_to_msg(g, "odom", 1_000_000_000, 3_500_000_000, "tiny@abc123", factory)
    raw = typestore.serialize_cdr(msg, GAUSSIAN_CLOUD4D)
    back = typestore.deserialize_cdr(raw, GAUSSIAN_CLOUD4D)
    assert (back.count, back.point_step, back.model_id, back.header.frame_id) == (n, 80, "tiny@abc123", "odom")
    assert cv.stamp_to_ns(back.window_start) == 1_000_000_000 and cv.stamp_to_ns(back.window_end) == 3_500_000_000
    assert cv.stamp_to_ns(back.header.stamp) == 3_500_000_000
    np.testing.assert_array_equal(cv.gaussian_cloud4d_to_channels(back), g.to_channels().numpy())
    g2 = cv.gaussian_cloud4d_to_gaussians(back)
    for name in ("means", "scales", "q_left", "q_right", "opacities", "colors"):
        assert torch.equal(getattr(g2, name), getattr(g, name)), name
    # independent decoder: mcap_ros2 dynamic types + a numpy dtype from the field list
    dyn = mcap_decode(typestore, GAUSSIAN_CLOUD4D, raw)
    assert [f.name for f in dyn.fields] == list(cv.GAUSSIAN4D_FIELDS) and dyn.count == n
    rec = np.frombuffer(bytes(dyn.data), dtype=np.dtype({
        "names": [f.name for f in dyn.fields], "formats": ["<f4"] * len(dyn.fields),
        "offsets": [f.offset for f in dyn.fields], "itemsize": dyn.point_step}))
    np.testing.assert_array_equal(rec["t"], g.means[:, 3].numpy())
    np.testing.assert_array_equal(np.stack([rec["qr_w"], rec["qr_x"], rec["qr_y"], rec["qr_z"]], -1), g.q_right.numpy())
    # readers look fields up by name: a shuffled layout decodes the same
    perm = list(reversed(range(20)))
    shuffled = np.ascontiguousarray(g.to_channels().numpy()[:, perm])
    back.fields = [factory.point_field(cv.GAUSSIAN4D_FIELDS[c], 4 * i, 7, 1) for i, c in enumerate(perm)]
    back.data = shuffled.reshape(-1).view(np.uint8)
    np.testing.assert_array_equal(cv.gaussian_cloud4d_to_channels(back), g.to_channels().numpy())
    back.fields = back.fields[1:]
    with pytest.raises(cv.ConversionError, match="lacks fields"):
        cv.gaussian_cloud4d_to_channels(back)


# ---------------------------------------------------------------------------- stamps, quaternions
@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_712_345_678_987_654_321, -1, -1_500_000_000])
def test_stamps_round_trip(factory, ns):
    stamp = cv.ns_to_stamp(ns, factory)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert cv.stamp_to_ns(stamp) == ns


def test_quaternion_orders():
    xyzw = np.array([[0.1, 0.2, 0.3, 0.9], [1.0, 2.0, 3.0, 4.0]])
    wxyz = cv.quat_xyzw_to_wxyz(xyzw)
    np.testing.assert_array_equal(wxyz, [[0.9, 0.1, 0.2, 0.3], [4.0, 1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(cv.quat_wxyz_to_xyzw(wxyz), xyzw)


def test_rclpy_factory_converts_sequences(monkeypatch):
    """RclpyFactory against a stand-in generated class (the real one is checked under ROS)."""

    class PointCloud2:
        @staticmethod
        def get_fields_and_field_types():
            return {"data": "sequence<uint8>", "d": "sequence<double>", "k": "double[9]", "name": "string"}

        def __init__(self, **kw):
            self.__dict__.update(kw)

    module = types.ModuleType("fake_msgs.msg")
    module.PointCloud2 = PointCloud2
    monkeypatch.setitem(sys.modules, "fake_msgs", types.ModuleType("fake_msgs"))
    monkeypatch.setitem(sys.modules, "fake_msgs.msg", module)
    msg = RclpyFactory().make("fake_msgs/msg/PointCloud2", data=np.arange(5, dtype=np.uint8), d=np.array([0.5, 1.5]),
                              k=np.eye(3).reshape(9), name="n")
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B" and list(msg.data) == [0, 1, 2, 3, 4]
    assert isinstance(msg.d, array.array) and msg.d.typecode == "d" and list(msg.d) == [0.5, 1.5]
    assert isinstance(msg.k, np.ndarray) and msg.name == "n"


@pytest.mark.ros
def test_rclpy_pointcloud2_round_trip():
    g = random_gaussians3d(4)
    msg = cv.gaussians_to_pointcloud2(g, "map", 42, RclpyFactory())
    assert type(msg).__module__.startswith("sensor_msgs")
    out = cv.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(out["x"], g.means[:, 0].numpy())
    assert math.isclose(cv.stamp_to_ns(msg.header.stamp), 42)


def test_transform_stamped_msg_matches_the_pose_by_pytransform3d(factory):
    """The /tf pose of a predicted view: quaternion and translation of cam_to_world, checked with
    pytransform3d's own quaternion -> matrix, including half turns (w = 0, where naive formulas fail)."""
    from pytransform3d.rotations import matrix_from_quaternion, random_matrix

    rng = np.random.default_rng(0)
    rotations = [random_matrix(rng) for _ in range(20)] + [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]),
                                                          np.diag([-1.0, -1.0, 1.0]), np.eye(3)]
    for R in rotations:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, rng.normal(size=3) * 10
        msg = cv.transform_stamped_msg(factory, "map", "lrm4d/front_optical", 1_700_000_000_500_000_000, T)
        q = msg.transform.rotation
        np.testing.assert_allclose(matrix_from_quaternion([q.w, q.x, q.y, q.z]), R, atol=1e-9)
        assert q.w >= 0
        t = msg.transform.translation
        np.testing.assert_allclose([t.x, t.y, t.z], T[:3, 3])
        assert (msg.header.frame_id, msg.child_frame_id) == ("map", "lrm4d/front_optical")
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 500_000_000)
