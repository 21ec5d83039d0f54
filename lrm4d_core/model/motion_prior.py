"""A no-learning velocity for every pixel-aligned Gaussian: block matching against the same
camera at another input time (the motion counterpart of `model.prior`'s depth guess).

Why: trained on this machine, the network never learned to perceive motion across views (implied
speeds ~0 against true 0.07-1.17 model units per model time; docs/default_model/experiments.md,
"Motion prior"), although the 4D parametrization can express it. A geometric cue, computed from the inputs alone, gives each
pixel's Gaussian a velocity that training can only refine.

For each input view i of a window:
1. its *partners* are the nearest-in-time other inputs before and after it seen from the same
   place: the same intrinsics, optical axes within `max_axis_angle` degrees and centres closer
   than `max_baseline` of view i's median depth (by default: the same static camera);
2. every pixel's 3D point X (the decoded centre, detached) is projected into partner j, and j's
   image is sampled there: a warp of j into i's pixel grid, exact for static surfaces at the
   decoded depth (for a static camera, the identity whatever the depth);
3. a cost volume of patch SSDs between i and the warp, over integer offsets within `radius`
   pixels, gives the best offset o (sub-pixel by a parabola); a pixel moves where the zero
   offset's cost exceeds `min_cost` and the best one is below `max_cost_ratio` of it (a changed
   patch that matches well elsewhere), and with `centre_check` the same holds for the pixel
   alone; textureless and unchanged pixels keep velocity zero;
4. the matched pixel q = proj_j(X) + o gives X' (the partner's own decoded point at q with
   `partner_depth`, else q lifted at X's depth in camera j), and the velocity is
   (X' - X) / (t_j - t_i), capped at `max_speed`;
5. with partners on both sides, both must find motion and agree (`agreement`), and the mean is
   kept; with one side only, its velocity (`one_sided`);
6. each moving pixel takes the median velocity of the moving pixels in its `smooth` x `smooth`
   window (single matches are noisy; an object's motion is smooth).

What it cannot do: motion along the viewing ray of an unchanged-looking patch, textureless
interiors (aperture problem: only edges and texture move), and cameras that move (see
`max_baseline`). Its velocities are placed at the decoded depth, so depth errors misplace and
mis-scale them. Cost: two cost volumes of (2 radius + 1)^2 offsets per view with a partner.

`velocity_rotation` turns a velocity into the 4D rotation (and temporal scale) that makes a
Gaussian with given spatial and temporal scales slice with that velocity while it stays visible as
long as before (SPEC §1 keeps rotations and scales; no new fields).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras, project_points
from lrm4d_core.gaussians import factor_rotation_4d, left_isoclinic

from .windows import box_mean

__all__ = ["MotionPriorConstants", "partner_views", "same_intrinsics", "matched_velocity", "velocity_rotation", "quaternion_multiply"]


@dataclass(frozen=True)
class MotionPriorConstants:
    """Constants of the block-matching velocity (module docstring). The defaults other than
    `radius` are the ones chosen on the workspace and driving bags (docs/default_model/experiments.md, "Motion prior").

    Attributes:
        radius: search radius in pixels; 0 (the default, and what checkpoints that predate the
            motion prior read) turns the motion prior off.
        patch: side of the matched patch (odd).
        min_cost: a pixel can move only where the zero offset's patch cost (mean over the patch of
            the squared RGB difference summed over channels) exceeds this.
        max_cost_ratio: ... and the best offset's cost is below this share of it.
        max_axis_angle: partners' optical axes within this many degrees.
        max_baseline: partners' centres closer than this share of the view's median depth: by
            default only a camera that stayed where it was (a moving camera's warp depends on the
            predicted depth, whose errors read as motion: phantom movers on a driving bag).
        max_speed: cap of the speed (model units per model time).
        smooth: window of the median filter over moving pixels (1: none).
        agreement: with a partner on both sides, the two velocities must differ by at most this
            share of the larger (else the pixel does not move).
        one_sided: accept a velocity from one side where the other side has no partner.
        partner_depth: lift the matched pixel with the partner's own decoded point there (the
            surface where it is at the partner's time, depth change included) instead of at the
            pixel's depth.
        centre_check: require the pixel itself (not only its patch) to change and to match at the
            best offset: background next to a mover changes its patch, not its colour.
        hold_unobserved: at inference, hold still (`Gaussians4D.held_still`, at their view's time)
            the Gaussians of input views with no partner on either side: their velocity is the
            network's alone, which nothing observed (off, the default of checkpoints that predate
            it). All of them, however slow: a model unit per model time has no fixed meaning in
            m/s (a window's first half-second is a short model time unit).
    """

    radius: int = 0
    patch: int = 5
    min_cost: float = 0.002
    max_cost_ratio: float = 0.9
    max_axis_angle: float = 20.0
    max_baseline: float = 0.01
    max_speed: float = 5.0
    smooth: int = 9
    agreement: float = 0.5
    one_sided: bool = True
    partner_depth: bool = True
    centre_check: bool = True
    hold_unobserved: bool = False

    def __post_init__(self) -> None:
        if self.radius < 0 or self.patch < 1 or self.patch % 2 == 0 or not 0 < self.max_cost_ratio <= 1:
            raise ValueError(f"invalid motion prior constants {self}")


def same_intrinsics(K: Tensor) -> Tensor:
    """[..., V, V] which of the cameras with intrinsics K [..., V, 3, 3] share them (to 1e-6 of the
    largest entry): one physical camera at several times."""
    return (K[..., :, None, :, :] - K[..., None, :, :, :]).abs().amax((-1, -2)) < 1e-6 * K.abs().amax((-1, -2, -3))[..., None, None]


def partner_views(cameras: Cameras, times: Tensor, depth: Tensor, constants: MotionPriorConstants) -> Tensor:
    """[B, V, 2] index of each view's partners (module docstring, step 1): the nearest qualifying
    input before it in time and the nearest after it, -1 where none qualifies.

    Args:
        cameras: B*V cameras (element b's views at b*V .. b*V+V-1); times: [B, V];
        depth: [B, V, H, W] depth along the rays (for the baseline bound).
    """
    B, V = times.shape
    c2w = cameras.cam_to_world.reshape(B, V, 4, 4).to(times)
    K = cameras.K.reshape(B, V, 3, 3).to(times)
    axes, centres = c2w[..., :3, 2], c2w[..., :3, 3]
    cos_axes = (axes[:, :, None] * axes[:, None, :]).sum(-1)
    baseline = torch.linalg.norm(centres[:, :, None] - centres[:, None, :], dim=-1)
    scale = depth.reshape(B, V, -1).median(-1).values
    dt = times[:, None, :] - times[:, :, None]  # [B, i, j]: t_j - t_i
    same_k = same_intrinsics(K)
    ok = same_k & (cos_axes > math.cos(math.radians(constants.max_axis_angle)))
    ok &= baseline <= constants.max_baseline * scale[:, :, None]
    sides = []
    for sign in (-1.0, 1.0):
        gap = torch.where(ok & (sign * dt > 1e-6), sign * dt, torch.full_like(dt, math.inf))
        best = gap.argmin(-1)
        sides.append(torch.where(torch.isfinite(gap.amin(-1)), best, torch.full_like(best, -1)))
    return torch.stack(sides, -1)


def _lift(uv: Tensor, z: Tensor, cameras: Cameras) -> Tensor:
    """Pixel coordinates [C, N, 2] at camera z [C, N] -> world points [C, N, 3]."""
    K = cameras.K.to(uv)
    fx, fy, cx, cy, skew = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None], K[:, 0, 1, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    cam = torch.stack([x, y, torch.ones_like(x)], -1) * z[..., None]
    c2w = cameras.cam_to_world.to(uv)
    return cam @ c2w[:, :3, :3].transpose(-1, -2) + c2w[:, None, :3, 3]


def _best_offsets(image: Tensor, warped: Tensor, valid: Tensor, constants: MotionPriorConstants) -> tuple[Tensor, Tensor]:
    """Offset [C, H, W, 2] (dx, dy; sub-pixel by a parabola through the best integer cost and its
    neighbours) of the best patch match of `image` in `warped` (both [C, 3, H, W]; `valid`
    [C, H, W]) and whether the pixel counts as moving [C, H, W]."""
    r, H, W = constants.radius, image.shape[-2], image.shape[-1]
    n, big = 2 * r + 1, 10.0  # big: above any real cost (at most 3), small enough for float32 box sums
    padded = F.pad(torch.where(valid[:, None], warped, torch.full_like(warped, big)), (r, r, r, r), value=big)
    C = image.shape[0]
    costs = image.new_empty(C, n * n, H, W)  # offset index (dy + r) * n + (dx + r)
    for dy in range(n):  # one row of offsets at a time: all dx as a strided view of the padded rows
        rows = padded[:, :, dy:dy + H]  # [C, 3, H, W + 2r]
        shifted = rows.unfold(-1, W, 1)  # [C, 3, H, n, W]: shifted[..., dx, x] = rows[..., x + dx]
        diff = image[:, :, :, None] - shifted
        diff.square_()  # in place, and the three channels added as planes: a sum over a strided dim is slow
        diff = (diff[:, 0] + diff[:, 1] + diff[:, 2]).clamp_max_(big)  # [C, H, n, W]
        costs[:, dy * n:(dy + 1) * n] = box_mean(diff.transpose(1, 2), constants.patch)
    best_cost, best = costs.min(1)
    zero = (n * n) // 2
    zero_cost = costs[:, zero]
    moving = valid & (zero_cost > constants.min_cost) & (best_cost < constants.max_cost_ratio * zero_cost)
    if constants.centre_check:  # the pixel itself changed and matches there (not just its patch:
        # background next to a mover changes patch but not colour)
        ys, xs = torch.meshgrid(torch.arange(H, device=image.device), torch.arange(W, device=image.device), indexing="ij")
        flat = ((ys + best // n) * (W + 2 * r) + xs + best % n).reshape(C, 1, H * W).expand(C, 3, H * W)
        at_best = torch.gather(padded.reshape(C, 3, -1), 2, flat).reshape(C, 3, H, W)
        centre_best = ((image - at_best) ** 2).sum(1)
        centre_zero = ((image - padded[:, :, r:r + H, r:r + W]) ** 2).sum(1)
        moving &= (centre_zero > constants.min_cost) & (centre_best < constants.max_cost_ratio * centre_zero)
    iy, ix = best // n, best % n
    off = torch.stack([ix, iy], -1).to(image.dtype) - r
    c_mid = best_cost
    c_xm = torch.gather(costs, 1, (best - 1).clamp(0, n * n - 1)[:, None])[:, 0]
    c_xp = torch.gather(costs, 1, (best + 1).clamp(0, n * n - 1)[:, None])[:, 0]
    c_ym = torch.gather(costs, 1, (best - n).clamp(0, n * n - 1)[:, None])[:, 0]
    c_yp = torch.gather(costs, 1, (best + n).clamp(0, n * n - 1)[:, None])[:, 0]

    def vertex(cm: Tensor, cp: Tensor, inside: Tensor) -> Tensor:
        curvature = cm + cp - 2 * c_mid
        shift = 0.5 * (cm - cp) / curvature.clamp_min(1e-9)
        return torch.where(inside & (curvature > 1e-9), shift.clamp(-0.5, 0.5), torch.zeros_like(shift))

    off[..., 0] += vertex(c_xm, c_xp, (ix > 0) & (ix < n - 1))
    off[..., 1] += vertex(c_ym, c_yp, (iy > 0) & (iy < n - 1))
    return off, moving


def _one_side(images: Tensor, points: Tensor, cameras: Cameras, times: Tensor, b_idx: Tensor, i_idx: Tensor,
              j_idx: Tensor, constants: MotionPriorConstants) -> tuple[Tensor, Tensor]:
    """Steps 2-4 for views (b_idx, i_idx) against partners j_idx: velocity [C, H*W, 3] and whether
    each pixel counts as moving [C, H*W]."""
    B, V, _, H, W = images.shape
    cams_j = cameras[b_idx * V + j_idx]
    pts = points.reshape(B, V, H * W, 3)[b_idx, i_idx]  # [C, HW, 3]
    uv, z = project_points(pts, cams_j)
    grid = torch.stack([uv[..., 0] / W, uv[..., 1] / H], -1) * 2 - 1
    warped = F.grid_sample(images[b_idx, j_idx], grid.reshape(-1, H, W, 2).to(images), mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    valid = ((grid.abs() < 1).all(-1) & (z > 1e-6)).reshape(-1, H, W)
    offset, moving = _best_offsets(images[b_idx, i_idx], warped, valid, constants)
    q = uv + offset.reshape(-1, H * W, 2).to(uv)
    if constants.partner_depth:  # the partner's own point at q: the surface where it is at t_j
        grid_q = (torch.stack([q[..., 0] / W, q[..., 1] / H], -1) * 2 - 1).reshape(-1, H, W, 2)
        pts_j = points.reshape(B, V, H, W, 3)[b_idx, j_idx].permute(0, 3, 1, 2)
        moved = F.grid_sample(pts_j, grid_q.to(pts_j), mode="bilinear", padding_mode="border",
                              align_corners=False).permute(0, 2, 3, 1).reshape(-1, H * W, 3)
    else:  # q lifted at X's depth in camera j
        moved = _lift(q, z, cams_j)
    dt = (times[b_idx, j_idx] - times[b_idx, i_idx]).to(pts)
    v = (moved - pts) / dt[:, None, None]
    speed = torch.linalg.norm(v, dim=-1, keepdim=True)
    v = v * (constants.max_speed / speed.clamp_min(constants.max_speed)).clamp_max(1.0)
    return v, moving.reshape(-1, H * W) & torch.isfinite(v).all(-1)


@torch.no_grad()
def matched_velocity(
    images: Tensor, points: Tensor, cameras: Cameras, times: Tensor, depth: Tensor, constants: MotionPriorConstants,
    still: Tensor | None = None,
) -> Tensor:
    """Velocity [B, V*H*W, 3] (model units per model time; zero where no motion is found) of every
    input pixel's point (module docstring).

    Args:
        images: [B, V, 3, H, W] in [0, 1]; points: [B, V*H*W, 3] the pixels' decoded centres;
        cameras: B*V cameras; times: [B, V] model time; depth: [B, V, H, W] depth along the rays.
        still: [B, V*H*W] bool, pixels known to be static (`model.stereo` matched them from other
            times), which do not move; None: none known.
    """
    B, V, _, H, W = images.shape
    velocity = points.new_zeros(B, V, H * W, 3)
    if constants.radius == 0:
        return velocity.reshape(B, V * H * W, 3)
    partners = partner_views(cameras, times, depth, constants)  # [B, V, 2]
    b_idx, i_idx = torch.nonzero((partners >= 0).any(-1), as_tuple=True)
    if b_idx.numel() == 0:
        return velocity.reshape(B, V * H * W, 3)
    C = b_idx.numel()
    estimates, votes, present = [], [], []
    for side in range(2):
        j_idx = partners[b_idx, i_idx, side]
        has = j_idx >= 0
        v = points.new_zeros(C, H * W, 3)
        moving = torch.zeros(C, H * W, dtype=torch.bool, device=points.device)
        if has.any():
            v[has], moving[has] = _one_side(images, points, cameras, times, b_idx[has], i_idx[has], j_idx[has], constants)
        estimates.append(v)
        votes.append(moving)
        present.append(has[:, None].expand(C, H * W))
    (v0, v1), (m0, m1), (p0, p1) = estimates, votes, present
    agree = (v0 - v1).norm(dim=-1) <= constants.agreement * torch.maximum(v0.norm(dim=-1), v1.norm(dim=-1))
    both = m0 & m1 & agree
    only0 = m0 & ~p1 & constants.one_sided
    only1 = m1 & ~p0 & constants.one_sided
    if still is not None:
        free = ~still.reshape(B, V, H * W)[b_idx, i_idx]
        both, only0, only1 = both & free, only0 & free, only1 & free
    v = torch.where(both[..., None], 0.5 * (v0 + v1), torch.where(only0[..., None], v0, v1))
    velocity[b_idx, i_idx] = _median_filter(v, both | only0 | only1, H, W, constants.smooth)
    return velocity.reshape(B, V * H * W, 3)


def _median_filter(v: Tensor, moving: Tensor, H: int, W: int, size: int) -> Tensor:
    """Per moving pixel, the component-wise median of the velocities [C, H*W, 3] of the moving
    pixels in its size x size window (block matching is noisy pixel by pixel, motion is smooth
    within an object); zero where not moving."""
    out = torch.where(moving[..., None], v, torch.zeros_like(v))
    if size == 1 or not bool(moving.any()):
        return out
    C = v.shape[0]
    grid = torch.where(moving[..., None], v, torch.full_like(v, math.nan)).reshape(C, H, W, 3)
    padded = F.pad(grid.permute(0, 3, 1, 2), (size // 2,) * 4, value=math.nan).permute(0, 2, 3, 1)  # [C, H+2h, W+2h, 3]
    # the windows of the moving pixels only (the others are zero, and movers are few): gathering
    # them costs their number, unfolding every pixel's window costs size^2 times the image
    c, y, x = moving.reshape(C, H, W).nonzero(as_tuple=True)
    steps = torch.arange(size, device=v.device)
    rows, cols = (y[:, None] + steps)[:, :, None], (x[:, None] + steps)[:, None, :]
    windows = padded[c[:, None, None], rows, cols]  # [moving pixels, size, size, 3]
    out[moving] = windows.reshape(-1, size * size, 3).nanmedian(1).values
    return out


def quaternion_multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product p q of [..., 4] quaternions (w, x, y, z)."""
    return (left_isoclinic(p) @ q[..., None])[..., 0]


def velocity_rotation(velocity: Tensor, scale_space: Tensor, scale_t: Tensor,
                      max_angle: float = 80.0) -> tuple[Tensor, Tensor, Tensor]:
    """(q_left, q_right, new scale_t), each [..., 4] / [...]: the simple 4D rotation, in the plane of
    the velocity's direction n and the time axis, and the temporal scale that make a Gaussian with
    spatial scale `scale_space` [...] (isotropic) and temporal scale `scale_t` [...] slice with
    `velocity` [..., 3] while its temporal marginal (Sigma_tt = scale_t^2, how long it is seen)
    stays as it was.

    Rotating the time axis by theta towards n with scales (s, st') gives Sigma_tt =
    st'^2 cos^2 + s^2 sin^2 and Sigma_nt = (st'^2 - s^2) sin cos. Sigma_tt = st^2 asks for
    st'^2 = (st^2 - s^2 sin^2) / cos^2, and then Sigma_nt / Sigma_tt = (st^2 - s^2) tan(theta) / st^2,
    so tan(theta) = u st^2 / (st^2 - s^2) for speed u. Sliced, such a Gaussian is stretched along
    its motion by about 1 / cos(theta). The angle is capped at `max_angle` degrees (speeds above
    tan(max_angle) (st^2 - s^2) / st^2 are capped), and nothing moves where st <= s."""
    s2, st2 = scale_space**2, scale_t**2
    speed = torch.linalg.norm(velocity, dim=-1)
    ratio = ((st2 - s2) / st2.clamp_min(1e-24)).clamp_min(0.0)  # 0 where st <= s: no velocity
    tan = torch.minimum(speed / ratio.clamp_min(1e-12), torch.full_like(speed, math.tan(math.radians(max_angle))))
    tan = torch.where(ratio > 0, tan, torch.zeros_like(tan))
    theta = torch.atan(tan)
    sin, cos = torch.sin(theta), torch.cos(theta)
    new_scale_t = ((st2 - s2 * sin**2) / cos**2).sqrt()
    n = velocity / speed.clamp_min(1e-12)[..., None]
    e1 = torch.cat([n, torch.zeros_like(n[..., :1])], -1)
    e2 = torch.zeros_like(e1)
    e2[..., 3] = 1.0
    sin, cos = sin[..., None, None], cos[..., None, None]
    outer = lambda a, b: a[..., :, None] * b[..., None, :]  # noqa: E731
    eye = torch.eye(4, dtype=velocity.dtype, device=velocity.device).expand(*velocity.shape[:-1], 4, 4)
    rot = eye + sin * (outer(e1, e2) - outer(e2, e1)) + (cos - 1) * (outer(e1, e1) + outer(e2, e2))
    q_left, q_right = factor_rotation_4d(rot)
    return q_left, q_right, new_scale_t
