"""Own-view splats: near its own camera and its own time, each input pixel shows as itself.

Why: the network spreads an input's Gaussians over the times between the inputs and widens them
(under SPEC §4's interpolation layout its Gaussians flash at other times, 0.7 pixel footprints
wide: docs/default_model/experiments.md, "Why the interpolation inputs fall short"), which serves
the views and times it did not see, while the inputs themselves re-render at 22.5 dB. Image-based
rendering shows, near an input camera, that input's own pixels. Here each input pixel also gets a
small splat (one Gaussian) with its own colour, at its view's time, on its ray, at the depth the
network gives the pixel at that time. When a reconstruction is rendered, the splat shows in
proportion to how near the rendering camera is to its input camera (`visibility`), and the
pixel's network Gaussian gives way by as much as the splat shows there at that time, so that away
from the input camera, or away from its time, the network's Gaussians are what is seen.

    splat centre     = ray_o + d * ray_d, d the depth of the pixel's Gaussian at its view's time
    splat time       = t_view, temporal standard deviation `width` * span: span the time to the
                       same standing camera's nearest other input, else the input spacing, and
                       at most `max_gaps` input spacings (a camera that comes back shows itself
                       until about then)
                       (with `still_gaps`: in a moving camera's views, a still, solid pixel's
                       splat lasts as long as its network Gaussian, at most `still_gaps` spacings)
    splat scale      = `scale` pixel footprints (d / focal), isotropic; no velocity
    splat colour     = the pixel's; opacity `opacity`, 0 on pixels of the background colour
    visibility a     = exp(-angle^2 / (2 angle_deg^2)), the angle at the splat between the
                       rendering camera and its input camera
    rendered opacity = splat * a; its pixel's Gaussian * (1 - a * p_splat(t))
    rendered width   = widened by `approach_blur` where the rendering camera is nearer to the
                       splat than its input camera was (no dots when a camera drives on)

Constants chosen on validation scenes (docs/default_model/experiments.md, "Own-view splats").
Renders of a reconstruction use them (`model.api.Reconstruction.view_cloud`, `rasterize_over`);
the published point clouds do not (they have no viewpoint). `ModelConfig.own_view`
(`angle_deg` 0, the default of checkpoints that predate it, turns them off).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.gaussians import Gaussians4D

from .motion_prior import same_intrinsics
from .nearest_copy import standing_together
from .prior import input_time_gap
from .view_weight import angle_at

if TYPE_CHECKING:  # config imports this module
    from .config import ModelConfig

__all__ = ["MOVING_AXIS_DEG", "OwnViewConstants", "approach_blur", "own_view_splats", "reconstruction_splats", "visibility"]

SOLID_OPACITY = 0.5
"""Only splats whose pixel's network Gaussian is at least this opaque last (`still_gaps`): the
network leaves sky to the environment map with Gaussians of opacity near 0 (median 0.01 on a
driving window), and a lasting sky splat, seen after the camera moved, is a stray dot."""

MOVING_AXIS_DEG = 20.0
"""Two inputs with the same intrinsics whose optical axes are within this many degrees, not
standing in one place, are one camera that moved (`OwnViewConstants.still_gaps`)."""


@dataclass(frozen=True)
class OwnViewConstants:
    """Constants of the own-view splats (module docstring).

    Attributes:
        angle_deg: width, in degrees, of the splats' visibility around their input camera (0: off).
        scale: the splats' spatial standard deviation, in pixel footprints at their depth.
        width: their temporal standard deviation, as a share of their time span.
        max_gaps: the longest time span, in input-time spacings.
        still_gaps: in views of a moving camera (the window holds it elsewhere too: the same
            intrinsics, optical axes within 20 degrees, not standing in one place), a splat whose
            pixel's Gaussian is still (implied speed at most `still_speed`, model units per model
            time) and solid (opacity at least `SOLID_OPACITY`: not sky) lasts as long as that
            Gaussian does, at most this many input spacings: a static point stays (0: off).
        opacity: their opacity (pixels of the background colour: none).
        background_tolerance: pixels within this max-abs distance of the model's background colour
            show the background, not a surface (`PriorConstants.background_tolerance`).
    """

    angle_deg: float = 0.0
    scale: float = 0.2
    width: float = 0.4
    max_gaps: float = 4.0
    opacity: float = 0.98
    background_tolerance: float = 0.04
    still_gaps: float = 0.0
    still_speed: float = 0.05

    def __post_init__(self) -> None:
        if not (self.angle_deg >= 0 and self.scale > 0 and self.width > 0 and self.max_gaps > 0
                and 0 < self.opacity <= 1 and self.background_tolerance >= 0 and self.still_gaps >= 0
                and self.still_speed >= 0):
            raise ValueError(f"invalid OwnViewConstants: {self}")

    def to_list(self) -> list[float]:
        """The fields in order (for messages)."""
        return list(dataclasses.astuple(self))


@torch.no_grad()
def own_view_splats(gaussians: Gaussians4D, pixels: Tensor, cameras: Cameras, times: Tensor, background: Tensor,
                    constants: OwnViewConstants) -> Gaussians4D:
    """[V*H*W] the own-view splats of a window's pixel-aligned Gaussians (module docstring).

    Args:
        gaussians: the reconstruction's Gaussians, the first V*H*W pixel-aligned in view-major
            pixel order (the free ones after them are ignored), in the frame and time of `cameras`.
        pixels: [V, 3, H, W] the inputs in [0, 1] as the network took them; cameras: the V input
            cameras (that resolution); times: [V] their times; background: [3] the model's
            background colour.
    """
    V, _, H, W = pixels.shape
    n = V * H * W
    dtype, device = gaussians.means.dtype, gaussians.means.device
    times = times.to(device=device, dtype=dtype)
    own_t = times.repeat_interleave(H * W)
    # on the whole set (the free Gaussians at their own times): renders reuse what it caches
    at_own_time = gaussians.means_at(torch.cat([own_t, gaussians.means[n:, 3]]))[:n]
    origins, directions = (x.reshape(n, 3).to(device=device, dtype=dtype) for x in pixel_rays(cameras))
    depth = ((at_own_time - origins) * directions).sum(-1)  # unit directions: distance along the ray
    placed = torch.isfinite(depth) & (depth > 0)
    depth = torch.where(placed, depth, torch.zeros_like(depth))
    focal = cameras.K[:, [0, 1], [0, 1]].mean(-1).to(device=device, dtype=dtype).repeat_interleave(H * W)
    colours = pixels.permute(0, 2, 3, 1).reshape(n, 3).to(device=device, dtype=dtype)
    shows = placed & ((colours - background.to(colours)).abs().amax(-1) >= constants.background_tolerance)
    spacing = float(input_time_gap(times[None])[0])
    c2w = cameras.cam_to_world.to(device=device, dtype=dtype)
    reach = depth.reshape(V, H * W).median(dim=1).values.clamp_min(1e-6)
    together = standing_together(c2w, reach)
    apart = (times[:, None] - times[None]).abs()
    nearest = torch.where(together & (apart > 0), apart, torch.full_like(apart, math.inf)).amin(-1)  # [V]
    span = torch.where(torch.isfinite(nearest), nearest, torch.full_like(nearest, spacing)).clamp_max(constants.max_gaps * spacing)
    duration = (constants.width * span).repeat_interleave(H * W)
    if constants.still_gaps > 0:  # a moving camera's still points stay as long as their Gaussians do
        velocity, lasting = gaussians.implied_motion()
        same_k = same_intrinsics(cameras.K.to(device=device, dtype=dtype))
        near_axis = (c2w[:, None, :3, 2] * c2w[None, :, :3, 2]).sum(-1) > math.cos(math.radians(MOVING_AXIS_DEG))
        moving = (same_k & near_axis & ~together).any(-1).repeat_interleave(H * W)  # [n]
        still = moving & (velocity[:n].norm(dim=-1) <= constants.still_speed) & (gaussians.opacities[:n] >= SOLID_OPACITY)
        duration = torch.where(still, torch.maximum(duration, lasting[:n].clamp_max(constants.still_gaps * spacing)), duration)
    identity = torch.zeros(n, 4, dtype=dtype, device=device)
    identity[:, 0] = 1.0
    return Gaussians4D(
        means=torch.cat([origins + depth[:, None] * directions, own_t[:, None]], -1),
        scales=torch.cat([(constants.scale * depth / focal).clamp_min(1e-8)[:, None].expand(n, 3),
                          duration[:, None]], -1),
        q_left=identity,
        q_right=identity.clone(),
        opacities=torch.where(shows, torch.full_like(depth, constants.opacity), torch.zeros_like(depth)),
        colors=colours,
    )


def visibility(means: Tensor, sources: Tensor, camera_centre: Tensor, angle_deg: float) -> Tensor:
    """[N] how much of a splat at `means` [N, 3] made by the input camera at `sources` [N, 3] shows
    from a camera at `camera_centre` [3]: exp(-angle^2 / (2 angle_deg^2)) (NaN sources: 0)."""
    angle = angle_at(camera_centre, means, sources)
    a = torch.exp(-0.5 * (angle / math.radians(angle_deg)) ** 2)
    return torch.where(torch.isfinite(sources).all(-1), a, torch.zeros_like(a))


def approach_blur(means: Tensor, sources: Tensor, source_focal: Tensor, camera_centre: Tensor, eps2d: float) -> Tensor:
    """[N] the isotropic variance (world units^2) to add to splats at `means` [N, 3] seen from a
    camera at `camera_centre` [3] that is nearer to them than their input cameras (`sources`
    [N, 3], focal lengths `source_focal` [N] in pixels): eps2d (d_s^2 - d_r^2) / f_s^2, d_s and
    d_r their distances from the input and the rendering camera; 0 where the rendering camera is
    as far or farther (an input camera itself, at any resolution). NaN sources (free Gaussians): 0.

    Why: renders blur every Gaussian by `eps2d` pixels^2 (`api.model_resolution_blur`), which at
    distance d is about eps2d (d / f)^2 in the world. A splat is 0.2 of its input pixel wide and
    leans on that blur to fill its pixel; a camera that has come nearer (a car driving on)
    magnifies the grid of splats, the blur shrinks with the distance, and the splats show as
    separate dots. With the deficit added they keep the blur they had at their input camera's
    distance."""
    near = ((means - sources).square().sum(-1) - (means - camera_centre).square().sum(-1)).clamp_min(0.0)
    extra = eps2d * near / source_focal.square()
    return torch.where(torch.isfinite(extra), extra, torch.zeros_like(extra))


def reconstruction_splats(config: ModelConfig, gaussians: Gaussians4D, pixels: Tensor, cameras: Cameras,
                          times: Tensor) -> Gaussians4D | None:
    """The own-view splats `reconstruct` (and the inference client) give a window, or None where
    `config.own_view` is off. Args as `own_view_splats`, the window as the network took it."""
    if config.own_view.angle_deg <= 0:
        return None
    return own_view_splats(gaussians, pixels, cameras, times, torch.tensor(config.background), config.own_view)
