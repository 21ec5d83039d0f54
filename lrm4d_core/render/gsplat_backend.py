"""gsplat (CUDA) backend: the same conventions as the torch backend, through gsplat.rasterization.

gsplat is imported lazily so that the core imports without it; it needs CUDA tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import Cameras
from ..gaussians import Gaussians3D
from .output import RenderOutput

__all__ = ["rasterize_gsplat", "gsplat_available"]


def gsplat_available() -> bool:
    """True when gsplat imports (its CUDA kernels are only built/loaded at first use)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA extension raising at import
        return False
    return True


def rasterize_gsplat(
    gaussians: Gaussians3D,
    cameras: Cameras,
    background: Tensor | None = None,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    depth_mode: str = "center",
    tile_size: int = 16,
    packed: bool = False,
) -> RenderOutput:
    """Render finite, unbatched Gaussians ([N, ...]) with gsplat. See `render.rasterize`.

    gsplat computes in float32; outputs are cast back to the Gaussians' dtype. With depth_mode
    "plane", gsplat composites each splat's depth slopes and their offset at its centre as three
    more colour channels (our projection, parity-tested against gsplat's, gives the centres), and
    the planes are evaluated per pixel from those sums, as the torch backend does per tile.
    """
    import gsplat

    dtype, device = gaussians.means.dtype, gaussians.means.device
    f32 = torch.float32
    covars = gaussians.covars.to(f32)
    covars = 0.5 * (covars + covars.transpose(-1, -2))  # gsplat reads only the upper triangle
    n_cams = len(cameras)
    backgrounds = None
    if background is not None:
        backgrounds = background.to(device=device, dtype=f32).reshape(1, 3).expand(n_cams, 3)
    means, viewmats = gaussians.means.to(f32), cameras.world_to_cam.to(device=device, dtype=f32)
    Ks = cameras.K.to(device=device, dtype=f32)
    colors = gaussians.colors.to(f32)
    if depth_mode == "plane":
        from .depth_planes import depth_slopes
        from .projection import project

        proj = project(means, covars, viewmats, Ks, cameras.width, cameras.height, eps2d=eps2d,
                       near_plane=near_plane, far_plane=far_plane)
        slopes = depth_slopes(means, covars, viewmats, Ks, proj.covars2d)  # [C, N, 2]
        at_centre = (slopes * proj.means2d).sum(-1, keepdim=True)
        colors = torch.cat([colors.expand(n_cams, *colors.shape), slopes, at_centre], dim=-1)  # [C, N, 6]
        backgrounds_plain, backgrounds = backgrounds, None  # composited below, over RGB only
    render, alpha, meta = gsplat.rasterization(
        means=means,
        quats=None,
        scales=None,
        opacities=gaussians.opacities.to(f32),
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=cameras.width,
        height=cameras.height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        packed=packed,
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        rasterize_mode="classic",
        covars=covars,
    )
    # render: [C, H, W, 4] = RGB (background composited) + expected depth (already / alpha), with
    # the plane channels before the depth in "plane" mode; alpha: [C, H, W, 1].
    if depth_mode == "plane":
        u = torch.arange(cameras.width, device=device, dtype=f32) + 0.5
        v = torch.arange(cameras.height, device=device, dtype=f32)[:, None] + 0.5
        offset = u * render[..., 3] + v * render[..., 4] - render[..., 5]  # sum w slope . (p - centre)
        depth = render[..., 6:7] + offset[..., None] / alpha.clamp_min(1e-10)
        color = render[..., :3] if backgrounds_plain is None else render[..., :3] + backgrounds_plain[:, None, None] * (1 - alpha)
        render = torch.cat([color, depth], dim=-1)
    stats = {
        "n_visible": int((meta["radii"] > 0).all(-1).sum()),
        "n_intersections": int(meta["flatten_ids"].numel()),
    }
    return RenderOutput(
        color=render[..., :3].to(dtype),
        alpha=alpha.to(dtype),
        depth=render[..., 3:4].to(dtype),
        stats=stats,
    )
