"""Rasterize 3D Gaussians into camera images: one entry point, two backends.

- "torch": our differentiable renderer in plain torch (CPU or any device), gsplat's math.
- "gsplat": gsplat 1.5's CUDA rasterizer (needs CUDA tensors and gsplat installed).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..cameras import Cameras
from ..gaussians import Gaussians3D
from .gsplat_backend import gsplat_available, rasterize_gsplat
from .output import RenderOutput
from .torch_backend import rasterize_torch

__all__ = ["RenderOutput", "rasterize", "rasterize_torch", "rasterize_gsplat", "gsplat_available"]

Backend = Literal["auto", "torch", "gsplat"]
DepthMode = Literal["center", "plane"]


def rasterize(
    gaussians: Gaussians3D,
    cameras: Cameras,
    background: Tensor | None = None,
    backend: Backend = "auto",
    depth_mode: DepthMode = "center",
    **options,
) -> RenderOutput:
    """Render unbatched 3D Gaussians into C pinhole cameras (gsplat's "classic" 3DGS rasterizer).

    Conventions:
        - Cameras are OpenCV (x right, y down, z forward); `cameras.K` maps camera coordinates
          to pixels, and pixel (u, v) has its centre at (u + 0.5, v + 0.5).
        - Projection is EWA splatting with gsplat's clamped Jacobian; a blur eps2d * I (0.3) is
          added to every 2D covariance.
        - Per pixel, splats are composited front to back by camera-space depth z:
          sigma = 0.5 d^T Sigma2d^-1 d, alpha = min(0.999, opacity * exp(-sigma)); splats with
          alpha < 1/255 are skipped; a pixel stops before the splat that would bring its
          transmittance to <= 1e-4. color = sum_i c_i alpha_i T_i + background * (1 - alpha).
        - Gaussians with a non-finite parameter are dropped (and counted, never propagated,
          also not into the gradients of the others); Gaussians with depth <= near_plane or
          >= far_plane, opacity < 1/255 or a footprint outside the image are culled.

    Args:
        gaussians: `Gaussians3D` with means [N, 3], covars [N, 3, 3] (symmetrized here),
            opacities [N], colors [N, 3]; velocities are ignored.
        cameras: `Cameras` with K [C, 3, 3], cam_to_world [C, 4, 4], width W, height H.
        background: [3] colour behind the Gaussians, or None for black.
        backend: "torch", "gsplat", or "auto" (gsplat when the Gaussians are on CUDA and
            gsplat imports, else torch).
        depth_mode: the depth a splat gives each pixel it covers. "center": its centre's z
            (gsplat's expected depth). "plane": its depth plane, where the pixel's ray passes
            nearest its centre, linearised at the centre pixel and limited for splats seen edge-on
            (`depth_planes`); right across a wide flat disc seen obliquely, where "center" is not.
            Colour and alpha do not depend on it.
        **options: near_plane (0.01), far_plane (1e10), eps2d (0.3), tile_size (torch 8,
            gsplat 16; results do not depend on it), and backend-specific ones (torch:
            first_slab, first_round, max_round, max_block, see `tiles.composite`; gsplat: packed).

    Returns:
        `RenderOutput` with color [C, H, W, 3], alpha [C, H, W, 1], depth [C, H, W, 1] (expected
        depth sum(w z) / alpha, z per `depth_mode`, 0 where nothing renders), all in the Gaussians' dtype and device,
        and stats (python ints: dropped_nonfinite, n_visible, n_intersections; torch backend also
        n_slabs, n_rounds, n_evaluated).
    """
    if gaussians.means.ndim != 2:
        raise ValueError(f"rasterize() takes an unbatched cloud ([N, 3] means), got {tuple(gaussians.means.shape)}")
    if background is not None and background.shape != (3,):
        raise ValueError(f"background must be [3], got {tuple(background.shape)}")
    if not options.get("near_plane", 0.01) > 0:
        raise ValueError("near_plane must be > 0")
    if backend == "auto":
        backend = "gsplat" if gaussians.means.is_cuda and gsplat_available() else "torch"
    if backend not in ("torch", "gsplat"):
        raise ValueError(f"unknown backend {backend!r}")
    if depth_mode not in ("center", "plane"):
        raise ValueError(f"unknown depth_mode {depth_mode!r}")

    finite = gaussians.finite_mask()
    n_dropped = int((~finite).sum())
    clean = gaussians.select(finite) if n_dropped else gaussians
    if len(clean) == 0:
        out = _empty(clean, cameras, background)
    elif backend == "gsplat":
        out = rasterize_gsplat(clean, cameras, background, depth_mode=depth_mode, **options)
    else:
        out = rasterize_torch(clean, cameras, background, depth_mode=depth_mode, **options)
    out.stats["dropped_nonfinite"] = n_dropped
    return out


def _empty(gaussians: Gaussians3D, cameras: Cameras, background: Tensor | None) -> RenderOutput:
    """Background only. Stays connected to the (empty) inputs so that backward() still works."""
    dtype, device = gaussians.means.dtype, gaussians.means.device
    shape = (len(cameras), cameras.height, cameras.width)
    zero = sum(t.sum() for t in (gaussians.means, gaussians.covars, gaussians.opacities, gaussians.colors)) * 0.0
    color = torch.zeros(*shape, 3, dtype=dtype, device=device) + zero
    if background is not None:
        color = color + background.to(device=device, dtype=dtype)
    alpha = torch.zeros(*shape, 1, dtype=dtype, device=device) + zero
    depth = torch.zeros(*shape, 1, dtype=dtype, device=device) + zero
    return RenderOutput(color=color, alpha=alpha, depth=depth, stats={"n_visible": 0, "n_intersections": 0})
