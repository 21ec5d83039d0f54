"""The silhouette alignment of each view's depth scale (`model.view_align`), against an analytic
reference: a sphere in front of a plain background, its silhouettes and depths from numpy
ray-sphere intersection, and views whose depths are scaled by known factors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.data.rigs import look_at
from lrm4d_core.model.view_align import ViewAlignConstants, view_scales

RADIUS, SIZE = 0.5, 48


def _ring(n: int, distance: float = 3.0) -> Cameras:
    poses = [look_at((distance * math.cos(a), distance * math.sin(a), 0.6), (0.0, 0.0, 0.0))
             for a in np.linspace(0, 2 * math.pi, n, endpoint=False)]
    f = 40.0
    K = np.tile(np.array([[f, 0, SIZE / 2], [0, f, SIZE / 2], [0, 0, 1.0]]), (n, 1, 1))
    return Cameras(torch.tensor(K), torch.tensor(np.stack(poses)), SIZE, SIZE)


def _sphere(cams: Cameras) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """Foreground [V, H, W] and depth along the rays [V, H, W] (inf off the sphere) by numpy
    ray-sphere intersection; the rays [V, H*W, 3] as the model gets them."""
    origins, dirs = pixel_rays(cams)
    o, d = origins.numpy(), dirs.numpy()
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - RADIUS**2
    disc = b * b - c
    hit = disc > 0
    depth = np.where(hit, -b - np.sqrt(np.where(hit, disc, 0.0)), np.inf)
    V = len(cams)
    return hit, depth, origins.reshape(V, -1, 3), dirs.reshape(V, -1, 3)


def _pixel_scales(cams, depth, fg, o, d, times, constants):
    """[V, H*W] log-scale per pixel."""
    V = len(cams)
    filled = np.where(np.isfinite(depth), depth, 3.0)  # background pixels: any depth (not used)
    return view_scales(torch.tensor(filled.reshape(1, V * SIZE * SIZE, 1)), torch.tensor(fg)[None], o.reshape(1, -1, 3),
                       d.reshape(1, -1, 3), cams, times, torch.tensor([1.0 / (V - 1)], dtype=torch.float64), constants)[0][0]


def _scales(cams, depth, fg, o, d, times, constants):
    """[V] log-scale per view (without carving every pixel of a view has its view's)."""
    out = _pixel_scales(cams, depth, fg, o, d, times, constants)
    assert constants.carve == 0 and torch.equal(out.amax(-1), out.amin(-1))
    return out[:, 0]


def test_a_view_whose_depths_are_off_by_a_factor_gets_that_factor_back():
    """Views 0 and 3 decoded 15% too far and 10% too near: the silhouettes of the others give
    log-scales within 0.03 of -log(1.15) and -log(0.9), and the exact views stay within 0.03 of 0
    (the silhouettes are pixel-sampled and grown by one pixel: about one pixel's parallax)."""
    cams = _ring(6)
    fg, depth, o, d = _sphere(cams)
    off = np.array([1.15, 1.0, 1.0, 0.9, 1.0, 1.0])
    wrong = depth * off[:, None, None]
    times = torch.linspace(-1, 1, 6, dtype=torch.float64)[None]
    constants = ViewAlignConstants(search=0.3, steps=61, max_gap=10.0, dilate=1)
    got = _scales(cams, wrong, fg, o, d, times, constants).numpy()
    np.testing.assert_allclose(got, -np.log(off), atol=0.03)


def _cone_miss(points: np.ndarray, cams: Cameras) -> np.ndarray:
    """[N, C] how far (world units, at the sphere) each point's line of sight from each camera
    passes outside the sphere: <= 0 where the point projects onto the sphere's silhouette;
    +inf where it projects outside the camera's image."""
    centres = cams.cam_to_world[:, :3, 3].numpy()
    u = points[:, None] - centres[None]
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    closest = centres[None] - (centres[None] * u).sum(-1, keepdims=True) * u  # the sphere centre's foot on the line
    miss = np.linalg.norm(closest, axis=-1) - RADIUS
    w2c = np.linalg.inv(cams.cam_to_world.numpy())
    cam = np.einsum("cij,nj->nci", w2c[:, :3, :3], points) + w2c[None, :, :3, 3]
    uv = np.einsum("cij,ncj->nci", cams.K.numpy(), cam)
    uv = uv[..., :2] / cam[..., 2:3]
    seen = (cam[..., 2] > 0) & (uv >= 0).all(-1) & (uv < SIZE).all(-1)
    return np.where(seen, miss, np.inf)


def test_carving_moves_only_the_pixels_outside_the_silhouettes_into_them():
    """View 0 exact except a band of its sphere pixels decoded 60% too far (behind the sphere).
    With `carve`, the band pixels whose point was clearly outside another camera's silhouette
    (its line of sight passes the sphere, by the analytic cone test) move along their rays to a
    point inside every silhouette (up to the one-pixel growth and the pixel grid), all but those
    that no scale within `carve` brings inside; the other pixels keep the view's scale (about 0);
    without `carve` every pixel keeps the view's scale."""
    cams = _ring(6)
    fg, depth, o, d = _sphere(cams)
    band = np.zeros_like(fg)
    band[0, SIZE // 2 - 2: SIZE // 2 + 2] = fg[0, SIZE // 2 - 2: SIZE // 2 + 2]
    wrong = depth.copy()
    wrong[band] *= 1.6
    times = torch.linspace(-1, 1, 6, dtype=torch.float64)[None]
    carved = _pixel_scales(cams, wrong, fg, o, d, times, ViewAlignConstants(search=0.3, max_gap=10.0, carve=0.3))[0]
    carved = carved.numpy().reshape(SIZE, SIZE)
    o0, d0 = o[0].numpy().reshape(SIZE, SIZE, 3), d[0].numpy().reshape(SIZE, SIZE, 3)
    others = Cameras(cams.K[1:], cams.cam_to_world[1:], SIZE, SIZE)
    b0 = band[0]
    before = o0[b0] + wrong[0][b0][:, None] * d0[b0]
    after = o0[b0] + (wrong[0][b0] * np.exp(carved[b0]))[:, None] * d0[b0]
    pixel = 3.0 / 40.0  # one pixel at the sphere
    outside = (_cone_miss(before, others) > 2 * pixel).any(-1)
    view = float(np.median(carved[fg[0] & ~b0]))
    moved = outside & (np.abs(carved[b0] - view) > 0.05)
    assert outside.sum() >= 10 and moved.sum() >= 0.8 * outside.sum()  # the rest cannot get inside within `carve`
    assert (_cone_miss(after[moved], others) <= 2.5 * pixel).all()  # one pixel of growth, one of the pixel grid
    rest = fg[0] & ~b0
    assert np.abs(carved[rest]).max() <= 0.03
    plain = _pixel_scales(cams, wrong, fg, o, d, times, ViewAlignConstants(search=0.3, max_gap=10.0))[0]
    assert torch.equal(plain.amax(), plain.amin()) and abs(float(plain[0])) <= 0.03


def test_partners_are_limited_to_nearby_times_and_other_cameras():
    """With max_gap 0 no view has a partner at another time: nothing moves. A view whose only
    nearby input is the same camera (a static camera twice), or only the opposite camera, is left
    alone too."""
    cams = _ring(6)
    fg, depth, o, d = _sphere(cams)
    wrong = depth * 1.2
    times = torch.linspace(-1, 1, 6, dtype=torch.float64)[None]
    assert _scales(cams, wrong, fg, o, d, times, ViewAlignConstants(search=0.3, max_gap=0.0)).abs().max() == 0
    same = Cameras(cams.K[[0, 0]], cams.cam_to_world[[0, 0]], SIZE, SIZE)
    fg2, depth2, o2, d2 = _sphere(same)
    t2 = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    assert _scales(same, depth2 * 1.2, fg2, o2, d2, t2, ViewAlignConstants(search=0.3, max_gap=10.0)).abs().max() == 0
    level = [look_at((3.0, 0.0, 0.0), (0.0, 0.0, 0.0)), look_at((-3.0, 0.0, 0.0), (0.0, 0.0, 0.0))]
    opposite = Cameras(cams.K[:2], torch.tensor(np.stack(level)), SIZE, SIZE)  # facing each other
    fg3, depth3, o3, d3 = _sphere(opposite)
    assert _scales(opposite, depth3 * 1.2, fg3, o3, d3, t2, ViewAlignConstants(search=0.3, max_gap=10.0)).abs().max() == 0


def test_each_view_reports_whether_the_silhouettes_placed_it():
    """`aligned` tells an exact view aligned at scale 0 (True: the silhouettes agree with it) from a
    view left alone (False: no partner), which `model.stereo` sweeps instead."""
    cams = _ring(6)
    fg, depth, o, d = _sphere(cams)
    times = torch.linspace(-1, 1, 6, dtype=torch.float64)[None]
    filled = torch.tensor(np.where(np.isfinite(depth), depth, 3.0).reshape(1, -1, 1))
    args = (filled, torch.tensor(fg)[None], o.reshape(1, -1, 3), d.reshape(1, -1, 3), cams, times,
            torch.tensor([0.4], dtype=torch.float64))
    scales, aligned = view_scales(*args, ViewAlignConstants(search=0.3, max_gap=10.0))
    assert aligned.all() and scales.abs().max() <= 0.03
    scales, aligned = view_scales(*args, ViewAlignConstants(search=0.3, max_gap=0.0))
    assert not aligned.any() and scales.abs().max() == 0


def test_no_silhouette_no_change():
    """Without a background (every pixel foreground, an open or textured scene), with the search
    off, or where the partners' silhouettes cannot hold the points (score below min_score), the
    scales are 0."""
    cams = _ring(4)
    fg, depth, o, d = _sphere(cams)
    times = torch.linspace(-1, 1, 4, dtype=torch.float64)[None]
    everything = np.ones_like(fg)
    assert _scales(cams, depth * 1.2, everything, o, d, times, ViewAlignConstants(search=0.3, max_gap=10.0)).abs().max() == 0
    assert _scales(cams, depth * 1.2, fg, o, d, times, ViewAlignConstants(search=0.0)).abs().max() == 0
    # partners' silhouettes elsewhere (a sphere moved far away in the others): nothing fits
    shifted = fg.copy()
    shifted[1:] = np.roll(fg[1:], SIZE // 2, axis=-1)
    got = _scales(cams, depth * 1.2, shifted, o, d, times, ViewAlignConstants(search=0.3, max_gap=10.0, min_score=0.9))
    assert got[0] == 0
    # the same with min_score 0: the best of a bad fit moves the view (so the check above is the score's doing)
    assert _scales(cams, depth * 1.2, shifted, o, d, times, ViewAlignConstants(search=0.3, max_gap=10.0, min_score=0.0))[0] != 0


@pytest.mark.parametrize("bad", [dict(search=-0.1), dict(steps=4), dict(steps=1), dict(max_gap=-1.0), dict(dilate=-1),
                                 dict(min_background=1.0), dict(min_score=1.5),
                                 dict(carve=-0.1), dict(min_angle=95.0)])
def test_invalid_constants_are_refused(bad):
    with pytest.raises(ValueError):
        ViewAlignConstants(**bad)


def test_the_model_scales_whole_views_at_inference_only():
    """Through `LRM4D` with a head that outputs zeros (every Gaussian at the prior's depth: the
    plane through the scene centre, behind the sphere's visible surface): at inference with the
    alignment on, each view's Gaussians stay on their pixels' rays and move by one factor per view,
    towards the cameras (the silhouettes put the sphere in front of the plane); in training, or
    with the alignment off, the output is exactly that of the same weights without it."""
    from lrm4d_core.model.config import preset
    from lrm4d_core.model.lrm4d import LRM4D

    cams = _ring(4)
    fg, depth, _, _ = _sphere(cams)
    images = torch.where(torch.tensor(fg)[:, None], torch.tensor([0.2, 0.4, 0.3])[:, None, None], torch.ones(3, 1, 1))
    images = images[None].float()
    times = torch.linspace(-1, 1, 4)[None]
    torch.manual_seed(0)
    off = LRM4D(preset("tiny", image_size=(SIZE, SIZE), patch_size=8)).eval()
    on = LRM4D(preset("tiny", image_size=(SIZE, SIZE), patch_size=8, prior={"align": {"search": 0.3, "max_gap": 10.0}})).eval()
    with torch.no_grad():
        off.pixel_head.weight.zero_(), off.pixel_head.bias.zero_()
    on.load_state_dict(off.state_dict())
    cams32 = cams.to(dtype=torch.float32)
    n = SIZE * SIZE
    with torch.no_grad():
        g_off, g_on = (m(images, cams32, times, world_scale=1.0)[0] for m in (off, on))
    centres = cams32.cam_to_world[:, :3, 3]
    factors = []
    for v in range(4):
        rows = slice(v * n, (v + 1) * n)
        a, b = g_off.means[rows, :3] - centres[v], g_on.means[rows, :3] - centres[v]
        ratio = b.norm(dim=-1) / a.norm(dim=-1)
        torch.testing.assert_close(torch.linalg.cross(a, b, dim=-1).norm(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1)),
                                   torch.zeros(n), atol=1e-5, rtol=0)  # on the same rays
        assert float(ratio.max() - ratio.min()) < 1e-5  # one factor per view
        factors.append(float(ratio.mean()))
    assert max(factors) < 0.97 and min(factors) > math.exp(-0.3) - 1e-6, factors
    on.train(), off.train()
    with torch.no_grad():
        trained = [m(images, cams32, times, world_scale=1.0)[0] for m in (off, on)]
    assert torch.equal(trained[0].means, trained[1].means)


def test_align_constants_round_trip_through_the_checkpoint_config():
    from lrm4d_core.model.config import ModelConfig, preset

    cfg = preset("tiny", prior={"align": {"search": 0.25, "min_angle": 30.0}})
    back = ModelConfig.from_dict(cfg.to_dict())
    assert back.prior.align == ViewAlignConstants(search=0.25, min_angle=30.0)
    legacy = cfg.to_dict()
    del legacy["prior"]["align"]  # checkpoints written before the alignment existed
    assert ModelConfig.from_dict(legacy).prior.align.search == 0
