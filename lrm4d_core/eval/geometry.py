"""Where the Gaussians are: the share of their opacity that lies on a true surface.

A reconstruction that renders a plausible picture from fog can still be useless to a robot: a
planner or a forecaster reads Gaussian positions. `surface_fraction` back-projects the dataset's
depth maps of every image at a time into surface points and measures, for Gaussians sliced at that
time, how much of their (time-weighted) opacity lies within a distance of one of those points. The
same function serves the evaluation (threshold 2% of the scene extent) and the bag checks (5 cm).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lrm4d_core.cameras import Cameras
from lrm4d_core.gaussians import Gaussians3D

__all__ = ["surface_points", "scene_extent", "surface_fraction"]


def surface_points(depths: Tensor, cameras: Cameras) -> np.ndarray:
    """World points [N, 3] of every pixel with finite z-depth in `depths` [V, H, W] (pixel centres)."""
    V, H, W = depths.shape
    K = cameras.K.double()
    c2w = cameras.cam_to_world.double()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    out = []
    for i in range(V):
        z = depths[i].double()
        ok = torch.isfinite(z) & (z > 0)
        x = (u[ok] - K[i, 0, 2] - K[i, 0, 1] * (v[ok] - K[i, 1, 2]) / K[i, 1, 1]) / K[i, 0, 0] * z[ok]
        y = (v[ok] - K[i, 1, 2]) / K[i, 1, 1] * z[ok]
        cam = torch.stack([x, y, z[ok]], -1)
        out.append((cam @ c2w[i, :3, :3].T + c2w[i, :3, 3]).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3))


def scene_extent(points: np.ndarray) -> float:
    """Diagonal of the 2nd-98th percentile box of the surface points (robust to a few far hits)."""
    if len(points) == 0:
        return float("nan")
    lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
    return float(np.linalg.norm(hi - lo))


def surface_fraction(cloud: Gaussians3D, points: np.ndarray, threshold: float, max_gaussians: int = 20000,
                     seed: int = 0) -> float | None:
    """Share of the cloud's opacity within `threshold` of the nearest surface point (None when the
    cloud has no opacity or there are no points). Above `max_gaussians`, Gaussians are drawn with
    probability proportional to opacity and counted equally (an unbiased estimate of the same share)."""
    from scipy.spatial import cKDTree

    means = cloud.means.detach().double().cpu().numpy()
    weights = cloud.opacities.detach().double().cpu().numpy()
    finite = np.isfinite(means).all(-1) & np.isfinite(weights) & (weights > 0)
    means, weights = means[finite], weights[finite]
    if len(points) == 0 or weights.sum() <= 0:
        return None
    if len(means) > max_gaussians:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(means), size=max_gaussians, replace=True, p=weights / weights.sum())
        means, weights = means[pick], np.ones(max_gaussians)
    dist, _ = cKDTree(points).query(means, k=1)
    return float(weights[dist <= threshold].sum() / weights.sum())
