"""The own-view splats (`lrm4d_core.model.own_view`): the splats against a numpy reference built
from Gaussians of known motion, their visibility against numpy, and their plumbing through
`Reconstruction.view_cloud` / `rasterize_over` (a render equals the plain rasterization of the
cloud whose opacities the test weighted; near an input camera and time the input comes back,
away from its time the reconstruction renders as without them)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras
from lrm4d_core.eval.metrics import psnr
from lrm4d_core.gaussians import Gaussians4D
from lrm4d_core.model.api import load_model, rasterize_over, reconstruct, render
from lrm4d_core.model.own_view import OwnViewConstants, approach_blur, own_view_splats, visibility

F64 = torch.float64
SIZE = 8
# view 0 and view 2 come from one standing camera; views 1 and 3 from cameras of their own
CENTRES = [(0.0, -3.0, 0.5), (2.5, -2.0, 0.5), (0.0, -3.0, 0.5), (-2.5, -2.0, 0.5)]
TIMES = [0.0, 0.2, 0.6, 1.0]


def look_at(eye) -> torch.Tensor:
    eye = torch.tensor(eye, dtype=F64)
    z = -eye / eye.norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    x = x / x.norm()
    c2w = torch.eye(4, dtype=F64)
    c2w[:3, :3] = torch.stack([x, torch.linalg.cross(z, x), z], 1)
    c2w[:3, 3] = eye
    return c2w


def cameras() -> Cameras:
    K = torch.tensor([[SIZE * 1.1, 0, SIZE / 2], [0, SIZE * 1.3, SIZE / 2], [0, 0, 1]], dtype=F64).expand(4, 3, 3)
    return Cameras(K.clone(), torch.stack([look_at(c) for c in CENTRES]), SIZE, SIZE)


def rays_np(K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[H*W, 3] origins and unit directions through the pixel centres, row-major."""
    v, u = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5, indexing="ij")
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    d = d_cam @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], d.shape), d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_splats_against_numpy():
    """Each splat sits on its pixel's ray at the depth its Gaussian reaches at the view's time
    (Gaussians of known velocity), lasts `width` of the time to its standing camera's next input
    (else one input spacing, at most `max_gaps`), is `scale` footprints wide, has its pixel's
    colour, and none on pixels of the background colour."""
    rng = np.random.default_rng(0)
    cams = cameras()
    n = 4 * SIZE * SIZE
    velocity = rng.normal(size=(n, 3)) * 0.5
    mu_t = rng.uniform(-0.3, 1.3, size=n)
    points = rng.normal(size=(n, 3)) * 0.3  # centred at the origin, in front of every camera
    own_t = np.repeat(TIMES, SIZE * SIZE)
    means = np.concatenate([points - velocity * (own_t - mu_t)[:, None], mu_t[:, None]], -1)  # at own_t: `points`
    g = Gaussians4D.from_motion(torch.from_numpy(means), torch.full((n,), 0.05, dtype=F64), torch.full((n,), 0.4, dtype=F64),
                                torch.from_numpy(velocity), torch.full((n,), 0.7, dtype=F64), torch.rand(n, 3, dtype=F64))
    pixels = torch.from_numpy(rng.uniform(size=(4, 3, SIZE, SIZE)))
    background = torch.tensor([1.0, 1.0, 1.0])
    pixels[1, :, 2:4, 3:6] = 0.99  # within the tolerance of the background colour
    constants = OwnViewConstants(angle_deg=10.0, scale=0.2, width=0.4, max_gaps=4.0)
    got = own_view_splats(g, pixels, cams, torch.tensor(TIMES, dtype=F64), background, constants)

    spacing = (TIMES[-1] - TIMES[0]) / 3
    spans = [TIMES[2] - TIMES[0], spacing, TIMES[2] - TIMES[0], spacing]  # the standing camera comes back at 0.6
    for v in range(4):
        sel = slice(v * SIZE * SIZE, (v + 1) * SIZE * SIZE)
        K, c2w = cams.K[v].numpy(), cams.cam_to_world[v].numpy()
        o, d = rays_np(K, c2w)
        depth = ((points[sel] - o) * d).sum(-1)
        colours = pixels[v].permute(1, 2, 0).reshape(-1, 3).numpy()
        surface = np.abs(colours - 1.0).max(-1) >= 0.04
        assert np.allclose(got.means[sel, :3].numpy(), o + depth[:, None] * d, atol=1e-9)
        assert np.allclose(got.means[sel, 3].numpy(), TIMES[v])
        assert np.allclose(got.scales[sel, :3].numpy(), (0.2 * depth / (0.5 * (K[0, 0] + K[1, 1])))[:, None], atol=1e-12)
        assert np.allclose(got.scales[sel, 3].numpy(), 0.4 * spans[v])
        assert np.allclose(got.colors[sel].numpy(), colours)
        assert np.array_equal(got.opacities[sel].numpy(), np.where(surface, 0.98, 0.0))
    assert (got.opacities[SIZE * SIZE:2 * SIZE * SIZE] == 0).sum() == 6  # the background-coloured pixels
    # the splats are still: sliced at any time they sit where they were put
    assert torch.allclose(got.slice(0.9).means, got.means[:, :3], atol=1e-12)


def test_still_splats_of_a_moving_camera_last_as_long_as_their_gaussians():
    """With `still_gaps`: in the views of a camera the window holds in two places (the same
    intrinsics, axes within 20 degrees), a splat whose Gaussian is still lasts as long as the
    Gaussian (at most `still_gaps` spacings); a moving Gaussian's splat, a nearly transparent
    Gaussian's (sky), and every splat of a camera the window holds once, keep `width` of a spacing."""
    rng = np.random.default_rng(4)
    K = torch.tensor([[SIZE * 1.1, 0, SIZE / 2], [0, SIZE * 1.3, SIZE / 2], [0, 0, 1]], dtype=F64).expand(3, 3, 3)
    eyes = [(0.0, -3.0, 0.5), (0.3, -3.0, 0.5), (2.5, -2.0, 0.5)]  # 0 and 1: one camera that moved 0.3
    cams = Cameras(K.clone(), torch.stack([look_at(e) for e in eyes]), SIZE, SIZE)
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64)  # spacing 0.5
    n = 3 * SIZE * SIZE
    velocity = np.zeros((n, 3))
    velocity[1::2, 0] = 1.0  # every other Gaussian moves
    means = np.concatenate([rng.normal(size=(n, 3)) * 0.3, np.repeat(times.numpy(), SIZE * SIZE)[:, None]], -1)
    opacities = np.full(n, 0.7)
    opacities[::6] = 0.1  # sky the environment map shows: its splats do not last
    g = Gaussians4D.from_motion(torch.from_numpy(means), torch.full((n,), 0.05, dtype=F64), torch.full((n,), 0.9, dtype=F64),
                                torch.from_numpy(velocity), torch.from_numpy(opacities), torch.rand(n, 3, dtype=F64))
    pixels, background = torch.from_numpy(rng.uniform(size=(3, 3, SIZE, SIZE))), torch.tensor([1.0, 1.0, 1.0])
    off = own_view_splats(g, pixels, cams, times, background, OwnViewConstants(angle_deg=10.0))
    on = own_view_splats(g, pixels, cams, times, background, OwnViewConstants(angle_deg=10.0, still_gaps=1.0))
    assert np.allclose(off.scales[:, 3].numpy(), 0.4 * 0.5)
    expected = np.full(n, 0.4 * 0.5)
    moving_camera = np.arange(n) < 2 * SIZE * SIZE
    still = (np.arange(n) % 2 == 0) & (opacities >= 0.5)
    expected[moving_camera & still] = min(0.9, 1.0 * 0.5)
    assert (moving_camera & (np.arange(n) % 2 == 0) & ~still).sum() > 0
    assert np.allclose(on.scales[:, 3].numpy(), expected)
    assert torch.equal(on.means, off.means) and torch.equal(on.opacities, off.opacities)


def test_visibility_against_numpy():
    rng = np.random.default_rng(1)
    means, sources = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) * 4
    sources[:10] = np.nan  # free Gaussians: no input camera, no splat
    camera = np.array([1.0, -3.0, 0.5])
    a, b = camera - means, sources - means
    angle = np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1))
    expected = np.exp(-0.5 * (angle / math.radians(12.0)) ** 2)
    expected[:10] = 0.0
    got = visibility(torch.from_numpy(means), torch.from_numpy(sources), torch.from_numpy(camera), 12.0)
    assert np.allclose(got.numpy(), expected, atol=1e-9) and expected.max() > 0.5


def test_approach_blur_against_numpy():
    """A splat gains eps2d (d_s^2 - d_r^2) / f_s^2 of isotropic variance (d_s, d_r its distances from
    its input camera, of focal length f_s, and from the rendering camera) where the rendering camera
    is nearer; nothing where it is as far or farther, nor for free Gaussians."""
    rng = np.random.default_rng(5)
    means, sources = rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) * 3
    sources[:7] = np.nan
    focal = rng.uniform(40, 80, size=200)
    camera = np.array([0.5, -1.0, 0.2])
    d_s, d_r = np.linalg.norm(means - sources, axis=-1), np.linalg.norm(means - camera, axis=-1)
    expected = 0.3 * np.maximum(d_s**2 - d_r**2, 0.0) / focal**2
    expected[:7] = 0.0
    got = approach_blur(torch.from_numpy(means), torch.from_numpy(sources), torch.from_numpy(focal),
                        torch.from_numpy(camera), 0.3)
    assert np.allclose(got.numpy(), expected, atol=1e-12)
    assert (expected > 0).sum() > 10 and (expected[7:] == 0).sum() > 10  # both cases occur


@pytest.fixture(scope="module")
def window():
    torch.manual_seed(0)
    model = load_model(preset="tiny", device="cpu", hidden=32, layers=2, heads=2, image_size=(16, 16),
                       parametrization="prior", view_dependence=0.5, view_dependence_deg=20.0,
                       own_view={"angle_deg": 10.0})
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    K = torch.tensor([[16 * 1.2, 0, 8], [0, 16 * 1.2, 8], [0, 0, 1]], dtype=F64).expand(4, 3, 3)
    cams = Cameras(K.clone(), torch.stack([look_at(c) for c in CENTRES]), 16, 16)
    times = np.array(TIMES) - 1.0
    return model, reconstruct(model, images, cams, times), images, cams, times


@pytest.mark.parametrize("nearer", [1.0, 0.6])
def test_renders_weight_the_splats_by_their_visibility_and_the_network_gives_way(window, nearer):
    """A render equals the plain rasterization of the network's Gaussians and the splats, sliced
    at t, with the opacities the test weighted: the view-dependent opacity times (1 - a p_splat(t))
    on the network's, a on the splats'; from a camera nearer to the splats than their input camera
    (`nearer` of its distance from the scene's centre), the splats widened by the blur the test
    computed (`approach_blur`)."""
    model, rec, images, cams, times = window
    assert rec.own_view is not None and rec.own_view_deg == 10.0 and len(rec.own_view) == 4 * 16 * 16
    t = float(times[1]) + 0.05
    tm = float(rec.time.to_model(t))
    off = replace(rec, own_view=None)
    network, views = off.view_cloud(t, inference_filter=False)
    splats = replace(off, gaussians_model=rec.own_view, time_windows=None).slice(t)
    c2w = cams.cam_to_world[1:2].clone()
    c2w[0, :3, 3] *= nearer
    camera = Cameras(cams.K[1:2].clone(), c2w, 16, 16)
    centre = c2w[0, :3, 3]
    sources = rec.source_centres()[: len(rec.own_view)].double()
    a_net = visibility(network.means.double()[: len(sources)], sources, centre, 10.0)
    give_way = rec.own_view.marginal_t(tm).double() * (rec.own_view.opacities > 0)
    from lrm4d_core.model.api import live_inputs
    from lrm4d_core.model.view_weight import view_opacity_factor

    vd = view_opacity_factor(network.means.double(), rec.source_centres().double(), centre, 0.5, 20.0,
                             live_inputs(off, network, views).double())
    weight_net = vd.clone()
    weight_net[: len(sources)] *= 1 - a_net * give_way
    weight_splat = visibility(splats.means.double(), sources, centre, 10.0)
    focal = 16 * 1.2  # every input's and the model's
    means = splats.means.double()
    blur = 0.3 * ((means - sources).norm(dim=-1) ** 2 - (means - centre).norm(dim=-1) ** 2).clamp_min(0) / focal**2
    widened = splats.covars + (blur[:, None, None] * torch.eye(3, dtype=F64)).to(splats.covars)
    cloud = type(network).cat([replace(network, opacities=network.opacities * weight_net.to(network.opacities)),
                               replace(splats, opacities=splats.opacities * weight_splat.to(splats.opacities), covars=widened)])
    expected = rasterize_over(rec, cloud, camera, backend="torch")
    cloud_on, views_on = rec.view_cloud(t, inference_filter=False)
    got = rasterize_over(rec, cloud_on, camera, backend="torch", views=views_on)
    assert torch.allclose(got.color, expected.color, atol=5e-5)  # float32 weights against float64 ones
    assert float(weight_net[: len(sources)].min()) < 0.2 and float(weight_splat.max()) > 0.9  # both act here
    if nearer < 1:  # the blur acts on the splats that show: it changes the render
        shown = weight_splat > 0.5
        assert float((blur[shown] / splats.covars[shown].diagonal(dim1=-2, dim2=-1).mean(-1).double()).median()) > 1.0
        plain = rasterize_over(rec, replace(cloud, covars=type(network).cat([network, splats]).covars), camera, backend="torch")
        assert float((plain.color - got.color).abs().max()) > 0.02


@pytest.mark.parametrize("resolution", [1, 2])
def test_no_approach_blur_at_an_input_camera(window, monkeypatch, resolution):
    """An input camera renders its own splats without `approach_blur`, whatever its focal length
    against the window's mean and at the model's resolution or twice it: the same image as with
    the widening switched off."""
    model, _, images, cams, times = window
    K = cams.K.clone()
    K[0, [0, 1], [0, 1]] = 14.0  # the others 19.2: the model's mean focal length is above view 0's
    cams = Cameras(K, cams.cam_to_world.clone(), 16, 16)
    rec = reconstruct(model, images, cams, times)
    cloud, views = rec.view_cloud(float(times[0]), inference_filter=False)
    fine = K[0:1].clone()
    fine[:, :2] *= resolution
    camera = Cameras(fine, cams.cam_to_world[0:1].clone(), 16 * resolution, 16 * resolution)
    got = rasterize_over(rec, cloud, camera, backend="torch", views=views).color
    import lrm4d_core.model.api as api

    monkeypatch.setattr(api, "approach_blur", lambda means, *args: torch.zeros(len(means), dtype=means.dtype))
    plain = rasterize_over(rec, cloud, camera, backend="torch", views=views).color
    assert torch.equal(got, plain)


def test_an_input_comes_back_near_its_camera_and_time_and_not_beyond(window):
    """Rendering an input camera at its own time gives back its image better with the splats than
    without (a window of one view: nothing else stands in front of them); rendering the 4-view
    window long after its end (a forecast), where the splats have faded, gives the same images as
    without them."""
    model, rec, images, cams, times = window
    blocks = np.kron(np.random.default_rng(3).integers(0, 256, (4, 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    one = reconstruct(model, [blocks], cams[0:1], times[:1])
    target = torch.from_numpy(blocks).permute(2, 0, 1)[None].double() / 255
    on = render(one, cams[0:1], float(times[0]), backend="torch").color.permute(0, 3, 1, 2).double()
    off = render(replace(one, own_view=None), cams[0:1], float(times[0]), backend="torch").color.permute(0, 3, 1, 2).double()
    assert float(psnr(on, target)) > float(psnr(off, target)) + 3.0
    late = float(times[-1]) + 20 * (times[-1] - times[0])
    cloud, views = rec.view_cloud(late, forecast_from=float(times[-1]))
    cloud_off, views_off = replace(rec, own_view=None).view_cloud(late, forecast_from=float(times[-1]))
    assert bool((views.index < 4).all())  # no splat shows there
    for v in range(4):
        a = rasterize_over(rec, cloud, cams[v:v + 1], backend="torch", views=views).color
        b = rasterize_over(rec, cloud_off, cams[v:v + 1], backend="torch", views=views_off).color
        assert torch.allclose(a, b, atol=1e-5)


def test_config_off_by_default_and_recorded():
    from lrm4d_core.model.config import ModelConfig, preset

    assert preset("tiny").own_view.angle_deg == 0.0  # checkpoints that predate it: off
    cfg = preset("tiny", own_view={"angle_deg": 7.0})
    assert ModelConfig.from_dict(cfg.to_dict()).own_view == OwnViewConstants(angle_deg=7.0)
    assert preset("tiny", own_view={"angle_deg": 7.0, "still_gaps": 4.0}).own_view.still_gaps == 4.0
    with pytest.raises(ValueError):
        OwnViewConstants(angle_deg=-1.0)
