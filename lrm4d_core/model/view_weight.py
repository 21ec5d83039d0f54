"""View-dependent opacity of the pixel-aligned Gaussians, applied when a reconstruction is rendered.

Why: each pixel-aligned Gaussian is its input view's guess of one surface point: right as seen
from that view, and increasingly wrong away from it (a depth error moves it sideways). Rendering a
camera at or near an input, the Gaussians of the other inputs, seen far off their own directions,
cover that input's own with their errors: re-rendering the inputs of two workspace validation
windows gave 27.0 / 21.9 dB with every Gaussian and 30.2 / 25.1 with the input's own alone. As the
blending weights of image-based rendering do (the unstructured lumigraph's angle penalty), a
Gaussian's opacity falls with the angle, at its centre, between the rendering camera and its input
camera, counted beyond the smallest angle any input camera that shows at that time makes there
(`model.api.live_inputs`: an input whose Gaussians have faded out at the render time cannot stand
in for the others):

    opacity * (1 - strength * (1 - exp(-excess^2 / (2 width^2))))

so an input's own Gaussians keep their opacity in their own camera, between two inputs both keep
most of theirs, and a Gaussian of an input much worse placed than another keeps 1 - strength
(never vanishing: where it is the only one, it still shows). It is recorded in the checkpoint
(`ModelConfig.view_dependence`, `view_dependence_deg`; 0, the default of checkpoints that predate
it, turns it off) and training renders its targets with it (`train.losses.render_targets`), so the
network fits its colours and opacities to it: the shipped checkpoint was fine-tuned that way with
strength 0.75 and width 15 degrees (docs/default_model/experiments.md, "View-dependent opacity"). The
published point clouds have no viewpoint and do not use it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["VIEW_DEPENDENCE_OFF", "angle_at", "view_opacity_factor", "live_centres", "pixel_views", "view_sources", "view_mass"]

VIEW_DEPENDENCE_OFF = (0.0, 15.0)
"""(strength, width in degrees) of a reconstruction whose renders have no view-dependent opacity."""


def angle_at(camera_centre: Tensor, means: Tensor, points: Tensor) -> Tensor:
    """Angle at `means` [N, 3] between the directions to `camera_centre` [3] and to `points` [N, 3]."""
    to_camera = torch.nn.functional.normalize(camera_centre.to(means) - means, dim=-1)
    to_point = torch.nn.functional.normalize(points.to(means) - means, dim=-1)
    return torch.arccos((to_camera * to_point).sum(-1).clamp(-1.0, 1.0))


def view_opacity_factor(means: Tensor, sources: Tensor, camera_centre: Tensor, strength: float, width_deg: float,
                        inputs: Tensor | None = None) -> Tensor:
    """[N] factor in [1 - strength, 1] on the opacity of Gaussians at `means` [N, 3], made by input
    cameras at `sources` [N, 3] (NaN rows: not pixel-aligned, factor 1), rendered from a camera at
    `camera_centre` [3]; all in one frame. With `inputs` [V, 3] (every input camera's centre) the
    angle counts only beyond the smallest any input makes there: a Gaussian of the input best placed
    for this camera keeps its opacity even when no input is close."""
    angle = angle_at(camera_centre, means, sources)
    if inputs is not None and len(inputs):  # the smallest angle is the arccos of the largest cosine
        to_camera = torch.nn.functional.normalize(camera_centre.to(means) - means, dim=-1)
        to_inputs = inputs.to(means)[:, None] - means[None]  # [V, N, 3]
        cosine = torch.einsum("vnk,nk->vn", to_inputs, to_camera) / torch.linalg.vector_norm(to_inputs, dim=-1).clamp_min(1e-12)
        best = torch.arccos(cosine.amax(0).clamp(-1.0, 1.0))
        angle = (angle - best).clamp_min(0.0)
    width = math.radians(width_deg)
    factor = 1.0 - strength * (1.0 - torch.exp(-0.5 * (angle / width) ** 2))
    return torch.where(torch.isfinite(sources).all(-1), factor, torch.ones_like(factor))


def live_centres(centres: Tensor, mass: Tensor, share: float = 0.5) -> Tensor:
    """[K, 3] of the input cameras' `centres` [V, 3] whose Gaussians show with at least `share` of
    the largest input's opacity `mass` [V] (all of them when nothing shows): the inputs that can
    stand in for each other at this time (an input whose Gaussians have faded out cannot)."""
    return centres[mass >= share * mass.max()] if bool(mass.max() > 0) else centres


def pixel_views(views: int, pixels_per_view: int, count: int, device: torch.device | str = "cpu") -> Tensor:
    """[count] the input view each Gaussian of a prediction is aligned to: the first
    `views` * `pixels_per_view` are pixel-aligned in view-major order, -1 for the free ones after them."""
    aligned = torch.arange(views, device=device).repeat_interleave(pixels_per_view)
    if count < len(aligned):
        raise ValueError(f"{count} Gaussians cannot be aligned to {views} views of {pixels_per_view} pixels")
    return torch.cat([aligned, torch.full((count - len(aligned),), -1, dtype=aligned.dtype, device=device)])


def view_sources(centres: Tensor, views: Tensor) -> Tensor:
    """[N, 3] the input-camera centre (`centres` [V, 3]) of each Gaussian's view (`views` [N]), NaN
    for free Gaussians (view -1): the `sources` of `view_opacity_factor`."""
    picked = centres[views.clamp_min(0)]
    return torch.where((views >= 0)[:, None], picked, torch.full_like(picked, float("nan")))


def view_mass(views: Tensor, opacities: Tensor, count: int) -> Tensor:
    """[count] the summed opacity of each input view's Gaussians (`views` [N], -1: none)."""
    aligned = views >= 0
    return torch.bincount(views[aligned], weights=opacities[aligned], minlength=count).to(opacities)
