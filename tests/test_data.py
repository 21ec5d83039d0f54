"""Synthetic scenes, rigs, the scene format and the dataset, checked against independent numpy.

Ray casting is compared with brute-force marching of implicit surfaces written here, silhouettes
and depths with closed-form geometry, the scene graph with forward kinematics done by hand.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from lrm4d_core.data import primitives as P
from lrm4d_core.data.dataset import SceneDataset, evaluation_targets, protocol_views, scale_intrinsics
from lrm4d_core.data.format import SceneFormatError, SceneWriter, load_scene, parse_scene, read_depth, read_image, read_mask
from lrm4d_core.data.rigs import driving_rig, look_at, object_rig
from lrm4d_core.data.scenes import Bezier, Fixed, Material, Node, Pulse, Scene, Spin, Swing, random_driving_scene, random_object_scene
from lrm4d_core.data.synth import add_arguments, main, synth_dataset
from lrm4d_core.data.textures import Solid


# ----------------------------------------------------------------------------- independent helpers
def march(f, o, d, t_max=10.0, n=4000):
    """First root of the implicit f along o + t d: dense sampling, then bisection (inf if none)."""
    ts = np.linspace(0.0, t_max, n)
    vals = f(o[:, None, :] + ts[None, :, None] * d[:, None, :])
    inside = vals < 0
    has = inside.any(axis=1)
    first = np.argmax(inside, axis=1)
    lo = ts[np.maximum(first - 1, 0)]
    hi = ts[first]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        neg = f(o + mid[:, None] * d) < 0
        hi = np.where(neg, mid, hi)
        lo = np.where(neg, lo, mid)
    return np.where(has, hi, np.inf)


def sphere_f(p):
    return np.linalg.norm(p, axis=-1) - 1.0


def box_f(p):
    return np.abs(p).max(axis=-1) - 1.0


def cylinder_f(p):
    return np.maximum(np.hypot(p[..., 0], p[..., 1]) - 1.0, np.abs(p[..., 2]) - 1.0)


def rays_at(rng, n_hit=60, n_miss=20, aim=0.7, dist=4.0):
    """Rays from a sphere of radius ``dist`` aimed at points within ``aim`` of the origin (hits)
    or passing far from it (misses). Directions are unit."""
    o = rng.normal(size=(n_hit + n_miss, 3))
    o = dist * o / np.linalg.norm(o, axis=1, keepdims=True)
    target = rng.normal(size=(n_hit + n_miss, 3))
    target *= aim * rng.uniform(0, 1, size=(n_hit + n_miss, 1)) ** (1 / 3) / np.linalg.norm(target, axis=1, keepdims=True)
    side = np.cross(o[n_hit:], rng.normal(size=(n_miss, 3)))
    target[n_hit:] = 2.0 * side / np.linalg.norm(side, axis=1, keepdims=True)
    d = target - o
    return o, d / np.linalg.norm(d, axis=1, keepdims=True), n_hit


def rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def single(primitive, **kw):
    return Scene([Node("obj", primitive=primitive, material=Material(Solid((0.8, 0.2, 0.2))), **kw)], shadows=False)


# ------------------------------------------------------------------------------------ primitives
@pytest.mark.parametrize(
    "kind,f",
    [(P.SPHERE, sphere_f), (P.BOX, box_f), (P.CYLINDER, cylinder_f)],
)
def test_unit_primitives_match_marching_and_lie_on_surface(kind, f):
    rng = np.random.default_rng(1)
    o, d, n_hit = rays_at(rng)
    hits = P.intersect(kind, o, d)
    ref = march(f, o, d)
    assert np.all(np.isfinite(hits.t[:n_hit])) and np.all(np.isinf(hits.t[n_hit:]))
    np.testing.assert_allclose(hits.t[:n_hit], ref[:n_hit], atol=1e-9)
    p = o[:n_hit] + hits.t[:n_hit, None] * d[:n_hit]
    np.testing.assert_allclose(f(p), 0.0, atol=1e-12)
    # outward unit normal, facing the incoming ray
    np.testing.assert_allclose(np.linalg.norm(hits.normal[:n_hit], axis=1), 1.0, atol=1e-12)
    assert np.all(np.einsum("ij,ij->i", hits.normal[:n_hit], d[:n_hit]) < 1e-12)
    assert np.all((hits.uv[:n_hit] >= 0) & (hits.uv[:n_hit] <= 1))
    if kind == P.SPHERE:
        np.testing.assert_allclose(hits.normal[:n_hit], p, atol=1e-12)
    if kind == P.BOX:
        axis = hits.face[:n_hit] // 2
        sign = np.where(hits.face[:n_hit] % 2 == 0, 1.0, -1.0)
        np.testing.assert_allclose(p[np.arange(n_hit), axis], sign, atol=1e-12)


def test_box_face_uv_is_upright_and_not_mirrored():
    # looking at the +x face from +x: u grows with +y (screen right), v grows with -z (screen down)
    o = np.array([[5.0, -0.5, 0.5], [5.0, 0.5, 0.5], [5.0, 0.5, -0.5]])
    d = np.tile([[-1.0, 0.0, 0.0]], (3, 1))
    h = P.intersect_box(o, d)
    assert list(h.face) == [0, 0, 0]
    np.testing.assert_allclose(h.uv, [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75]], atol=1e-12)


def test_plane_intersection_and_depth_against_closed_form():
    h = 1.7
    pitch = np.deg2rad(12.0)
    # camera at height h looking along +x, pitched down; OpenCV axes as columns
    z = np.array([np.cos(pitch), 0.0, -np.sin(pitch)])
    x = np.array([0.0, -1.0, 0.0])
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, [0.3, -0.2, h]
    K = np.array([[20.0, 0.0, 12.0], [0.0, 22.0, 9.0], [0.0, 0.0, 1.0]])
    W, H = 24, 18
    scene = Scene([Node("ground", primitive=P.PLANE, material=Material(Solid((0.5, 0.5, 0.5))))], shadows=False)
    rgb, depth, mask = scene.render(K, c2w, W, H, 0.0)
    v, u = np.mgrid[0:H, 0:W]
    d_cam = np.stack([(u + 0.5 - 12.0) / 20.0, (v + 0.5 - 9.0) / 22.0, np.ones_like(u, float)], -1)
    down = -(d_cam @ c2w[:3, :3].T)[..., 2]  # world -z component of the (z_cam = 1) direction
    expect = np.where(down > 0, h / np.where(down > 0, down, 1), np.inf)
    assert mask.sum() > 0 and (~mask).sum() > 0
    np.testing.assert_array_equal(mask, down > 0)
    np.testing.assert_allclose(depth[mask], expect[mask], rtol=1e-6)
    assert np.all(np.isinf(depth[~mask]))
    # straight down: every pixel at depth h
    _, depth_down, _ = scene.render(K, look_at([0, 0, h], [0, 0, 0], up=(1, 0, 0)), W, H, 0.0)
    np.testing.assert_allclose(depth_down, h, rtol=1e-6)


def camera_looking_plus_y(pos):
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = [1, 0, 0], [0, 0, -1], [0, 1, 0], pos
    return c2w


def test_sphere_mask_and_depth_match_analytic_silhouette():
    center, r = np.array([0.25, 0.1, -0.15]), 0.6
    scene = single(P.SPHERE, position=Fixed(tuple(center)), size=(r, r, r))
    W = H = 32
    K = np.array([[30.0, 0.0, 16.0], [0.0, 30.0, 16.0], [0.0, 0.0, 1.0]])
    c2w = camera_looking_plus_y([0.0, -3.0, 0.0])
    _, depth, mask = scene.render(K, c2w, W, H, 0.0)
    v, u = np.mgrid[0:H, 0:W]
    d_cam = np.stack([(u + 0.5 - 16) / 30.0, (v + 0.5 - 16) / 30.0, np.ones((H, W))], -1)
    d = d_cam @ c2w[:3, :3].T
    d_unit = d / np.linalg.norm(d, axis=-1, keepdims=True)
    oc = center - c2w[:3, 3]
    along = d_unit @ oc
    perp2 = oc @ oc - along**2
    inside = (perp2 < r * r) & (along > 0)
    assert 100 < inside.sum() < W * H
    np.testing.assert_array_equal(mask, inside)
    t_front = along - np.sqrt(np.maximum(r * r - perp2, 0))
    z = t_front * (d_unit @ c2w[:3, 2])
    np.testing.assert_allclose(depth[inside], z[inside], rtol=1e-6)


def test_affine_motion_is_cast_exactly():
    """A spinning, squashing, moving ellipsoid and box: hits lie on the world surface and match marching."""
    t = 0.37
    rate, size0, amp, freq = 1.3, np.array([0.5, 0.3, 0.8]), np.array([0.2, -0.1, 0.3]), 0.9
    path = Bezier(((0.0, 0.0, 0.0), (0.4, 0.1, 0.0), (0.2, 0.5, 0.2), (0.1, 0.3, 0.4)), 0.0, 1.0)
    s = t
    bez = (1 - s) ** 3 * np.array([0, 0, 0]) + 3 * s * (1 - s) ** 2 * np.array([0.4, 0.1, 0]) + 3 * s * s * (1 - s) * np.array([0.2, 0.5, 0.2]) + s**3 * np.array([0.1, 0.3, 0.4])
    size = size0 * (1 + amp * np.sin(2 * np.pi * freq * t))
    R = rot_z(rate * t)
    rng = np.random.default_rng(5)
    for kind, f in ((P.SPHERE, sphere_f), (P.BOX, box_f)):
        scene = single(kind, position=path, rotation=Spin((0, 0, 1), rate), size=Pulse(tuple(size0), tuple(amp), freq))
        state = scene.evaluate(t)

        def world_f(p):
            return f(((p - bez) @ R) / size)

        o, d, n_hit = rays_at(rng, 40, 10, aim=0.25)
        o = o + bez
        tr = state.trace(o, d)
        ref = march(world_f, o, d, t_max=8.0, n=8000)
        np.testing.assert_array_equal(np.isfinite(tr.t), np.isfinite(ref))
        hit = np.isfinite(ref)
        assert hit.sum() >= 30
        np.testing.assert_allclose(tr.t[hit], ref[hit], atol=1e-9)
        p = o[hit] + tr.t[hit, None] * d[hit]
        np.testing.assert_allclose(world_f(p), 0.0, atol=1e-12)


def test_articulated_chain_follows_forward_kinematics():
    t, amp, freq = 0.3, 0.7, 0.8
    root = Node("base", Fixed((0.1, 0.2, 0.0)), Spin((0, 0, 1), 0.9))
    joint = root.add(Node("joint", Fixed((0.0, 0.0, 0.5)), Swing((0, 1, 0), amp, freq)))
    joint.add(Node("seg", primitive=P.CYLINDER, size=(0.05, 0.05, 0.2), offset=(0.0, 0.0, 0.2)))
    state = Scene([root]).evaluate(t)
    (seg,) = state.prims
    tip = seg.A @ np.array([0.0, 0.0, 1.0, 1.0])  # top cap centre of the unit cylinder
    expect = np.array([0.1, 0.2, 0.0]) + rot_z(0.9 * t) @ (np.array([0, 0, 0.5]) + rot_y(amp * np.sin(2 * np.pi * freq * t)) @ np.array([0, 0, 0.4]))
    np.testing.assert_allclose(tip[:3], expect, atol=1e-12)


def test_motion_moves_the_silhouette_along_the_curve():
    pts = ((-0.5, 0.0, -0.3), (-0.2, 0.0, 0.4), (0.3, 0.0, 0.4), (0.5, 0.0, -0.2))
    path = Bezier(pts, 0.0, 1.0)
    scene = single(P.SPHERE, position=path, size=(0.18, 0.18, 0.18))
    W = H = 48
    K = np.array([[40.0, 0.0, 24.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])
    c2w = camera_looking_plus_y([0.0, -3.0, 0.0])
    centroids = []
    for t in (0.1, 0.8):
        _, _, mask = scene.render(K, c2w, W, H, t)
        v, u = np.nonzero(mask)
        centroids.append(np.array([u.mean() + 0.5, v.mean() + 0.5]))
        c = path(t)
        pc = c2w[:3, :3].T @ (c - c2w[:3, 3])
        proj = (K @ pc)[:2] / pc[2]
        np.testing.assert_allclose(centroids[-1], proj, atol=0.6)
    assert np.linalg.norm(centroids[1] - centroids[0]) > 8


def test_shadows_supersampling_and_textures():
    sun_up = (0.0, 0.0, 1.0)
    nodes = [
        Node("ground", primitive=P.PLANE, material=Material(Solid((0.6, 0.6, 0.6)))),
        Node("ball", Fixed((0.0, 0.0, 1.0)), primitive=P.SPHERE, size=(0.4, 0.4, 0.4), material=Material(Solid((0.9, 0.1, 0.1)))),
    ]
    K = np.array([[12.0, 0.0, 8.0], [0.0, 12.0, 8.0], [0.0, 0.0, 1.0]])
    c2w = look_at([0.0, -3.0, 3.0], [0.0, 0.0, 0.0])
    lit = Scene(nodes, sun_direction=sun_up, shadows=False).render(K, c2w, 16, 16, 0.0)
    shadowed = Scene(nodes, sun_direction=sun_up, shadows=True).render(K, c2w, 16, 16, 0.0)
    # the ground point below the ball (world origin) projects to the principal point
    dark = shadowed[0][7:9, 7:9].astype(int).sum()
    assert dark < lit[0][7:9, 7:9].astype(int).sum()
    np.testing.assert_array_equal(shadowed[0][0], lit[0][0])  # far ground: unshadowed
    # supersampling changes colour only at edges; depth and mask stay the pixel-centre ones
    ss = Scene(nodes, sun_direction=sun_up, shadows=False).render(K, c2w, 16, 16, 0.0, supersample=3)
    np.testing.assert_array_equal(ss[1], lit[1])
    np.testing.assert_array_equal(ss[2], lit[2])
    assert 0 < np.count_nonzero(np.any(ss[0] != lit[0], axis=-1)) < 16 * 16 // 2
    # bilinear texture lookup with texel centres at +0.5, repeating
    from lrm4d_core.data.textures import ImageTexture

    img = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3) / 24.0
    tex = ImageTexture(img)
    centre = tex.sample(np.array([[(2 + 0.5) / 4, (1 + 0.5) / 2], [1 + (0.5) / 4, -1 + (0.5) / 2]]))
    np.testing.assert_allclose(centre, [img[1, 2], img[0, 0]], atol=1e-12)
    np.testing.assert_allclose(tex.sample(np.array([[2 / 4, 0.25]])), [0.5 * (img[0, 1] + img[0, 2])], atol=1e-12)


def test_road_coordinates_round_trip():
    from lrm4d_core.data.driving import Road

    rng = np.random.default_rng(0)
    s = rng.uniform(-40, 120, 50)
    lat = rng.uniform(-15, 15, 50)
    for k in (0.0, 1 / 80, -1 / 150):
        road = Road(k, origin=(0.0, 1.75))
        xy = road.point(s, lat)
        s2, lat2 = road.to_road(xy)
        np.testing.assert_allclose(s2, s, atol=1e-9)
        np.testing.assert_allclose(lat2, lat, atol=1e-9)
        # arc length: consecutive centreline points 0.1 m apart along s are 0.1 m apart in space
        step = np.linalg.norm(np.diff(road.point(np.array([10.0, 10.1])), axis=0))
        np.testing.assert_allclose(step, 0.1, rtol=1e-5)


# -------------------------------------------------------------------------------- random scenes
def test_random_scenes_are_deterministic_by_seed():
    K = np.array([[20.0, 0.0, 12.0], [0.0, 20.0, 12.0], [0.0, 0.0, 1.0]])
    c2w = look_at([2.5, 0.3, 0.6], [0, 0, 0])
    a = random_object_scene(3).render(K, c2w, 24, 24, 0.4)
    b = random_object_scene(3).render(K, c2w, 24, 24, 0.4)
    c = random_object_scene(4).render(K, c2w, 24, 24, 0.4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    da = random_driving_scene(7)
    db = random_driving_scene(7)
    rig_a = driving_rig(da, [0.0, 0.5], 24, 16)
    rig_b = driving_rig(db, [0.0, 0.5], 24, 16)
    np.testing.assert_array_equal(rig_a.cam_to_world, rig_b.cam_to_world)
    ra = da.render(rig_a.K[0, 1], rig_a.cam_to_world[0, 1], 24, 16, 0.5)
    rb = db.render(rig_b.K[0, 1], rig_b.cam_to_world[0, 1], 24, 16, 0.5)
    for x, y in zip(ra, rb):
        np.testing.assert_array_equal(x, y)
    rc = random_driving_scene(8).render(rig_a.K[0, 1], rig_a.cam_to_world[0, 1], 24, 16, 0.5)
    assert not np.array_equal(ra[0], rc[0])


def test_object_scenes_stay_inside_the_model_box():
    times = np.arange(24) / 12.0
    for seed in range(6):
        scene = random_object_scene(seed, duration=times[-1])
        lo, hi = scene.bounds(times)
        assert np.all(lo >= -1.0) and np.all(hi <= 1.0), (seed, lo, hi)
        assert np.max(hi - lo) > 1.0  # it fills the box, not a speck
    # every object kind builds and renders
    for kind in ("dancer", "arm", "walker", "orbiter"):
        rgb, depth, mask = random_object_scene(0, kinds=[kind], num_objects=1).render(
            np.array([[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]), look_at([2.5, 0, 0.5], [0, 0, 0]), 16, 16, 0.5
        )
        assert mask.any() and np.all(np.isfinite(depth[mask])) and np.all(depth[mask] > 0)


def test_driving_scene_ground_and_sky():
    scene = random_driving_scene(2, num_cars=0, num_pedestrians=0)
    rig = driving_rig(scene, [0.0], 32, 24)
    rgb, depth, mask = scene.render(rig.K[0, 0], rig.cam_to_world[0, 0], 32, 24, 0.0)
    assert mask[-1].all() and np.all(np.isfinite(depth[-1]))  # bottom row: road
    # the bottom-centre ray meets the flat road: depth = camera height / downward slope
    K = rig.K[0, 0]
    slope = (23.5 - K[1, 2]) / K[1, 1]
    np.testing.assert_allclose(depth[-1, 15:17], 1.6 / slope, rtol=1e-6)


# ----------------------------------------------------------------------------------------- rigs
def test_object_rig_views():
    times = np.arange(6) / 12.0
    rig = object_rig(np.random.default_rng(0), times, 32, 32)
    kinds = [v["kind"] for v in rig.views]
    assert kinds == ["canonical"] * 4 + ["moving"] * 2 + ["random"] * 2
    assert rig.K.shape == (8, 6, 3, 3) and rig.cam_to_world.shape == (8, 6, 4, 4)
    R = rig.cam_to_world[..., :3, :3]
    np.testing.assert_allclose(R.swapaxes(-1, -2) @ R, np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    centers = rig.cam_to_world[..., :3, 3]
    # optical axes point at the origin; image y points down (world z component <= 0)
    to_origin = -centers / np.linalg.norm(centers, axis=-1, keepdims=True)
    np.testing.assert_allclose(rig.cam_to_world[..., :3, 2], to_origin, atol=1e-12)
    assert np.all(rig.cam_to_world[..., 2, 1] <= 1e-12)
    dist = np.linalg.norm(centers, axis=-1)
    assert np.all((dist >= 2.0) & (dist <= 2.7))
    expect = 2.5 * np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], float)
    for f in range(6):
        np.testing.assert_allclose(centers[:4, f], expect, atol=1e-12)
    # moving views: constant elevation, one orbit over the clip (360/6 degrees per frame)
    for v in (4, 5):
        c = centers[v]
        np.testing.assert_allclose(c[:, 2], c[0, 2], atol=1e-12)
        az = np.unwrap(np.arctan2(c[:, 1], c[:, 0]))
        np.testing.assert_allclose(np.abs(np.diff(az)), np.deg2rad(60.0), atol=1e-9)
        assert c[0, 2] > 0.5


def test_driving_rig_moves_with_the_ego():
    scene = random_driving_scene(11)
    times = np.arange(5) / 10.0
    rig = driving_rig(scene, times, 32, 24)
    assert [v["name"] for v in rig.views] == ["front", "front_left", "front_right", "back", "back_left", "back_right"]
    np.testing.assert_allclose(rig.cam_to_world[..., 2, 3], 1.6, atol=1e-12)
    ego = rig.extra["ego_poses"]
    front_axis = rig.cam_to_world[0, :, :3, 2]
    np.testing.assert_allclose(front_axis, ego[:, :3, 0], atol=1e-12)
    np.testing.assert_allclose(rig.cam_to_world[3, :, :3, 2], -ego[:, :3, 0], atol=1e-12)
    speed = np.linalg.norm(np.diff(ego[:, :3, 3], axis=0), axis=1) / 0.1
    assert np.all((speed > 4.9) & (speed < 15.1))
    # 70 degree horizontal field of view
    K = rig.K[0, 0]
    np.testing.assert_allclose(2 * np.degrees(np.arctan(16 / K[0, 0])), 70.0)


# --------------------------------------------------------------------------------------- format
def write_tiny_scene(path, rng):
    views = [{"index": 0, "kind": "canonical", "name": "a"}, {"index": 1, "kind": "random", "name": "b"}]
    data = {}
    with SceneWriter(path, width=6, height=4, rig="custom", views=views, near=0.2, far=9.0) as w:
        for v in range(2):
            for f in range(2):
                rgb = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
                depth = rng.uniform(1, 5, size=(4, 6)).astype(np.float32)
                depth[0, 0] = np.inf
                mask = rng.uniform(size=(4, 6)) < 0.5
                K = np.array([[5.0, 0, 3], [0, 5.0, 2], [0, 0, 1]])
                c2w = look_at(rng.normal(size=3) + [3, 0, 0], [0, 0, 0])
                w.add(v, f, 0.1 * f + 0.01 * v, K, c2w, rgb, depth=depth, mask=mask)
                data[(v, f)] = (rgb, depth, mask, K, c2w)
    return data


def test_format_round_trip(tmp_path):
    data = write_tiny_scene(tmp_path / "s", np.random.default_rng(0))
    meta = load_scene(tmp_path / "s")
    assert (meta.width, meta.height, meta.near, meta.far, meta.num_views, meta.num_frames) == (6, 4, 0.2, 9.0, 2, 2)
    assert meta.views_of_kind("random") == [1]
    for (v, f), (rgb, depth, mask, K, c2w) in data.items():
        rec = meta.record(v, f)
        assert rec.time == 0.1 * f + 0.01 * v
        np.testing.assert_array_equal(rec.K, K)
        np.testing.assert_array_equal(rec.cam_to_world, c2w)
        np.testing.assert_array_equal(read_image(meta, rec), rgb)
        np.testing.assert_array_equal(read_depth(meta, rec), depth)
        np.testing.assert_array_equal(read_mask(meta, rec), mask)
    assert meta.frames[1]["time"] == pytest.approx(0.105)  # derived: mean over views
    # converting existing images: copy a file of another size; the record carries its size
    from PIL import Image

    src = tmp_path / "photo.png"
    big = np.random.default_rng(2).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(big).save(src)
    with SceneWriter(tmp_path / "t", width=6, height=4) as w:
        w.add(0, 0, 1.5, [[5.0, 0, 3.5], [0, 5.0, 2.5], [0, 0, 1]], np.eye(4), source_file=src)
    meta_t = load_scene(tmp_path / "t")
    rec = meta_t.record(0, 0)
    assert (rec.width, rec.height) == (7, 5) and meta_t.views[0]["kind"] == "unknown"
    np.testing.assert_array_equal(read_image(meta_t, rec), big)
    with pytest.raises(FileExistsError):
        SceneWriter(tmp_path / "s", width=6, height=4)


def test_format_errors_name_file_and_field(tmp_path):
    write_tiny_scene(tmp_path / "s", np.random.default_rng(1))
    path = tmp_path / "s" / "scene.json"
    good = json.loads(path.read_text())

    path.write_text(path.read_text()[:-40])
    with pytest.raises(SceneFormatError, match=r"scene\.json: invalid JSON at line"):
        load_scene(tmp_path / "s")

    def broken(edit, match):
        data = json.loads(json.dumps(good))
        edit(data)
        with pytest.raises(SceneFormatError, match=match) as err:
            parse_scene(data, tmp_path / "s")
        assert str(path) in str(err.value)

    broken(lambda d: d.update(format="other"), r"format: expected 'lrm4d-scene'")
    broken(lambda d: d.update(version=2), r"version: unsupported version 2")
    broken(lambda d: d["images"][1].update(K=[[1, 0], [0, 1]]), r"images\[1\]\.K: expected a 3x3")
    broken(lambda d: d["images"][2]["cam_to_world"][0].__setitem__(0, 3.0), r"images\[2\]\.cam_to_world: rotation part is not orthonormal")
    broken(lambda d: d["images"][0].pop("time"), r"images\[0\]\.time: missing")
    broken(lambda d: d["images"][0].update(file="images/nope.png"), r"images\[0\]\.file: file not found")
    broken(lambda d: d["images"][0].update(file="../x.png"), r"images\[0\]\.file: must be a relative path")
    broken(lambda d: d["images"][3].update(view=0, frame=0), r"images\[3\]: duplicate \(view 0, frame 0\)")
    broken(lambda d: d.update(near=5.0, far=1.0), r"near/far: need 0 < near < far")
    broken(lambda d: d["images"][0].update(view=7), r"views: images use view 7")
    broken(lambda d: d.update(width=0), r"width: must be >= 1")


# ------------------------------------------------------------------------------ synth and CLI
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synth_dataset(out, scenes=2, rig="object", seed=3, width=32, height=32, frames=4, progress=False)
    return out


def test_synth_writes_valid_scenes_that_match_the_renderer(tiny_dataset):
    metas = [load_scene(tiny_dataset / f"object_{i:05d}") for i in range(2)]
    for meta in metas:
        assert meta.rig == "object" and meta.num_views == 8 and meta.num_frames == 4 and len(meta.images) == 32
        assert (meta.near, meta.far) == (0.1, 4.5)
        assert [f["time"] for f in meta.frames] == pytest.approx([0, 1 / 12, 2 / 12, 3 / 12])
    # scene i depends only on (seed, rig, i): re-rendering scene 1 alone reproduces its files
    from lrm4d_core.data.synth import synth_scene

    again = synth_scene(tiny_dataset / "again", 1, "object", seed=3, width=32, height=32, frames=4)
    meta2 = load_scene(again)
    for rec in metas[1].images[::5]:
        rec2 = meta2.record(rec.view, rec.frame)
        np.testing.assert_array_equal(read_image(metas[1], rec), read_image(meta2, rec2))
        np.testing.assert_array_equal(read_depth(metas[1], rec), read_depth(meta2, rec2))
        np.testing.assert_array_equal(rec.cam_to_world, rec2.cam_to_world)
    # depth and mask agree: finite depth exactly where the mask is set
    rec = metas[0].record(0, 0)
    depth, mask = read_depth(metas[0], rec), read_mask(metas[0], rec)
    np.testing.assert_array_equal(np.isfinite(depth), mask)
    assert mask.any()


def test_cli_synth_driving(tmp_path, capsys):
    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", str(tmp_path), "--scenes", "1", "--rig", "driving", "--width", "24", "--height", "16", "--frames", "2", "--no-depth"])
    assert main(args) == 0
    meta = load_scene(tmp_path / "driving_00000")
    assert meta.rig == "driving" and meta.num_views == 6 and len(meta.images) == 12
    assert all(r.depth is None and r.mask is not None for r in meta.images)
    assert "synth: wrote 1 driving scene(s)" in capsys.readouterr().err
    assert main(args) == 2  # exists: refuses, with a message
    assert "exists" in capsys.readouterr().err
    assert main(parser.parse_args([*map(str, ["--out", tmp_path, "--rig", "driving", "--frames", 2, "--size", 8, "--skip-existing"])])) == 0


# ------------------------------------------------------------------------------------- dataset
def test_dataset_counts_shapes_and_independent_sampling(tiny_dataset):
    ds = SceneDataset(tiny_dataset, num_input=5, num_target=7, image_size=(16, 24), seed=1)
    assert len(ds) == 2
    b = ds[0]
    assert b["scene_id"] == "object_00000"
    assert b["input_images"].shape == (5, 3, 16, 24) and b["target_images"].shape == (7, 3, 16, 24)
    assert b["input_K"].shape == (5, 3, 3) and b["input_cam_to_world"].shape == (5, 4, 4)
    assert b["input_times"].shape == (5,) and b["target_times"].shape == (7,)
    assert 0.0 <= float(b["input_images"].min()) and float(b["input_images"].max()) <= 1.0
    assert float(b["near"]) == pytest.approx(0.1) and float(b["far"]) == pytest.approx(4.5)
    assert np.all(np.diff(b["input_times"].numpy()) >= 0)  # temporal order
    # deterministic for (seed, epoch, index); new draws per epoch; inputs and targets independent
    assert ds.sample(0) == ds.sample(0)
    overlaps, differs, per_epoch = [], [], set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        inputs, targets = ds.sample(1)
        assert len(set(inputs)) == 5 and len(set(targets)) == 7  # without replacement
        overlaps.append(len(set(inputs) & set(targets)))
        per_epoch.add(tuple(inputs))
    assert max(overlaps) > 0 and min(overlaps) < 5  # overlap happens, but targets are not the inputs
    assert len(per_epoch) > 20


def test_dataset_rescales_intrinsics_consistently(tiny_dataset):
    ds = SceneDataset(tiny_dataset, num_input=3, num_target=1, image_size=(16, 24), with_depth=True, with_masks=True)
    native = SceneDataset(tiny_dataset, num_input=3, num_target=1, with_depth=True)
    b, bn = ds[1], native[1]
    assert bn["input_images"].shape[-2:] == (32, 32) and b["input_depths"].shape == (3, 16, 24)
    for i in range(3):
        K = bn["input_K"][i].double().numpy()
        np.testing.assert_allclose(b["input_K"][i].numpy(), scale_intrinsics(K, (32, 32), (24, 16)), rtol=1e-6)
        # unproject a foreground pixel at 32x32, project with the resized K: coordinates scale
        depth = bn["input_depths"][i].numpy()
        vs, us = np.nonzero(np.isfinite(depth))
        u, v = us[len(us) // 2], vs[len(vs) // 2]
        c2w = bn["input_cam_to_world"][i].double().numpy()
        p_cam = np.linalg.inv(K) @ np.array([u + 0.5, v + 0.5, 1.0]) * depth[v, u]
        world = c2w[:3, :3] @ p_cam + c2w[:3, 3]
        K2 = b["input_K"][i].double().numpy()
        back = K2 @ (c2w[:3, :3].T @ (world - c2w[:3, 3]))
        np.testing.assert_allclose(back[:2] / back[2], [(u + 0.5) * 24 / 32, (v + 0.5) * 16 / 32], atol=1e-4)


def fake_object_meta(frames=24):
    views = [{"index": i, "kind": k, "name": f"{k}{i}"} for i, k in enumerate(["canonical"] * 4 + ["moving"] * 2 + ["random"] * 2)]
    K = [[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]]
    c2w = np.eye(4).tolist()
    images = [
        {"file": f"images/v{v:02d}_f{f:03d}.png", "view": v, "frame": f, "time": f / 12, "K": K, "cam_to_world": c2w}
        for v in range(8)
        for f in range(frames)
    ]
    data = {"format": "lrm4d-scene", "version": 1, "rig": "object", "width": 10, "height": 10, "views": views, "images": images}
    return parse_scene(data, "/nonexistent/scene", check_files=False)


def test_protocols_produce_the_documented_view_sets():
    meta = fake_object_meta()
    rng = np.random.default_rng(0)
    alt = protocol_views("alternating", meta, rng)
    assert alt == [(f % 4, f) for f in range(24)]
    interp = protocol_views("interpolation", meta, rng)
    assert len(interp) == 24 and {f for _, f in interp} == set(range(0, 24, 2)) and {v for v, _ in interp} == {0, 2}
    rot = protocol_views("two_rotating", meta, rng)
    assert rot == [(4 + f % 2, f) for f in range(24)]
    rnd = protocol_views("random", meta, rng)
    assert [f for _, f in rnd] == list(range(24)) and {v for v, _ in rnd} == {6}  # view 7 is held out
    targets = evaluation_targets(meta)
    assert len(targets) == 24 * 5 and set(targets) == {(v, f) for f in range(24) for v in (0, 1, 2, 3, 7)}
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_views("nope", meta, rng)
    plain = parse_scene({**meta.raw, "views": None}, "/nonexistent/scene", check_files=False)
    with pytest.raises(ValueError, match="kind 'canonical'"):
        protocol_views("alternating", plain, rng)


def test_dataset_with_protocols(tiny_dataset):
    ds = SceneDataset(tiny_dataset, input_protocol="alternating", target_protocol="evaluation")
    b = ds[0]
    assert b["input_views"].tolist() == [0, 1, 2, 3] and b["input_frames"].tolist() == [0, 1, 2, 3]
    assert b["target_images"].shape[0] == 4 * 5


def test_scene_pack_keeps_a_finished_pack_that_readers_use_and_rebuilds_a_stale_one(tmp_path):
    """Two training processes build the same pack: the second must not delete the first's finished
    pack under its readers (that made a good scene 'unreadable' for the rest of a run)."""
    import os

    from lrm4d_core.data.cache import ScenePack

    synth_dataset(tmp_path / "data", scenes=1, rig="object", width=16, height=16, frames=2, seed=0, progress=False)
    meta = load_scene(next(p for p in (tmp_path / "data").iterdir() if p.is_dir()))
    first = ScenePack(meta, (8, 8), tmp_path / "cache")
    inode = os.stat(first.dir / "images.npy").st_ino
    first._build()  # what the slower process does once it has decoded everything too
    assert os.stat(first.dir / "images.npy").st_ino == inode
    assert not list(first.dir.parent.glob("*.tmp*")) and first.images.shape == (len(meta.images), 8, 8, 3)
    np.testing.assert_array_equal(first.images, ScenePack(meta, (8, 8), tmp_path / "cache").images)
    later = (first.dir / "done").stat().st_mtime + 10
    os.utime(meta.source, (later, later))  # the scene changed after the pack was made
    ScenePack(meta, (8, 8), tmp_path / "cache")
    assert os.stat(first.dir / "images.npy").st_ino != inode
