"""Model-free references and the geometry metrics of the evaluation, against brute-force numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrm4d_core.data.rigs import look_at
from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.eval.geometry import scene_extent, surface_fraction, surface_points
from lrm4d_core.eval.metrics import depth_errors, masked_psnr, masked_ssim
from lrm4d_core.eval.references import SceneInfo, SplatSettings, heuristic_ray_depth, splat_gaussians, true_ray_depth
from lrm4d_core.gaussians import Gaussians3D


def _cams(poses, size=10, f=9.0) -> Cameras:
    K = np.tile(np.array([[f, 0, size / 2], [0, f, size / 2 + 0.3], [0, 0, 1.0]]), (len(poses), 1, 1))
    return Cameras(torch.tensor(K), torch.tensor(np.stack(poses)), size, size)


def test_heuristic_depth_ground_plane_else_box_and_background_dropped():
    torch.manual_seed(0)
    box = np.array([[-6.0, -6.0, -0.5], [6.0, 6.0, 5.0]])
    scene = SceneInfo(box, np.array([0.0, 0.0, 1.0, 0.0]), None)
    cams = _cams([look_at([3.0, 1.0, 2.0], [0.0, 0.0, 1.6]), look_at([-2.0, 0.0, 1.5], [0.0, 1.0, 0.0])])
    images = torch.rand(2, 3, 10, 10)
    depth, keep = heuristic_ray_depth(images, cams, scene)
    o, d = pixel_rays(cams)
    p = (o + depth[..., None] * d).numpy()
    on_ground = np.abs(p[..., 2]) < 1e-9
    on_box = np.isclose(p, box[0], atol=1e-9).any(-1) | np.isclose(p, box[1], atol=1e-9).any(-1)
    assert on_ground.any() and (on_box & ~on_ground).any() and (on_ground | on_box).all() and keep.all()
    down = d[..., 2].numpy() < 0
    assert not (on_ground & ~down).any()
    # object rig: the plane through the box centre facing each camera; background pixels dropped
    scene = SceneInfo(np.array([[-1.0, -1, -1], [1, 1, 1]]), None, (1.0, 1.0, 1.0))
    images[0, :, 2:5, :] = 1.0
    depth, keep = heuristic_ray_depth(images, cams, scene)
    p = o + depth[..., None] * d
    axes = cams.cam_to_world[:, :3, 2]
    assert torch.allclose((p * axes[:, None, None]).sum(-1), torch.zeros(2, 10, 10, dtype=torch.float64), atol=1e-9)
    assert not keep[0, 2:5].any() and keep[0, 5:].all()


def test_true_depth_back_projects_to_the_depth_map_and_splats_follow_their_settings():
    cams = _cams([look_at([3.0, 1.0, 2.0], [0.0, 0.0, 0.0]), look_at([0.0, -3.0, 1.0], [0.0, 0.0, 0.5])])
    z = torch.rand(2, 10, 10, dtype=torch.float64) * 3 + 1
    z[1, 4, 4] = math.inf
    scene = SceneInfo(np.array([[-1.0, -1, -1], [1, 1, 1]]), None, (1.0, 1.0, 1.0))
    depth, keep = true_ray_depth(z, cams, scene)
    assert not keep[1, 4, 4] and int(keep.sum()) == 199
    o, d = pixel_rays(cams)
    p = o + depth[..., None] * d
    cam_z = ((p - cams.cam_to_world[:, None, None, :3, 3]) * cams.cam_to_world[:, None, None, :3, 2]).sum(-1)
    assert torch.allclose(cam_z[keep], z[keep], atol=1e-9)
    pts = surface_points(z, cams)  # an independent back-projection through K^-1
    np.testing.assert_allclose(np.sort(pts, axis=0), np.sort(p[keep].numpy(), axis=0), atol=1e-9)
    images = torch.rand(2, 3, 10, 10)
    times = torch.tensor([0.0, 0.2], dtype=torch.float64)
    g = splat_gaussians(images, cams, times, depth, keep, SplatSettings(0.8, 1.5))
    assert len(g) == 199
    assert torch.allclose(g.means[:, :3].double(), p[keep], atol=1e-5)
    assert torch.allclose(g.scales[:, 0].double(), 0.8 * z[keep] / 9.0, rtol=1e-5)
    assert torch.allclose(g.scales[:, 3], torch.full((199,), 1.5 * 0.2))
    assert torch.allclose(g.colors, images.permute(0, 2, 3, 1)[keep])
    assert torch.allclose(g.slice(0.1).velocities, torch.zeros(199, 3), atol=1e-6)  # static splats


def test_masked_metrics_and_depth_errors_against_numpy():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 3, 20, 20)), rng.random((2, 3, 20, 20))
    mask = np.zeros((2, 20, 20), bool)
    mask[0, 3:12, 5:18] = True
    got = masked_psnr(torch.tensor(a), torch.tensor(b), torch.tensor(mask))
    mse = ((a[0] - b[0]) ** 2).transpose(1, 2, 0)[mask[0]].mean()
    assert got[0] == pytest.approx(-10 * np.log10(mse)) and got[1] is None
    _, full = structural_similarity(a[0].transpose(1, 2, 0), b[0].transpose(1, 2, 0), channel_axis=2, data_range=1.0,
                                    gaussian_weights=True, use_sample_covariance=False, full=True)
    ref = full.mean(-1)[5:-5, 5:-5][mask[0, 5:-5, 5:-5]].mean()
    assert masked_ssim(torch.tensor(a), torch.tensor(b), torch.tensor(mask))[0] == pytest.approx(ref, abs=1e-6)
    t = rng.uniform(1, 5, (3, 4, 4))
    t[0, 0, 0] = np.inf
    p = t * rng.uniform(0.7, 1.4, t.shape)
    p[1, 1, 1] = 0.0  # nothing rendered there
    e = depth_errors(torch.tensor(p), torch.tensor(t))
    v = np.isfinite(t)
    ratio = np.maximum(p[v] / t[v], t[v] / np.maximum(p[v], 1e-12))
    assert e["abs_rel"] == pytest.approx((np.abs(p[v] - t[v]) / t[v]).mean())
    assert e["delta_1_25"] == pytest.approx((ratio < 1.25).mean()) and e["pixels"] == v.sum()


def test_surface_fraction_against_brute_force():
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 1, (500, 3))
    means = rng.uniform(-1.2, 1.2, (300, 3))
    op = rng.uniform(0, 1, 300)
    cloud = Gaussians3D(torch.tensor(means), torch.eye(3).expand(300, 3, 3), torch.tensor(op), torch.rand(300, 3), torch.zeros(300, 3))
    dist = np.linalg.norm(means[:, None] - pts[None], axis=-1).min(1)
    assert surface_fraction(cloud, pts, 0.1) == pytest.approx(op[dist <= 0.1].sum() / op.sum())
    # above max_gaussians: an opacity-weighted draw estimates the same share
    est = surface_fraction(cloud, pts, 0.1, max_gaussians=200, seed=3)
    assert abs(est - op[dist <= 0.1].sum() / op.sum()) < 0.1
    assert scene_extent(np.array([[0.0, 0, 0], [3.0, 4.0, 0]] * 50)) == pytest.approx(5.0, rel=0.05)
