"""Depth behind what an input saw of a subject before a plain background (no learning).

Why: a pixel-aligned Gaussian is a thin disc on the surface its pixel saw, so a subject that the
inputs saw from one side only (SPEC §4's random orbit: one camera sweeping a few degrees) is a
shell, and from 90 degrees off it shows as a sliver or not at all where the target sees a body.
Where a view has a plain background the subject's silhouette says how wide it is at each pixel,
and bodies are about as deep as they are wide (a limb, a ball, a torso): the half-depth at a pixel
is taken as its distance to the silhouette's edge times the pixel footprint, the inflation of
sketch-based modelling. Each foreground Gaussian of such a view is stretched along its own ray by
`depth` half-depths (standard deviation) and its centre moved back by `offset` half-depths, so
that it fills the body behind the surface; from its own camera it still covers its pixel.

Where other inputs near in time see the same subject from elsewhere, their silhouettes bound that
body: the ray behind each pixel is sampled at `samples` points up to twice its half-depth, and the
body ends before the first point that a partner (another plain-background view within `max_gap`
input-time gaps) sees on its background, its foreground grown by `dilate` pixels for the motion
between the times (visual-hull carving along one ray). A flat thing seen face on would otherwise
swell into a ball across the view of a camera that sees it edge on.

Views without a plain background (driving, workspace) are left alone: their "silhouettes" are the
image borders. The test is the stereo's (`StereoConstants.min_background`). So are views that the
silhouette alignment placed (`model.view_align`): a crossing camera near in time saw the subject
from the side, and its own Gaussians show that side; inflating what it sees thin costs PSNR there
(docs/default_model/experiments.md, "Thickness behind one-sided views").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras, in_image, project_points
from lrm4d_core.gaussians import Gaussians4D

from .stereo import plain_background

__all__ = ["ThicknessConstants", "edge_distance", "silhouette_bounded", "thickened"]


@dataclass(frozen=True)
class ThicknessConstants:
    """Attributes:
        depth: standard deviation along the ray in half-depths (0, the default of checkpoints
            that predate it, turns it off).
        offset: how far back the centre moves, in half-depths (1: the body's middle).
        max_pixels: the distance to the edge is counted up to this many pixels (the half-depth of
            a wide subject is capped there).
        max_gap: partners whose silhouettes bound the body: other plain-background inputs within
            this many input-time gaps (0: none).
        samples: points along each ray behind the surface tested against them.
        dilate: pixels by which the partners' foreground is grown.
    """

    depth: float = 0.0
    offset: float = 1.0
    max_pixels: int = 12
    max_gap: float = 2.0
    samples: int = 8
    dilate: int = 1

    def __post_init__(self) -> None:
        if self.depth < 0 or self.offset < 0 or self.max_pixels < 1 or self.max_gap < 0 or self.samples < 1 \
                or self.dilate < 0:
            raise ValueError(f"invalid thickness constants {self}")


def edge_distance(foreground: Tensor, max_pixels: int) -> Tensor:
    """[N, H, W] float: for each pixel of `foreground` [N, H, W] (bool) the chessboard distance, in
    pixels, to the nearest background pixel or to the outside of the image (1 next to the edge),
    at most `max_pixels`; 0 on the background. Repeated 3x3 erosions: a pixel survives k of them
    when everything within k pixels is foreground."""
    current = foreground.float()[:, None]
    distance = torch.zeros_like(current)
    for _ in range(max_pixels):
        distance = distance + current
        if not bool(current.any()):
            break
        current = -F.max_pool2d(F.pad(-current, (1, 1, 1, 1), value=0.0), 3, stride=1)  # the outside is background
    return distance[:, 0]


def silhouette_bounded(half_depth: Tensor, foreground: Tensor, plain: Tensor, ray_origins: Tensor, ray_directions: Tensor,
                       depth: Tensor, cameras: Cameras, times: Tensor, gap: Tensor,
                       constants: ThicknessConstants) -> Tensor:
    """`half_depth` [B, V, H*W] where the body behind each foreground pixel (from its depth [B, V, H*W]
    along its ray to twice its half-depth behind) stays inside the partners' silhouettes, cut before
    the first of `samples` points along it that a partner sees on its background (module docstring).
    foreground [B, V, H, W] bool; plain [B, V] bool; rays [B, V, H*W, 3]; B*V cameras; times [B, V];
    gap [B] input-time spacing."""
    B, V, H, W = foreground.shape
    if constants.max_gap <= 0:
        return half_depth
    window = 2 * constants.dilate + 1
    grown = F.max_pool2d(foreground.reshape(B * V, 1, H, W).float(), window, 1, constants.dilate).reshape(B, V, H, W) > 0
    steps = torch.arange(1, constants.samples + 1, dtype=half_depth.dtype, device=half_depth.device) / constants.samples
    out = half_depth.clone()
    for b in range(B):
        for a in range(V):
            rows = foreground[b, a].flatten() & (half_depth[b, a] > 0)
            near = (times[b] - times[b, a]).abs() <= constants.max_gap * gap[b] + 1e-6
            partners = torch.nonzero(near & plain[b] & (torch.arange(V, device=near.device) != a)).flatten()
            if not bool(rows.any()) or not plain[b, a] or len(partners) == 0:
                continue
            h = half_depth[b, a][rows]
            along = depth[b, a][rows][None] + 2.0 * steps[:, None] * h[None]  # [S, N]
            points = ray_origins[b, a][rows][None] + along[..., None] * ray_directions[b, a][rows][None]
            S, N = along.shape
            uv, z = project_points(points.reshape(1, S * N, 3).expand(len(partners), -1, -1), cameras[b * V + partners])
            iu, iv = uv[..., 0].floor().long().clamp(0, W - 1), uv[..., 1].floor().long().clamp(0, H - 1)
            empty = in_image(uv, z, W, H) & ~grown[b, partners[:, None], iv, iu]  # [P, S*N]
            empty = empty.any(0).reshape(S, N)
            first = torch.where(empty.any(0), empty.float().argmax(0), torch.full_like(h, S, dtype=torch.long))
            out[b, a, rows] = torch.minimum(h, first.to(h) / S * h)  # the body ends a sample before
    return out


def thickened(gaussians: Gaussians4D, is_background: Tensor, ray_origins: Tensor, ray_directions: Tensor,
              cameras: Cameras, focal: Tensor, times: Tensor, gap: Tensor, constants: ThicknessConstants,
              min_background: float, placed: Tensor | None = None) -> Gaussians4D:
    """The pixel-aligned Gaussians `gaussians` [B, V*H*W, ...] (view-major pixel order) with depth
    behind the foreground of plain-background views (module docstring).

    Args:
        is_background: [B, V, H, W] the pixels of the background colour.
        ray_origins, ray_directions: [B, V*H*W, 3] each pixel's ray (unit directions).
        cameras: the B*V input cameras; focal: [B, V] their pixels per unit of depth; times: [B, V];
            gap: [B] the input-time spacing.
        min_background: a view is before a plain background when at least this share of its
            pixels are background.
        placed: [B, V] bool, views that crossing cameras' silhouettes already placed
            (`model.view_align`), left alone: those cameras' own Gaussians show the subject's
            sides. None: none.
    """
    if constants.depth <= 0:
        return gaussians
    B, V, H, W = is_background.shape
    plain = plain_background(is_background, min_background)  # [B, V]
    chosen = plain if placed is None else plain & ~placed
    foreground = ~is_background & chosen[:, :, None, None]
    if not bool(foreground.any()):
        return gaussians
    distance = edge_distance(foreground.reshape(B * V, H, W), constants.max_pixels).reshape(B, V, H * W)
    o, d = ray_origins.reshape(B, V, H * W, 3), ray_directions.reshape(B, V, H * W, 3)
    depth = ((gaussians.means[..., :3].reshape(B, V, H * W, 3) - o) * d).sum(-1)
    half_depth = (distance - 0.5).clamp_min(0.0) * depth / focal[..., None]  # the edge pixel's centre is half a pixel in
    half_depth = silhouette_bounded(half_depth, ~is_background, plain, o, d, depth, cameras, times, gap, constants)
    half_depth = half_depth.reshape(B, V * H * W)
    mask = foreground.reshape(B, V * H * W) & (half_depth > 0)
    return gaussians.stretched(mask, ray_directions, constants.depth * half_depth, constants.offset * half_depth)
