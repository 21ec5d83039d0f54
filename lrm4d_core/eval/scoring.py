"""Per-example scores of the evaluation: images (whole and foreground), depth, Gaussians on surfaces."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .geometry import scene_extent, surface_fraction, surface_points
from .metrics import depth_errors, masked_psnr, masked_ssim, psnr, ssim_map

__all__ = ["SURFACE_FRACTION_OF_EXTENT", "image_scores", "depth_scores", "surface_scores"]

SURFACE_FRACTION_OF_EXTENT = 0.02
"""A Gaussian is "on a surface" within this fraction of the scene extent (`geometry.scene_extent`)."""


def image_scores(pred: Tensor, ex) -> dict[str, list]:
    """PSNR and SSIM per target, and over the foreground mask where the data has masks. One SSIM
    map per image serves both (float32: the map of 8-bit images needs no more)."""
    gt = ex.target_images.double()
    smap = ssim_map(pred.float(), ex.target_images.float())
    out: dict[str, list] = {"psnr": psnr(pred.double(), gt).tolist(), "ssim": smap.flatten(-2).mean(-1).double().tolist()}
    if ex.target_masks is not None:
        out["psnr_fg"] = masked_psnr(pred.double(), gt, ex.target_masks)
        out["ssim_fg"] = masked_ssim(pred.float(), ex.target_images.float(), ex.target_masks, smap=smap)
    return out


def depth_scores(depth: Tensor, ex, held_out: list[bool]) -> dict[str, Any] | None:
    """AbsRel and delta < 1.25 of rendered z-depth at the held-out targets (None without depth maps)."""
    if ex.target_depths is None:
        return None
    idx = torch.tensor([j for j, h in enumerate(held_out) if h], dtype=torch.long)
    if len(idx) == 0:
        return None
    return depth_errors(depth[idx].double(), ex.target_depths[idx])


def _frame_points(ex, frame: int):
    """Surface points of every image (inputs and targets) of one frame, and that frame's time."""
    parts, times = [], []
    for depths, cams, frames, ts in ((ex.target_depths, ex.target_cameras, ex.target_frames, ex.target_times),
                                     (ex.input_depths, ex.cameras, ex.frames, ex.times)):
        if depths is None:
            continue
        sel = torch.nonzero(frames == frame).flatten()
        if len(sel):
            parts.append(surface_points(depths[sel], cams[sel]))
            times.append(float(ts[sel].mean()))
    import numpy as np

    return (np.concatenate(parts) if parts else np.zeros((0, 3))), (float(np.mean(times)) if times else None)


def surface_scores(clouds: dict[str, Any], ex, frames: int = 3) -> dict[str, float | None]:
    """Per method, the mean over `frames` spread target frames of the share of opacity on a true surface.

    `clouds`: {method: callable t -> world Gaussians3D (sliced with the inference filter)}.
    """
    if ex.target_depths is None:
        return {}
    all_frames = sorted(set(ex.target_frames.tolist()))
    picks = [all_frames[round(k * (len(all_frames) - 1) / max(frames - 1, 1))] for k in range(min(frames, len(all_frames)))]
    shares: dict[str, list[float]] = {m: [] for m in clouds}
    for f in dict.fromkeys(picks):
        points, t = _frame_points(ex, f)
        if t is None or len(points) == 0:
            continue
        threshold = SURFACE_FRACTION_OF_EXTENT * scene_extent(points)
        for m, slicer in clouds.items():
            share = surface_fraction(slicer(t), points, threshold)
            if share is not None:
                shares[m].append(share)
    return {m: (sum(v) / len(v) if v else None) for m, v in shares.items()}
