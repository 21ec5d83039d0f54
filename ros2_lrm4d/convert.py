"""Message <-> array conversions shared by the live node and the bag replay.

Everything reads messages by attribute (msg.height, msg.data, ...), so rclpy classes, rosbags
dataclasses and mcap_ros2 decoded messages all work. Raw images are decoded with numpy alone, not
cv_bridge: the layouts are simple, numpy is exact, and live and replay then give identical pixels.
Every rejection raises a `ConversionError` (a ValueError) whose message says what was wrong and what
is supported, so callers can log it and count it.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from lrm4d_core.validate import ImplausibleInput, check_intrinsics, check_pixels

from .msgdefs import GAUSSIAN_CLOUD4D, NS_PER_S, MessageFactory

if TYPE_CHECKING:
    from lrm4d_core.gaussians import Gaussians3D, Gaussians4D

__all__ = [
    "ConversionError", "UnsupportedEncoding", "UnsupportedDistortion", "InvalidCameraInfo", "ImageTooLarge",
    "check_image_size",
    "IMAGE_ENCODINGS", "GAUSSIAN3D_FIELDS", "GAUSSIAN4D_FIELDS", "POINTFIELD_DTYPES", "Intrinsics",
    "image_to_rgb", "compressed_to_rgb", "camera_info_to_intrinsics", "undistort",
    "pack_rgb", "unpack_rgb", "gaussians3d_columns", "gaussians_to_pointcloud2", "pointcloud2_to_arrays",
    "gaussians4d_to_msg", "gaussian_cloud4d_to_channels", "gaussian_cloud4d_to_gaussians",
    "stamp_to_ns", "ns_to_stamp", "quat_xyzw_to_wxyz", "quat_wxyz_to_xyzw", "transform_stamped_msg",
]


class ConversionError(ValueError):
    """A message that cannot be turned into core data (or back)."""


class UnsupportedEncoding(ConversionError):
    """Image encoding or compression format we do not decode."""


class UnsupportedDistortion(ConversionError):
    """Distortion model we cannot undistort (here, with the libraries installed)."""


class ImageTooLarge(ConversionError):
    """An image above the configured pixel limit, rejected from its header before decoding."""


class InvalidCameraInfo(ConversionError):
    """CameraInfo that is uncalibrated, non-finite or does not match its image."""


def _byte_buffer(data: Any) -> np.ndarray:
    """uint8 view of a message byte array: numpy (rosbags), array.array (rclpy), bytes, or a list."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _strided_rows(buf: np.ndarray, rows: int, row_bytes: int, step: int, what: str) -> np.ndarray:
    """[rows, row_bytes] contiguous copy of rows that start every `step` bytes (padding dropped)."""
    if step < row_bytes:
        raise ConversionError(f"{what}: step {step} is smaller than one row of pixels/points ({row_bytes} bytes)")
    need = step * (rows - 1) + row_bytes
    if buf.size < need:
        raise ConversionError(f"{what}: data has {buf.size} bytes, the header needs {need} ({rows} rows of step {step})")
    view = np.lib.stride_tricks.as_strided(buf, shape=(rows, row_bytes), strides=(step, 1), writeable=False)
    return np.ascontiguousarray(view)


# ------------------------------------------------------------------------------------------ images
# encoding -> (channels, bytes per channel, channel order giving R, G, B; None for mono)
_RAW_LAYOUTS: dict[str, tuple[int, int, tuple[int, int, int] | None]] = {
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
    "mono8": (1, 1, None),
    "mono16": (1, 2, None),
}
IMAGE_ENCODINGS: tuple[str, ...] = tuple(_RAW_LAYOUTS)


def check_image_size(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise ImageTooLarge when width x height exceeds `max_pixels` (None: no limit)."""
    try:
        check_pixels(width, height, max_pixels, what, setting="parameter max_image_pixels")
    except ImplausibleInput as err:
        raise ImageTooLarge(str(err)) from None


def image_to_rgb(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image -> [H, W, 3] uint8 RGB (a copy; row padding in `step` is skipped).

    Alpha is dropped. mono is replicated to three channels; mono16 keeps its top 8 bits (v >> 8,
    honouring is_bigendian), a fixed linear scaling with no auto-contrast: a 12-bit camera in a
    16-bit container looks dark. (cv_bridge rounds v / 256 instead: at most one level apart.)
    """
    encoding = str(msg.encoding)
    layout = _RAW_LAYOUTS.get(encoding.strip().lower())
    if layout is None:
        raise UnsupportedEncoding(f"image encoding {encoding!r} is not supported; supported: {', '.join(IMAGE_ENCODINGS)}")
    channels, itemsize, order = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"image is empty ({width}x{height})")
    check_image_size(width, height, max_pixels, f"{encoding} image")
    rows = _strided_rows(_byte_buffer(msg.data), height, width * channels * itemsize, step, f"{encoding} image")
    if itemsize == 2:
        values = rows.view(">u2" if msg.is_bigendian else "<u2")
        pixels = (values >> 8).astype(np.uint8).reshape(height, width, 1)
    else:
        pixels = rows.reshape(height, width, channels)
    if order is None:
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, list(order)])


_COMPRESSIONS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


def _compression_of(fmt: str) -> str | None:
    """Pillow format named by a CompressedImage format string; None means "sniff the bytes".

    ROS writers use "jpeg" / "png" or image_transport's "<encoding>; <codec> compressed [<encoding>]".
    The trailing encoding names what cv2.imdecode returns (BGR order of a standard file), so a
    standard decoder's RGB is correct whatever it says. The leading one is the raw encoding before
    compression: only the colour/mono encodings we support from raw images are accepted.
    """
    text = fmt.strip().lower()
    if "compresseddepth" in text:
        raise UnsupportedEncoding(f"CompressedImage format {fmt!r} is a depth image; only colour/mono jpeg and png are supported")
    if ";" in text:
        original, codec_part = (part.strip() for part in text.split(";", 1))
        if original and original not in _RAW_LAYOUTS:
            raise UnsupportedEncoding(
                f"CompressedImage format {fmt!r}: source encoding {original!r} is not supported; supported: {', '.join(IMAGE_ENCODINGS)}"
            )
        codec = codec_part.split()[0] if codec_part else ""
    else:
        codec = text
    if not codec:
        return None
    if codec not in _COMPRESSIONS:
        raise UnsupportedEncoding(f"CompressedImage format {fmt!r} is not supported; supported: jpeg, png")
    return _COMPRESSIONS[codec]


def compressed_to_rgb(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> [H, W, 3] uint8 RGB, decoded with Pillow.

    The bytes decide the codec among JPEG and PNG (a format string naming the other one is
    tolerated); 16-bit grey PNGs keep their top 8 bits like mono16; alpha is dropped. The size in
    the file's header is checked against `max_pixels` before any pixel is decoded (a small file
    can claim a huge image: a decompression bomb).
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    _compression_of(str(msg.format))
    buf = _byte_buffer(msg.data)
    if buf.size == 0:
        raise ConversionError(f"CompressedImage ({msg.format!r}) has no data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(buf.tobytes()), formats=["JPEG", "PNG"])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"CompressedImage ({msg.format!r}, {buf.size} bytes) claims an image above any sane size "
                            f"(parameter max_image_pixels): {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConversionError(f"CompressedImage ({msg.format!r}, {buf.size} bytes) could not be decoded as jpeg or png: {exc}") from exc
    try:
        with image:
            check_image_size(image.width, image.height, max_pixels, f"CompressedImage ({msg.format!r}, {buf.size} bytes)")
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConversionError(f"CompressedImage ({msg.format!r}, {buf.size} bytes) could not be decoded as jpeg or png: {exc}") from exc


# ----------------------------------------------------------------------------------- camera info
@dataclass(frozen=True, eq=False)
class Intrinsics:
    """Pinhole intrinsics of the image as published (ROI and binning applied) plus its distortion."""

    K: np.ndarray  # [3, 3] float64
    width: int
    height: int
    distortion_model: str
    D: np.ndarray  # [n] float64

    @property
    def distorted(self) -> bool:
        return bool(np.any(self.D != 0))


def _field(msg: Any, *names: str) -> Any:
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    raise InvalidCameraInfo(f"CameraInfo has no field {' or '.join(names)}")


def camera_info_to_intrinsics(msg: Any) -> Intrinsics:
    """sensor_msgs/CameraInfo -> Intrinsics, validated; ROI and binning applied as image_geometry does."""
    K = np.asarray(_field(msg, "k", "K"), dtype=np.float64).reshape(-1)
    D = np.asarray(_field(msg, "d", "D"), dtype=np.float64).reshape(-1).copy()
    width, height = int(msg.width), int(msg.height)
    if K.size != 9:
        raise InvalidCameraInfo(f"CameraInfo K has {K.size} values, expected 9")
    K = K.reshape(3, 3).copy()
    if width <= 0 or height <= 0:
        raise InvalidCameraInfo(f"CameraInfo size is {width}x{height}: the camera is not calibrated")
    if not np.isfinite(K).all() or not np.isfinite(D).all():
        raise InvalidCameraInfo(f"CameraInfo has non-finite K or D: K={K.tolist()}, D={D.tolist()}")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise InvalidCameraInfo(f"CameraInfo focal lengths must be positive (fx={K[0, 0]}, fy={K[1, 1]}); all zeros means uncalibrated")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise InvalidCameraInfo(f"CameraInfo K last row must be [0, 0, 1], got {K[2].tolist()}")
    try:
        check_intrinsics(K, width, height, "CameraInfo")
    except ImplausibleInput as err:
        raise InvalidCameraInfo(str(err)) from None
    roi = getattr(msg, "roi", None)
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
        K[0, 2] -= int(roi.x_offset)
        K[1, 2] -= int(roi.y_offset)
        width, height = int(roi.width), int(roi.height)
    bin_x, bin_y = max(1, int(getattr(msg, "binning_x", 0))), max(1, int(getattr(msg, "binning_y", 0)))
    K[0] /= bin_x
    K[1] /= bin_y
    K[2] = (0.0, 0.0, 1.0)
    return Intrinsics(K=K, width=width // bin_x, height=height // bin_y, distortion_model=str(msg.distortion_model), D=D)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


_CV2_MODELS = {"plumb_bob": (4, 5, 8, 12, 14), "rational_polynomial": (8, 12, 14), "equidistant": (4,)}


@functools.lru_cache(maxsize=8)
def _undistort_maps(model: str, k: bytes, d: bytes, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2 remap tables, cached: computing them costs far more than applying them."""
    cv2 = _cv2()
    K = np.frombuffer(k, dtype=np.float64).reshape(3, 3)
    D = np.frombuffer(d, dtype=np.float64)
    if model == "equidistant":
        return cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K, (width, height), cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(K, D, None, K, (width, height), cv2.CV_16SC2)


def undistort(rgb: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted image and its K (the same K: pixels leaving the frame are lost, new ones black).

    Zero D passes through without OpenCV. plumb_bob, rational_polynomial and equidistant (fisheye)
    need cv2; anything else with non-zero D raises UnsupportedDistortion.
    """
    if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
        raise InvalidCameraInfo(
            f"CameraInfo is {intrinsics.width}x{intrinsics.height} but the image is {rgb.shape[1]}x{rgb.shape[0]}"
        )
    if not intrinsics.distorted:
        return rgb, intrinsics.K.copy()
    model, n = intrinsics.distortion_model, intrinsics.D.size
    supported = ", ".join(f"{m} (D of {'/'.join(map(str, sizes))})" for m, sizes in _CV2_MODELS.items())
    cv2 = _cv2()
    if model not in _CV2_MODELS or n not in _CV2_MODELS[model]:
        raise UnsupportedDistortion(
            f"distortion model {model!r} with {n} non-zero coefficients {intrinsics.D.tolist()} is not supported; "
            f"supported: {supported}, or rectified images (D all zeros)"
        )
    if cv2 is None:
        raise UnsupportedDistortion(
            f"distortion model {model!r} needs OpenCV to undistort: pip install opencv-python-headless, "
            "or publish rectified images (D all zeros)"
        )
    map1, map2 = _undistort_maps(model, intrinsics.K.tobytes(), intrinsics.D.tobytes(), intrinsics.width, intrinsics.height)
    out = cv2.remap(np.ascontiguousarray(rgb), map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out, intrinsics.K.copy()


# ------------------------------------------------------------------------------------ point clouds
POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
"""sensor_msgs/PointField datatype constants -> numpy type codes (endianness added per message)."""
FLOAT32 = 7

GAUSSIAN3D_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "rgb", "opacity", "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3", "vel_x", "vel_y", "vel_z",
)
"""PointCloud2 fields of a Gaussians3D (DESIGN.md), all float32, packed in this order."""

GAUSSIAN4D_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "t", "r", "g", "b", "scale_x", "scale_y", "scale_z", "scale_t",
    "ql_w", "ql_x", "ql_y", "ql_z", "qr_w", "qr_x", "qr_y", "qr_z", "opacity",
)
"""GaussianCloud4D channels: Gaussians4D.to_channels() order (CHANNEL_LAYOUT), one float32 each."""


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """[N, 3] colours in 0..1 -> [N] float32 whose bits are 0x00RRGGBB (PCL/RViz "rgb")."""
    c = np.rint(np.clip(np.nan_to_num(np.asarray(colors, dtype=np.float64)), 0.0, 1.0) * 255.0).astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of pack_rgb: [N] float32 (bits 0x??RRGGBB) -> [N, 3] uint8."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def gaussians3d_columns(g: Gaussians3D) -> np.ndarray:
    """[N, 15] little-endian float32 records in GAUSSIAN3D_FIELDS order (rgb column holds packed bits)."""
    if g.means.ndim != 2:
        raise ConversionError(f"need an unbatched Gaussians3D ([N, 3] means), got means of shape {tuple(g.means.shape)}")
    scales, quats = (_numpy(a) for a in g.scales_and_rotations())
    out = np.empty((len(g), len(GAUSSIAN3D_FIELDS)), dtype="<f4")
    out[:, 0:3] = _numpy(g.means)
    out.view("<u4")[:, 3] = pack_rgb(_numpy(g.colors)).view(np.uint32)  # bit copy, no float rounding
    out[:, 4] = _numpy(g.opacities)
    out[:, 5:8] = scales
    out[:, 8:12] = quats
    out[:, 12:15] = _numpy(g.velocities)
    return out


def _float32_fields(names: Sequence[str], factory: MessageFactory) -> list[Any]:
    return [factory.point_field(name, 4 * i, FLOAT32, 1) for i, name in enumerate(names)]


def gaussians_to_pointcloud2(g: Gaussians3D, frame_id: str, stamp_ns: int, factory: MessageFactory) -> Any:
    """Gaussians3D -> sensor_msgs/PointCloud2 (1 x N, fields GAUSSIAN3D_FIELDS, little-endian).

    is_dense is True only when every value is finite; non-finite Gaussians are kept, not dropped
    (filtering is the caller's decision, e.g. Gaussians3D.finite_mask()).
    """
    records = gaussians3d_columns(g)
    n, step = records.shape[0], records.shape[1] * 4
    return factory.make(
        "sensor_msgs/msg/PointCloud2",
        header=factory.header(frame_id, stamp_ns),
        height=1, width=n, fields=_float32_fields(GAUSSIAN3D_FIELDS, factory), is_bigendian=False,
        point_step=step, row_step=step * n, data=records.reshape(-1).view(np.uint8),
        is_dense=bool(np.isfinite(records).all()),
    )


def _record_dtype(fields: Iterable[Any], point_step: int, is_bigendian: bool, what: str) -> np.dtype:
    """Structured dtype of one record from PointField name/offset/datatype/count."""
    names, formats, offsets = [], [], []
    order = ">" if is_bigendian else "<"
    for f in fields:
        name, offset, datatype, count = str(f.name), int(f.offset), int(f.datatype), max(1, int(f.count))
        if int(datatype) not in POINTFIELD_DTYPES:
            raise ConversionError(f"{what}: field {name!r} has unknown datatype {datatype}")
        if name in names:
            raise ConversionError(f"{what}: field {name!r} appears twice")
        base = np.dtype(order + POINTFIELD_DTYPES[datatype])
        if offset < 0 or offset + base.itemsize * count > point_step:
            raise ConversionError(f"{what}: field {name!r} (offset {offset}, {count} x {base.itemsize} bytes) overruns point_step {point_step}")
        names.append(name)
        formats.append(base if count == 1 else np.dtype((base, (count,))))
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def _decode_records(fields: Any, point_step: int, row_step: int, rows: int, cols: int,
                    is_bigendian: bool, data: Any, what: str) -> dict[str, np.ndarray]:
    dtype = _record_dtype(fields, point_step, is_bigendian, what)
    if rows * cols == 0:
        raw = np.zeros(0, dtype=dtype)
    else:
        raw = _strided_rows(_byte_buffer(data), rows, cols * point_step, row_step, what).reshape(-1).view(dtype)
    return {name: raw[name].astype(raw.dtype[name].base.newbyteorder("=")) for name in dtype.names}


def pointcloud2_to_arrays(msg: Any, skip_nans: bool = False) -> dict[str, np.ndarray]:
    """Any sensor_msgs/PointCloud2 -> {field name: [N] or [N, count] native-endian array}, N = height * width.

    Decoded by the message's own field table (not by our encoder's layout); row padding
    (row_step) and per-point padding (point_step) are skipped; a field count of 0 reads as 1. With skip_nans, clouds that are not
    is_dense lose the points whose x, y or z is not finite.
    """
    out = _decode_records(msg.fields, int(msg.point_step), int(msg.row_step), int(msg.height), int(msg.width),
                          bool(msg.is_bigendian), msg.data, "PointCloud2")
    if skip_nans and not msg.is_dense and all(k in out for k in "xyz"):
        keep = np.isfinite(out["x"]) & np.isfinite(out["y"]) & np.isfinite(out["z"])
        out = {k: v[keep] for k, v in out.items()}
    return out


# ------------------------------------------------------------------------------- GaussianCloud4D
def gaussians4d_to_msg(g: Gaussians4D, frame_id: str, window_start_ns: int, window_end_ns: int,
                       model_id: str, factory: MessageFactory) -> Any:
    """Gaussians4D (fixed frame, t in seconds relative to the window end) -> ros2_lrm4d/GaussianCloud4D.

    header.stamp = window_end; records are to_channels() as little-endian float32 (point_step 80).
    """
    channels = np.ascontiguousarray(_numpy(g.to_channels()), dtype="<f4")
    if channels.ndim != 2 or channels.shape[1] != len(GAUSSIAN4D_FIELDS):
        raise ConversionError(f"need an unbatched Gaussians4D ([N, {len(GAUSSIAN4D_FIELDS)}] channels), got {channels.shape}")
    return factory.make(
        GAUSSIAN_CLOUD4D,
        header=factory.header(frame_id, window_end_ns),
        window_start=factory.time(window_start_ns), window_end=factory.time(window_end_ns),
        model_id=model_id, count=channels.shape[0], fields=_float32_fields(GAUSSIAN4D_FIELDS, factory),
        is_bigendian=False, point_step=4 * channels.shape[1], data=channels.reshape(-1).view(np.uint8),
    )


def gaussian_cloud4d_to_channels(msg: Any) -> np.ndarray:
    """GaussianCloud4D -> [N, 20] float32 in GAUSSIAN4D_FIELDS order, looked up by field name."""
    count, step = int(msg.count), int(msg.point_step)
    arrays = _decode_records(msg.fields, step, count * step, 1, count, bool(msg.is_bigendian), msg.data, "GaussianCloud4D")
    missing = [name for name in GAUSSIAN4D_FIELDS if name not in arrays]
    if missing:
        raise ConversionError(f"GaussianCloud4D lacks fields {missing}; has {sorted(arrays)}")
    return np.stack([arrays[name].astype(np.float32).reshape(count) for name in GAUSSIAN4D_FIELDS], axis=-1)


def gaussian_cloud4d_to_gaussians(msg: Any) -> Gaussians4D:
    """GaussianCloud4D -> Gaussians4D (float32 CPU tensors); times stay relative to header.stamp."""
    import torch

    from lrm4d_core.gaussians import Gaussians4D

    return Gaussians4D.from_channels(torch.from_numpy(gaussian_cloud4d_to_channels(msg)))


# ------------------------------------------------------------------------------ stamps, rotations
def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> int nanoseconds (exact; no float on the way)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int, factory: MessageFactory) -> Any:
    """int nanoseconds -> builtin_interfaces/Time of the factory's flavour."""
    return factory.time(ns)


def quat_xyzw_to_wxyz(q: Any) -> np.ndarray:
    """ROS order (x, y, z, w) -> core order (w, x, y, z), along the last axis."""
    return np.asarray(q)[..., [3, 0, 1, 2]]


def quat_wxyz_to_xyzw(q: Any) -> np.ndarray:
    """Core order (w, x, y, z) -> ROS order (x, y, z, w), along the last axis."""
    return np.asarray(q)[..., [1, 2, 3, 0]]


def transform_stamped_msg(f: MessageFactory, parent: str, child: str, stamp_ns: int, T: np.ndarray) -> Any:
    """geometry_msgs/TransformStamped of the 4x4 rigid transform parent <- child."""
    import torch

    from lrm4d_core.gaussians import quaternion_from_matrix

    q = quat_wxyz_to_xyzw(quaternion_from_matrix(torch.from_numpy(np.asarray(T, dtype=np.float64)[:3, :3])).numpy())
    t = np.asarray(T, dtype=np.float64)[:3, 3]
    transform = f.make(
        "geometry_msgs/msg/Transform",
        translation=f.make("geometry_msgs/msg/Vector3", x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=f.make("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )
    return f.make("geometry_msgs/msg/TransformStamped", header=f.header(parent, stamp_ns), child_frame_id=child, transform=transform)
