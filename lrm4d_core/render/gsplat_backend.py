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
    tile_size: int = 16,
    packed: bool = False,
) -> RenderOutput:
    """Render finite, unbatched Gaussians ([N, ...]) with gsplat. See `render.rasterize`.

    gsplat computes in float32; outputs are cast back to the Gaussians' dtype.
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
    render, alpha, meta = gsplat.rasterization(
        means=gaussians.means.to(f32),
        quats=None,
        scales=None,
        opacities=gaussians.opacities.to(f32),
        colors=gaussians.colors.to(f32),
        viewmats=cameras.world_to_cam.to(device=device, dtype=f32),
        Ks=cameras.K.to(device=device, dtype=f32),
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
    # render: [C, H, W, 4] = RGB (background composited) + expected depth (already / alpha);
    # alpha: [C, H, W, 1].
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
