"""Time windows of the pixel-aligned Gaussians: where a camera that stands still gave several inputs,
each surface point it saw alike at several times is shown, at a render time, by the copy of the
input nearest that time; the other copies fade.

Why: a static camera's inputs at different times put one Gaussian each on the same pixel ray for
every static surface point, and each copy stays visible over much of the window (the prior's
`time_width`, the stereo's `persist`). Their depths, colours and shapes differ by the network's
residuals, so re-rendering one input blends its own Gaussians with blurred copies from the others:
on two workspace validation windows the inputs re-render at 28.5 / 23.4 dB with every Gaussian and
31.3 / 25.6 with their own alone, 29.8 / 24.5 with this (`docs/default_model/input_views_diag.py`;
docs/default_model/experiments.md, "Nearest copy in time"). Image-based
rendering picks, among several images of the same point, the one nearest the wanted view; this is
the same choice along time, made only where the copies agree.

`time_windows` (at reconstruction time): Gaussian g of input j, with centre time mu_g, is *copied*
by input k when k's camera stands where j's did (centres within `SAME_PLACE` of the median depth
of j's Gaussians, optical axes within `SAME_AXIS`) and k's own Gaussian at the pixel where g
projects lies at g's depth (within `MARGIN`, relative) with the pixel colour of g's (within
`COLOUR`, max over channels): k saw the same point alike. g's window is (lo, hi), the times of
the nearest copying inputs before and after mu_g (-inf / +inf where none copies it).
`window_factor` (at render time t): g's opacity is multiplied by 1 - strength where t is nearer
lo or hi than mu_g (beyond the midpoints). A point that moved, or that another input saw behind
something nearer, has no copy there and keeps its opacity; so do Gaussians of moving cameras (each
sees its own place). `reconstruction_windows` leaves out the views of a subject before a plain
background: the Gaussians that matter there are the subject's, which moves, and a slow one looks
alike a few frames apart at 64 px (on the object validation scenes the copies cost 0.1 dB).

`strength` is `ModelConfig.nearest_copy` (0, the default of checkpoints that predate it, turns
this off). Renders (`model.api.render`, the predicted views) use it; the published point clouds do
not (they have no render time between inputs to prefer).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lrm4d_core.cameras import Cameras, in_image, project_points

from .stereo import plain_background

if TYPE_CHECKING:  # config imports the prior, which sits beside this module
    from .config import ModelConfig

__all__ = ["MARGIN", "COLOUR", "SAME_PLACE", "SAME_AXIS", "time_windows", "standing_together", "window_factor", "plain_background_views",
           "reconstruction_windows"]

MARGIN = 0.2
"""A copy lies within this share of the depth of k's own Gaussian at that pixel."""
COLOUR = 0.1
"""... and k's pixel colour there is within this of g's (RGB in [0, 1], max over channels)."""
SAME_PLACE = 0.01
"""Two inputs' cameras stand in one place when their centres are within this share of the median
depth of the first one's Gaussians."""
SAME_AXIS = 0.999
"""... and the cosine between their optical axes is above this."""


@torch.no_grad()
def time_windows(means: Tensor, images: Tensor, cameras: Cameras, times: Tensor, skip: Tensor | None = None) -> Tensor:
    """[V*H*W, 2] the (lo, hi) render-time window of each pixel-aligned Gaussian (module docstring).

    Args:
        means: [V*H*W, 4] the pixel-aligned Gaussians' centres (x, y, z, t) in view-major pixel
            order, in the frame and time of `cameras` (the model box and model time).
        images: [V, 3, H, W] the inputs in [0, 1]; cameras: the V input cameras; times: [V] their
            times (model time); skip: [V] bool, views whose Gaussians get no window (None: none).
    """
    V, _, H, W = images.shape
    N = H * W
    xyz = means[:, :3].reshape(V, N, 3)
    mu = means[:, 3].reshape(V, N)
    lo = torch.full((V, N), -math.inf, dtype=means.dtype, device=means.device)
    hi = torch.full((V, N), math.inf, dtype=means.dtype, device=means.device)
    if V < 2:
        return torch.stack([lo, hi], -1).reshape(V * N, 2)
    colours = images.permute(0, 2, 3, 1).reshape(V, N, 3).to(means)
    _, own_depth = project_points(xyz, cameras)  # [V, N]: each input's depth map
    c2w = cameras.cam_to_world.to(means)
    reach = own_depth.median(dim=1).values  # [V]
    together = standing_together(c2w, reach)
    for j in range(V):
        if skip is not None and bool(skip[j]):
            continue
        same = together[j].clone()
        same[j] = False
        copies = torch.nonzero(same).flatten()
        if copies.numel() == 0:
            continue
        uv, z = project_points(xyz[j][None].expand(len(copies), -1, -1), cameras[copies])
        at = uv[..., 1].floor().long().clamp(0, H - 1) * W + uv[..., 0].floor().long().clamp(0, W - 1)  # [P, N]
        their_depth = torch.gather(own_depth[copies], 1, at)
        their_colour = torch.gather(colours[copies], 1, at[..., None].expand(-1, -1, 3))
        copied = in_image(uv, z, W, H) & ((their_depth - z).abs() <= MARGIN * their_depth) \
            & ((their_colour - colours[j][None]).abs().amax(-1) <= COLOUR)
        when = times.to(means)[copies][:, None].expand(-1, N)  # [P, N]: each copying input's time
        later = when > mu[j][None]
        hi[j] = torch.where(copied & later, when, torch.full_like(when, math.inf)).amin(0).minimum(hi[j])
        lo[j] = torch.where(copied & ~later, when, torch.full_like(when, -math.inf)).amax(0).maximum(lo[j])
    return torch.stack([lo, hi], -1).reshape(V * N, 2)


def standing_together(cam_to_world: Tensor, reach: Tensor) -> Tensor:
    """[V, V] which input cameras (`cam_to_world` [V, 4, 4]) stand in one place: centres within
    `SAME_PLACE` of the first one's `reach` [V] (the median depth of its Gaussians), optical axes
    within `SAME_AXIS` (the diagonal holds)."""
    centres, axes = cam_to_world[:, :3, 3], cam_to_world[:, :3, 2]
    near = (centres[None] - centres[:, None]).norm(dim=-1) < SAME_PLACE * reach[:, None]
    return near & ((axes[:, None] * axes[None]).sum(-1) > SAME_AXIS)


def window_factor(windows: Tensor, mu: Tensor, t: float, strength: float) -> Tensor:
    """[N] opacity factor at model time t of Gaussians with centre times mu [N] and `time_windows`
    [N, 2]: 1 - strength where t is nearer a copying input's time than mu, else 1."""
    outside = (t < 0.5 * (mu + windows[:, 0])) | (t > 0.5 * (mu + windows[:, 1]))
    return torch.where(outside, 1.0 - strength, 1.0).to(windows.dtype)


def plain_background_views(pixels: Tensor, background: Tensor, tolerance: float, share: float) -> Tensor:
    """[V] which views of pixels [V, 3, H, W] have at least `share` of their pixels within `tolerance`
    (max over channels) of the `background` colour [3]: a subject before a plain background (the
    stereo's test, `StereoConstants.min_background`)."""
    return plain_background((pixels - background.to(pixels)[:, None, None]).abs().amax(1) < tolerance, share)


def reconstruction_windows(config: ModelConfig, means: Tensor, pixels: Tensor, cameras: Cameras, times: Tensor) -> Tensor | None:
    """The windows `reconstruct` (and the inference server) give a window's pixel-aligned Gaussians,
    or None where `config.nearest_copy` is 0. Args: the `ModelConfig`; means [V*H*W, 4] of the
    pixel-aligned Gaussians; the window as the network took it (pixels [V, 3, H, W], model-box
    cameras, model times [V]). Views of a subject before a plain background get no windows: their
    Gaussians that matter are the subject's, which moves, and a slow one looks alike a few frames
    apart at this resolution (on the object validation scenes the copies cost 0.1 dB at held-out
    views; docs/default_model/experiments.md, "Nearest copy in time")."""
    if config.nearest_copy <= 0:
        return None
    plain = plain_background_views(pixels, torch.tensor(config.background), config.prior.background_tolerance,
                                   config.prior.stereo.min_background)
    return time_windows(means, pixels, cameras, times, skip=plain)
