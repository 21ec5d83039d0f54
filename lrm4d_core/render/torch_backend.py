"""Differentiable CPU (and any-device) rasterizer with gsplat's math, in plain torch.

Projection is `projection.project` (gsplat's EWA); binning and compositing are `tiles`. The
result matches gsplat's CUDA rasterizer up to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import Cameras
from ..gaussians import Gaussians3D
from .depth_planes import depth_slopes
from .output import RenderOutput
from .projection import ALPHA_THRESHOLD, project
from .tiles import TileGrid, composite

__all__ = ["rasterize_torch"]

_ALPHA_EPS = 1e-10  # gsplat's floor when normalizing accumulated depth


def rasterize_torch(
    gaussians: Gaussians3D,
    cameras: Cameras,
    background: Tensor | None = None,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    depth_mode: str = "center",
    tile_size: int = 8,
    first_slab: int = 16384,
    first_round: int = 16,
    max_round: int = 256,
    max_block: int = 1 << 20,
) -> RenderOutput:
    """Render finite, unbatched Gaussians ([N, ...]) into every camera. See `render.rasterize`.

    depth_mode: "center" or "plane" (`render.rasterize`; `depth_planes`).
    Extra options (see `tiles.composite`): tile_size (pixels per tile edge), first_slab (splats
    binned at once, doubling), first_round / max_round (splats per tile per compositing round,
    doubling), max_block (elements evaluated at once, bounds the memory).
    """
    dtype, device = gaussians.means.dtype, gaussians.means.device
    viewmats = cameras.world_to_cam.to(device=device, dtype=dtype)
    gaussians = _in_depth_range(gaussians, viewmats, near_plane, far_plane)
    means = gaussians.means
    covars = 0.5 * (gaussians.covars + gaussians.covars.transpose(-1, -2))
    Ks = cameras.K.to(device=device, dtype=dtype)
    width, height = cameras.width, cameras.height
    proj = project(
        means, covars, viewmats, Ks, width, height,
        opacities=gaussians.opacities, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
    )
    n_cams, n = proj.depths.shape
    if depth_mode == "plane":
        slopes = depth_slopes(means, covars, viewmats, Ks, proj.covars2d)
    else:
        slopes = torch.zeros(n_cams, n, 2, dtype=dtype, device=device)
    params = torch.cat(
        [
            proj.means2d,
            proj.conics,
            gaussians.opacities[None, :, None].expand(n_cams, n, 1),
            gaussians.colors[None].expand(n_cams, n, 3),
            proj.depths[..., None],
            slopes,
        ],
        dim=-1,
    )  # [C, N, 12] in tiles.PARAMS order
    grid = TileGrid(width, height, tile_size)
    stats = {"n_visible": int(proj.visible.sum())}
    images = []
    # One camera at a time: the intersection lists are the largest transient, so this bounds them.
    for c in range(n_cams):
        accum, cam_stats = composite(params[c], proj.radii[c], grid, first_slab, first_round, max_round, max_block)
        images.append(accum)
        for key, value in cam_stats.items():
            stats[key] = stats.get(key, 0) + value
    accum = torch.stack(images)  # [C, H, W, 5]
    color, wz, alpha = accum[..., :3], accum[..., 3:4], accum[..., 4:5]
    depth = wz / alpha.clamp_min(_ALPHA_EPS)
    if background is not None:
        color = color + background.to(device=device, dtype=dtype) * (1.0 - alpha)
    return RenderOutput(color=color, alpha=alpha, depth=depth, stats=stats)


def _in_depth_range(gaussians: Gaussians3D, viewmats: Tensor, near_plane: float, far_plane: float) -> Gaussians3D:
    """The Gaussians that `projection.project` could keep for some camera: centre depth within
    (near, far) and opacity at least 1/255 (the same tests, on the centres alone). Why: an
    outward-facing camera has most of a 360-degree scene behind it, and projecting those (their 2D
    covariances, depth planes) is most of a render's cost; the others' results are unchanged."""
    depths = (gaussians.means[None] * viewmats[:, None, 2, :3]).sum(-1) + viewmats[:, None, 2, 3]  # [C, N]
    # a little slack, so that rounding here never drops one that `project` would keep
    in_range = (depths > 0.999 * near_plane) & (depths < 1.001 * far_plane)
    keep = in_range.any(0) & (gaussians.opacities >= ALPHA_THRESHOLD)
    return gaussians if bool(keep.all()) else gaussians.select(keep.nonzero()[:, 0])
