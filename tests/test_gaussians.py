"""4D Gaussian math against independent float64 numpy computations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import SceneNormalization, TimeNormalization
from lrm4d_core.gaussians import (
    SH_C0,
    GaussianActivation,
    Gaussians3D,
    Gaussians4D,
    factor_rotation_4d,
    rotation_4d,
)


def quat_mul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton product (w, x, y, z), written out."""
    w1, x1, y1, z1 = p
    w2, x2, y2, z2 = q
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def numpy_rotation_4d(ql: np.ndarray, qr: np.ndarray) -> np.ndarray:
    """R4 as the map x -> q_l x q_r on quaternions: its columns are the images of the basis."""
    return np.stack([quat_mul(quat_mul(ql, e), qr) for e in np.eye(4)], axis=1)


def random_gaussians(n: int, seed: int = 0, dtype=torch.float64) -> Gaussians4D:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians4D(
        means=torch.randn(n, 4, generator=gen, dtype=dtype),
        scales=torch.rand(n, 4, generator=gen, dtype=dtype) * 0.5 + 0.05,
        q_left=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=dtype), dim=-1),
        q_right=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=dtype), dim=-1),
        opacities=torch.rand(n, generator=gen, dtype=dtype),
        colors=torch.rand(n, 3, generator=gen, dtype=dtype),
    )


def numpy_covariance(g: Gaussians4D) -> np.ndarray:
    out = []
    for i in range(len(g)):
        r = numpy_rotation_4d(g.q_left[i].numpy(), g.q_right[i].numpy())
        s = np.diag(g.scales[i].numpy())
        out.append(r @ s @ s.T @ r.T)
    return np.stack(out)


def test_rotation_matches_quaternion_sandwich_and_is_so4():
    g = random_gaussians(200, seed=1)
    rot = rotation_4d(g.q_left, g.q_right).numpy()
    for i in range(len(g)):
        expected = numpy_rotation_4d(g.q_left[i].numpy(), g.q_right[i].numpy())
        np.testing.assert_allclose(rot[i], expected, atol=1e-12)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(4), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)


def test_rotation_float32_from_unnormalized_raw_is_orthonormal():
    raw = torch.randn(1000, 20) * 3
    g = Gaussians4D.from_raw(raw)
    rot = g.rotation().double()
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(4, dtype=torch.float64).expand_as(rot), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(1000, dtype=torch.float64), atol=1e-5)


def test_factor_rotation_4d_inverts_rotation_4d():
    g = random_gaussians(300, seed=2)
    rot = g.rotation()
    ql, qr = factor_rotation_4d(rot)
    torch.testing.assert_close(rotation_4d(ql, qr), rot, atol=1e-12, rtol=0)
    # unique up to a joint sign
    sign = torch.sign((ql * g.q_left).sum(-1, keepdim=True))
    torch.testing.assert_close(ql * sign, g.q_left, atol=1e-10, rtol=0)
    torch.testing.assert_close(qr * sign, g.q_right, atol=1e-10, rtol=0)


def test_covariance_symmetric_positive_definite_and_matches_numpy():
    g = random_gaussians(100, seed=3)
    cov = g.covariance().numpy()
    np.testing.assert_allclose(cov, numpy_covariance(g), atol=1e-12)
    np.testing.assert_allclose(cov, cov.transpose(0, 2, 1), atol=1e-14)
    assert (np.linalg.eigvalsh(cov) > 0).all()


def test_slice_equals_numpy_schur_complement():
    g = random_gaussians(64, seed=4)
    cov = numpy_covariance(g)
    mu = g.means.numpy()
    for t in (-0.7, 0.0, 0.4, 1.3):
        s = g.slice(t)
        for i in range(len(g)):
            sxx, sxt, stt = cov[i, :3, :3], cov[i, :3, 3], cov[i, 3, 3]
            np.testing.assert_allclose(s.means[i].numpy(), mu[i, :3] + sxt / stt * (t - mu[i, 3]), atol=1e-12)
            np.testing.assert_allclose(s.covars[i].numpy(), sxx - np.outer(sxt, sxt) / stt, atol=1e-12)
            marginal = np.exp(-0.5 * (t - mu[i, 3]) ** 2 / stt)
            np.testing.assert_allclose(s.opacities[i].item(), g.opacities[i].item() * marginal, rtol=1e-12)
            np.testing.assert_allclose(s.velocities[i].numpy(), sxt / stt, atol=1e-12)
        torch.testing.assert_close(s.colors, g.colors)


def test_slice_per_batch_times():
    one = random_gaussians(10, seed=5)
    g = Gaussians4D(*(torch.stack([x, x]) for x in (one.means, one.scales, one.q_left, one.q_right, one.opacities, one.colors)))
    s = g.slice(torch.tensor([0.1, -0.5], dtype=torch.float64))
    torch.testing.assert_close(s.means[0], g[0].slice(0.1).means)
    torch.testing.assert_close(s.means[1], g[1].slice(-0.5).means)


def test_unrotated_time_axis_is_static():
    """If R4 leaves the t axis alone (block-diagonal: a 3D rotation and 1), nothing moves over time."""
    g = random_gaussians(20, seed=6)
    rot3 = torch.linalg.qr(torch.randn(20, 3, 3, dtype=torch.float64))[0]
    rot3 = rot3 * torch.linalg.det(rot3).sign()[:, None, None]
    block = torch.zeros(20, 4, 4, dtype=torch.float64)
    block[:, :3, :3] = rot3
    block[:, 3, 3] = 1.0
    ql, qr = factor_rotation_4d(block)
    static = Gaussians4D(g.means, g.scales, ql, qr, g.opacities, g.colors)
    s0, s1 = static.slice(-1.0), static.slice(2.0)
    torch.testing.assert_close(s0.means, s1.means)
    torch.testing.assert_close(s0.covars, s1.covars)
    torch.testing.assert_close(s0.velocities, torch.zeros_like(s0.velocities), atol=1e-12, rtol=0)


def test_conditional_means_lie_on_a_line_with_the_implied_velocity():
    g = random_gaussians(30, seed=7)
    times = [-1.0, -0.3, 0.2, 0.9]
    means = torch.stack([g.slice(t).means for t in times])  # [T, N, 3]
    vel = g.slice(0.0).velocities
    for k in range(1, len(times)):
        torch.testing.assert_close(means[k] - means[0], vel * (times[k] - times[0]), atol=1e-12, rtol=0)


def test_tiny_sigma_tt_stays_finite():
    g = random_gaussians(50, seed=8, dtype=torch.float32)
    tiny = Gaussians4D(g.means, torch.cat([g.scales[:, :3], torch.full((50, 1), 1e-30)], -1), g.q_left, g.q_right, g.opacities, g.colors)
    s = tiny.slice(0.123)
    for tensor in (s.means, s.covars, s.opacities, s.velocities):
        assert torch.isfinite(tensor).all()
    assert (torch.linalg.eigvalsh(s.covars.double()) > -1e-6).all()


def test_slice_float32_covariance_is_psd():
    g = Gaussians4D.from_raw(torch.randn(5000, 20) * 2)
    s = g.slice(0.3)
    assert (torch.linalg.eigvalsh(s.covars.double()) >= -1e-9).all()
    torch.testing.assert_close(s.covars, s.covars.transpose(-1, -2))


def test_inference_filter_drops_faint_gaussians():
    g = random_gaussians(500, seed=9)
    full = g.slice(0.5)
    kept = g.slice(0.5, inference_filter=True)
    marginal = full.opacities / g.opacities
    expected = (marginal >= 0.05) & (full.opacities >= 0.05)
    assert len(kept) == int(expected.sum()) and 0 < len(kept) < 500
    torch.testing.assert_close(kept.means, full.means[expected])


def test_forecast_is_continuous_at_window_end_and_moves_at_implied_velocity():
    g = random_gaussians(40, seed=10)
    end = g.slice(0.0)
    near = g.forecast(1e-9)
    torch.testing.assert_close(near.means, end.means, atol=1e-7, rtol=0)
    torch.testing.assert_close(near.opacities, end.opacities)
    later = g.forecast(0.75)
    torch.testing.assert_close(later.means, end.means + 0.75 * end.velocities)
    torch.testing.assert_close(later.opacities, end.opacities)  # held, not faded by p(t)
    torch.testing.assert_close(later.covars, end.covars)
    torch.testing.assert_close(g.forecast(-0.5).means, g.slice(-0.5).means)  # inside the window: a slice
    assert len(g.forecast(5.0)) == 40  # never silently empty


def test_from_raw_activations():
    raw = torch.randn(3, 7, 20)
    rays_o = torch.randn(3, 7, 3) * 0.1
    rays_d = torch.nn.functional.normalize(torch.randn(3, 7, 3), dim=-1)
    act = GaussianActivation(near=0.5, far=3.0, box_min=-2.0, box_max=2.0)
    g = Gaussians4D.from_raw(raw, rays_o, rays_d, act)
    w = torch.sigmoid(raw[..., 0:3].mean(-1, keepdim=True))
    xyz = (rays_o + ((1 - w) * 0.5 + w * 3.0) * rays_d).clamp(-2, 2)
    torch.testing.assert_close(g.means[..., :3], xyz)
    torch.testing.assert_close(g.means[..., 3], raw[..., 3])
    torch.testing.assert_close(g.colors, (0.5 + SH_C0 * raw[..., 4:7]).clamp_min(0))
    torch.testing.assert_close(g.scales[..., :3], torch.exp(raw[..., 7:10] - 2.3).clamp_max(0.3))
    torch.testing.assert_close(g.scales[..., 3], torch.exp(raw[..., 10] - 2.3).clamp_max(1.0))
    torch.testing.assert_close(g.opacities, torch.sigmoid(raw[..., 19] - 2.0))
    torch.testing.assert_close(torch.linalg.norm(g.q_left, dim=-1), torch.ones(3, 7))
    free = Gaussians4D.from_raw(raw, activation=act)  # free tokens: xyz decoded directly
    torch.testing.assert_close(free.means[..., :3], raw[..., :3].clamp(-2, 2))
    with pytest.raises(ValueError):
        Gaussians4D.from_raw(torch.randn(4, 19))


def test_from_raw_is_differentiable():
    raw = torch.randn(16, 20, dtype=torch.float64, requires_grad=True)
    o = torch.zeros(16, 3, dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.randn(16, 3, dtype=torch.float64), dim=-1)

    def f(r: torch.Tensor) -> torch.Tensor:
        s = Gaussians4D.from_raw(r, o, d).slice(0.2)
        return torch.cat([s.means.flatten(), s.covars.flatten(), s.opacities, s.colors.flatten()])

    assert torch.autograd.gradcheck(f, (raw,))


def test_channels_round_trip():
    g = random_gaussians(25, seed=11)
    back = Gaussians4D.from_channels(g.to_channels())
    for a, b in zip((g.means, g.scales, g.q_left, g.q_right, g.opacities, g.colors),
                    (back.means, back.scales, back.q_left, back.q_right, back.opacities, back.colors)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("space_scale,time_scale", [(2.5, 2.5), (7.0, 0.4)])
def test_to_world_transforms_covariance_and_round_trips(space_scale, time_scale):
    g = random_gaussians(60, seed=12)
    scene = SceneNormalization(center=torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), scale=space_scale)
    time = TimeNormalization(center=-0.8, half_span=time_scale)
    world = g.to_world(scene, time)
    d = np.diag([space_scale] * 3 + [time_scale])
    np.testing.assert_allclose(world.covariance().numpy(), d @ numpy_covariance(g) @ d, atol=1e-10)
    np.testing.assert_allclose(world.means[:, :3].numpy(), g.means[:, :3].numpy() * space_scale + [1.0, -2.0, 0.5])
    np.testing.assert_allclose(world.means[:, 3].numpy(), g.means[:, 3].numpy() * time_scale - 0.8)
    # slicing commutes with the change of units; velocity converts to metres per second
    t_model = 0.3
    s_model = g.slice(t_model)
    s_world = world.slice(time.to_world(t_model))
    torch.testing.assert_close(s_world.means, scene.points_to_world(s_model.means))
    torch.testing.assert_close(s_world.covars, s_model.covars * space_scale**2)
    torch.testing.assert_close(s_world.opacities, s_model.opacities)
    torch.testing.assert_close(s_world.velocities, s_model.velocities * space_scale / time_scale)
    back = world.to_model(scene, time)
    torch.testing.assert_close(back.covariance(), g.covariance())
    torch.testing.assert_close(back.means, g.means)


def test_gaussians3d_scales_and_rotations_reconstruct_covariance():
    s = random_gaussians(80, seed=13).slice(0.1)
    scales, quats = s.scales_and_rotations()
    w, x, y, z = quats.unbind(-1)
    rot = torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    torch.testing.assert_close(rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2), s.covars)
    assert (quats[:, 0] >= 0).all()


def test_gaussians3d_finite_mask_select_cat():
    s = random_gaussians(10, seed=14).slice(0.0)
    bad = Gaussians3D(s.means.clone(), s.covars.clone(), s.opacities.clone(), s.colors.clone(), s.velocities)
    bad.means[2, 0] = float("nan")
    bad.covars[5, 1, 1] = float("inf")
    mask = bad.finite_mask()
    assert mask.tolist() == [i not in (2, 5) for i in range(10)]
    both = Gaussians3D.cat([s, s.select(mask)])
    assert len(both) == 18 and both.covars.shape == (18, 3, 3)


def test_from_motion_moves_round_gaussians_at_the_given_velocity():
    torch.manual_seed(0)
    n = 50
    means = torch.randn(n, 4, dtype=torch.float64)
    s, st = torch.rand(n, dtype=torch.float64) * 0.1 + 0.01, torch.rand(n, dtype=torch.float64) + 0.2
    v = torch.randn(n, 3, dtype=torch.float64)
    g = Gaussians4D.from_motion(means, s, st, v, torch.rand(n, dtype=torch.float64), torch.rand(n, 3, dtype=torch.float64))
    for t in (-0.7, 0.0, 1.3):
        sl = g.slice(t)
        assert torch.allclose(sl.velocities, v, atol=1e-8)
        assert torch.allclose(sl.means, means[:, :3] + v * (t - means[:, 3:]), atol=1e-8)
        assert torch.allclose(sl.covars, (s**2)[:, None, None] * torch.eye(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(g.marginal_t(means[:, 3] + st), torch.full((n,), math.exp(-0.5), dtype=torch.float64))


def test_moved_and_selected_clouds_share_principal_axes_in_any_order():
    """A cloud, its `moved` forecast and a `select`ed subset are factored once; whichever is asked
    first, each gets what factoring its own covariances alone gives."""
    s = random_gaussians(60, seed=21).slice(0.2)
    keep = torch.arange(60) % 3 != 0

    def alone(c):
        return Gaussians3D(c.means, c.covars.clone(), c.opacities, c.colors, c.velocities).scales_and_rotations()

    for child_first in (True, False):
        parent = Gaussians3D(s.means, s.covars, s.opacities, s.colors, s.velocities)
        child = parent.moved(0.7).select(keep)
        order = (child, parent) if child_first else (parent, child)
        for cloud in order:
            for got, want in zip(cloud.scales_and_rotations(), alone(cloud)):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(child.means, s.means[keep] + 0.7 * s.velocities[keep])
        torch.testing.assert_close(child.scales_and_rotations()[0], parent.scales_and_rotations()[0][keep], rtol=0, atol=0)


def test_held_still_keeps_the_slice_at_its_time_and_the_marginal_and_drops_the_velocity():
    """`held_still` against the Schur complement of the original 4D covariance (numpy): a held
    Gaussian's 4D covariance is block-diagonal with Sigma_xyz|t and Sigma_tt, it sits where the
    original was at its time t_i at every time, and the others are untouched."""
    g = random_gaussians(40, seed=5)
    mask = torch.arange(40) % 2 == 0
    t_hold = torch.linspace(-0.8, 0.8, 40, dtype=torch.float64)
    held = g.held_still(mask, t_hold)
    sigma, sigma_h = numpy_covariance(g), numpy_covariance(held)
    for i in range(40):
        if not mask[i]:
            for name in ("means", "scales", "q_left", "q_right"):
                assert torch.equal(getattr(held, name)[i], getattr(g, name)[i])
            continue
        s_xx, s_xt, s_tt = sigma[i, :3, :3], sigma[i, :3, 3], sigma[i, 3, 3]
        schur = s_xx - np.outer(s_xt, s_xt) / s_tt
        np.testing.assert_allclose(sigma_h[i, :3, :3], schur, atol=1e-10)
        np.testing.assert_allclose(sigma_h[i, :3, 3], 0.0, atol=1e-10)
        np.testing.assert_allclose(sigma_h[i, 3, 3], s_tt, rtol=1e-10)
        at_t = g.means[i, :3].numpy() + s_xt / s_tt * (float(t_hold[i]) - float(g.means[i, 3]))
        np.testing.assert_allclose(held.means[i, :3].numpy(), at_t, atol=1e-10)
    assert held.means[:, 3].equal(g.means[:, 3]) and held.opacities.equal(g.opacities)
    recomputed = Gaussians4D(held.means, held.scales, held.q_left, held.q_right, held.opacities, held.colors)
    for cached, fresh in zip(held._conditional, recomputed._conditional):  # what held_still hands on
        torch.testing.assert_close(cached, fresh, atol=1e-10, rtol=1e-9)
    for t in (-0.5, 0.3):
        torch.testing.assert_close(held.marginal_t(t), g.marginal_t(t))
        sliced, before = held.slice(t), g.slice(t)
        assert sliced.velocities[mask].abs().max() < 1e-10
        torch.testing.assert_close(sliced.velocities[~mask], before.velocities[~mask])
        torch.testing.assert_close(sliced.covars, before.covars)


def test_symmetric_eigh_3x3_against_numpy_including_repeated_and_graded_eigenvalues():
    from lrm4d_core.gaussians import symmetric_eigh_3x3

    gen = np.random.default_rng(4)
    rots = np.linalg.qr(gen.normal(size=(300, 3, 3)))[0]
    values = np.exp(gen.uniform(-14, 2, size=(300, 3)))  # squared scales from 1 mm to 3 m: graded
    values[:40] = 2.5e-3  # round Gaussians: one eigenvalue three times
    values[40:80, 1] = values[40:80, 0]  # two equal
    sym = rots @ (values[:, :, None] * np.swapaxes(rots, 1, 2))
    sym = np.concatenate([sym, np.zeros((1, 3, 3))])  # and a zero matrix
    evals, evecs = symmetric_eigh_3x3(torch.tensor(sym).reshape(301, 1, 3, 3))
    evals, evecs = evals.reshape(301, 3).numpy(), evecs.reshape(301, 3, 3).numpy()
    np.testing.assert_allclose(np.sort(evals, -1), np.linalg.eigvalsh(sym), rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(evecs @ (evals[:, :, None] * np.swapaxes(evecs, 1, 2)), sym, atol=1e-15)
    np.testing.assert_allclose(np.swapaxes(evecs, 1, 2) @ evecs, np.broadcast_to(np.eye(3), (301, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(evecs), 1.0, atol=1e-12)
    with pytest.raises(ValueError):
        symmetric_eigh_3x3(torch.zeros(2, 4, 4))


def test_change_of_units_keeps_rotations_that_do_not_mix_space_and_time():
    """`affine` on a set half held still (rotations that leave the time axis alone): every 4D
    covariance becomes D Sigma D (numpy), and the held ones keep their quaternions exactly."""
    g = random_gaussians(30, seed=9, dtype=torch.float32)
    mask = torch.arange(30) < 15
    held = g.held_still(mask, torch.zeros(30))
    moved = held.affine(4.0, torch.tensor([1.0, -2.0, 0.5]), 0.25, 3.0)
    d = np.diag([4.0, 4.0, 4.0, 0.25])
    np.testing.assert_allclose(numpy_covariance(moved.to(dtype=torch.float64)), d @ numpy_covariance(held.to(dtype=torch.float64)) @ d, rtol=1e-4, atol=1e-6)
    assert torch.equal(moved.q_left[mask], held.q_left[mask]) and torch.equal(moved.q_right[mask], held.q_right[mask])
    torch.testing.assert_close(moved.scales[mask], held.scales[mask] * torch.tensor([4.0, 4.0, 4.0, 0.25]))
    assert not torch.equal(moved.q_left[~mask], held.q_left[~mask])  # the mixed ones are re-factored


def test_batched_eigh_split_over_threads_equals_one_call():
    """`_batched_eigh` splits a large batch over threads: every matrix is solved as in one LAPACK call."""
    from lrm4d_core.gaussians import _EIGH_SPLIT, _batched_eigh

    torch.manual_seed(4)
    a = torch.randn(2 * _EIGH_SPLIT + 3, 4, 4, dtype=torch.float64)
    sym = a @ a.transpose(-1, -2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evals, evecs = _batched_eigh(sym)
    finally:
        torch.set_num_threads(threads)
    ref_evals, ref_evecs = torch.linalg.eigh(sym)
    assert torch.equal(evals, ref_evals) and torch.equal(evecs, ref_evecs)
    np.testing.assert_allclose((evecs @ torch.diag_embed(evals) @ evecs.transpose(-1, -2)).numpy(), sym.numpy(), atol=1e-10)


def test_refactoring_recovers_known_scales_and_rotations():
    """_refactor (eigendecomposition of A A^T) against Gaussians built from known scales and a known
    SO(4) rotation, for shape ratios up to 1e4 (a 1 mm Gaussian living 10 s)."""
    from lrm4d_core.gaussians import _refactor, rotation_4d

    torch.manual_seed(3)
    q = torch.nn.functional.normalize(torch.randn(2, 500, 4, dtype=torch.float64), dim=-1)
    rot = rotation_4d(q[0], q[1])
    scales = torch.tensor([1e-3, 0.02, 0.5, 10.0], dtype=torch.float64)[torch.randperm(4)]
    s, q_left, q_right = _refactor(rot * scales, torch.float64)
    np.testing.assert_allclose(torch.sort(s, -1).values.numpy(), np.broadcast_to(torch.sort(scales).values.numpy(), s.shape), rtol=1e-7)
    sigma = rot @ torch.diag(scales**2) @ rot.transpose(-1, -2)
    back = rotation_4d(q_left, q_right) @ torch.diag_embed(s**2) @ rotation_4d(q_left, q_right).transpose(-1, -2)
    np.testing.assert_allclose(back.numpy(), sigma.numpy(), atol=1e-12)
