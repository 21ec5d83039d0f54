"""Each splat's depth as a plane over the image: where a pixel's ray passes nearest its centre.

Why: a splat rasterizer gives every pixel a splat covers the depth of the splat's centre. For a
small round splat that is right. A flat disc on the road seen from a camera a metre away covers a
wide patch of the image, and there the rendered depth is the centre's everywhere: rendered
driving views put the near road at a half to a third of its distance
(docs/default_model/experiments.md, "Depth planes in renders"). Along the ray r of a pixel (camera coordinates, r_z = 1) the Gaussian's density
is greatest at depth t(r) = (r^T A mu) / (r^T A r), A = Sigma^-1 (for a flat disc: where the ray
meets its plane). `depth_slopes` linearises t at the centre pixel, where t = mu_z:

    dt/dr = -mu_z A r_c / (r_c^T A r_c),   r_c = mu / mu_z,

and divides by the focal lengths to get depth per pixel. The rasterizer composites
depth + slope . (pixel - centre) with the compositing weights (RaDe-GS renders depth the same
way). Slopes are limited so that across +-3 standard deviations of the splat's footprint the depth
changes by at most `limit` times the centre depth: a splat seen edge-on, whose plane runs along the
rays, would otherwise give absurd depths.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DEPTH_PLANE_LIMIT", "depth_slopes"]

DEPTH_PLANE_LIMIT = 1.0
"""Largest depth change across a splat's +-3 sigma footprint, as a share of its centre depth (so
the plane stays at or above 0 there)."""


def depth_slopes(means: Tensor, covars: Tensor, viewmats: Tensor, Ks: Tensor, covars2d: Tensor,
                 limit: float = DEPTH_PLANE_LIMIT) -> Tensor:
    """[C, N, 2] (d depth / du, d depth / dv) at each splat's centre pixel, limited as the module says.

    Args:
        means: [N, 3] world-space centres; covars: [N, 3, 3] symmetric world-space covariances.
        viewmats: [C, 4, 4] world-to-camera; Ks: [C, 3, 3] intrinsics (OpenCV).
        covars2d: [C, N, 2, 2] the splats' image covariances (`projection.project`), for the limit.
    Computed in float64 (a flat disc's covariance is nearly singular), returned in means' dtype;
    differentiable. Splats behind the camera get finite, unspecified slopes (they are culled).
    """
    f64 = torch.float64
    rot = viewmats[:, None, :3, :3].to(f64)
    mu = (rot @ means.to(f64)[None, :, :, None])[..., 0] + viewmats[:, None, :3, 3].to(f64)  # [C, N, 3]
    sigma = rot @ covars.to(f64)[None] @ rot.transpose(-1, -2)
    # A relative ridge keeps a flat disc's (rank-2) covariance invertible without tilting its plane.
    ridge = 1e-9 * sigma.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-30)
    sigma = sigma + ridge[..., None, None] * torch.eye(3, dtype=f64, device=means.device)
    depth = mu[..., 2:3]
    ray = mu / torch.where(depth.abs() > 1e-12, depth, torch.ones_like(depth))
    a_ray = torch.linalg.solve(sigma, ray[..., None])[..., 0]
    grad = -depth * a_ray / (ray * a_ray).sum(-1, keepdim=True).clamp_min(1e-300)  # d depth / d ray
    focal = torch.stack([Ks[:, 0, 0], Ks[:, 1, 1]], -1).to(f64)[:, None]  # [C, 1, 2]
    slopes = grad[..., :2] / focal
    extent = 3.0 * covars2d.diagonal(dim1=-2, dim2=-1).to(f64).clamp_min(0).sqrt()  # [C, N, 2] pixels
    change = (slopes.abs() * extent).sum(-1)
    allowed = limit * depth[..., 0].abs()
    scale = torch.where(change > allowed, allowed / change.clamp_min(1e-300), torch.ones_like(change))
    return (slopes * scale[..., None]).to(means.dtype)
