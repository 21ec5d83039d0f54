"""Depth behind a plain-background view's subject (`model.thickness`), against brute-force numpy:
the distance to the silhouette's edge pixel by pixel, the stretched covariance written out as
Sigma + s^2 e e^T, and through `decode_prior` a disc before a white background seen by one camera
(and a textured view that must be left alone), rendered from the side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.data.rigs import look_at
from lrm4d_core.gaussians import Gaussians4D
from lrm4d_core.model.prior import PriorConstants, decode_prior
from lrm4d_core.model.thickness import ThicknessConstants, edge_distance
from lrm4d_core.render import rasterize


def _edge_distance_numpy(mask: np.ndarray, cap: int) -> np.ndarray:
    """Chessboard distance from each foreground pixel to the nearest background pixel or to the
    outside of the image, pixel by pixel."""
    H, W = mask.shape
    out = np.zeros((H, W))
    for r in range(H):
        for c in range(W):
            if not mask[r, c]:
                continue
            best = min(r + 1, c + 1, H - r, W - c)  # the outside of the image
            for rr in range(H):
                for cc in range(W):
                    if not mask[rr, cc]:
                        best = min(best, max(abs(rr - r), abs(cc - c)))
            out[r, c] = min(best, cap)
    return out


def test_edge_distance_against_a_brute_force_chessboard_distance():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 14, 17)) < 0.85
    masks[2] = True  # no background at all: the image border is the edge
    for cap in (2, 12):
        got = edge_distance(torch.tensor(masks), cap).numpy()
        for k in range(3):
            np.testing.assert_array_equal(got[k], _edge_distance_numpy(masks[k], cap))


def test_stretched_adds_the_spread_along_the_direction_and_keeps_motion():
    rng = np.random.default_rng(1)
    n = 6
    means = torch.tensor(rng.normal(size=(1, n, 4)))
    velocity = torch.tensor(rng.normal(size=(n, 3)))
    g = Gaussians4D.from_motion(means[0], torch.tensor(rng.uniform(0.05, 0.2, n)), torch.tensor(rng.uniform(0.3, 1, n)),
                                velocity, torch.full((n,), 0.5, dtype=torch.float64), torch.rand(n, 3, dtype=torch.float64))
    g = Gaussians4D(*(x[None] for x in (g.means, g.scales, g.q_left, g.q_right, g.opacities, g.colors)))
    direction = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(1, n, 3))), dim=-1)
    spread, shift = torch.tensor(rng.uniform(0.1, 0.5, (1, n))), torch.tensor(rng.uniform(0.1, 0.5, (1, n)))
    mask = torch.tensor([[True, False, True, True, False, True]])
    out = g.stretched(mask, direction, spread, shift)
    e = np.concatenate([direction.numpy(), np.zeros((1, n, 1))], -1)
    expected = g.covariance().numpy() + (spread.numpy()[..., None, None] ** 2) * e[..., :, None] * e[..., None, :]
    expected[~mask.numpy()] = g.covariance().numpy()[~mask.numpy()]
    np.testing.assert_allclose(out.covariance().numpy(), expected, atol=1e-12)
    moved = means.numpy()[..., :3] + np.where(mask.numpy()[..., None], shift.numpy()[..., None] * direction.numpy(), 0.0)
    np.testing.assert_allclose(out.means.numpy()[..., :3], moved, atol=1e-12)
    np.testing.assert_array_equal(out.means.numpy()[..., 3], means.numpy()[..., 3])
    s0, s1 = g.slice(0.3), out.slice(0.3)  # the same velocity and temporal marginal
    np.testing.assert_allclose(s1.velocities.numpy(), s0.velocities.numpy(), atol=1e-10)
    np.testing.assert_allclose(s1.opacities.numpy(), s0.opacities.numpy(), atol=1e-10)
    assert g.stretched(torch.zeros_like(mask), direction, spread, shift) is g
    broken = Gaussians4D(g.means.clone(), g.scales.clone(), g.q_left, g.q_right, g.opacities, g.colors)
    broken.scales[0, 2, 0] = float("nan")  # a non-finite Gaussian is left as it is, the others stretched
    out = broken.stretched(mask, direction, spread, shift)
    assert torch.equal(out.means[0, 2], broken.means[0, 2]) and torch.isnan(out.scales[0, 2, 0])
    np.testing.assert_allclose(out.covariance().numpy()[0, 3], expected[0, 3], atol=1e-12)


SIZE, FOCAL, DEPTH, RADIUS = 24, 20.0, 3.0, 7.5


def _decode(thickness: float, inference: bool = True) -> tuple[Gaussians4D, Cameras, np.ndarray]:
    """Two views from one camera 3 units from the origin: a red disc before a white background
    (plain), and noise everywhere (textured). The head outputs zeros and the prior depth is 3 along
    every ray, so without thickness every Gaussian sits on its ray at 3."""
    pose = look_at([0.0, -DEPTH, 0.0], [0.0, 0.0, 0.0])
    K = np.tile(np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]]), (2, 1, 1))
    cams = Cameras(torch.tensor(K), torch.tensor(np.stack([pose, pose])), SIZE, SIZE)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    disc = (rows + 0.5 - SIZE / 2) ** 2 + (cols + 0.5 - SIZE / 2) ** 2 < RADIUS**2
    images = np.ones((2, 3, SIZE, SIZE))
    images[0, 1:, disc] = 0.0
    images[1] = np.random.default_rng(2).uniform(0.0, 0.8, (3, SIZE, SIZE))
    o, d = pixel_rays(cams)
    raw = torch.zeros(1, 2 * SIZE * SIZE, 20, dtype=torch.float64)
    raw[..., 11] = raw[..., 15] = 1.0  # identity quaternions (q_left, q_right)
    constants = PriorConstants(thickness=ThicknessConstants(depth=thickness, offset=1.0, max_pixels=12))
    g = decode_prior(raw, torch.tensor(images)[None], cams, torch.tensor([[0.0, 0.0]], dtype=torch.float64),
                     o.reshape(1, -1, 3), d.reshape(1, -1, 3), torch.full((1, 2, SIZE, SIZE), DEPTH, dtype=torch.float64),
                     torch.ones(3, dtype=torch.float64), constants, 5.0, inference=inference)
    return g, cams, disc


def test_decode_prior_gives_the_disc_a_body_behind_it_and_leaves_textured_views_alone():
    g, cams, disc = _decode(0.7)
    flat, _, _ = _decode(0.0)
    o, d = (x.numpy().reshape(2, SIZE, SIZE, 3) for x in pixel_rays(cams))
    half = (_edge_distance_numpy(disc, 12) - 0.5).clip(min=0) * DEPTH / FOCAL
    half[~disc] = 0.0
    centres = g.means[0, :, :3].numpy().reshape(2, SIZE, SIZE, 3)
    np.testing.assert_allclose(centres[0], o[0] + (DEPTH + half)[..., None] * d[0], atol=1e-9)
    footprint = 0.7 * DEPTH / FOCAL  # the prior's isotropic spatial scale
    cov = g.covariance()[0, :, :3, :3].numpy().reshape(2, SIZE, SIZE, 3, 3)
    expected = footprint**2 * np.eye(3) + (0.7 * half)[..., None, None] ** 2 * d[0][..., :, None] * d[0][..., None, :]
    np.testing.assert_allclose(cov[0], expected, atol=1e-9)
    for field in ("means", "scales", "q_left", "q_right"):  # the textured view, training, and depth 0
        second = slice(SIZE * SIZE, None)
        assert torch.equal(getattr(g, field)[0, second], getattr(flat, field)[0, second])
        assert torch.equal(getattr(_decode(0.7, inference=False)[0], field), getattr(flat, field))
    with pytest.raises(ValueError):
        ThicknessConstants(depth=-0.1)


def test_the_thick_disc_shows_a_body_from_the_side_and_the_same_disc_from_its_camera():
    """Rendered (the plain view's Gaussians alone): from its own camera the thick disc looks as the
    flat one does; from a camera 90 degrees round, the flat disc is a sliver and the thick one has
    about the depth of its width (a ball's)."""
    g, cams, disc = _decode(0.7)
    flat, _, _ = _decode(0.0)
    side = Cameras(cams.K[:1], torch.tensor(look_at([DEPTH, 0.0, 0.0], [0.0, 0.0, 0.0]))[None], SIZE, SIZE)
    first = slice(0, SIZE * SIZE)

    def render(gaussians: Gaussians4D, camera: Cameras) -> np.ndarray:
        one = Gaussians4D(*(getattr(gaussians, f)[0, first] for f in ("means", "scales", "q_left", "q_right", "opacities",
                                                                       "colors")))
        out = rasterize(one.slice(0.0), camera, background=torch.ones(3, dtype=torch.float64))
        return out.alpha[0].numpy()

    own_thick, own_flat = render(g, cams[:1]), render(flat, cams[:1])
    assert np.abs(own_thick - own_flat)[disc].max() < 0.05
    side_thick, side_flat = render(g, side), render(flat, side)
    covered = lambda alpha: (alpha > 0.5).sum(1)  # noqa: E731  pixels across, row by row
    width = covered(own_flat).max()
    assert covered(side_flat).max() <= 0.4 * width
    assert covered(side_thick).max() >= 0.9 * width
    assert (own_flat[..., 0][disc] > 0.5).all()


def _bounded_numpy(half, depth, o, d, K, c2w, grown, samples):
    """The silhouette bound pixel by pixel: the first of `samples` points behind each pixel that the
    partner sees on its background, projected with K [R^T (p - C)]."""
    out = half.copy()
    R, C = c2w[:3, :3], c2w[:3, 3]
    H, W = grown.shape
    for n in np.nonzero(half > 0)[0]:
        for i in range(1, samples + 1):
            p = o[n] + (depth[n] + 2.0 * i / samples * half[n]) * d[n]
            c = R.T @ (p - C)
            u, v = (K @ c)[:2] / c[2]
            if c[2] > 0 and 0 <= u < W and 0 <= v < H and not grown[int(np.floor(v)), int(np.floor(u))]:
                out[n] = min(half[n], (i - 1) / samples * half[n])
                break
    return out


@pytest.mark.parametrize("partner", ["plate", "ball", "late", "textured"])
def test_a_partner_silhouette_bounds_the_body(partner):
    """The disc camera and a second camera 90 degrees round. The second sees the subject edge on as a
    plate (a bar 2 px wide) or as a ball (the same disc): the plate cuts the body behind the disc to
    a sample's depth, the ball leaves most of it; numpy computes the bound point by point. A partner
    beyond `max_gap` input-time gaps, or one without a plain background, bounds nothing."""
    from lrm4d_core.model.thickness import silhouette_bounded

    front, side = look_at([0.0, -DEPTH, 0.0], [0.0, 0.0, 0.0]), look_at([DEPTH, 0.0, 0.0], [0.0, 0.0, 0.0])
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])
    cams = Cameras(torch.tensor(np.stack([K, K])), torch.tensor(np.stack([front, side])), SIZE, SIZE)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    disc = (rows + 0.5 - SIZE / 2) ** 2 + (cols + 0.5 - SIZE / 2) ** 2 < RADIUS**2
    seen = disc.copy() if partner == "ball" else disc & (np.abs(cols + 0.5 - SIZE / 2) <= 1)
    foreground = torch.tensor(np.stack([disc, seen]))[None]
    plain = torch.tensor([[True, partner != "textured"]])
    o, d = (x.reshape(1, 2, SIZE * SIZE, 3) for x in pixel_rays(cams))
    depth = torch.full((1, 2, SIZE * SIZE), DEPTH, dtype=torch.float64)
    half = torch.tensor((_edge_distance_numpy(disc, 12) - 0.5).clip(min=0) * DEPTH / FOCAL * disc)
    half = torch.stack([half.flatten(), torch.zeros(SIZE * SIZE, dtype=torch.float64)])[None]
    times = torch.tensor([[0.0, 0.5 if partner == "late" else 0.1]], dtype=torch.float64)
    constants = ThicknessConstants(depth=0.7, max_gap=2.0, samples=8, dilate=1)
    got = silhouette_bounded(half, foreground, plain, o, d, depth, cams, times, torch.tensor([0.1], dtype=torch.float64),
                             constants)[0, 0].numpy()
    if partner in ("late", "textured"):
        np.testing.assert_array_equal(got, half[0, 0].numpy())
        return
    grown = np.zeros_like(seen)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            grown |= np.roll(np.roll(np.pad(seen, 1), dr, 0), dc, 1)[1:-1, 1:-1]
    expected = _bounded_numpy(half[0, 0].numpy(), depth[0, 0].numpy(), o[0, 0].numpy(), d[0, 0].numpy(), K, side, grown, 8)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    centre = disc & ((rows + 0.5 - SIZE / 2) ** 2 + (cols + 0.5 - SIZE / 2) ** 2 < 9)
    kept = got.reshape(SIZE, SIZE)[centre] / half[0, 0].numpy().reshape(SIZE, SIZE)[centre]
    if partner == "plate":
        assert kept.max() <= 0.25
    else:
        assert kept.min() >= 0.6
