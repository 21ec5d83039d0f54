"""Cameras, rays, Plücker coordinates and normalization against numpy written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import (
    Cameras, SceneNormalization, TimeNormalization, apply_rows, in_image, pixel_rays, plucker, project_points,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def random_cameras(n: int = 3, width: int = 12, height: int = 8, seed: int = 0) -> Cameras:
    rng = np.random.default_rng(seed)
    K = np.zeros((n, 3, 3))
    c2w = np.zeros((n, 4, 4))
    for i in range(n):
        K[i] = [[rng.uniform(8, 20), 0, rng.uniform(4, 8)], [0, rng.uniform(8, 20), rng.uniform(3, 5)], [0, 0, 1]]
        c2w[i, :3, :3] = random_rotation(rng)
        c2w[i, :3, 3] = rng.normal(size=3) * 3
        c2w[i, 3, 3] = 1
    return Cameras(torch.from_numpy(K), torch.from_numpy(c2w), width, height)


def test_pixel_rays_match_numpy_unprojection():
    cams = random_cameras()
    origins, dirs = pixel_rays(cams)
    assert dirs.shape == (3, 8, 12, 3)
    K, c2w = cams.K.numpy(), cams.cam_to_world.numpy()
    for c in range(3):
        for v in (0, 3, 7):
            for u in (0, 5, 11):
                d = c2w[c, :3, :3] @ np.linalg.inv(K[c]) @ np.array([u + 0.5, v + 0.5, 1.0])
                np.testing.assert_allclose(dirs[c, v, u].numpy(), d / np.linalg.norm(d), atol=1e-12)
                np.testing.assert_allclose(origins[c, v, u].numpy(), c2w[c, :3, 3])


def test_project_points_inverts_pixel_rays_and_matches_numpy():
    cams = random_cameras()
    origins, dirs = pixel_rays(cams)
    depth = torch.from_numpy(np.random.default_rng(4).uniform(0.5, 9.0, size=(3, 8 * 12, 1)))
    points = origins.reshape(3, -1, 3) + depth * dirs.reshape(3, -1, 3)
    uv, z = project_points(points, cams)
    v, u = np.meshgrid(np.arange(8) + 0.5, np.arange(12) + 0.5, indexing="ij")
    for c in range(3):  # back to every pixel centre; z is the depth along the optical axis
        np.testing.assert_allclose(uv[c].numpy(), np.stack([u.ravel(), v.ravel()], -1), atol=1e-9)
        axis = cams.cam_to_world[c, :3, 2].numpy()
        np.testing.assert_allclose(z[c].numpy(), (points[c].numpy() - cams.cam_to_world[c, :3, 3].numpy()) @ axis, atol=1e-9)
    # a point behind the camera has z < 0, which callers must test
    behind = cams.cam_to_world[:, None, :3, 3] - cams.cam_to_world[:, None, :3, 2]
    assert (project_points(behind, cams)[1] < 0).all()


def test_ray_through_projected_point_hits_it():
    """Project a world point with K [R|t]^-1; the ray of that (continuous) pixel passes through it."""
    cams = random_cameras(1, width=1, height=1, seed=3)
    K, c2w = cams.K.numpy()[0], cams.cam_to_world.numpy()[0]
    point_cam = np.array([0.3, -0.2, 4.0])
    point_world = c2w[:3, :3] @ point_cam + c2w[:3, 3]
    uv = K @ point_cam
    uv = uv[:2] / uv[2]
    # a 1x1 camera whose only pixel centre is at uv: shift the principal point
    K1 = K.copy()
    K1[0, 2] -= uv[0] - 0.5
    K1[1, 2] -= uv[1] - 0.5
    one = Cameras(torch.from_numpy(K1)[None], cams.cam_to_world, 1, 1)
    o, d = pixel_rays(one)
    along = np.dot(point_world - o[0, 0, 0].numpy(), d[0, 0, 0].numpy())
    np.testing.assert_allclose(o[0, 0, 0].numpy() + along * d[0, 0, 0].numpy(), point_world, atol=1e-10)


def test_plucker_nearest_point_is_orthogonal_and_on_the_ray():
    rng = np.random.default_rng(1)
    o = rng.normal(size=(50, 3))
    d = rng.normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    emb = plucker(torch.from_numpy(o), torch.from_numpy(d)).numpy()
    np.testing.assert_allclose(emb[:, :3], d)
    nearest = emb[:, 3:]
    np.testing.assert_allclose((nearest * d).sum(-1), 0, atol=1e-12)  # closest point: orthogonal to d
    # on the ray: nearest - o is parallel to d
    np.testing.assert_allclose(np.cross(nearest - o, d), 0, atol=1e-12)
    # and it is the minimum of |o + s d| over s
    s_star = -(o * d).sum(-1)
    np.testing.assert_allclose(nearest, o + s_star[:, None] * d, atol=1e-12)


def test_world_to_cam_is_the_inverse():
    cams = random_cameras(4)
    eye = cams.world_to_cam @ cams.cam_to_world
    torch.testing.assert_close(eye, torch.eye(4, dtype=torch.float64).expand(4, 4, 4))


def test_resize_rescales_intrinsics_so_points_project_consistently():
    cams = random_cameras(2, width=40, height=30, seed=5)
    small = cams.resized(20, 12)
    assert (small.width, small.height) == (20, 12)
    point_cam = torch.tensor([0.4, -0.3, 5.0], dtype=torch.float64)
    for c in range(2):
        uv = cams.K[c] @ point_cam
        uv_small = small.K[c] @ point_cam
        np.testing.assert_allclose((uv_small[:2] / uv_small[2]).numpy(), (uv[:2] / uv[2]).numpy() * [20 / 40, 12 / 30])
    # pixel centres map to pixel centres: the ray through small pixel (0,0) is the big image's
    # ray through (0.5 * 40/20 - 0.5, 0.5 * 30/12 - 0.5) in continuous coordinates
    _, d_small = pixel_rays(small)
    K = cams.K[0].numpy()
    uv_big = np.array([0.5 * 40 / 20, 0.5 * 30 / 12, 1.0])
    d = cams.cam_to_world[0, :3, :3].numpy() @ np.linalg.inv(K) @ uv_big
    np.testing.assert_allclose(d_small[0, 0, 0].numpy(), d / np.linalg.norm(d), atol=1e-12)


def test_scene_normalization_round_trips_points_and_cameras():
    cams = random_cameras(3, seed=7)
    norm = SceneNormalization(center=torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64), scale=4.0)
    model = norm.cameras_to_model(cams)
    back = norm.cameras_to_world(model)
    torch.testing.assert_close(back.cam_to_world, cams.cam_to_world)
    torch.testing.assert_close(model.cam_to_world[:, :3, :3], cams.cam_to_world[:, :3, :3])
    torch.testing.assert_close(model.centers, (cams.centers - norm.center) / 4.0)
    # rays are the same lines: a world point on a world ray maps onto the model ray
    o_w, d_w = pixel_rays(cams)
    o_m, d_m = pixel_rays(model)
    torch.testing.assert_close(d_m, d_w)
    p_w = o_w + 2.5 * d_w
    p_m = norm.points_to_model(p_w)
    torch.testing.assert_close(p_m, o_m + (2.5 / 4.0) * d_m)
    with pytest.raises(ValueError):
        SceneNormalization(center=torch.zeros(3), scale=0.0)


def test_time_normalization_maps_window_to_unit_interval():
    tn = TimeNormalization.spanning(-2.0, 0.0)
    assert tn.to_model(-2.0) == -1.0 and tn.to_model(0.0) == 1.0
    assert tn.to_world(tn.to_model(-0.37)) == pytest.approx(-0.37)
    single = TimeNormalization.spanning(0.0, 0.0)
    assert single.to_model(0.0) == 0.0


def test_camera_validation():
    with pytest.raises(ValueError):
        Cameras(torch.eye(3)[None], torch.eye(4)[None].repeat(2, 1, 1), 4, 4)
    with pytest.raises(ValueError):
        Cameras(torch.eye(3)[None], torch.eye(4)[None], 0, 4)
    both = Cameras.cat([random_cameras(1), random_cameras(2, seed=1)])
    assert len(both) == 3 and len(both[1:]) == 2


def test_in_image_keeps_points_in_the_image_and_in_front():
    """Pixel coordinates in [0, W) x [0, H) with z > 0 are in; the edges at W and H, negative
    coordinates and points behind the camera (z <= 0) are out."""
    uv = torch.tensor([[0.0, 0.0], [7.99, 5.99], [8.0, 1.0], [1.0, 6.0], [-0.01, 1.0], [3.0, 3.0], [3.0, 3.0]])
    z = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, -2.0])
    assert in_image(uv, z, 8, 6).tolist() == [True, True, False, False, False, False, False]


def test_apply_rows_matches_numpy_for_linear_and_affine_rows():
    """`apply_rows` (coordinate by coordinate) against numpy's matrix product, with points shared
    by every row set ([1, N, 3]) and one set per row set ([C, N, 3])."""
    rng = np.random.default_rng(5)
    rows = torch.from_numpy(rng.normal(size=(3, 2, 4)))
    for points in (torch.from_numpy(rng.normal(size=(1, 7, 3))), torch.from_numpy(rng.normal(size=(3, 7, 3)))):
        homog = np.concatenate([points.numpy(), np.ones((*points.shape[:2], 1))], -1)
        affine = np.einsum("crk,cnk->crn", rows.numpy(), np.broadcast_to(homog, (3, 7, 4)))
        linear = np.einsum("crk,cnk->crn", rows[..., :3].numpy(), np.broadcast_to(points.numpy(), (3, 7, 3)))
        np.testing.assert_allclose(torch.stack(apply_rows(rows, points), 1).numpy(), affine, atol=1e-12)
        np.testing.assert_allclose(torch.stack(apply_rows(rows[..., :3], points), 1).numpy(), linear, atol=1e-12)
