"""A no-learning correction of each input view's depths: its foreground must land inside the
other views' silhouettes (one factor per view, then each pixel carved into the silhouettes' hull).

Why: on object scenes (a subject in front of a plain background) the network places each input
view's pixels at a depth that is off by a factor that is nearly the same for the whole view and
the same camera from one time to the next (`docs/default_model/experiments.md`, "View alignment": the median
log-depth error of a view ranges from -0.21 to +0.18, its spread within the view is about 0.05). Each view then
puts the subject at a slightly different place, and a held-out view sees several ghosts of it.
The silhouettes of the other inputs fix that factor without any learning: scaling a view's depths
by k about its camera centre leaves its own image unchanged and moves its points along the other
cameras' epipolar lines, so the k that puts most of them inside the other views' silhouettes is
where the subject is.

For each input view a of a window (`view_scales`):
1. its foreground is every pixel not of the model's background colour (the prior's
   `background_tolerance`); a view with less than `min_background` of its pixels background, or
   whose partners have less, is left alone (open and outward rigs, textured backgrounds: no
   silhouette to align to);
2. its *partners* are the inputs within `max_gap` input-time gaps (the subject moves little
   between them) whose optical axis turns at least `min_angle` degrees from its own; at least one
   of them must also be that far from its reverse. Why: a depth change moves a point along a
   partner's epipolar line by about sin(angle) times as much as a sideways move does, so a
   near-parallel partner (a moving camera one frame later) sees the subject's motion, not the
   depth error; an opposite camera constrains the depth only through perspective, which helps
   beside a crossing partner and is too weak alone;
3. for `steps` log-scales s in [-search, +search], each foreground pixel's point at
   exp(s) * depth along its ray is projected into every partner; the score of s is the mean,
   over partners, of the fraction of these points that land on the partner's foreground
   (dilated by `dilate` pixels, for the motion between the times and the pixel grid); a point
   outside the partner's image counts as off it (the subject is in view of cameras around it; were
   unseen points counted as consistent, as visual-hull carving does, pushing points out of the
   partners' views would raise the score);
4. s is the smallest scale with the best score, kept only if that score is at least `min_score`
   (else 0: the silhouettes disagree, e.g. the subject moved too much). Why the smallest: points
   pushed behind the visible surface stay inside the subject, hence inside every silhouette, up
   to its far side; pulled in front of it they leave the silhouettes at once. The best score's
   near end is where the rays enter the silhouettes' hull, the visible surface where the hull is
   tight (a score plateau's centre would sit inside the subject).
5. with `carve` > 0, each foreground pixel whose point at the view's scale falls outside a
   partner's silhouette moves along its ray to the nearest scale, within `carve` of the view's,
   at which it falls inside all of them (the nearer one on a tie): the silhouettes' hull holds
   every surface point, so a point outside it is wrong wherever it is.

What it cannot do: correct a pixel that is wrong but inside the hull (behind the visible
surface, within the subject; loose hulls of few partners hold much), align anything without a
plain background, or align a single moving camera (its nearby inputs
are near-parallel: the SPEC §4 random-orbit protocol; `model.stereo` sweeps the views left
alone with its `plain_search`). `decode_prior` applies the
factors to the decoded depth at inference only (the network was trained without them) and only
on inward rigs (`prior.inward_mask`: cameras around a scene, looking in), before the motion prior
and the ground snapping, so positions, spatial scales and velocities all follow. Cost: `steps`
projections of a view's foreground into each partner (milliseconds at 64 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras, in_image, project_points

__all__ = ["ViewAlignConstants", "view_scales"]


@dataclass(frozen=True)
class ViewAlignConstants:
    """Constants of the silhouette alignment (module docstring). `search` 0 (the default of
    checkpoints that predate it) turns it off.

    Attributes:
        search: half-range of the log-scale search (0.3: factors 0.74 to 1.35).
        steps: scales tried over the range (odd, so that 0 is one of them).
        max_gap: partners within this many input-time gaps (`prior.input_time_gap`).
        min_angle: degrees between the optical axes of a view and a partner (module docstring).
        dilate: pixels by which the partners' foreground is grown.
        min_background: share of background pixels a view and a partner need.
        min_score: the best score below which a view keeps its depths.
        carve: 0, or how far (in log-scale) a foreground pixel may move from its view's scale
            to lie inside every partner's silhouette (step 5).
    """

    search: float = 0.0
    steps: int = 61
    max_gap: float = 2.0
    min_angle: float = 20.0
    dilate: int = 1
    min_background: float = 0.25
    min_score: float = 0.5
    carve: float = 0.0

    def __post_init__(self) -> None:
        if self.search < 0 or self.steps < 3 or self.steps % 2 == 0 or self.max_gap < 0 or self.dilate < 0 \
                or not 0 <= self.min_angle <= 90 \
                or not 0 <= self.min_background < 1 or not 0 <= self.min_score <= 1 or self.carve < 0:
            raise ValueError(f"invalid view alignment constants {self}")


def view_scales(
    depth: Tensor,
    foreground: Tensor,
    ray_origins: Tensor,
    ray_directions: Tensor,
    cameras: Cameras,
    times: Tensor,
    gap: Tensor,
    constants: ViewAlignConstants,
    active: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """([B, V, H*W] log-scale of each pixel's depth: its view's (0 where the view is left alone;
    module docstring), and with `carve` the foreground pixels' own (step 5); [B, V] bool, the
    views aligned: not left alone, whatever their scale, so that `model.stereo` can tell a view
    aligned at scale 0 from one the silhouettes said nothing about).

    Args:
        depth: [B, V*H*W, 1] decoded depth along the rays; ray_origins, ray_directions: [B, V*H*W, 3].
        foreground: [B, V, H, W] bool, pixels not of the background colour.
        cameras: B*V cameras in the same frame; times: [B, V]; gap: [B] input-time spacing.
        active: [B] bool, the elements to align (None: all).
    """
    B, V, H, W = foreground.shape
    out = torch.zeros(B, V, H * W, dtype=depth.dtype, device=depth.device)
    aligned = torch.zeros(B, V, dtype=torch.bool, device=depth.device)
    if constants.search <= 0:
        return out, aligned
    window = 2 * constants.dilate + 1
    grown = F.max_pool2d(foreground.reshape(B * V, 1, H, W).float(), window, 1, constants.dilate).reshape(B, V, H, W) > 0
    background_share = 1.0 - foreground.reshape(B, V, -1).float().mean(-1)
    log_s = torch.linspace(-constants.search, constants.search, constants.steps, dtype=depth.dtype, device=depth.device)
    gain = torch.exp(log_s)[:, None, None]  # [S, 1, 1]
    axes = cameras.cam_to_world.reshape(B, V, 4, 4)[..., :3, 2].to(depth)
    cos_min = math.cos(math.radians(constants.min_angle))
    d = depth.reshape(B, V, H * W)
    o, r = ray_origins.reshape(B, V, H * W, 3), ray_directions.reshape(B, V, H * W, 3)
    for b in range(B):
        if active is not None and not bool(active[b]):
            continue
        for a in range(V):
            if background_share[b, a] < constants.min_background:
                continue
            fg = foreground[b, a].flatten()
            if not fg.any():
                continue
            cos_axes = (axes[b] * axes[b, a]).sum(-1)
            near = (times[b] - times[b, a]).abs() <= constants.max_gap * gap[b] + 1e-6
            usable = near & (cos_axes <= cos_min) & (background_share[b] >= constants.min_background)
            if not bool((usable & (cos_axes >= -cos_min)).any()):  # no crossing partner
                continue
            partners = torch.nonzero(usable).flatten()
            points = o[b, a][fg] + (gain * d[b, a][fg][:, None]) * r[b, a][fg]  # [S, N, 3]
            S, N = points.shape[:2]
            uv, z = project_points(points.reshape(1, S * N, 3).expand(len(partners), -1, -1), cameras[b * V + partners])
            uv, z = uv.reshape(-1, S, N, 2), z.reshape(-1, S, N)  # [P, S, N, 2], [P, S, N]
            iu, iv = uv[..., 0].floor().long(), uv[..., 1].floor().long()
            inside = in_image(uv, z, W, H)
            hit = grown[b, partners[:, None, None], iv.clamp(0, H - 1), iu.clamp(0, W - 1)] & inside
            score = hit.to(log_s).mean(-1).mean(0)  # [S]
            within = hit.all(0)  # [S, N]: inside every partner's silhouette
            best = score.max()
            if best < constants.min_score:
                continue
            view = log_s[score >= best - 1e-9].min()
            out[b, a] = view
            aligned[b, a] = True
            if constants.carve > 0:  # each pixel to the nearest scale inside every silhouette, if any
                away = (log_s - view).abs()[:, None].expand_as(within)
                allowed = within & (away <= constants.carve + 1e-9)
                key = torch.where(allowed, away + 1e-6 * log_s[:, None], torch.full_like(away, math.inf))
                pick = key.argmin(0)
                out[b, a, fg] = torch.where(allowed.any(0), log_s[pick], view)
    return out, aligned
