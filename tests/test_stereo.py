"""The plane-sweep correction of textured views' depths (`model.stereo`), against an analytic
reference: a textured wall seen by cameras side by side (a car's side camera at three times), its
images and depths by numpy ray-plane intersection, and views whose depths are off by known factors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.data.rigs import look_at
from lrm4d_core.model.prior import PriorConstants, decode_prior
from lrm4d_core.model.stereo import StereoConstants, stereo_log_scales

SIZE, WALL_X, FOCAL = 48, 10.0, 40.0
CONSTANTS = StereoConstants(search=0.7)


def _cameras(offsets: list[float]) -> Cameras:
    """Cameras at y = offsets (1.5 m up) looking along +x at the wall."""
    poses = [look_at((0.0, y, 1.5), (WALL_X, y, 1.5)) for y in offsets]
    K = np.tile(np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]]), (len(offsets), 1, 1))
    return Cameras(torch.tensor(K), torch.tensor(np.stack(poses)), SIZE, SIZE)


def _wall(cams: Cameras) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor]:
    """Images [V, 3, H, W] of a wall at x = WALL_X with a smooth random texture (periods of 1-3 m,
    3-12 px here), depth along the rays [V, H, W], and the rays [V, H*W, 3]."""
    origins, dirs = pixel_rays(cams)
    o, d = origins.numpy(), dirs.numpy()
    depth = (WALL_X - o[..., 0]) / d[..., 0]
    p = o + depth[..., None] * d
    rng = np.random.default_rng(0)
    colour = np.full(depth.shape + (3,), 0.5)
    for _ in range(6):
        k = rng.uniform(2.0, 6.0, size=2) * rng.choice([-1, 1], size=2)
        phase, amp = rng.uniform(0, 2 * math.pi, size=3), rng.uniform(0.05, 0.12, size=3)
        colour += amp * np.sin(k[0] * p[..., 1:2] + k[1] * p[..., 2:3] + phase)
    V = len(cams)
    images = torch.tensor(colour.clip(0, 1)).permute(0, 3, 1, 2)
    return images, depth, origins.reshape(V, -1, 3), dirs.reshape(V, -1, 3)


def _run(images, depth, o, d, cams, background=None, keep=None, constants=CONSTANTS, aligned=None):
    V = len(cams)
    shape = (1, V, SIZE, SIZE)
    background = torch.zeros(shape, dtype=torch.bool) if background is None else background[None]
    keep = torch.zeros(shape, dtype=torch.bool) if keep is None else keep[None]
    log_s, static = stereo_log_scales(images[None], torch.tensor(depth).reshape(1, -1, 1), o.reshape(1, -1, 3),
                                      d.reshape(1, -1, 3), cams, torch.arange(V, dtype=torch.float64)[None],
                                      torch.tensor([1.0], dtype=torch.float64), background, keep, constants,
                                      aligned=None if aligned is None else torch.tensor(aligned)[None])
    return log_s[0].reshape(V, SIZE, SIZE), static[0].reshape(V, SIZE, SIZE)


def test_a_view_decoded_too_near_gets_its_depth_back():
    """The middle view decoded at 0.8 of the truth: the pixels that both other cameras see (the
    wall's middle) get log-scales within 0.05 of log 1.25 (the sweep's step is 0.025), and the
    exact views keep theirs within 0.05."""
    cams = _cameras([-1.0, 0.0, 1.0])
    images, depth, o, d = _wall(cams)
    off = np.array([1.0, 0.8, 1.0])[:, None, None]
    log_s, static = _run(images, depth * off, o, d, cams)
    middle = (slice(8, -8), slice(8, -8))
    got = log_s[(slice(None),) + middle]
    assert (got[1] - math.log(1.25)).abs().le(0.05).float().mean() > 0.95
    assert got[[0, 2]].abs().le(0.05).float().mean() > 0.95
    assert static[1][middle].float().mean() > 0.9


def test_smoothing_turns_a_jump_in_the_corrections_into_a_ramp():
    """The middle view decoded at 0.8 of the truth on its left half only: without `smooth` its
    corrections step from log 1.25 to 0 within a few columns (by 0.1 at once); with a 9-pixel
    window no two neighbours differ by more than a ninth of log 1.25 (a ramp), and the halves'
    interiors keep their corrections."""
    cams = _cameras([-1.0, 0.0, 1.0])
    images, depth, o, d = _wall(cams)
    off = np.ones_like(depth)
    off[1, :, : SIZE // 2] = 0.8
    rows = slice(12, -12)
    sharp, _ = _run(images, depth * off, o, d, cams)
    smooth, _ = _run(images, depth * off, o, d, cams, constants=StereoConstants(search=0.7, smooth=9))
    step = lambda f: f[1, rows, 10:-10].diff(dim=-1).abs().amax()  # noqa: E731
    assert step(sharp) > 0.08
    assert step(smooth) < math.log(1.25) / 9 + 0.005
    assert (smooth[1, rows, 10:16] - math.log(1.25)).abs().le(0.05).float().mean() > 0.9
    assert smooth[1, rows, 32:38].abs().le(0.05).float().mean() > 0.9


def test_cameras_that_did_not_move_constrain_nothing():
    """Three views from one place (a parked car): no parallax, every depth kept."""
    cams = _cameras([0.0, 0.0, 0.0])
    images, depth, o, d = _wall(cams)
    log_s, static = _run(images, depth * 0.8, o, d, cams)
    assert torch.equal(log_s, torch.zeros_like(log_s)) and not static.any()


def test_views_with_a_plain_background_and_kept_pixels_are_left_alone():
    """A view with a quarter of its pixels of the background colour is the view alignment's; pixels
    marked `keep` (on a known ground plane) keep their depth and are not static (the ground
    snapping decides where they are; what looks like ground may be a mover's lower edge)."""
    cams = _cameras([-1.0, 0.0, 1.0])
    images, depth, o, d = _wall(cams)
    background = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    background[1, : SIZE // 4] = True
    keep = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    keep[0, :, SIZE // 2:] = True
    log_s, static = _run(images, depth * 0.8, o, d, cams, background=background, keep=keep)
    assert torch.equal(log_s[1], torch.zeros_like(log_s[1])) and not static[1].any()
    assert torch.equal(log_s[0, :, SIZE // 2:], torch.zeros_like(log_s[0, :, SIZE // 2:]))
    assert not static[0, :, SIZE // 2:].any()
    assert (log_s[0, 8:-8, 8:SIZE // 2] - math.log(1.25)).abs().le(0.05).float().mean() > 0.9


def test_plain_views_the_alignment_left_alone_are_swept_with_their_own_range_and_not_static():
    """With `plain_search`, the middle view (a quarter of it background: a subject's view) decoded
    at 0.8 of the truth gets log 1.25 back on the rows that are not background, and none of its
    pixels is static (a subject moves); marked aligned (the silhouettes placed it) it is left alone."""
    cams = _cameras([-1.0, 0.0, 1.0])
    images, depth, o, d = _wall(cams)
    background = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    background[1, : SIZE // 4] = True
    constants = StereoConstants(search=0.7, plain_search=0.35)
    log_s, static = _run(images, depth * 0.8, o, d, cams, background=background, constants=constants)
    assert (log_s[1, SIZE // 4 + 8:-8, 8:-8] - math.log(1.25)).abs().le(0.05).float().mean() > 0.95
    assert not static[1].any() and static[0].float().mean() > 0.5
    log_s, static = _run(images, depth * 0.8, o, d, cams, background=background, constants=constants,
                         aligned=[False, True, False])
    assert torch.equal(log_s[1], torch.zeros_like(log_s[1])) and not static[1].any()
    assert (log_s[0, 8:-8, 8:SIZE // 2] - math.log(1.25)).abs().le(0.05).float().mean() > 0.9


def test_a_plain_view_does_not_match_a_camera_facing_the_other_way():
    """The wall's texture is the same from behind (it is painted on a plane), so a camera behind
    the wall facing back (twice as far, at twice the focal length) matches a textured view's
    pixels; a plain-background view does not use it: a subject's other side is another surface."""
    poses = [look_at((0.0, 0.0, 1.5), (WALL_X, 0.0, 1.5)), look_at((3 * WALL_X, 1.0, 1.5), (WALL_X, 1.0, 1.5))]
    K = np.tile(np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]]), (2, 1, 1))
    K[1, :2, :2] *= 2  # twice as far, twice the focal length: the wall's texture at the same scale
    cams = Cameras(torch.tensor(K), torch.tensor(np.stack(poses)), SIZE, SIZE)
    images, depth, o, d = _wall(cams)
    off = np.array([0.8, 1.0])[:, None, None]
    textured, _ = _run(images, depth * off, o, d, cams)
    assert (textured[0, 8:-8, 8:-8] - math.log(1.25)).abs().le(0.05).float().mean() > 0.5
    background = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    background[0, : SIZE // 4] = True
    plain, _ = _run(images, depth * off, o, d, cams, background=background,
                    constants=StereoConstants(search=0.7, plain_search=0.35))
    assert torch.equal(plain[0], torch.zeros_like(plain[0]))


def test_a_patch_the_other_views_do_not_see_is_not_static():
    """A square painted on the middle view alone (a mover that left): its pixels find no match
    (not static), and the median fill gives its depth the surrounding wall's correction."""
    cams = _cameras([-1.0, 0.0, 1.0])
    images, depth, o, d = _wall(cams)
    images[1, :, 22:26, 22:26] = torch.tensor([0.9, 0.1, 0.1], dtype=images.dtype)[:, None, None]
    log_s, static = _run(images, depth * 0.8, o, d, cams)
    assert not static[1, 22:26, 22:26].any()
    assert (log_s[1, 22:26, 22:26] - math.log(1.25)).abs().le(0.05).all()


def test_decode_prior_applies_it_at_inference_only_and_persists_static_gaussians():
    """Through `decode_prior` with a head that outputs zeros (the prior's own Gaussians) and the prior
    depth at 0.8 of the truth: at inference the middle view's wall moves to within 5% of the truth
    and its matched Gaussians' temporal scale is at least `persist`; in training nothing changes."""
    cams = _cameras([-1.0, 0.0, 1.0])
    images, depth, o, d = _wall(cams)
    V, P = 3, SIZE * SIZE
    raw = torch.zeros(1, V * P, 20, dtype=torch.float64)
    raw[..., 11] = raw[..., 15] = 1.0  # identity quaternions (q_left, q_right)
    constants = PriorConstants(far=50.0, stereo={"search": 0.7, "persist": 3.0})
    args = (raw, images[None], cams, torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64), o.reshape(1, -1, 3),
            d.reshape(1, -1, 3), torch.tensor(depth * 0.8)[None], torch.ones(3, dtype=torch.float64), constants, 5.0)
    trained = decode_prior(*args, inference=False)
    inferred = decode_prior(*args, inference=True)
    c = cams.cam_to_world[1, :3, 3]
    true = torch.tensor(depth[1, 8:-8, 8:-8])
    dist = lambda g: (g.means[0, P:2 * P, :3] - c).norm(dim=-1).reshape(SIZE, SIZE)[8:-8, 8:-8]  # noqa: E731
    assert ((dist(trained) / true) - 0.8).abs().max() < 1e-6
    assert ((dist(inferred) / true) - 1.0).abs().le(0.05).float().mean() > 0.95
    scale_t = inferred.scales[0, P:2 * P, 3].reshape(SIZE, SIZE)[8:-8, 8:-8]
    assert scale_t.ge(3.0 - 1e-9).float().mean() > 0.9
    assert trained.scales[0, :, 3].max() < 3.0


@pytest.mark.parametrize("plain_search", [0.0, 0.35])
def test_decode_prior_sweeps_a_plain_view_the_alignment_left_alone(plain_search):
    """The middle view with a quarter of it background and the silhouette alignment on (but these
    cameras look out, not in, so it aligns nothing): at inference its wall reaches the truth with
    `plain_search` and stays at 0.8 of it without."""
    cams = _cameras([-1.0, 0.0, 1.0])
    images, depth, o, d = _wall(cams)
    images[1, :, : SIZE // 4] = 1.0  # the model's background colour (white)
    V, P = 3, SIZE * SIZE
    raw = torch.zeros(1, V * P, 20, dtype=torch.float64)
    raw[..., 11] = raw[..., 15] = 1.0
    constants = PriorConstants(far=50.0, stereo={"search": 0.7, "plain_search": plain_search},
                               align={"search": 0.3})
    g = decode_prior(raw, images[None], cams, torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64),
                     o.reshape(1, -1, 3), d.reshape(1, -1, 3), torch.tensor(depth * 0.8)[None],
                     torch.ones(3, dtype=torch.float64), constants, 5.0, inference=True)
    rows = slice(SIZE // 4 + 8, -8)
    dist = (g.means[0, P:2 * P, :3] - cams.cam_to_world[1, :3, 3]).norm(dim=-1).reshape(SIZE, SIZE)[rows, 8:-8]
    ratio = dist / torch.tensor(depth[1, rows, 8:-8])
    target = 1.0 if plain_search else 0.8
    assert (ratio - target).abs().le(0.05).float().mean() > 0.9


def test_constants_are_checked():
    with pytest.raises(ValueError):
        StereoConstants(search=0.5, steps=10)
    with pytest.raises(ValueError):
        StereoConstants(search=0.5, distinct=0.0)
    assert PriorConstants(stereo={"search": 0.5}).stereo == StereoConstants(search=0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_median_fill_is_the_lower_median_of_the_matched_scales_in_each_clipped_window(seed):
    from lrm4d_core.model.stereo import _median_fill

    constants = StereoConstants(search=0.7, steps=9, fill=5, min_support=3)
    gen = torch.Generator().manual_seed(seed)
    k = torch.randint(0, constants.steps, (12, 10), generator=gen)
    matched = torch.rand(12, 10, generator=gen) < 0.35
    index, supported = _median_fill(k, matched, constants)
    half = constants.fill // 2
    for r in range(12):
        for c in range(10):  # a brute-force median of the matched indices in the window
            window = np.s_[max(r - half, 0):r + half + 1, max(c - half, 0):c + half + 1]
            values = np.sort(k[window][matched[window]].numpy())
            assert bool(supported[r, c]) == (len(values) >= constants.min_support)
            if len(values) >= constants.min_support:
                assert int(index[r, c]) == values[(len(values) - 1) // 2]
