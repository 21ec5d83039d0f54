"""The workspace rig, exact scene flow, and the decoded-scene cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrm4d_core.data import primitives as P
from lrm4d_core.data.format import load_scene, read_depth, read_image, read_mask, read_velocity
from lrm4d_core.data.scenes import Material, Node, Scene, Spin
from lrm4d_core.data.synth import build_scene, synth_dataset
from lrm4d_core.data.workspace import AREA_HALF, Linear, random_workspace_scene


@pytest.fixture(scope="module")
def workspace_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws")
    synth_dataset(out, scenes=2, rig="workspace", seed=5, width=24, height=24, frames=3, progress=False)
    return out


def test_surface_velocity_of_a_rolling_ball_is_v_plus_omega_cross_r():
    """A sphere moving at v while spinning at w about an axis: every surface point moves at
    v + w x (p - c). Checked at the pixels of a rendered image against that closed form."""
    v, axis, rate, r = np.array([0.7, -0.3, 0.1]), np.array([0.0, 0.6, 0.8]), 2.5, 0.5
    ball = Node("ball", Linear((0.0, 0.0, 0.0), tuple(v)), Spin(tuple(axis), rate), P.SPHERE, (r, r, r), material=Material())
    scene = Scene([ball], duration=1.0)
    t = 0.4
    K = np.array([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # looking along +x from behind
    c2w[:3, 3] = [-3.0, 0.1, 0.05]
    rgb, depth, mask, vel = scene.render(K, c2w, 32, 32, t, with_velocity=True)
    assert mask.sum() > 50 and np.isnan(vel[~mask]).all() and np.isfinite(vel[mask]).all()
    vv, uu = np.nonzero(mask)
    pts_cam = np.stack([(uu + 0.5 - 16) / 40 * depth[vv, uu], (vv + 0.5 - 16) / 40 * depth[vv, uu], depth[vv, uu]], -1)
    pts = pts_cam @ c2w[:3, :3].T + c2w[:3, 3]
    centre = v * t
    omega = rate * axis / np.linalg.norm(axis)
    expected = v + np.cross(omega, pts - centre)
    np.testing.assert_allclose(vel[vv, uu], expected, atol=1e-4)


def test_workspace_scenes_and_rig(workspace_data):
    metas = [load_scene(workspace_data / f"workspace_{i:05d}") for i in range(2)]
    for meta in metas:
        assert meta.rig == "workspace" and 3 <= meta.num_views <= 6 and meta.num_frames == 3
        np.testing.assert_array_equal(meta.ground_plane, [0.0, 0.0, 1.0, 0.0])
        for rec in meta.images:
            c2w = rec.cam_to_world
            assert 1.2 - 1e-9 <= c2w[2, 3] <= 4.0 + 1e-9  # camera height
            assert c2w[:3, 2][2] < -0.2  # looking down
            np.testing.assert_array_equal(c2w, meta.record(rec.view, 0).cam_to_world)  # static cameras
        rec = meta.images[0]
        depth, mask, vel = read_depth(meta, rec), read_mask(meta, rec), read_velocity(meta, rec)
        np.testing.assert_array_equal(np.isfinite(depth), mask)
        np.testing.assert_array_equal(np.isfinite(vel).all(-1), mask)
        assert (read_image(meta, rec).std(axis=(0, 1)) > 5).all()  # textured, not a flat background
    # movers stay inside the area and move; the floor does not
    scene = random_workspace_scene(7, 2.4)
    assert scene.info["movers"] and all(m["kind"] in ("roll", "bounce", "robot", "walker", "arm") for m in scene.info["movers"])
    names = {m["name"] for m in scene.info["movers"] if m["kind"] != "arm"}
    for t in (0.0, 1.2, 2.4):
        st = scene.evaluate(t)
        for p in st.prims:
            if any(p.name.startswith(n) for n in names):
                assert np.all(np.abs(p.center[:2]) < AREA_HALF + 0.8), (p.name, p.center)


def test_build_scene_is_deterministic_and_rigs_differ():
    a, b = build_scene("workspace", 3, seed=1, width=16, height=16, frames=2), build_scene("workspace", 3, seed=1, width=16, height=16, frames=2)
    np.testing.assert_array_equal(a.cams.cam_to_world, b.cams.cam_to_world)
    c = build_scene("workspace", 4, seed=1, width=16, height=16, frames=2)
    assert a.cams.cam_to_world.shape != c.cams.cam_to_world.shape or not np.allclose(a.cams.cam_to_world, c.cams.cam_to_world)


def test_cached_dataset_matches_decoding_every_time(workspace_data, tmp_path):
    from lrm4d_core.data.dataset import SceneDataset

    kw = dict(num_input=4, num_target=3, image_size=(16, 16), with_depth=True, with_masks=True, with_velocity=True)
    plain = SceneDataset(workspace_data, **kw)
    cached = SceneDataset(workspace_data, cache_dir=tmp_path / "cache", **kw)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(torch.nan_to_num(a[key].float(), posinf=1e9), torch.nan_to_num(b[key].float(), posinf=1e9)) or \
                    (key.endswith("velocities") and torch.allclose(torch.nan_to_num(a[key]), torch.nan_to_num(b[key]), atol=2e-3)), key
    assert any((tmp_path / "cache").rglob("done"))
