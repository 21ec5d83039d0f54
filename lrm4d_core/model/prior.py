"""The geometric prior of the "prior" parametrization: pixel-aligned Gaussians as residuals on a
no-learning reconstruction.

Why: the SPEC §1 activations start every Gaussian at one depth with grey colour and an opacity of
0.12, and a small model trained for hours on a CPU never got far from that fog. Here each pixel's
Gaussian starts as the heuristic reference of the evaluation would place it, and the network
predicts corrections:

    depth     = prior_depth * exp(g_xyz[0])                  (clamped to [near, far] of `PriorConstants`)
    align     = at inference on inward rigs with `constants.align` on, the depth above times a factor
                per view (and per pixel where carved) that fits it to the other inputs'
                silhouettes (`model.view_align`), before anything below uses it
    stereo    = at inference with `constants.stereo` on, the depth of views without a plain
                background (and with `plain_search`, of plain-background views the alignment left
                alone) times the factor at which its patch looks the same from the other
                inputs (`model.stereo`; pixels on a known ground plane excepted); the pixels of
                views without a plain background so matched are static: the motion prior leaves
                them still and, with `persist`, their temporal scale is at least that
    centre    = ray_o + depth * ray_d + footprint * (g_xyz[1] * cam_x + g_xyz[2] * cam_y)
    mu_t      = t_view + gap * g_t                           (gap: spacing of the input times)
    colour    = pixel_rgb + SH_C0 * g_rgb                    (i.e. f_dc = pixel f_dc + g_rgb)
    scale_xyz = footprint_scale * footprint * exp(g_scale)   (footprint = depth / focal: one pixel)
    scale_t   = time_width * gap * exp(g_scale_t)
    carve     = at inference with `constants.carve` on, scale_t at most `width` times the distance
                in time to the nearest other input that sees through the Gaussian there (or, from
                nearly the same viewpoint, sees another colour): it was not there then
                (`model.time_carve`; the stereo's static pixels excepted)
    rotation  = normalize(q_l), normalize(q_r) around the identity (head bias)
    opacity   = sigmoid(g_opacity + logit(prior opacity))    (background-coloured pixels: near 0)
    motion    = R4 = R_v R(q_l, q_r): where `constants.motion` is on, the rotation that makes the
                Gaussian slice with the block-matching velocity of its pixel (`model.motion_prior`)
                composed with the network's
    thickness = at inference with `constants.thickness` on, the foreground Gaussians of
                plain-background views that the alignment did not place stretched along their
                rays, and moved back, by the subject's half-depth there (its distance to the
                silhouette's edge in footprints, bounded by near inputs' silhouettes:
                `model.thickness`)
    ground    = where the caller knows the ground plane (world z up, height given per window) and
                `constants.ground_snap` > 0, a pixel whose decoded depth is within that relative
                tolerance of its ray's ground hit is put on the ground (`snap_to_ground`), unless
                the motion prior found it moving

so a network whose head outputs zeros is exactly the heuristic-depth splat reconstruction.

The prior depth along each pixel ray (`depth_prior`), from the cameras alone:
- inward rigs (cameras far from the model-box origin looking at it, as `estimate_scene_normalization`
  frames objects and workspaces): the plane through the origin facing the camera (the reference's
  "distance from the camera to the scene centre");
- outward rigs (cameras near the origin, e.g. a car's surround cameras): the ground plane
  `camera_height` (world units) below the mean camera height, world z up; rays that do not meet
  it within `dome_radius`, and rays looking up, stop on a dome of that radius.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import math

import torch
from torch import Tensor

from lrm4d_core.cameras import Cameras
from lrm4d_core.gaussians import SH_C0, Gaussians4D

from .motion_prior import MotionPriorConstants, matched_velocity, partner_views, quaternion_multiply, velocity_rotation
from .stereo import StereoConstants, stereo_log_scales
from .thickness import ThicknessConstants, thickened
from .time_carve import TimeCarveConstants, carved_time_scales
from .view_align import ViewAlignConstants, view_scales
from .windows import box_mean

__all__ = ["PriorConstants", "inward_mask", "depth_prior", "input_time_gap", "ray_ground_hit", "snap_to_ground", "ground_discs",
           "decode_prior"]


@dataclass(frozen=True)
class PriorConstants:
    """Constants of the prior (model units unless stated; times in model time).

    Attributes:
        footprint_scale: Gaussian standard deviation in pixel footprints.
        time_width: temporal standard deviation in input-time gaps.
        camera_height: outward rigs: world units (metres) from the cameras down to the ground.
        dome_radius: outward rigs: depth of rays that miss the ground.
        opacity: opacity of the prior Gaussians.
        background_tolerance: pixels within this max-abs distance of the model's background colour
            start (nearly) transparent: they show the background, not a surface.
        near, far: depth bounds.
        scale_t_max: cap of the temporal scale (static content must persist over the window).
        depth_residual_max: cap of |g_xyz[0]| (the log-depth correction).
        motion: the block-matching velocity (`model.motion_prior`; radius 0, the default of
            checkpoints that predate it, turns it off).
        ground_snap: relative depth tolerance within which a pixel's Gaussian is put on a known
            ground plane (0, the default of checkpoints that predate it, turns it off; it acts
            only where the caller gives the ground's height).
        align: the silhouette alignment of each view's depths, at inference on inward rigs
            (`model.view_align`; search 0, the default of checkpoints that predate it, turns it off).
        stereo: the plane-sweep correction of textured views' depths, at inference
            (`model.stereo`; search 0, the default of checkpoints that predate it, turns it off).
        carve: the limit on how long a Gaussian that other inputs see through is seen, at
            inference (`model.time_carve`; width 0, the default of checkpoints that predate it,
            turns it off).
        ground_disc: at inference, a pixel put on the known ground whose input patch is smooth is a
            disc flat on the ground of this radius in pixel footprints, over the square root of
            the sine of its ray's angle to the ground (`ground_discs`; 0, the default of
            checkpoints that predate it, turns it off).
        ground_disc_texture: ... smooth: the colour's standard deviation over its 3 x 3 window
            (channels' variances summed) below this.
        thickness: at inference, the foreground Gaussians of plain-background views stretched
            along their rays into the body behind the surface (`model.thickness`; depth 0, the
            default of checkpoints that predate it, turns it off).
    """

    footprint_scale: float = 0.7
    time_width: float = 1.5
    camera_height: float = 1.6
    dome_radius: float = 2.5
    opacity: float = 0.98
    background_tolerance: float = 0.04
    near: float = 0.02
    far: float = 10.0
    scale_t_max: float = 5.0
    depth_residual_max: float = 4.0
    motion: MotionPriorConstants = field(default_factory=MotionPriorConstants)
    ground_snap: float = 0.0
    align: ViewAlignConstants = field(default_factory=ViewAlignConstants)
    stereo: StereoConstants = field(default_factory=StereoConstants)
    carve: TimeCarveConstants = field(default_factory=TimeCarveConstants)
    ground_disc: float = 0.0
    ground_disc_texture: float = 0.03
    thickness: ThicknessConstants = field(default_factory=ThicknessConstants)

    def __post_init__(self) -> None:
        for f in fields(self):  # each prior's constants, as read back from a checkpoint's JSON config
            if isinstance(getattr(self, f.name), dict):
                object.__setattr__(self, f.name, f.default_factory(**getattr(self, f.name)))
        positive = min(self.footprint_scale, self.time_width, self.dome_radius) > 0
        if not 0 < self.near < self.far or not 0 < self.opacity < 1 or not positive or not 0 <= self.ground_snap < 1 \
                or self.ground_disc < 0 or self.ground_disc_texture < 0:
            raise ValueError(f"invalid prior constants {self}")


def inward_mask(cameras: Cameras, batch: int) -> Tensor:
    """[B] True where element b's cameras sit more than one model unit from the origin on average
    and look towards it (the inward branch of `estimate_scene_normalization` puts them at
    `camera_distance` looking at the centre; the outward branch puts the origin among them)."""
    c2w = cameras.cam_to_world.reshape(batch, -1, 4, 4)
    centres, axes = c2w[..., :3, 3], c2w[..., :3, 2]
    dist = torch.linalg.norm(centres, dim=-1)
    towards = (-(centres * axes).sum(-1) / dist.clamp_min(1e-9)).mean(-1)
    return (dist.mean(-1) > 1.0) & (towards > 0.5)


def ray_ground_hit(ray_origins: Tensor, ray_directions: Tensor, ground_z: Tensor) -> Tensor:
    """Depth along unit rays [..., 3] to the horizontal plane z = ground_z (broadcast to the rays'
    [...]; world z up): +inf for rays that do not go down to it (level or rising rays, origins
    below it, a NaN ground)."""
    dz = ray_directions[..., 2]
    hit = (ground_z - ray_origins[..., 2]) / dz.clamp_max(-1e-6)
    return torch.where((dz < -1e-6) & (hit > 0), hit, torch.full_like(hit, math.inf))


def depth_prior(cameras: Cameras, batch: int, world_scale: Tensor, constants: PriorConstants) -> Tensor:
    """Prior depth along every pixel ray (module docstring): [B, V, H, W].

    Args:
        cameras: B*V cameras in the model box (element b's views at b*V .. b*V+V-1).
        world_scale: [B] world units per model unit (`SceneNormalization.scale`).
    """
    from lrm4d_core.cameras import pixel_rays

    origins, dirs = pixel_rays(cameras)  # [B*V, H, W, 3]
    n, H, W, _ = dirs.shape
    V = n // batch
    o = origins.reshape(batch, V, H, W, 3)
    d = dirs.reshape(batch, V, H, W, 3)
    c2w = cameras.cam_to_world.reshape(batch, V, 4, 4).to(d)
    axes, centres = c2w[..., :3, 2], c2w[..., :3, 3]
    # inward: the plane through the origin facing the camera
    along = (-(centres * axes).sum(-1)).clamp_min(constants.near)  # [B, V] origin depth on the axis
    facing = (d * axes[:, :, None, None, :]).sum(-1).clamp_min(1e-3)
    inward = along[:, :, None, None] / facing
    # outward: ground plane below the cameras, else the dome
    scale = torch.as_tensor(world_scale, dtype=d.dtype, device=d.device).reshape(batch)
    ground_z = centres[..., 2].mean(-1) - constants.camera_height / scale  # [B]
    outward = ray_ground_hit(o, d, ground_z[:, None, None, None]).clamp_max(constants.dome_radius)
    is_in = inward_mask(cameras, batch).to(d.device)[:, None, None, None]
    return torch.where(is_in, inward, outward).clamp(constants.near, constants.far)


def input_time_gap(times: Tensor) -> Tensor:
    """[B] spacing of the distinct input times of each element ((max - min) / (distinct - 1));
    1.0 (the whole model-time half span) when all inputs share one time."""
    sorted_t = torch.sort(times, dim=-1).values
    distinct = 1 + ((sorted_t[:, 1:] - sorted_t[:, :-1]) > 1e-6).sum(-1)
    span = sorted_t[:, -1] - sorted_t[:, 0]
    gap = span / (distinct - 1).clamp_min(1)
    return torch.where(distinct > 1, gap, torch.ones_like(gap))


def snap_to_ground(
    depth: Tensor, ray_origins: Tensor, ray_directions: Tensor, ground: Tensor, tolerance: float
) -> tuple[Tensor, Tensor]:
    """Which pixels lie on a known ground plane, and the depth of their ray's ground hit.

    Why: on a floor or a road the ground is the largest surface in view and a robot usually knows
    where it is (the fixed frame's z = 0 on the ground, REP 105); at 64 px the network's depth is
    right to about a pixel footprint (decimetres), the ground's is exact. A pixel snaps when its
    ray goes down from a camera above the ground and the decoded depth is within `tolerance`
    (relative) of the ray's ground hit: movers and walls, further than that from the floor,
    keep their decoded depth (and `decode_prior` leaves alone what the motion prior sees moving).

    Args:
        depth: [B, P, 1] decoded depth along unit rays; ray_origins, ray_directions: [B, P, 3]
            (world z up, the model box's axes are the world's).
        ground: [B] the ground's height in the same frame, NaN where it is unknown.
        tolerance: relative depth tolerance (> 0).
    Returns:
        (snapped [B, P, 1] bool, ground-hit depth [B, P, 1], +inf where the ray misses it).
    """
    hit = ray_ground_hit(ray_origins, ray_directions, ground.to(depth)[:, None])[..., None]
    snapped = torch.isfinite(hit) & ((depth - hit).abs() <= tolerance * hit)
    return snapped, hit


def ground_discs(images: Tensor, on_ground: Tensor, footprint: Tensor, ray_directions: Tensor,
                 constants: PriorConstants) -> tuple[Tensor, Tensor]:
    """Which pixels on the ground become flat discs, and their radius ([B, P, 1] bool, [B, P, 1]).

    Why: a pixel-aligned Gaussian covers its pixel in its own camera, but a ray that grazes the
    ground spreads its pixel along the ground by 1 / sin(angle), so another camera nearer that
    patch (a held-out view, or the same car a moment later) sees the road between them as holes
    (the environment shows through). A disc flat on the known ground, as wide as the pixel's
    footprint there (the geometric mean of 1 and 1 / sin), closes them. Only where the input patch
    is smooth: a disc wider than the network's Gaussian blurs a textured floor
    (docs/default_model/experiments.md, "Ground discs", has the measurements).

    Args:
        images: [B, V, 3, H, W]; on_ground: [B, V*H*W, 1] bool, pixels put on the ground (not moving);
        footprint: [B, V*H*W, 1] one pixel's size at its depth; ray_directions: [B, V*H*W, 3] unit,
        world z up.
    """
    B, V, _, H, W = images.shape
    flat = images.reshape(B * V, 3, H, W)
    mean = box_mean(flat, 3)
    spread = (box_mean(flat * flat, 3) - mean * mean).clamp_min(0.0).sum(1).sqrt()  # [B*V, H, W]
    smooth = (spread < constants.ground_disc_texture).reshape(B, V * H * W, 1)
    sine = ray_directions[..., 2:3].abs().clamp_min(0.05)
    return on_ground & smooth, constants.ground_disc * footprint / sine.sqrt()


def decode_prior(
    raw: Tensor,
    images: Tensor,
    cameras: Cameras,
    times: Tensor,
    ray_origins: Tensor,
    ray_directions: Tensor,
    prior: Tensor,
    background: Tensor,
    constants: PriorConstants,
    scale_max: float,
    ground: Tensor | None = None,
    inference: bool = False,
) -> Gaussians4D:
    """Pixel-aligned Gaussians from raw head output as residuals on the prior (module docstring).

    Args:
        raw: [B, V*H*W, 20] in `CHANNEL_LAYOUT` order.
        images: [B, V, 3, H, W] in [0, 1]; cameras: B*V in the model box; times: [B, V] model time.
        ray_origins, ray_directions: [B, V*H*W, 3]; prior: [B, V, H, W] prior depth along the rays.
        background: [3] the colour the model composites on (pixels of it start transparent).
        scale_max: cap of the spatial scales (the SPEC activation's).
        ground: [B] height of a known ground plane in the model box (world z up; NaN or None:
            unknown), used where `constants.ground_snap` > 0.
        inference: not training (`constants.motion.hold_unobserved` acts only then).
    """
    B, V, _, H, W = images.shape
    g_xyz, g_t, g_rgb, g_s, g_st, q_l, q_r, g_o = raw.split([3, 1, 3, 3, 1, 4, 4, 1], dim=-1)
    c2w = cameras.cam_to_world.reshape(B, V, 4, 4).to(raw)
    K = cameras.K.reshape(B, V, 3, 3).to(raw)
    focal = 0.5 * (K[:, :, 0, 0] + K[:, :, 1, 1])  # [B, V] pixels per unit of z
    per_pixel = (B, V, H * W)
    spacing = input_time_gap(times)  # [B]

    def expand(x: Tensor) -> Tensor:  # [B, V] -> [B, V*H*W, 1]
        return x[:, :, None].expand(*per_pixel).reshape(B, V * H * W, 1)

    log_residual = g_xyz[..., :1].clamp(-constants.depth_residual_max, constants.depth_residual_max)
    depth = (prior.reshape(B, V * H * W, 1) * torch.exp(log_residual)).clamp(constants.near, constants.far)
    pixels = images.permute(0, 1, 3, 4, 2).reshape(B, V * H * W, 3)
    is_background = (pixels - background.to(pixels)).abs().amax(-1) < constants.background_tolerance
    aligned = None
    if inference and constants.align.search > 0:  # a factor per view, then carving, from the other views' silhouettes
        log_k, aligned = view_scales(depth.detach(), ~is_background.reshape(B, V, H, W), ray_origins, ray_directions,
                                     cameras, times, spacing, constants.align, active=inward_mask(cameras, B))
        depth = (depth * torch.exp(log_k.reshape(B, V * H * W, 1))).clamp(constants.near, constants.far)
    static = None
    if inference and constants.stereo.search > 0:  # a factor per pixel where the other inputs see its patch
        keep = torch.zeros_like(is_background)
        if ground is not None and constants.ground_snap > 0:  # the ground snapping places those exactly
            keep = snap_to_ground(depth, ray_origins, ray_directions, ground, constants.ground_snap)[0][..., 0]
        log_k, static = stereo_log_scales(images, depth.detach(), ray_origins, ray_directions, cameras, times,
                                  spacing, is_background.reshape(B, V, H, W), keep.reshape(B, V, H, W),
                                  constants.stereo, aligned=aligned)
        depth = (depth * torch.exp(log_k.reshape(B, V * H * W, 1))).clamp(constants.near, constants.far)
    cam_x = c2w[:, :, None, :3, 0].expand(B, V, H * W, 3).reshape(B, V * H * W, 3)
    cam_y = c2w[:, :, None, :3, 1].expand(B, V, H * W, 3).reshape(B, V * H * W, 3)

    def place(depth: Tensor) -> Tensor:  # the centre: on the ray at `depth`, plus the in-image offset
        return ray_origins + depth * ray_directions + depth / expand(focal) * (g_xyz[..., 1:2] * cam_x + g_xyz[..., 2:3] * cam_y)

    xyz = place(depth)
    velocity = None
    if constants.motion.radius:
        velocity = matched_velocity(images, xyz.detach(), cameras, times, depth.detach().reshape(B, V, H, W), constants.motion,
                                    still=None if static is None else static.reshape(B, V * H * W))
    on_ground = None
    if ground is not None and constants.ground_snap > 0:
        on_ground, hit = snap_to_ground(depth, ray_origins, ray_directions, ground, constants.ground_snap)
        if velocity is not None:  # what moves is not the ground, however near it is decoded
            on_ground = on_ground & ~velocity.detach().abs().gt(0).any(-1, keepdim=True)
        depth = torch.where(on_ground, hit, depth)
        xyz = place(depth)
        # the in-image offset moves a snapped centre off the plane; keep it on the plane
        xyz = torch.cat([xyz[..., :2], torch.where(on_ground, ground.to(xyz)[:, None, None], xyz[..., 2:3])], dim=-1)
    footprint = depth / expand(focal)

    gap = spacing[:, None].expand(B, V)
    mu_t = expand(times) + expand(gap) * g_t
    colors = (pixels + SH_C0 * g_rgb).clamp_min(0.0)
    scales = torch.cat(
        [
            (constants.footprint_scale * footprint * torch.exp(g_s)).clamp_max(scale_max),
            (constants.time_width * expand(gap) * torch.exp(g_st)).clamp_max(constants.scale_t_max),
        ],
        dim=-1,
    )
    if static is not None and constants.stereo.persist > 0:  # seen alike from other times: static, persists
        # (the motion prior gave these pixels no velocity: `still` above)
        persist = torch.where(static.reshape(B, V * H * W, 1), scales[..., 3:].clamp_min(constants.stereo.persist),
                              scales[..., 3:])
        scales = torch.cat([scales[..., :3], persist], dim=-1)
    if inference and constants.carve.width > 0:  # what another input sees through at its time fades before it
        carved = carved_time_scales(xyz.detach(), None if velocity is None else velocity.detach(), mu_t.detach()[..., 0],
                                    scales[..., 3].detach(), images, is_background.reshape(B, V, H, W), cameras, times,
                                    spacing, constants.carve,
                                    keep=None if static is None else static.reshape(B, V * H * W))
        scales = torch.cat([scales[..., :3], torch.minimum(scales[..., 3:], carved[..., None].to(scales))], dim=-1)
    q_l, q_r = torch.nn.functional.normalize(q_l, dim=-1), torch.nn.functional.normalize(q_r, dim=-1)
    if inference and on_ground is not None and constants.ground_disc > 0:  # smooth ground: flat discs on it
        disc, radius = ground_discs(images, on_ground, footprint, ray_directions, constants)
        flat_disc = torch.cat([radius, radius, 0.01 * radius], dim=-1).clamp_max(scale_max)
        scales = torch.cat([torch.where(disc, flat_disc, scales[..., :3]), scales[..., 3:]], dim=-1)
        identity = torch.zeros_like(q_l)
        identity[..., 0] = 1.0
        q_l, q_r = torch.where(disc, identity, q_l), torch.where(disc, identity, q_r)
    if velocity is not None and bool(velocity.any()):  # no partners (moving cameras) or nothing moved: R_v = I
        v_l, v_r, scale_t = velocity_rotation(velocity, scales[..., :3].mean(-1), scales[..., 3])
        q_l, q_r = quaternion_multiply(v_l, q_l), quaternion_multiply(q_r, v_r)  # R_v R: L(v_l q_l) R(q_r v_r)
        scales = torch.cat([scales[..., :3], scale_t[..., None]], dim=-1)  # seen as long as before
    prior_logit = math.log(constants.opacity / (1 - constants.opacity))
    logit = torch.where(is_background, torch.full_like(g_o[..., 0], -prior_logit), torch.full_like(g_o[..., 0], prior_logit))
    gaussians = Gaussians4D(
        means=torch.cat([xyz, mu_t], dim=-1),
        scales=scales,
        q_left=q_l,
        q_right=q_r,
        opacities=torch.sigmoid(g_o[..., 0] + logit),
        colors=colors,
    )
    if inference and constants.motion.hold_unobserved:  # no partner: a velocity nothing observed
        partners = partner_views(cameras, times, depth.detach().reshape(B, V, H, W), constants.motion)
        unobserved = (partners < 0).all(-1)[:, :, None].expand(per_pixel).reshape(B, V * H * W)
        gaussians = gaussians.held_still(unobserved, expand(times)[..., 0])
    if inference and constants.thickness.depth > 0:  # a subject seen from one side has a body behind it
        gaussians = thickened(gaussians, is_background.reshape(B, V, H, W), ray_origins, ray_directions, cameras, focal,
                              times, spacing, constants.thickness, constants.stereo.min_background, placed=aligned)
    return gaussians
