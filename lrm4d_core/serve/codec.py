"""Wire format of `lrm4d serve` (lrm4d.proto) <-> core objects, shared by the server and the client.

- Images: RAW_RGB8 (lossless, largest), PNG (lossless, slower to encode), JPEG (lossy, smallest).
  `decode_image` checks the declared size against the data before decoding the pixels, so a small
  message cannot claim a huge image.
- Gaussians: the model-box `Gaussians4D.to_channels()` [N, 20] as little-endian float16. float16
  keeps ~3 significant digits (relative error <= 2^-11); model-box coordinates are O(1), so a
  mean is off by at most ~5e-4 model units (5 mm at 10 m per model unit).
- Normalizations travel as plain doubles, so the client gets exactly the ones the server used.

Everything here raises `WireError` (a ValueError) with a message fit to return to the caller.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

from . import lrm4d_pb2 as pb

__all__ = [
    "WireError",
    "ENCODINGS",
    "CHANNELS",
    "encode_image",
    "decode_image",
    "pack_gaussians",
    "unpack_gaussians",
    "scene_to_proto",
    "scene_from_proto",
    "time_to_proto",
    "time_from_proto",
    "view_arrays",
]

CHANNELS = 20
"""Float channels per Gaussian (`lrm4d_core.gaussians.CHANNEL_LAYOUT`)."""

ENCODINGS = {"raw": pb.Image.RAW_RGB8, "jpeg": pb.Image.JPEG, "png": pb.Image.PNG}
_MAX_SIDE = 16384  # pixels; anything larger is a malformed request, not a camera


class WireError(ValueError):
    """A message that does not follow lrm4d.proto; the text says what is wrong."""


# ---------------------------------------------------------------------------------------------- images
def encode_image(image: np.ndarray, encoding: str = "raw", jpeg_quality: int = 90) -> pb.Image:
    """uint8 HxWx3 RGB -> Image message."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise WireError(f"images must be uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if encoding == "raw":
        data = np.ascontiguousarray(image).tobytes()
    elif encoding in ("jpeg", "png"):
        from PIL import Image as PILImage

        buf = io.BytesIO()
        pil = PILImage.fromarray(np.ascontiguousarray(image), mode="RGB")
        if encoding == "jpeg":
            pil.save(buf, format="JPEG", quality=int(jpeg_quality))
        else:
            pil.save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
    else:
        raise WireError(f"image encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    return pb.Image(data=data, encoding=ENCODINGS[encoding], width=w, height=h)


def decode_image(msg: pb.Image) -> np.ndarray:
    """Image message -> uint8 HxWx3 RGB, checked against its declared width and height."""
    w, h = int(msg.width), int(msg.height)
    if not (0 < w <= _MAX_SIDE and 0 < h <= _MAX_SIDE):
        raise WireError(f"image size {w}x{h} is out of range (1..{_MAX_SIDE} pixels a side)")
    if msg.encoding == pb.Image.RAW_RGB8:
        if len(msg.data) != w * h * 3:
            raise WireError(f"RAW_RGB8 image of {w}x{h} needs {w * h * 3} bytes, got {len(msg.data)}")
        return np.frombuffer(msg.data, dtype=np.uint8).reshape(h, w, 3)
    if msg.encoding in (pb.Image.JPEG, pb.Image.PNG):
        from PIL import Image as PILImage

        name = pb.Image.Encoding.Name(msg.encoding)
        try:
            pil = PILImage.open(io.BytesIO(msg.data))
            if pil.size != (w, h):  # header only: nothing decoded yet
                raise WireError(f"{name} image is {pil.size[0]}x{pil.size[1]} but the message says {w}x{h}")
            expected = "JPEG" if msg.encoding == pb.Image.JPEG else "PNG"
            if pil.format != expected:
                raise WireError(f"image declared {name} holds {pil.format} data")
            return np.asarray(pil.convert("RGB"))
        except WireError:
            raise
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds for corrupt data
            raise WireError(f"cannot decode {name} image: {type(err).__name__}: {err}") from err
    raise WireError(f"unknown image encoding {msg.encoding}")


# ---------------------------------------------------------------------------------------------- views
def view_arrays(views: Sequence[pb.View], max_image_pixels: int | None = None,
                max_request_pixels: int | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Views -> (images, K [V, 3, 3], cam_to_world [V, 4, 4], times [V]) as float64, validated.

    Every view's declared size is checked against `max_image_pixels`, and their sum against
    `max_request_pixels`, before any image is decoded (a few hundred kB of PNG can claim gigabytes
    of pixels); poses must be rigid transforms within reach and intrinsics plausible
    (`lrm4d_core.validate`)."""
    from lrm4d_core.validate import ImplausibleInput, check_intrinsics, check_pixels, check_pose

    if not views:
        raise WireError("a request needs at least one view")
    size = None
    total = 0
    for i, v in enumerate(views):  # everything but the pixels first
        if len(v.K) != 9 or len(v.cam_to_world) != 16:
            raise WireError(f"view {i}: K needs 9 values and cam_to_world 16, got {len(v.K)} and {len(v.cam_to_world)}")
        this = (int(v.image.width), int(v.image.height))
        if size is None:
            size = this
        elif this != size:
            raise WireError(f"all views of a request must share one image size: view 0 is {size[0]}x{size[1]}, "
                            f"view {i} is {this[0]}x{this[1]}")
        if not math.isfinite(v.time_s):
            raise WireError(f"view {i}: time_s must be finite")
        try:
            check_pixels(*this, max_image_pixels, f"view {i}: image", setting="the server's --max-image-mp")
            check_pose(np.asarray(v.cam_to_world, dtype=np.float64).reshape(4, 4), f"view {i}: cam_to_world")
            check_intrinsics(np.asarray(v.K, dtype=np.float64).reshape(3, 3), *this, f"view {i}: K")
        except ImplausibleInput as err:
            raise WireError(str(err)) from None
        total += this[0] * this[1]
    if max_request_pixels is not None and total > max_request_pixels:
        raise WireError(f"the request's {len(views)} images hold {total / 1e6:.1f} MP, above the limit of "
                        f"{max_request_pixels / 1e6:.1f} MP per request (the server's --max-request-mp)")
    images = []
    for i, v in enumerate(views):
        try:
            images.append(decode_image(v.image))
        except WireError as err:
            raise WireError(f"view {i}: {err}") from err
    K = np.stack([np.asarray(v.K, dtype=np.float64).reshape(3, 3) for v in views])
    poses = np.stack([np.asarray(v.cam_to_world, dtype=np.float64).reshape(4, 4) for v in views])
    return images, K, poses, np.asarray([float(v.time_s) for v in views], dtype=np.float64)


# ---------------------------------------------------------------------------------------------- gaussians
def pack_gaussians(channels: np.ndarray) -> bytes:
    """[N, 20] float -> little-endian float16 bytes. Values beyond float16's range (65504) are
    clipped to it rather than becoming inf."""
    channels = np.asarray(channels)
    if channels.ndim != 2 or channels.shape[1] != CHANNELS:
        raise WireError(f"gaussians must be [N, {CHANNELS}], got {channels.shape}")
    if channels.dtype == np.float16:  # already converted (the engine clamps on the device)
        return channels.astype("<f2", copy=False).tobytes()
    limit = float(np.finfo(np.float16).max)
    return np.clip(channels, -limit, limit).astype("<f2").tobytes()


def unpack_gaussians(data: bytes, count: int) -> np.ndarray:
    """Little-endian float16 bytes -> [count, 20] float32."""
    if len(data) != count * CHANNELS * 2:
        raise WireError(f"{count} Gaussians need {count * CHANNELS * 2} bytes of float16, got {len(data)}")
    return np.frombuffer(data, dtype="<f2").reshape(count, CHANNELS).astype(np.float32)


# ---------------------------------------------------------------------------------------------- normalizations
def scene_to_proto(scene) -> pb.SceneNormalization:  # noqa: ANN001 - cameras.SceneNormalization
    c = [float(x) for x in scene.center.detach().cpu().double().reshape(3)]
    return pb.SceneNormalization(center_x=c[0], center_y=c[1], center_z=c[2], scale=float(scene.scale))


def scene_from_proto(msg: pb.SceneNormalization):  # noqa: ANN201
    import torch

    from lrm4d_core.cameras import SceneNormalization

    values = (msg.center_x, msg.center_y, msg.center_z, msg.scale)
    if not all(math.isfinite(v) for v in values) or not msg.scale > 0:
        raise WireError(f"scene normalization needs a finite centre and a scale > 0, got {values}")
    return SceneNormalization(torch.tensor(values[:3], dtype=torch.float64), float(msg.scale))


def time_to_proto(time) -> pb.TimeNormalization:  # noqa: ANN001 - cameras.TimeNormalization
    return pb.TimeNormalization(center=float(time.center), half_span=float(time.half_span))


def time_from_proto(msg: pb.TimeNormalization):  # noqa: ANN201
    from lrm4d_core.cameras import TimeNormalization

    if not (math.isfinite(msg.center) and math.isfinite(msg.half_span) and msg.half_span > 0):
        raise WireError(f"time normalization needs a finite centre and half_span > 0, got {msg.center}, {msg.half_span}")
    return TimeNormalization(float(msg.center), float(msg.half_span))
