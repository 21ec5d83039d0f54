"""The "prior" parametrization, the environment map and the supervision losses, against independent
references: numerical integration on the sphere, brute-force numpy geometry, manual formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrm4d_core.data.rigs import look_at
from lrm4d_core.cameras import Cameras, SceneNormalization, pixel_rays
from lrm4d_core.environment import Environment, composite, sh_basis
from lrm4d_core.gaussians import Gaussians4D
from lrm4d_core.model.config import ModelConfig, preset
from lrm4d_core.model.lrm4d import LRM4D
from lrm4d_core.model.prior import PriorConstants, depth_prior, input_time_gap
from lrm4d_core.train.losses import implied_velocity, opacity_loss, persistence_loss, velocity_loss


def _cams(poses, size=8, f=8.0) -> Cameras:
    K = np.tile(np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]), (len(poses), 1, 1))
    return Cameras(torch.tensor(K), torch.tensor(np.stack(poses)), size, size)


def test_sh_basis_is_orthonormal_on_the_sphere():
    """Numerical integration over a fine (theta, phi) grid: <Y_i, Y_j> = delta_ij for degree 3."""
    n = 400
    theta = (torch.arange(n, dtype=torch.float64) + 0.5) * math.pi / n
    phi = (torch.arange(2 * n, dtype=torch.float64) + 0.5) * math.pi / n
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    d = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1)
    weight = th.sin() * (math.pi / n) ** 2  # dOmega
    Y = sh_basis(d, 3)  # [n, 2n, 16]
    gram = torch.einsum("abi,abj,ab->ij", Y, Y, weight)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-4)


def test_constant_environment_and_compositing():
    env = Environment.constant((0.2, 0.5, 0.9), degree=3)
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    assert torch.allclose(env.color(d), torch.tensor([0.2, 0.5, 0.9]).expand(50, 3), atol=1e-6)
    cams = _cams([look_at([3.0, 0, 0], [0, 0, 0])], size=4)
    color, alpha = torch.rand(1, 4, 4, 3) * 0.3, torch.rand(1, 4, 4, 1)
    out = composite(color, alpha, cams, env)
    assert torch.allclose(out, color + (1 - alpha) * torch.tensor([0.2, 0.5, 0.9]), atol=1e-6)


def test_depth_prior_inward_is_the_plane_through_the_centre_and_outward_the_ground():
    const = PriorConstants()
    # inward: two cameras 2.5 units from the origin looking at it -> every prior point lies on the
    # plane through the origin orthogonal to its camera's axis
    poses = [look_at([2.5, 0.3, 0.4], [0, 0, 0]), look_at([-1.0, 2.2, -0.6], [0, 0, 0])]
    cams = _cams(poses)
    depth = depth_prior(cams, 1, torch.tensor([1.0]), const)[0]
    o, d = pixel_rays(cams)
    points = o + depth[..., None] * d
    axes = cams.cam_to_world[:, :3, 2]
    assert torch.allclose((points * axes[:, None, None, :]).sum(-1), torch.zeros(2, 8, 8, dtype=torch.float64), atol=1e-9)
    # outward: cameras near the origin looking horizontally at height 0.08 (1.6 m at 20 m per unit)
    poses = [look_at([0.05 * k, 0.0, 0.08], [1.0 + 0.05 * k, 0.2 * k, 0.08]) for k in range(3)]
    cams = _cams(poses)
    depth = depth_prior(cams, 1, torch.tensor([20.0]), const)[0]
    o, d = pixel_rays(cams)
    points = o + depth[..., None] * d
    down = d[..., 2] < 0
    on_ground = down & (depth < const.dome_radius - 1e-9)
    assert on_ground.any() and (~down).any()
    assert torch.allclose(points[..., 2][on_ground], torch.zeros(int(on_ground.sum()), dtype=torch.float64), atol=1e-9)
    assert torch.allclose(depth[~down], torch.full((int((~down).sum()),), const.dome_radius, dtype=torch.float64))


def test_input_time_gap():
    t = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [-1.0, -0.5, 0.0, 0.5]])
    assert torch.allclose(input_time_gap(t), torch.tensor([1.0, 1.0, 0.5]))


def test_untrained_prior_model_is_the_heuristic_reconstruction():
    """With the pixel head's weights zeroed, every pixel Gaussian is the heuristic splat of its pixel:
    on its ray at the prior depth, its pixel's colour, at its view's time, no motion, footprint scale,
    opaque except on background-coloured pixels; the environment map is the background colour."""
    cfg = preset("tiny", hidden=32, layers=1, heads=2, image_size=(16, 16), background=(1.0, 1.0, 1.0))
    model = LRM4D(cfg).eval()
    with torch.no_grad():
        model.pixel_head.weight.zero_()
        model.env_head.weight.zero_()
    poses = [look_at([2.5 * math.cos(a), 2.5 * math.sin(a), 0.3], [0, 0, 0]) for a in (0.0, 1.5, 3.0)]
    cams = _cams(poses, size=16, f=16.0).to(dtype=torch.float32)
    # no drawn pixel within the background tolerance of white (unbounded draws made this fail ~5% of runs)
    images = torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.9
    images[0, 1, :, :4, :] = 1.0  # background-coloured rows
    times = torch.tensor([[-1.0, 0.0, 1.0]])
    with torch.no_grad():
        out = model(images, cams, times, with_environment=True)
    g = out.gaussians[0]
    depth = depth_prior(cams, 1, torch.tensor([cfg.scene_radius]), cfg.prior)[0].reshape(-1)
    o, d = pixel_rays(cams)
    expected = o.reshape(-1, 3) + depth[:, None] * d.reshape(-1, 3)
    assert torch.allclose(g.means[:, :3], expected, atol=1e-5)
    assert torch.allclose(g.means[:, 3], times[0].repeat_interleave(256))
    assert torch.allclose(g.colors, images[0].permute(0, 2, 3, 1).reshape(-1, 3), atol=1e-6)
    z = depth * (d.reshape(-1, 3) * cams.cam_to_world[:, None, :3, 2].expand(3, 256, 3).reshape(-1, 3)).sum(-1)
    assert torch.allclose(g.scales[:, 0], cfg.prior.footprint_scale * depth / 16.0, rtol=1e-5)
    assert torch.allclose(g.scales[:, 3], torch.full((768,), cfg.prior.time_width * 1.0))
    assert torch.allclose(implied_velocity(g), torch.zeros(768, 3), atol=1e-6)
    bg = (images[0].permute(0, 2, 3, 1).reshape(-1, 3) == 1.0).all(-1)
    assert torch.allclose(g.opacities[bg], torch.full((int(bg.sum()),), 1 - cfg.prior.opacity), atol=1e-6)
    assert torch.allclose(g.opacities[~bg], torch.full((int((~bg).sum()),), cfg.prior.opacity), atol=1e-6)
    dirs = torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    assert torch.allclose(out.environment[0].color(dirs), torch.ones(20, 3), atol=1e-6)
    assert z.min() > 0


def test_spec_parametrization_and_old_checkpoint_configs_still_load():
    old = ModelConfig.from_dict({"preset": "tiny", "hidden": 32, "layers": 1, "heads": 2})
    assert old.parametrization == "spec" and not old.environment and old.background == (1.0, 1.0, 1.0)
    assert ModelConfig.from_dict(preset("tiny").to_dict()) == preset("tiny")
    model = LRM4D(preset("tiny", hidden=32, layers=1, heads=2, image_size=(16, 16), parametrization="spec", environment=False))
    cams = _cams([look_at([2.5, 0, 0], [0, 0, 0])], size=16, f=16.0).to(dtype=torch.float32)
    out = model(torch.rand(1, 1, 3, 16, 16), cams, torch.zeros(1, 1), with_environment=True)
    assert out.environment is None and out.gaussians.means.shape == (1, 256, 4)
    with pytest.raises(ValueError, match="parametrization"):
        preset("tiny", parametrization="fancy")


def test_velocity_and_opacity_losses_against_manual_formulas():
    torch.manual_seed(0)
    B, V, H, W = 1, 2, 2, 3
    n = V * H * W
    g = Gaussians4D(
        means=torch.randn(B, n, 4), scales=torch.rand(B, n, 4) + 0.1,
        q_left=torch.nn.functional.normalize(torch.randn(B, n, 4), dim=-1),
        q_right=torch.nn.functional.normalize(torch.randn(B, n, 4), dim=-1),
        opacities=torch.rand(B, n) * 0.9 + 0.05, colors=torch.rand(B, n, 3),
    )
    v = implied_velocity(g)
    assert torch.allclose(v, g.slice(0.0).velocities, atol=1e-6)  # what slicing moves them by
    target = torch.randn(B, V, H, W, 3)
    target[0, 1, 0, 2] = float("nan")
    flat = target.reshape(-1, 3)
    ok = torch.isfinite(flat).all(-1)
    assert torch.allclose(velocity_loss(g, target), (v[0][ok] - flat[ok]).abs().sum(-1).mean())
    # balanced: the mean over moving pixels and the mean over static ones, averaged
    target[0, 0, 0] = 0.01  # two static pixels (speed below 0.05)
    flat = target.reshape(-1, 3)
    err = (v[0] - flat).abs().sum(-1)
    speed = flat.norm(dim=-1)
    moving, static = ok & (speed > 0.05), ok & (speed <= 0.05)
    assert static.sum() == 3 and moving.sum() == 8
    balanced = velocity_loss(g, target, moving_speed=0.05)
    assert torch.allclose(balanced, 0.5 * (err[moving].mean() + err[static].mean()))
    assert not torch.allclose(balanced, velocity_loss(g, target))
    # persistence: hinge on log temporal scale, static pixels only
    floor = torch.tensor([0.9])
    st = g.scales[0, :, 3]
    manual = torch.relu(torch.log(floor) - torch.log(st))[static].mean()
    assert manual > 0 and torch.allclose(persistence_loss(g, target, floor, 0.05), manual)
    assert persistence_loss(g, torch.full_like(target, float("nan")), floor, 0.05) == 0
    depths = torch.rand(B, V, H, W) + 1.0
    depths[0, 0, 1, :] = float("inf")
    y = torch.isfinite(depths).float().reshape(-1)
    p = g.opacities.reshape(-1)
    manual = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert torch.allclose(opacity_loss(g, depths), manual, atol=1e-6)


def test_reconstruct_passes_the_scene_scale_to_the_outward_prior():
    """The ground plane of the outward prior is camera_height world units below the cameras,
    whatever the normalization's scale: check through model.api.reconstruct."""
    from lrm4d_core.model.api import reconstruct

    cfg = preset("tiny", hidden=32, layers=1, heads=2, image_size=(16, 16))
    model = LRM4D(cfg).eval()
    with torch.no_grad():
        model.pixel_head.weight.zero_()
    poses = [look_at([0.5 * k, 0.0, 1.6], [10.0, 3.0 * k, 1.6]) for k in range(3)]
    cams = _cams(poses, size=16, f=16.0)
    images = [np.full((16, 16, 3), 100, np.uint8)] * 3
    for scale in (20.0, 7.0):
        rec = reconstruct(model, images, cams, [0.0, 0.1, 0.2], scene=SceneNormalization(torch.zeros(3, dtype=torch.float64), scale))
        g = rec.gaussians
        origins = torch.tensor(np.stack(poses)[:, :3, 3], dtype=torch.float32).repeat_interleave(256, 0)
        on_dome = ((g.means[:, :3] - origins).norm(dim=-1) - cfg.prior.dome_radius * scale).abs() < 1e-3 * scale
        on_ground = g.means[:, 2].abs() < 1e-3
        assert on_ground.sum() > 100 and on_dome.sum() > 100 and bool((on_ground | on_dome).all())


def test_snap_to_ground_against_a_numpy_plane_intersection():
    """Which rays snap and where they meet the ground, against numpy: down rays from cameras above
    the ground whose depth is within the tolerance of the hit; never rays going up, cameras below
    the ground, or windows whose ground is unknown (NaN)."""
    from lrm4d_core.model.prior import snap_to_ground

    rng = np.random.default_rng(4)
    B, P, tol = 3, 400, 0.15
    o = rng.uniform(-1, 1, (B, P, 3))
    d = rng.normal(size=(B, P, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    ground = np.array([-0.5, 0.2, np.nan])
    hit_np = (ground[:, None] - o[..., 2]) / np.where(d[..., 2] != 0, d[..., 2], 1e-30)
    depth = hit_np * rng.uniform(0.7, 1.3, (B, P))  # around the hit: about half within 15 %
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 1.0)
    snapped, hit = snap_to_ground(torch.tensor(depth)[..., None], torch.tensor(o), torch.tensor(d), torch.tensor(ground), tol)
    above = (o[..., 2] > ground[:, None]) & (d[..., 2] < -1e-6)  # NaN compares False: unknown ground never snaps
    expected = above & (np.abs(depth - hit_np) <= tol * hit_np)
    assert np.array_equal(snapped[..., 0].numpy(), expected)
    assert 50 < expected[:2].sum() < 2 * P - 50 and not expected[2].any()
    assert np.allclose(hit[..., 0].numpy()[above], hit_np[above])
    points = o + hit[..., 0].numpy()[..., None] * d
    assert np.allclose(points[above][:, 2], np.broadcast_to(ground[:, None], (B, P))[above])
    assert torch.isinf(hit[..., 0][torch.tensor(~above)]).all()


def test_known_ground_puts_the_pixels_near_it_on_it():
    """A model at initialisation (the heuristic reconstruction) over a floor: pixels whose decoded
    depth is within `ground_snap` of their ray's floor hit move onto the floor along their ray (z
    exactly the floor's, in the caller's frame through `reconstruct`), the others do not move, and
    a model with ground_snap 0 (older checkpoints) or no ground given is unchanged."""
    from lrm4d_core.model.api import reconstruct

    poses = [look_at([2.5 * math.cos(a), 2.5 * math.sin(a), 1.8], [0, 0, 0.2]) for a in (0.0, 2.0, 4.0)]
    cams = _cams(poses, size=16, f=12.0)
    images = [np.random.default_rng(i).integers(0, 200, (16, 16, 3), dtype=np.uint8) for i in range(3)]
    times = [0.0, 0.1, 0.2]
    scene = SceneNormalization(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64), 1.3)

    def run(ground_snap, ground_z):
        torch.manual_seed(0)
        model = LRM4D(preset("tiny", hidden=32, layers=1, heads=2, image_size=(16, 16), prior={"ground_snap": ground_snap})).eval()
        with torch.no_grad():
            model.pixel_head.weight.zero_()
        return reconstruct(model, images, cams, times, scene=scene, ground_z=ground_z).gaussians.means[:, :3].double()

    plain = run(0.0, None)
    assert torch.equal(run(0.0, -0.4), plain) and torch.equal(run(0.3, None), plain)
    snapped = run(0.3, -0.4)
    o, d = pixel_rays(cams)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    depth = ((plain - o) * d).sum(-1)
    hit = (-0.4 - o[:, 2]) / d[:, 2]
    near = (d[:, 2] < 0) & ((depth - hit).abs() <= 0.3 * hit)
    assert 50 < int(near.sum()) < len(near) - 50
    assert torch.allclose(snapped[near], o[near] + hit[near, None] * d[near], atol=1e-4)
    assert torch.allclose(snapped[near, 2], torch.full((int(near.sum()),), -0.4, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(snapped[~near], plain[~near], atol=1e-5)
    with pytest.raises(ValueError, match="ground_z"):
        run(0.3, math.inf)
    with_snap = preset("tiny", prior={"ground_snap": 0.2})
    assert ModelConfig.from_dict(with_snap.to_dict()).prior.ground_snap == 0.2  # recorded in checkpoints
    with pytest.raises(ValueError):
        PriorConstants(ground_snap=1.5)
    legacy = preset("tiny").to_dict()
    del legacy["prior"]["ground_snap"]
    assert ModelConfig.from_dict(legacy).prior.ground_snap == 0.0


def test_smooth_ground_pixels_become_flat_discs_at_inference():
    """Two cameras 1.5 above a floor (z = 0), looking down at it obliquely, each image half flat grey
    (smooth) and half noise (textured); the head outputs zeros and the prior depth is the floor's.
    At inference with `ground_disc` 0.5 each smooth floor pixel's Gaussian is a disc flat on the
    floor: identity rotation, scales (r, r, 0.01 r) with r = 0.5 * footprint / sqrt(sin), the sine of
    its ray's angle to the floor, computed here in numpy; textured pixels keep the prior's isotropic
    0.7 footprint, and so does everything in training or with `ground_disc` 0."""
    from lrm4d_core.model.prior import decode_prior

    size, f = 16, 12.0
    cams = _cams([look_at([0.0, -2.0, 1.5], [0.0, 0.0, 0.0]), look_at([1.0, -2.0, 1.5], [1.0, 0.0, 0.0])], size=size, f=f)
    o, d = pixel_rays(cams)  # [V, H, W, 3]
    o_np, d_np = o.numpy().reshape(2, -1, 3), d.numpy().reshape(2, -1, 3)
    hit = -o_np[..., 2] / d_np[..., 2]  # every ray looks down and meets the floor
    assert (d_np[..., 2] < 0).all()
    rng = np.random.default_rng(0)
    images = np.full((2, 3, size, size), 0.5)
    images[:, :, :, size // 2:] = rng.uniform(0, 1, (2, 3, size, size // 2))
    V, P = 2, size * size
    raw = torch.zeros(1, V * P, 20, dtype=torch.float64)
    raw[..., 11] = raw[..., 15] = 1.0  # identity quaternions (q_left, q_right)

    def decode(ground_disc: float, inference: bool) -> Gaussians4D:
        constants = PriorConstants(far=100.0, ground_snap=0.2, ground_disc=ground_disc, ground_disc_texture=0.03)
        return decode_prior(raw, torch.tensor(images)[None], cams, torch.tensor([[0.0, 1.0]], dtype=torch.float64),
                            torch.tensor(o_np).reshape(1, -1, 3), torch.tensor(d_np).reshape(1, -1, 3),
                            torch.tensor(hit).reshape(1, V, size, size), torch.ones(3, dtype=torch.float64),
                            constants, 5.0, ground=torch.zeros(1, dtype=torch.float64), inference=inference)

    footprint = hit / f
    sine = np.maximum(np.abs(d_np[..., 2]), 0.05)
    radius = (0.5 * footprint / np.sqrt(sine)).reshape(V, size, size)
    plain = 0.7 * footprint.reshape(V, size, size)
    smooth = np.zeros((V, size, size), dtype=bool)
    smooth[:, :, : size // 2 - 1] = True  # the 3x3 windows that see no noise
    g = decode(0.5, True)
    scales = g.scales[0, :, :3].numpy().reshape(V, size, size, 3)
    np.testing.assert_allclose(scales[smooth][:, 0], radius[smooth], rtol=1e-6)
    np.testing.assert_allclose(scales[smooth][:, 1], radius[smooth], rtol=1e-6)
    np.testing.assert_allclose(scales[smooth][:, 2], 0.01 * radius[smooth], rtol=1e-6)
    assert torch.equal(g.q_left[0].reshape(V, size, size, 4)[torch.tensor(smooth)],
                       torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(int(smooth.sum()), 4))
    textured = np.zeros_like(smooth)
    textured[:, :, size // 2 + 1:] = True
    np.testing.assert_allclose(scales[textured], np.repeat(plain[textured][:, None], 3, 1), rtol=1e-6)
    for other in (decode(0.5, False), decode(0.0, True)):
        np.testing.assert_allclose(other.scales[0, :, :3].numpy().reshape(V, size, size, 3),
                                   np.repeat(plain[..., None], 3, -1), rtol=1e-6)
    np.testing.assert_allclose(g.means[0, :, 2].numpy(), 0.0, atol=1e-9)  # on the floor
    with pytest.raises(ValueError):
        PriorConstants(ground_disc=-1.0)
