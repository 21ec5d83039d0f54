"""A no-learning limit on how long each pixel-aligned Gaussian is seen: a Gaussian that another
input, at another time, sees through (or, from nearly the same viewpoint, sees in another colour)
was not there at that time, so it fades out before it.

Why: each input view's Gaussians stay visible for about 1.5 input-time gaps on either side of their
own time (the prior's `time_width`), so that held-out times between inputs are covered. Where the
subject moved and nothing gave its Gaussians a velocity (a moving camera: the motion prior acts
only on cameras that stand still), the copies of the subject from neighbouring times stay where
they were and cover each other as ghosts. Under the random orbit (one slowly moving camera) each
input then re-renders at 22-24 dB while its own Gaussians alone give 27 dB
(docs/default_model/input_views_diag.py). The other inputs say where the subject is not: a point
that input k sees through at its time t_k (k's own depth at that pixel is clearly farther, and
k's colour there is not the point's) was empty at t_k.

For each Gaussian g of input view j (`carved_time_scales`), at its centre time mu_g, with its
velocity v_g (zero where the motion prior gave none):
1. the other inputs k whose time is at least `min_gap` and at most `max_gap` input-time gaps from
   t_j are its *witnesses* (an input at the same time that sees through g contradicts its depth,
   not its time: that is the view alignment's and the stereo's business);
2. g's centre at t_k, x_g + v_g (t_k - mu_g), is projected into k; k *contradicts* g where that
   lies in k's image and in front of k, k's colour there differs from g's pixel colour by more
   than `colour` in some channel, and either
   - k sees through it: g is nearer than `1 - margin` times the smallest depth k decoded in the
     `window` x `window` pixels around it (background-coloured pixels of k count as infinitely
     far: k saw nothing there); or
   - k is *steady* for g (`steady` > 0): moving g by `depth_error` of its depth along its own ray
     either way moves its image in k by less than `steady` pixels, and g is not hidden behind what
     k sees there (nearer than `1 + margin` times k's depth). Then k's colour at that pixel does
     not depend on g's depth being right, so another colour there means that what was there has
     moved (the same camera a frame later, a slowly orbiting one). Without this rule a witness
     that sees another surface at about g's depth cannot tell motion from a depth error;
3. g's temporal scale becomes at most `width` times the smallest |t_k - mu_g| over the witnesses
   that contradict it: at t_k it keeps exp(-1 / (2 width^2)) of its opacity (width 0.5: 14%).
   Gaussians the caller keeps (the stereo's static pixels, whose patch other inputs at other
   times saw alike) are left alone.

What it cannot do: a Gaussian no other input sees (occluded, out of their images, or no input in
time range) keeps its extent, and so does one whose ghost falls on a surface of the same colour.
`decode_prior` applies it at inference only, after every depth and velocity is fixed (the view
alignment, the stereo, the motion prior, the ground snapping), before the temporal scales turn
with the velocities. Cost: one projection of every Gaussian into each witness (at most
2 `max_gap` of them) and one lookup there, and two more projections where the steady rule could
decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras, in_image, project_points

__all__ = ["TimeCarveConstants", "carved_time_scales"]


@dataclass(frozen=True)
class TimeCarveConstants:
    """Constants of the carving over time (module docstring). `width` 0 (the default of checkpoints
    that predate it) turns it off.

    Attributes:
        width: a contradicted Gaussian's temporal scale is at most this times its distance in time
            to the witness that contradicts it. The embedded default model uses 0.5 with
            `steady` 2 (docs/default_model/experiments.md, "Carving over time").
        margin: seen through means nearer than (1 - margin) times the witness's depth there; not
            hidden, nearer than (1 + margin) times it.
        colour: a witness contradicts only where its colour differs from the Gaussian's pixel
            colour by more than this (RGB in [0, 1]).
        min_gap, max_gap: witnesses are the inputs between these many input-time gaps away.
        window: side of the window whose smallest depth the witness's depth is (odd): a point
            beside an edge of a nearer surface is not seen through.
        steady: 0 (off), or the parallax in pixels below which a witness is *steady* for a
            Gaussian (step 2 of the module docstring).
        depth_error: the relative depth error `steady` allows for.
    """

    width: float = 0.0
    margin: float = 0.2
    colour: float = 0.1
    min_gap: float = 0.5
    max_gap: float = 4.0
    window: int = 3
    steady: float = 0.0
    depth_error: float = 0.15

    def __post_init__(self) -> None:
        if self.width < 0 or not 0 <= self.margin < 1 or self.colour < 0 or self.min_gap <= 0 \
                or self.max_gap < self.min_gap or self.window < 1 or self.window % 2 == 0 or self.steady < 0 \
                or not 0 < self.depth_error < 1:
            raise ValueError(f"invalid time-carving constants {self}")


def _lookup(maps: Tensor, uv: Tensor) -> Tensor:
    """Values of maps [P, C, H, W] at the pixels holding the points uv [P, N, 2] (nearest pixel;
    callers mask points outside) -> [P, N, C]."""
    P, C, H, W = maps.shape
    col = uv[..., 0].floor().long().clamp(0, W - 1)
    row = uv[..., 1].floor().long().clamp(0, H - 1)
    flat = maps.reshape(P, C, H * W)
    return torch.gather(flat, 2, (row * W + col)[:, None].expand(P, C, -1)).transpose(1, 2)


@torch.no_grad()
def carved_time_scales(
    xyz: Tensor,
    velocity: Tensor | None,
    mu_t: Tensor,
    scale_t: Tensor,
    images: Tensor,
    background: Tensor,
    cameras: Cameras,
    times: Tensor,
    gap: Tensor,
    constants: TimeCarveConstants,
    keep: Tensor | None = None,
) -> Tensor:
    """Temporal scales [B, V*H*W] of the Gaussians with the carving of the module docstring.

    Args:
        xyz: [B, V*H*W, 3] Gaussian centres at their time mu_t [B, V*H*W]; velocity: the same
            shape or None (none moves); scale_t: [B, V*H*W] temporal scales.
        images: [B, V, 3, H, W] in [0, 1]; background: [B, V, H, W] bool, pixels of the background
            colour; cameras: B*V cameras in the frame of xyz; times: [B, V]; gap: [B] input-time
            spacing, all in model time.
        keep: [B, V*H*W] bool, Gaussians never carved (seen static by the stereo), or None.
    """
    B, V, _, H, W = images.shape
    if constants.width <= 0 or V < 2:
        return scale_t
    N = H * W
    pts = xyz.reshape(B, V, N, 3)
    vel = None if velocity is None else velocity.reshape(B, V, N, 3)
    mu = mu_t.reshape(B, V, N)
    colours = images.permute(0, 1, 3, 4, 2).reshape(B, V, N, 3).to(xyz)
    out = scale_t.reshape(B, V, N).clone()
    for b in range(B):
        cams = cameras[b * V:(b + 1) * V]
        # each input's own depth map (camera z of its Gaussians), background infinitely far, then
        # the window's nearest
        _, z_own = project_points(pts[b], cams)
        depth = torch.where(background[b].reshape(V, N), torch.full_like(z_own, math.inf), z_own).reshape(V, 1, H, W)
        if constants.window > 1:
            depth = -F.max_pool2d(-depth, constants.window, stride=1, padding=constants.window // 2)
        maps = torch.cat([depth, images[b].to(xyz)], dim=1)  # [V, 4, H, W]
        for j in range(V):
            dt = (times[b] - times[b, j]).abs()
            witnesses = torch.nonzero((dt >= constants.min_gap * gap[b] - 1e-6)
                                      & (dt <= constants.max_gap * gap[b] + 1e-6)).flatten()
            if witnesses.numel() == 0:
                continue
            lag = times[b, witnesses][:, None] - mu[b, j][None]  # [P, N]
            at = pts[b, j][None].expand(len(witnesses), -1, -1)
            if vel is not None:
                at = at + vel[b, j][None] * lag[..., None]
            uv, z = project_points(at, cams[witnesses])
            inside = in_image(uv, z, W, H)
            seen = _lookup(maps[witnesses], uv)  # [P, N, 4]
            differs = (seen[..., 1:] - colours[b, j][None]).abs().amax(-1) > constants.colour
            through = inside & differs & (z < (1 - constants.margin) * seen[..., 0])
            if constants.steady > 0:  # the steady rule, only where it could add something
                maybe = inside & differs & ~through & (z < (1 + constants.margin) * seen[..., 0])
                w, n = maybe.nonzero(as_tuple=True)
                if len(w):
                    ray = (pts[b, j, n] - cams.cam_to_world[j, :3, 3].to(pts))[:, None]  # from j's centre
                    each = cams[witnesses[w]]  # one camera per candidate
                    ends = [project_points(at[w, n][:, None] + (sign * constants.depth_error) * ray, each)[0]
                            for sign in (-1, 1)]
                    steady = (ends[1] - ends[0])[:, 0].norm(dim=-1) < constants.steady
                    through[w[steady], n[steady]] = True
            limit = torch.where(through, constants.width * lag.abs(), torch.full_like(lag, math.inf)).amin(0)
            if keep is not None:
                limit = torch.where(keep.reshape(B, V, N)[b, j], torch.full_like(limit, math.inf), limit)
            out[b, j] = torch.minimum(out[b, j], limit)
    return out.reshape(B, V * N)
