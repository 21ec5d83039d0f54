"""A no-learning correction of each input view's depths by multi-view stereo against the other
inputs (a plane sweep around the decoded depth, for textured scenes whose cameras move or differ).

Why: on open rigs the network puts far surfaces too near (driving: buildings beyond 15 m at about
0.8 of their distance; docs/default_model/experiments.md, "Where driving's depth goes wrong"), and
one 64 px view cannot tell 20 m from 25 m. A moving car's cameras see the same buildings from places metres
apart, and a workspace's cameras see the same table from several sides: where a surface is
textured and static, the depth at which a pixel's patch looks the same from the other inputs is
its depth. `view_align` does the same for scenes of a subject before a plain background, from
silhouettes; this module takes the views that have no such background (fewer than
`min_background` of their pixels of the background colour) and, with `plain_search`, those of the
others that the view alignment left alone (a single camera moving round a subject has no
crossing partner near in time, so its silhouettes say nothing: the SPEC §4 random orbit).

For each such input view i of a window (`stereo_log_scales`):
1. its *partners* are the nearest `max_partners` other inputs in time, within `max_gap`
   input-time gaps (the world must look the same; movers do not, and fail step 3), that are
   *usable* for at least `min_overlap` of its pixels; a partner is usable for a pixel where the
   pixel's search range lies in its image and spans at least `min_parallax` pixels there (a
   camera that did not move, or one far away along the ray, constrains nothing);
2. for `steps` log-scales s in [-search, +search], the pixel's point at exp(s) * depth along its
   ray is projected into each partner and the partner's colour sampled there; the cost of s is
   the squared RGB difference averaged over a `patch` x `patch` window of view i and over the
   partners (a plane sweep whose planes follow the decoded depth, not fronto-parallel planes);
3. a pixel is *matched* where its best cost is below `max_cost`, below `distinct` times the
   median cost over the range (a clear minimum, not a flat or repetitive curve) and not at either
   end of the range; it takes that s;
4. every pixel that is not on a known ground plane (the ground snapping places those exactly)
   then takes the median s of the matched pixels in its `fill` x `fill` window, where at least
   `min_support` of them are matched: matches are noisy pixel by pixel and absent on textureless
   walls, whose error is the same factor as their neighbours' (a surface's depth is off by a
   smooth factor);
5. the corrections (0 where there is none, and on the ground) are averaged over a `smooth` x
   `smooth` window: the network chose each pixel's colour for the way its Gaussian overlaps its
   neighbours' in its own view, which depends on their depth order; a correction that jumps from
   one pixel to the next reorders them and blurs the view's own re-render;
6. with `persist` > 0, the Gaussians of the pixels matched in step 3 (before the fill) get a
   temporal scale of at least `persist`: their patch looked the same from other inputs at other
   times, so the surface is static and should be seen between and beyond those times too, not
   only near its own view's (a moving car's camera sees each building at one or two input times;
   the network's Gaussians fade out within a few input gaps). The motion prior leaves them still.

What it cannot do: surfaces that move between the inputs (their costs stay high, so they keep
the network's depth unless matched neighbours fill them), textureless regions with no matched
pixel within `fill`, and anything seen by one input alone. `decode_prior` applies it at inference
only (the network was trained without it), after the view alignment and before the motion prior
and the ground snapping. Cost: `steps` bilinear samples per pixel and partner (at most
`max_partners`), and one projection of each pixel's range into every candidate partner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras, apply_rows, in_image, project_points

from .windows import box_mean, box_sum

__all__ = ["StereoConstants", "plain_background", "stereo_log_scales"]


@dataclass(frozen=True)
class StereoConstants:
    """Constants of the plane sweep (module docstring). `search` 0 (the default of checkpoints that
    predate it) turns it off.

    Attributes:
        search: half-range of the log-depth search around the decoded depth (0.7: factors 0.5-2).
            The embedded default model uses 0.7 with `persist` 0.3 and `smooth` 9
            (docs/default_model.md).
        steps: depths tried over the range (odd, so that the decoded depth is one of them).
        max_gap: partners within this many input-time gaps (`prior.input_time_gap`).
        max_partners: at most this many partners per view, the nearest in time.
        min_overlap: a partner must be usable (step 1) for at least this share of the view's pixels.
        min_parallax: pixels the search range must span in a partner's image.
        patch: side of the window over which costs are averaged (odd).
        max_cost: a match's cost (squared RGB difference summed over channels) must be below this.
        distinct: ... and below this share of the median cost over the range.
        fill: window of the median over matched pixels (odd; 1: matched pixels only, unsmoothed).
        min_support: matched pixels a window needs for its median to be used.
        smooth: window of the mean over the corrections (odd; 1: none; step 5).
        min_background: views with at least this share of background-coloured pixels (a subject
            before a plain background) are left to the view alignment, unless `plain_search`
            is set and the alignment left them alone.
        plain_search: 0, or (with `search` on) the half-range of the sweep for those
            plain-background views that the view alignment left alone (its silhouettes said
            nothing: no crossing partner near in time, or no agreement). Their matches are not
            taken as static (such a scene's subject moves, and a patch of it can match at a wrong
            depth as well as it moved), and partners whose optical axis is more than 90 degrees
            from theirs are not used (they see the subject's other side).
        plain_max_gap: their partners within this many input-time gaps (the subject moves
            little between them).
        persist: 0, or the temporal scale (model time) that a matched pixel's Gaussian gets at
            least: its patch looked the same from other inputs at other times, so it is static
            and should be seen at the times between and beyond them too, not only near its own.
    """

    search: float = 0.0
    steps: int = 29
    max_gap: float = 10.0
    max_partners: int = 4
    min_overlap: float = 0.1
    min_parallax: float = 2.0
    patch: int = 5
    max_cost: float = 0.02
    distinct: float = 0.5
    fill: int = 9
    min_support: int = 5
    smooth: int = 1
    min_background: float = 0.25
    persist: float = 0.0
    plain_search: float = 0.0
    plain_max_gap: float = 3.0

    def __post_init__(self) -> None:
        if self.search < 0 or self.steps < 3 or self.steps % 2 == 0 or self.max_gap < 0 or self.max_partners < 1 \
                or self.min_parallax < 0 or self.patch < 1 or self.patch % 2 == 0 or self.max_cost <= 0 \
                or not 0 < self.distinct <= 1 or self.fill < 1 or self.fill % 2 == 0 or self.min_support < 1 \
                or self.smooth < 1 or self.smooth % 2 == 0 \
                or not 0 <= self.min_background <= 1 or self.persist < 0 or self.plain_search < 0 or self.plain_max_gap < 0 \
                or not 0 <= self.min_overlap <= 1:
            raise ValueError(f"invalid stereo constants {self}")


def plain_background(is_background: Tensor, share: float) -> Tensor:
    """[...] which views, given their background-coloured pixels `is_background` [..., H, W] (bool),
    show a subject before a plain background: at least `share` of their pixels are background
    (`StereoConstants.min_background`; the test `model.thickness` and `model.nearest_copy` use too)."""
    return is_background.flatten(-2).float().mean(-1) >= share


def _usable(ends: Tensor, partners: Cameras, constants: StereoConstants) -> Tensor:
    """Whether each partner is usable for each pixel [P, H, W] (step 1): both ends of the pixel's
    search range, `ends` [2, H, W, 3], in its image and in front of it, `min_parallax` pixels
    apart there."""
    _, H, W, _ = ends.shape
    P = len(partners)
    uv, z = project_points(ends.reshape(1, 2 * H * W, 3).expand(P, -1, -1), partners)
    uv, z = uv.reshape(P, 2, H, W, 2), z.reshape(P, 2, H, W)
    inside = in_image(uv, z, W, H).all(1)
    parallax = (uv[:, 1] - uv[:, 0]).norm(dim=-1)
    return inside & torch.isfinite(parallax) & (parallax >= constants.min_parallax)


def _sweep_costs(image: Tensor, partner_images: Tensor, origin: Tensor, rays: Tensor, lengths: Tensor,
                 partners: Cameras, constants: StereoConstants) -> Tensor:
    """Cost [P, S, H, W] of each log-scale in each partner (step 2). Args: image [3, H, W];
    partner_images [P, 3, H, W]; origin [3] view i's centre; rays [H, W, 3] its pixels' rays
    scaled by their decoded depth; lengths [S] the factors exp(s).

    The point at factor l projects to K (o_j + l r_j) / z in partner j (o_j, r_j: the centre and the
    ray in j's camera frame), linear in l before the division: one projection per pixel, not per
    depth. Each image coordinate is computed as its own contiguous [P, S, HW] plane (`apply_rows`; a [..., 3]
    layout and a matrix product with an inner dimension of 3 cost 1.5 times as much on a CPU)."""
    P, _, H, W = partner_images.shape
    w2c = partners.world_to_cam.to(rays)
    K = partners.K.to(rays)
    KR = K @ w2c[:, :3, :3]  # [P, 3, 3]
    at_origin = (KR @ origin[:, None])[..., 0] + (K @ w2c[:, :3, 3:])[..., 0]  # [P, 3]
    along = apply_rows(KR, rays.reshape(1, H * W, 3))  # 3 x [P, HW]
    factor = lengths[None, :, None]
    inv_w = (at_origin[:, 2, None, None] + factor * along[2][:, None]).clamp_min_(1e-6).reciprocal_()  # [P, S, HW]
    grid = torch.empty(P, lengths.shape[0], H * W, 2, dtype=rays.dtype, device=rays.device)
    for c, size in ((0, W), (1, H)):  # pixel coordinate u = (a + l b) / w -> grid_sample's 2 u / size - 1
        grid[..., c] = (at_origin[:, c, None, None] + factor * along[c][:, None]).mul_(inv_w).mul_(2.0 / size).sub_(1.0)
    sampled = F.grid_sample(partner_images, grid.reshape(P, -1, W, 2).to(partner_images), mode="bilinear",
                            padding_mode="border", align_corners=False).reshape(P, 3, -1, H, W)
    diff = sampled - image[None, :, None]
    diff.square_()
    diff = diff[:, 0] + diff[:, 1] + diff[:, 2]  # [P, S, H, W]; a sum over the strided channel dim is slower
    return box_mean(diff, constants.patch)


def _median_fill(k: Tensor, matched: Tensor, constants: StereoConstants) -> tuple[Tensor, Tensor]:
    """Step 4: the index [H, W] of the median log-scale of the matched pixels in each pixel's window
    (the lower of the two middle ones for an even count, as `torch.nanmedian`), given each pixel's
    chosen index `k` [H, W] into the `steps` ascending log-scales, and where at least
    `min_support` of them are matched [H, W] (elsewhere the index means nothing).

    Why counts: the chosen scales take only `steps` values, so a window's median is the first
    value whose running count reaches half the window's matches. Counting each value in every
    window by box sums is exact and several times faster on a CPU than a median over each
    pixel's unfolded window."""
    steps = constants.steps
    counts = box_sum(F.one_hot(k, steps).permute(2, 0, 1).to(torch.float32) * matched, constants.fill)  # [S, H, W]
    support = counts.sum(0)
    rank = torch.div(support - 1, 2, rounding_mode="floor").clamp_min(0) + 1  # 1-based rank of the lower median
    index = (counts.cumsum(0) < rank).sum(0).clamp_max(steps - 1)
    return index, support >= constants.min_support


@torch.no_grad()
def stereo_log_scales(
    images: Tensor,
    depth: Tensor,
    ray_origins: Tensor,
    ray_directions: Tensor,
    cameras: Cameras,
    times: Tensor,
    gap: Tensor,
    background: Tensor,
    keep: Tensor,
    constants: StereoConstants,
    aligned: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """([B, V, H*W] log-scale of each pixel's depth, 0 where it keeps the decoded depth; [B, V, H*W]
    bool, the pixels matched in step 3, which look static; module docstring).

    Args:
        images: [B, V, 3, H, W] in [0, 1]; depth: [B, V*H*W, 1] decoded depth along the rays;
        ray_origins, ray_directions: [B, V*H*W, 3]; cameras: B*V cameras in the same frame;
        times: [B, V]; gap: [B] input-time spacing.
        background: [B, V, H, W] bool, pixels of the background colour.
        keep: [B, V, H, W] bool, pixels left as they are (on a known ground plane).
        aligned: [B, V] bool, the views `model.view_align` aligned (None: none); with
            `plain_search` the plain-background views among the others are swept too.
    """
    B, V, _, H, W = images.shape
    out = torch.zeros(B, V, H * W, dtype=depth.dtype, device=depth.device)
    static = torch.zeros(B, V, H * W, dtype=torch.bool, device=depth.device)
    if constants.search <= 0 or V < 2:
        return out, static
    d = depth.reshape(B, V, H, W, 1)
    o, r = ray_origins.reshape(B, V, H, W, 3), ray_directions.reshape(B, V, H, W, 3)
    has_plain_background = plain_background(background.reshape(B, V, H, W), constants.min_background)
    textured = ~has_plain_background
    plain = has_plain_background & (constants.plain_search > 0)
    if aligned is not None:
        plain = plain & ~aligned.to(plain.device)
    axes = cameras.cam_to_world.reshape(B, V, 4, 4)[..., :3, 2].to(depth)
    for b in range(B):
        for i in range(V):
            if not bool(textured[b, i] | plain[b, i]):
                continue
            search, max_gap = (constants.search, constants.max_gap) if bool(textured[b, i]) \
                else (constants.plain_search, constants.plain_max_gap)
            log_s = torch.linspace(-search, search, constants.steps, dtype=depth.dtype, device=depth.device)
            gain = torch.exp(log_s)[:, None, None, None]  # [S, 1, 1, 1]
            dt = (times[b] - times[b, i]).abs()
            candidate = (dt <= max_gap * gap[b] + 1e-6) & (torch.arange(V, device=dt.device) != i)
            if bool(plain[b, i]):  # a camera facing the other way sees the subject's other side
                candidate = candidate & ((axes[b] * axes[b, i]).sum(-1) > 0)
            near = torch.nonzero(candidate).flatten()
            if near.numel() == 0:
                continue
            ends = o[b, i] + gain[[0, -1]] * d[b, i] * r[b, i]  # [2, H, W, 3]: the range's ends
            usable = _usable(ends, cameras[b * V + near], constants)
            share = usable.flatten(1).float().mean(-1)
            order = [int(k) for k in torch.argsort(dt[near]) if share[k] >= constants.min_overlap][: constants.max_partners]
            if not order:
                continue
            partners = near[order]
            costs = _sweep_costs(images[b, i].to(depth), images[b, partners].to(depth), o[b, i, 0, 0],
                                 d[b, i] * r[b, i], gain.flatten(), cameras[b * V + partners], constants)
            chosen = usable[order]
            count = chosen.sum(0)
            cost = (costs * chosen[:, None]).sum(0) / count.clamp_min(1)[None]  # [S, H, W]
            best, k = cost.min(0)
            matched = (count > 0) & (best < constants.max_cost) & (best < constants.distinct * cost.median(0).values) \
                & (k > 0) & (k < constants.steps - 1)
            matched = matched & ~keep[b, i]
            static[b, i] = matched.flatten() & textured[b, i]
            if constants.fill > 1:
                k, matched = _median_fill(k, matched, constants)
            scale = log_s[k]
            field = torch.where(matched & ~keep[b, i], scale, torch.zeros_like(scale))
            if constants.smooth > 1:
                field = box_mean(field[None], constants.smooth)[0]
                field = torch.where(keep[b, i], torch.zeros_like(field), field)
            out[b, i] = field.flatten()
    return out, static
