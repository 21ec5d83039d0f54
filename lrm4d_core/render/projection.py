"""EWA projection of 3D Gaussians to image-space 2D Gaussians, with gsplat's exact math.

This is the pinhole path of gsplat 1.5.3 (`fully_fused_projection`): world -> camera by the view
matrix, the Jacobian of the perspective map evaluated at a position whose x/y are clamped to a
little beyond the field of view (so Gaussians far outside the image do not blow up), a 2D blur
`eps2d * I`, and the conic (inverse 2D covariance). The oracle in tests is gsplat's pure-torch
`gsplat.cuda._torch_impl._fully_fused_projection`; radii follow the CUDA kernel, whose extent
depends on opacity when opacities are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ALPHA_THRESHOLD", "Projection", "project"]

ALPHA_THRESHOLD = 1.0 / 255.0
"""Smallest alpha that is composited (gsplat's ALPHA_THRESHOLD)."""

_MAX_EXTENT = 3.33  # gsplat's radius in standard deviations without opacity information
_MAX_RADIUS = 2.0**30  # pixels; keeps radii representable as int32


@dataclass(frozen=True)
class Projection:
    """Per (camera, Gaussian) 2D splats. C cameras, N Gaussians.

    Attributes:
        means2d: [C, N, 2] pixel coordinates of the projected centre (pixel centres at +0.5).
        conics: [C, N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]].
        depths: [C, N] camera-space z.
        radii: [C, N, 2] int32 half extents (x, y) in pixels of the screen bounding box; 0 = culled.
        covars2d: [C, N, 2, 2] 2D covariances including the eps2d blur.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    covars2d: Tensor

    @property
    def visible(self) -> Tensor:
        """[C, N] bool: the splat touches the image and is composited."""
        return (self.radii > 0).all(-1)


def project(
    means: Tensor,
    covars: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    opacities: Tensor | None = None,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> Projection:
    """Project N world-space Gaussians into C pinhole cameras (OpenCV convention).

    Args:
        means: [N, 3] world-space centres.
        covars: [N, 3, 3] world-space covariances (used as given; symmetrize beforehand).
        viewmats: [C, 4, 4] world-to-camera transforms.
        Ks: [C, 3, 3] intrinsics.
        width, height: image size in pixels.
        opacities: [N] or None. With opacities, the radius uses gsplat CUDA's tighter extent
            min(3.33, sqrt(2 ln(255 o))) and Gaussians with o < 1/255 are culled; without, the
            extent is 3.33 (gsplat's pure-torch reference).
        eps2d: blur added to the 2D covariance diagonal.
        near_plane, far_plane: splats with depth outside (near, far) are culled.

    Returns:
        `Projection`; differentiable in means2d, conics, depths and covars2d. Culled splats have
        radii 0; their other fields are finite but unspecified (those outside (near, far) are
        projected as if at depth 1). near_plane must be > 0.
    """
    rot = viewmats[:, None, :3, :3]  # [C, 1, 3, 3]
    trans = viewmats[:, None, :3, 3]  # [C, 1, 3]
    means_c = (rot @ means[None, :, :, None])[..., 0] + trans  # [C, N, 3]
    covars_c = rot @ covars[None] @ rot.transpose(-1, -2)  # [C, N, 3, 3]

    tx, ty, depths = means_c.unbind(-1)
    # Splats outside (near, far) are culled; they are projected at depth 1 instead so that nothing
    # divides by ~0 and their (zero) gradients stay finite.
    in_depth = (depths > near_plane) & (depths < far_plane)
    tz = torch.where(in_depth, depths, torch.ones_like(depths))
    fx = Ks[:, 0, 0, None]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    # The Jacobian is evaluated at the clamped position; the mean itself is projected unclamped.
    txc = tz * torch.maximum(torch.minimum(tx / tz, lim_x_pos), -lim_x_neg)
    tyc = tz * torch.maximum(torch.minimum(ty / tz, lim_y_pos), -lim_y_neg)
    zero = torch.zeros_like(tz)
    jac = torch.stack(
        [fx / tz, zero, -fx * txc / tz**2, zero, fy / tz, -fy * tyc / tz**2], dim=-1
    ).reshape(*tz.shape, 2, 3)
    covars2d = jac @ covars_c @ jac.transpose(-1, -2)
    covars2d = covars2d + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)

    means2d = (Ks[:, None, :2, :3] @ means_c[..., None])[..., 0] / tz[..., None]  # [C, N, 2]

    s_xx, s_xy, s_yx, s_yy = covars2d.flatten(-2).unbind(-1)
    det = s_xx * s_yy - s_xy * s_yx
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([s_yy / det_safe, -0.5 * (s_xy + s_yx) / det_safe, s_xx / det_safe], dim=-1)

    with torch.no_grad():
        valid = in_depth & (det > 0) & (s_xx > 0) & (s_yy > 0)
        if opacities is None:
            extent = torch.full_like(tz, _MAX_EXTENT)
        else:
            opa = opacities.detach()[None].expand_as(tz)
            valid &= opa >= ALPHA_THRESHOLD
            extent = torch.sqrt(2.0 * torch.log(opa.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
            extent = extent.clamp_max(_MAX_EXTENT)
        # Clamped so that absurd footprints (a Gaussian grazing the near plane) stay valid int32.
        rx = torch.ceil(extent * s_xx.detach().clamp_min(0).sqrt()).clamp_max(_MAX_RADIUS)
        ry = torch.ceil(extent * s_yy.detach().clamp_min(0).sqrt()).clamp_max(_MAX_RADIUS)
        mx, my = means2d.detach().unbind(-1)
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid &= torch.isfinite(rx) & torch.isfinite(ry) & torch.isfinite(mx) & torch.isfinite(my)
        radii = torch.stack([rx, ry], dim=-1)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=depths, radii=radii, covars2d=covars2d)

