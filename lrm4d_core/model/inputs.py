"""The per-pixel model input (SPEC §2): 10 channels per pixel of every input view.

Channel order (fixed; no pretrained weights exist, so we choose it and keep it):

    0:3   rgb          image in [0, 1] mapped to [-1, 1] (2 * rgb - 1)
    3:6   ray_d        unit world-space (model-box) direction through the pixel centre
    6:9   ray_nearest  o - <o, d> d: the point of the ray nearest the origin
    9     t            normalized time of the view, in [-1, 1] over the window

Rays go through pixel centres (u + 0.5, v + 0.5) of the cameras given to the model, which are
already in the model box (`SceneNormalization.cameras_to_model`). They are computed in the
cameras' dtype (float64 on the CPU side) and cast to the images' dtype afterwards.

Camera batching: a batch element holds V cameras of one image size. Cameras are passed either as
one `Cameras` of B*V entries, element b's views at b*V .. b*V+V-1, or as a list of B `Cameras`
of V entries each.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from lrm4d_core.cameras import Cameras, pixel_rays, plucker

__all__ = ["INPUT_LAYOUT", "ModelInputs", "flatten_cameras", "build_inputs"]

INPUT_LAYOUT: tuple[tuple[str, int], ...] = (("rgb", 3), ("ray_d", 3), ("ray_nearest", 3), ("t", 1))


class ModelInputs(NamedTuple):
    """Everything the network consumes and the heads need.

    Attributes:
        features: [B, V, 10, H, W] (channels first) or [B, V, H, W, 10] (channels_last=True).
        ray_origins: [B, V, H, W, 3] camera centres per pixel (model box).
        ray_directions: [B, V, H, W, 3] unit ray directions per pixel.
    """

    features: Tensor
    ray_origins: Tensor
    ray_directions: Tensor


def flatten_cameras(cameras: Cameras | Sequence[Cameras], batch: int, views: int) -> Cameras:
    """One `Cameras` of B*V entries (b-major) from either accepted form; checks the count."""
    if not isinstance(cameras, Cameras):
        cameras = list(cameras)
        if len(cameras) != batch:
            raise ValueError(f"got {len(cameras)} camera batches for {batch} batch elements")
        if any(len(c) != views for c in cameras):
            raise ValueError(f"each batch element needs {views} cameras, got {[len(c) for c in cameras]}")
        cameras = Cameras.cat(cameras)
    if len(cameras) != batch * views:
        raise ValueError(f"need {batch}*{views} = {batch * views} cameras, got {len(cameras)}")
    return cameras


def build_inputs(
    images: Tensor,
    cameras: Cameras | Sequence[Cameras],
    times: Tensor,
    channels_last: bool = False,
) -> ModelInputs:
    """Assemble the 10-channel input.

    Args:
        images: [B, V, 3, H, W] in [0, 1], float.
        cameras: B*V cameras (see module docstring) in the model box, image size W x H.
        times: [B, V] normalized time of each view (model time, [-1, 1]).
        channels_last: return features as [B, V, H, W, 10] instead of [B, V, 10, H, W].
    """
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"images must be [B, V, 3, H, W], got {tuple(images.shape)}")
    B, V, _, H, W = images.shape
    cams = flatten_cameras(cameras, B, V)
    if (cams.height, cams.width) != (H, W):
        raise ValueError(f"cameras are for {cams.width}x{cams.height} images, images are {W}x{H}")
    times = torch.as_tensor(times, device=images.device)
    if times.shape != (B, V):
        raise ValueError(f"times must be [B, V] = [{B}, {V}], got {tuple(times.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    dtype = images.dtype
    origins, directions = pixel_rays(cams.to(device=images.device))  # [B*V, H, W, 3] in camera dtype
    rays = plucker(origins, directions).to(dtype)  # [B*V, H, W, 6]
    rgb = images.permute(0, 1, 3, 4, 2) * 2 - 1  # [B, V, H, W, 3]
    t = times.to(dtype)[:, :, None, None, None].expand(B, V, H, W, 1)
    features = torch.cat([rgb, rays.reshape(B, V, H, W, 6), t], dim=-1)
    if not channels_last:
        features = features.permute(0, 1, 4, 2, 3)
    return ModelInputs(
        features,
        origins.to(dtype).reshape(B, V, H, W, 3),
        directions.to(dtype).reshape(B, V, H, W, 3),
    )
