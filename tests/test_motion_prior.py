"""The block-matching velocity of the "prior" parametrization (`model.motion_prior`), against
independent references: a numpy plane rotation and covariance, textures shifted by known pixel
offsets and the pinhole geometry that maps them to metres."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.data.rigs import look_at
from lrm4d_core.gaussians import Gaussians4D, rotation_4d
from lrm4d_core.model.config import ModelConfig, preset
from lrm4d_core.model.lrm4d import LRM4D
from lrm4d_core.model.motion_prior import (
    MotionPriorConstants,
    matched_velocity,
    partner_views,
    quaternion_multiply,
    velocity_rotation,
)
from lrm4d_core.train.losses import implied_velocity


def _cams(poses, size=32, f=32.0) -> Cameras:
    K = np.tile(np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]), (len(poses), 1, 1))
    return Cameras(torch.tensor(K), torch.tensor(np.stack(poses)), size, size)


def test_velocity_rotation_gives_the_requested_velocity_and_keeps_the_temporal_marginal():
    """Against numpy: the rotation by theta in the (n, t) plane, with the returned temporal scale,
    has Sigma_xt / Sigma_tt = v and Sigma_tt = the old scale_t^2; theta is found by brute force
    over angles (the smallest one reaching the speed with the marginal kept)."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 3)) * 0.6
    s, st = rng.uniform(0.01, 0.05, 20), rng.uniform(0.3, 0.8, 20)
    q_l, q_r, st_new = velocity_rotation(torch.tensor(v), torch.tensor(s), torch.tensor(st))
    rot = rotation_4d(q_l, q_r).numpy()
    e_t = np.array([0.0, 0, 0, 1])
    for k in range(20):
        n = np.append(v[k] / np.linalg.norm(v[k]), 0.0)
        for theta in np.linspace(0, 1.2, 120001):
            st2 = (st[k] ** 2 - s[k] ** 2 * math.sin(theta) ** 2) / math.cos(theta) ** 2  # keeps Sigma_tt
            if (st2 - s[k] ** 2) * math.sin(theta) * math.cos(theta) / st[k] ** 2 >= np.linalg.norm(v[k]):
                break
        r_ref = np.eye(4) + math.sin(theta) * (np.outer(n, e_t) - np.outer(e_t, n)) + (math.cos(theta) - 1) * (
            np.outer(n, n) + np.outer(e_t, e_t))
        np.testing.assert_allclose(rot[k], r_ref, atol=2e-4)
        np.testing.assert_allclose(float(st_new[k]) ** 2, st2, rtol=1e-3)
        sigma = rot[k] @ np.diag([s[k] ** 2] * 3 + [float(st_new[k]) ** 2]) @ rot[k].T
        np.testing.assert_allclose(sigma[3, 3], st[k] ** 2, rtol=1e-9)
        np.testing.assert_allclose(sigma[:3, 3] / sigma[3, 3], v[k], rtol=1e-6, atol=1e-9)


def test_velocity_rotation_caps_the_angle_and_moves_nothing_where_st_is_below_s():
    s, st = torch.tensor([0.05, 0.05]), torch.tensor([0.5, 0.04])
    q_l, q_r, st_new = velocity_rotation(torch.tensor([[100.0, 0, 0], [1.0, 0, 0]]), s, st)
    g = Gaussians4D(torch.zeros(2, 4), torch.stack([s, s, s, st_new], -1), q_l, q_r, torch.ones(2), torch.ones(2, 3))
    limit = math.tan(math.radians(80.0)) * (st[0] ** 2 - s[0] ** 2) / st[0] ** 2
    speed = implied_velocity(g).norm(dim=-1)
    assert float(speed[0]) == pytest.approx(float(limit), rel=1e-4)  # capped at 80 degrees
    assert speed[1] == pytest.approx(0.0, abs=1e-6) and st_new[1] == pytest.approx(0.04)  # st < s: unchanged
    assert torch.isfinite(q_l).all() and torch.isfinite(q_r).all()


def test_quaternion_composition_is_the_product_of_rotations():
    torch.manual_seed(0)
    a, b, c, d = torch.nn.functional.normalize(torch.randn(4, 5, 4, dtype=torch.float64), dim=-1)
    composed = rotation_4d(quaternion_multiply(a, c), quaternion_multiply(d, b))
    assert torch.allclose(composed, rotation_4d(a, b) @ rotation_4d(c, d), atol=1e-12)


def test_partners_are_the_same_viewpoint_before_and_after():
    front, side = look_at([3.0, 0, 0], [0, 0, 0]), look_at([0, 3.0, 0], [0, 0, 0])
    cams = _cams([front, side, front, front])
    times = torch.tensor([[-1.0, -0.5, 0.0, 1.0]])
    depth = torch.full((1, 4, 32, 32), 3.0)
    partners = partner_views(cams, times, depth, MotionPriorConstants(radius=4))[0]
    assert partners.tolist() == [[-1, 2], [-1, -1], [0, 3], [2, -1]]
    moved = _cams([front, side, look_at([3.0, 0, 2.0], [0, 0, 2.0]), front])  # view 2 moved 2 units
    partners = partner_views(moved, times, depth, MotionPriorConstants(radius=4, max_baseline=0.25))[0]
    assert partners.tolist() == [[-1, 3], [-1, -1], [-1, -1], [0, -1]]
    # a camera that moved 0.1 units (a car between two frames): a partner only when asked for
    nudged = _cams([front, side, look_at([3.0, 0.1, 0], [0, 0.1, 0]), front])
    assert partner_views(nudged, times, depth, MotionPriorConstants(radius=4))[0, 0].tolist() == [-1, 3]
    assert partner_views(nudged, times, depth, MotionPriorConstants(radius=4, max_baseline=0.25))[0, 0].tolist() == [-1, 2]


def _shifted_scene(shift: tuple[int, int], size: int = 32):
    """One static camera 3 units from a textured plane through the origin, facing it; a textured
    8x8 square moves by `shift` pixels (dx, dy) between the two views (times -1 and 1)."""
    rng = np.random.default_rng(1)
    background = rng.uniform(0, 1, (3, size, size))
    square = rng.uniform(0, 1, (3, 8, 8))
    images = np.stack([background.copy(), background.copy()])
    y0, x0 = 12, 10
    images[0, :, y0:y0 + 8, x0:x0 + 8] = square
    images[1, :, y0 + shift[1]:y0 + shift[1] + 8, x0 + shift[0]:x0 + shift[0] + 8] = square
    cams = _cams([look_at([-3.0, 0, 0], [0, 0, 0])] * 2, size=size)
    origins, dirs = pixel_rays(cams)
    depth = 3.0 / dirs[..., 0]  # along-ray depth to the plane x = 0
    points = (origins + depth[..., None] * dirs).float().reshape(1, 2 * size * size, 3)
    return torch.tensor(images, dtype=torch.float32)[None], points, cams, torch.tensor([[-1.0, 1.0]]), depth.float()[None], (y0, x0)


def test_matched_velocity_recovers_a_known_shift_and_leaves_the_static_background():
    shift = (3, -2)
    images, points, cams, times, depth, (y0, x0) = _shifted_scene(shift)
    constants = MotionPriorConstants(radius=5, patch=3, min_cost=0.005, max_cost_ratio=0.5)
    v = matched_velocity(images, points, cams, times, depth, constants).reshape(2, 32, 32, 3)
    # pinhole reference: a shift of k pixels on the plane at z = 3 (f = 32) is 3 k / 32 units,
    # over a model-time gap of 2; image x runs along the camera's x axis in the world
    c2w = cams.cam_to_world[0].float()
    expected = (c2w[:3, 0] * shift[0] + c2w[:3, 1] * shift[1]) * 3.0 / 32.0 / 2.0
    inner = v[0, y0 + 2:y0 + 6, x0 + 2:x0 + 6].reshape(-1, 3)  # the square's interior in view 0
    assert (torch.linalg.norm(inner - expected, dim=-1) < 0.1 * expected.norm()).float().mean() > 0.9
    later = v[1, y0 + shift[1] + 2:y0 + shift[1] + 6, x0 + shift[0] + 2:x0 + shift[0] + 6].reshape(-1, 3)
    assert (torch.linalg.norm(later - expected, dim=-1) < 0.1 * expected.norm()).float().mean() > 0.9
    far = torch.ones(32, 32, dtype=torch.bool)
    far[y0 - 4:y0 + 12, x0 - 4:x0 + 14] = False  # well away from the square at either time
    assert v[0][far].abs().max() == 0 and v[1][far].abs().max() == 0


def test_pixels_known_static_do_not_move():
    """`still` (the stereo's matched pixels): the square's pixels in view 0 marked still get no
    velocity, those of view 1 keep theirs."""
    shift = (3, -2)
    images, points, cams, times, depth, (y0, x0) = _shifted_scene(shift)
    constants = MotionPriorConstants(radius=5, patch=3, min_cost=0.005, max_cost_ratio=0.5)
    still = torch.zeros(2, 32, 32, dtype=torch.bool)
    still[0] = True
    free = matched_velocity(images, points, cams, times, depth, constants).reshape(2, 32, 32, 3)
    held = matched_velocity(images, points, cams, times, depth, constants, still=still.reshape(1, -1)).reshape(2, 32, 32, 3)
    assert free[0].abs().amax() > 0 and held[0].abs().amax() == 0
    assert torch.equal(held[1], free[1])


def test_matched_velocity_is_zero_when_off_or_without_partners():
    images, points, cams, times, depth, _ = _shifted_scene((3, 0))
    off = matched_velocity(images, points, cams, times, depth, MotionPriorConstants(radius=0))
    assert off.abs().max() == 0
    same_time = matched_velocity(images, points, cams, torch.zeros(1, 2), depth, MotionPriorConstants(radius=4))
    assert same_time.abs().max() == 0


def test_model_with_the_motion_prior_moves_only_what_moved():
    """The same untrained "prior" weights with the motion prior off and on: Gaussians of the moving
    square gain the square's velocity (pinhole reference as above), those of the static
    background keep exactly what the network alone implies."""
    motion = {"radius": 5, "patch": 3, "min_cost": 0.005}
    torch.manual_seed(0)
    off = LRM4D(preset("tiny", image_size=(32, 32), patch_size=8)).eval()
    on = LRM4D(preset("tiny", image_size=(32, 32), patch_size=8, prior={"motion": motion})).eval()
    on.load_state_dict(off.state_dict())
    images, _, cams, times, _, (y0, x0) = _shifted_scene((3, 0))
    with torch.no_grad():
        v_off, v_on = (implied_velocity(m(images, cams, times, world_scale=1.0))[0, : 2 * 32 * 32].reshape(2, 32, 32, 3)
                       for m in (off, on))
    expected = 3 * 3.0 / 32.0 / 2.0  # 3 px at z = 3, f = 32, over a model-time gap of 2
    inner = v_on[0, y0 + 2:y0 + 6, x0 + 2:x0 + 6].reshape(-1, 3).norm(dim=-1)
    assert ((inner - expected).abs() < 0.25 * expected).float().mean() > 0.9
    assert v_off[0, y0 + 2:y0 + 6, x0 + 2:x0 + 6].norm(dim=-1).max() < 0.5 * expected  # the network alone: noise
    assert torch.equal(v_on[:, :4], v_off[:, :4])  # static rows far above the square


def test_views_without_partners_are_held_still_at_inference_only():
    """`hold_unobserved`: a camera that moved between the two views (no partner) gets no velocity
    from the network at inference: every pixel Gaussian stands still, and its
    slice at its own view's time is where and as it was; with the camera static (partners) and in
    training, the output is exactly that of the same weights without the option."""
    motion = {"radius": 5, "patch": 3, "min_cost": 0.005}
    torch.manual_seed(0)
    base = LRM4D(preset("tiny", image_size=(32, 32), patch_size=8, prior={"motion": motion})).eval()
    hold = LRM4D(preset("tiny", image_size=(32, 32), patch_size=8, prior={"motion": {**motion, "hold_unobserved": True}})).eval()
    hold.load_state_dict(base.state_dict())
    with torch.no_grad():  # a network that gives every Gaussian a velocity of its own
        base.pixel_head.bias.add_(0.3 * torch.randn(base.pixel_head.bias.shape, generator=torch.Generator().manual_seed(1)))
        hold.pixel_head.bias.copy_(base.pixel_head.bias)
    images, _, static, times, _, _ = _shifted_scene((3, 0))
    moving = _cams([look_at([-3.0, 0, 0], [0, 0, 0]), look_at([-3.0, 0.6, 0], [0, 0.6, 0])])
    n = 2 * 32 * 32
    with torch.no_grad():
        g_base, g_hold = (m(images, moving, times, world_scale=1.0)[0] for m in (base, hold))
        speed = implied_velocity(g_base)[:n].norm(dim=-1)
        assert (speed > 0.01).float().mean() > 0.5  # the network alone moves them
        assert implied_velocity(g_hold)[:n].norm(dim=-1).max() < 1e-5
        for view, t in enumerate(times[0].tolist()):
            rows = slice(view * 32 * 32, (view + 1) * 32 * 32)
            before, after = g_base.slice(t), g_hold.slice(t)
            torch.testing.assert_close(after.means[rows], before.means[rows], atol=1e-5, rtol=0)
            torch.testing.assert_close(after.covars[rows], before.covars[rows], atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(after.opacities[rows], before.opacities[rows], atol=1e-6, rtol=1e-5)
        same = [m(images, static, times, world_scale=1.0)[0] for m in (base, hold)]
        assert torch.equal(same[0].means, same[1].means) and torch.equal(same[0].q_left, same[1].q_left)
    base.train(), hold.train()
    trained = [m(images, moving, times, world_scale=1.0)[0] for m in (base, hold)]
    assert torch.equal(trained[0].means, trained[1].means) and torch.equal(trained[0].q_right, trained[1].q_right)


def test_motion_constants_round_trip_through_the_checkpoint_config():
    cfg = preset("tiny", prior={"motion": {"radius": 7, "centre_check": True}})
    back = ModelConfig.from_dict(cfg.to_dict())
    assert back.prior.motion == MotionPriorConstants(radius=7, centre_check=True)
    legacy = cfg.to_dict()
    del legacy["prior"]["motion"]  # checkpoints written before the motion prior existed
    assert ModelConfig.from_dict(legacy).prior.motion.radius == 0
    partial = back.replace(prior={"motion": {"patch": 3}})
    assert partial.prior.motion == MotionPriorConstants(radius=7, centre_check=True, patch=3)
    with pytest.raises(ValueError):
        MotionPriorConstants(patch=4)


def test_box_mean_matches_average_pooling_with_clipped_windows():
    from lrm4d_core.model.windows import box_mean

    x = torch.rand(2, 5, 9, 11) * 10
    reference = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    assert torch.allclose(box_mean(x, 5), reference, atol=1e-5)


def test_box_sum_counts_exactly_over_clipped_windows():
    from lrm4d_core.model.windows import box_sum

    x = (torch.rand(3, 9, 11) < 0.4).float()
    reference = np.zeros(x.shape, dtype=np.float64)
    for r in range(9):
        for c in range(11):  # a brute-force sum over the window, clipped at the border
            reference[:, r, c] = x[:, max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].sum((-2, -1)).numpy()
    assert torch.equal(box_sum(x, 5), torch.from_numpy(reference).float())


@pytest.mark.parametrize("share", [0.0, 0.1, 0.6])
def test_median_filter_takes_the_lower_median_of_the_moving_neighbours_per_component(share):
    from lrm4d_core.model.motion_prior import _median_filter

    C, H, W, size = 2, 9, 11, 5
    gen = torch.Generator().manual_seed(int(share * 10))
    v = torch.randn(C, H * W, 3, generator=gen)
    moving = torch.rand(C, H * W, generator=gen) < share
    out = _median_filter(v, moving, H, W, size).reshape(C, H, W, 3).numpy()
    grid, mask = v.reshape(C, H, W, 3).numpy(), moving.reshape(C, H, W).numpy()
    half = size // 2
    for c in range(C):
        for r in range(H):
            for col in range(W):  # brute force: the moving pixels of the window clipped at the border
                if not mask[c, r, col]:
                    assert (out[c, r, col] == 0).all()
                    continue
                window = np.s_[max(r - half, 0):r + half + 1, max(col - half, 0):col + half + 1]
                values = np.sort(grid[c][window][mask[c][window]], axis=0)
                np.testing.assert_array_equal(out[c, r, col], values[(len(values) - 1) // 2])
