"""Training losses besides the photometric one: geometry, opacity and motion of the input pixels.

Synthetic data (and RGB-D or LiDAR-equipped recordings) comes with exact depth, masks and scene
flow for every input image: the supervision the leading driving models get from LiDAR (SPEC §6).
Each pixel-aligned Gaussian ``v*H*W + y*W + x`` belongs to pixel (x, y) of input view v, so its
prediction is compared with that pixel's value. Every loss is 0 (with a graph) when no pixel
qualifies, so a batch without such data still trains.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras
from lrm4d_core.environment import Environment, composite
from lrm4d_core.gaussians import Gaussians4D
from lrm4d_core.model.view_weight import VIEW_DEPENDENCE_OFF, live_centres, pixel_views, view_mass, view_opacity_factor, view_sources
from lrm4d_core.render import rasterize

__all__ = ["depth_loss", "opacity_loss", "velocity_loss", "persistence_loss", "implied_velocity", "render_targets"]


def _pixel_z(gaussians: Gaussians4D, cameras: Cameras, B: int, V: int, H: int, W: int) -> Tensor:
    """Camera-frame z of the pixel-aligned Gaussians: [B*V, H*W]."""
    means = gaussians.means[:, : V * H * W, :3].reshape(B * V, H * W, 3)
    c2w = cameras.cam_to_world.to(means)
    return torch.einsum("nkc,nc->nk", means - c2w[:, None, :3, 3], c2w[:, :3, 2])


def depth_loss(gaussians: Gaussians4D, cameras: Cameras, depths: Tensor, far: float, log: bool = False) -> Tensor:
    """Mean |z_pred - z_true| (or |log z_pred - log z_true| with `log`, scale-free, for scenes whose
    depths span metres to a hundred metres) of the pixel-aligned Gaussians over pixels whose true
    depth is finite and below `far` (model units); `depths` [B, V, H, W] z-depth."""
    B, V, H, W = depths.shape
    z = _pixel_z(gaussians, cameras, B, V, H, W)
    target = depths.reshape(B * V, H * W).to(z)
    valid = torch.isfinite(target) & (target < far) & (target > 0)
    if not valid.any():
        return z.sum() * 0.0
    if log:
        return (torch.log(z[valid].clamp_min(1e-4)) - torch.log(target[valid])).abs().mean()
    return (z[valid] - target[valid]).abs().mean()


def opacity_loss(gaussians: Gaussians4D, depths: Tensor) -> Tensor:
    """Binary cross-entropy of the pixel-aligned opacities against "this pixel sees a surface"
    (finite depth): sky and the empty background of object scenes must stay transparent, so that
    the environment map shows there and no Gaussian floats in front of other views."""
    B, V, H, W = depths.shape
    opacity = gaussians.opacities[:, : V * H * W].reshape(B * V * H * W).clamp(1e-5, 1 - 1e-5)
    target = torch.isfinite(depths.reshape(-1)).to(opacity)
    return F.binary_cross_entropy(opacity, target)


def implied_velocity(gaussians: Gaussians4D) -> Tensor:
    """Sigma_xyz,t / Sigma_tt of every Gaussian [..., N, 3] (what `Gaussians4D.slice` moves them by)."""
    a = gaussians.factor()
    a_x, a_t = a[..., :3, :], a[..., 3, :]
    return (a_x @ a_t[..., None])[..., 0] / (a_t * a_t).sum(-1, keepdim=True).clamp_min(1e-12)


def velocity_loss(gaussians: Gaussians4D, velocities: Tensor, moving_speed: float | None = None) -> Tensor:
    """Mean L1 distance between the implied velocity of each pixel-aligned Gaussian and its pixel's
    true surface velocity (`velocities` [B, V, H, W, 3] in model units per model time; NaN where the
    pixel sees no surface).

    With `moving_speed` the loss is the average of two means, over moving pixels (true speed above
    it) and over the others. Why: moving pixels are a few percent of most batches, so a plain mean
    is nearly minimised by predicting zero everywhere, which is what a model trained with it did;
    balanced, the moving pixels together weigh as much as all static ones together. (On the tiny
    model's CPU budget this did not teach motion either; docs/default_model/experiments.md.)"""
    B, V, H, W, _ = velocities.shape
    v = implied_velocity(gaussians)[:, : V * H * W].reshape(-1, 3)
    target = velocities.reshape(-1, 3).to(v)
    valid = torch.isfinite(target).all(-1)
    if not valid.any():
        return v.sum() * 0.0
    error = (v - target.nan_to_num(0.0)).abs().sum(-1)
    if moving_speed is None:
        return error[valid].mean()
    moving = valid & (target.nan_to_num(0.0).norm(dim=-1) > moving_speed)
    parts = [error[m].mean() for m in (moving, valid & ~moving) if m.any()]
    return sum(parts) / len(parts)


def persistence_loss(gaussians: Gaussians4D, velocities: Tensor, min_scale_t: Tensor, moving_speed: float) -> Tensor:
    """Mean hinge `relu(log(min_scale_t) - log(scale_t))` over the pixel-aligned Gaussians of static
    surface points (finite true velocity at most `moving_speed`); `min_scale_t` [B] model time.

    Why: a static surface exists over the whole window, but a model trained on rendering alone made
    most temporal scales a fraction of an input-time gap, so a surface seen by one camera at a few
    times fades out between them (holes where the environment shows through). Moving points are
    left free: a short life is how a 4D Gaussian without a velocity represents motion."""
    B, V, H, W, _ = velocities.shape
    scale_t = gaussians.scales[:, : V * H * W, 3]
    target = velocities.reshape(B, V * H * W, 3).to(scale_t)
    static = torch.isfinite(target).all(-1) & (target.nan_to_num(0.0).norm(dim=-1) <= moving_speed)
    if not static.any():
        return scale_t.sum() * 0.0
    floor = torch.log(min_scale_t.to(scale_t))[:, None].expand_as(scale_t)
    return F.relu(floor - torch.log(scale_t.clamp_min(1e-9)))[static].mean()


def render_targets(
    gaussians: Gaussians4D,
    cameras: Cameras,
    times: Tensor,
    background: Tensor | None,
    environment: Environment | None = None,
    view_weighting: tuple[float, float] = VIEW_DEPENDENCE_OFF,
    input_centres: Tensor | None = None,
    pixels_per_view: int = 0,
) -> Tensor:
    """Slice each example's Gaussians at each target time and render that target: [B, Vt, 3, H, W].

    With an `environment` ([B, 3, K]) the Gaussians are composited over it, else over `background`.
    With a `view_weighting` strength above 0 and `input_centres` [B, Vi, 3] (the input cameras, in
    the Gaussians' frame; the first Vi * `pixels_per_view` Gaussians of each example pixel-aligned),
    every target sees them with the same view-dependent opacity as the model's renders
    (`model.view_weight`), so that training fits colours and opacities to it. The factor is
    treated as a constant (no gradient through it: at its own camera its angle's arccos is not
    differentiable).
    """
    strength, width = view_weighting
    weighted = strength > 0 and input_centres is not None
    b, vt = times.shape
    images = []
    for i in range(b):
        g = gaussians[i]
        if weighted:
            centres = input_centres[i].to(g.means)
            views = pixel_views(len(centres), pixels_per_view, len(g), g.means.device)
            sources = view_sources(centres, views)
        for j in range(vt):
            cam = cameras[i * vt + j]
            cloud = g.slice(times[i, j])
            if weighted:
                with torch.no_grad():
                    mass = view_mass(views, cloud.opacities, len(centres))
                    factor = view_opacity_factor(cloud.means, sources, cam.cam_to_world[0, :3, 3], strength, width,
                                                 live_centres(centres, mass))
                cloud = replace(cloud, opacities=cloud.opacities * factor)
            if environment is None:
                color = rasterize(cloud, cam, background).color
            else:
                out = rasterize(cloud, cam, None)
                color = composite(out.color, out.alpha, cam, environment[i])
            images.append(color[0].permute(2, 0, 1))
    return torch.stack(images).reshape(b, vt, *images[0].shape)
