"""The view-dependent opacity of rendered reconstructions (`lrm4d_core.model.view_weight`): the
factor against numpy, and its plumbing through `Reconstruction.view_cloud` / `rasterize_over`
(each Gaussian weighted by its own input camera, in the right order, after the inference filter)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras
from lrm4d_core.model.api import load_model, rasterize_over, reconstruct, render
from lrm4d_core.model.view_weight import view_opacity_factor

F64 = torch.float64


def angle_np(camera: np.ndarray, means: np.ndarray, points: np.ndarray) -> np.ndarray:
    a, b = camera - means, points - means
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1))  # another formula than arccos


def weight_np(angle: np.ndarray, strength: float, width_deg: float) -> np.ndarray:
    return 1 - strength * (1 - np.exp(-0.5 * (angle / math.radians(width_deg)) ** 2))


def test_factor_against_numpy():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(5, 3)) * 3
    means, sources = rng.normal(size=(500, 3)), inputs[rng.integers(5, size=500)]
    sources[:20] = np.nan  # free Gaussians: no input camera
    camera = np.array([0.5, -2.0, 1.0])
    expected = weight_np(angle_np(camera, means, sources), 0.6, 20.0)
    expected[:20] = 1.0
    got = view_opacity_factor(torch.from_numpy(means), torch.from_numpy(sources), torch.from_numpy(camera), 0.6, 20.0)
    assert np.allclose(got.numpy(), expected, atol=1e-9)
    # relative to the best-placed input: the angle beyond the smallest any input makes at the Gaussian
    best = np.min([angle_np(camera, means, np.broadcast_to(c, means.shape)) for c in inputs], axis=0)
    expected = weight_np(angle_np(camera, means, sources) - best, 0.6, 20.0)
    expected[:20] = 1.0
    got = view_opacity_factor(torch.from_numpy(means), torch.from_numpy(sources), torch.from_numpy(camera), 0.6, 20.0,
                              torch.from_numpy(inputs))
    assert np.allclose(got.numpy(), expected, atol=1e-9) and (expected[20:] == 1.0).any() and expected.min() < 0.6
    # seen from its own input camera a Gaussian keeps its opacity; from the opposite side it keeps 1 - strength
    own = view_opacity_factor(torch.from_numpy(means[20:]), torch.from_numpy(sources[20:]), torch.from_numpy(sources[20]), 0.6, 20.0)
    assert own[0] == pytest.approx(1.0) and float(own.min()) >= 0.4 - 1e-12


def ring(views: int, size: int) -> Cameras:
    K = torch.tensor([[size * 1.2, 0, size / 2], [0, size * 1.2, size / 2], [0, 0, 1]], dtype=F64).expand(views, 3, 3)
    c2w = torch.zeros(views, 4, 4, dtype=F64)
    for i in range(views):
        a = 2 * math.pi * i / views
        eye = torch.tensor([2.5 * math.cos(a), 2.5 * math.sin(a), 0.8], dtype=F64)
        z = -eye / eye.norm()
        x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=F64))
        x = x / x.norm()
        c2w[i, :3, :3] = torch.stack([x, torch.linalg.cross(z, x), z], 1)
        c2w[i, :3, 3] = eye
        c2w[i, 3, 3] = 1
    return Cameras(K.clone(), c2w, size, size)


@pytest.fixture(scope="module")
def window():
    torch.manual_seed(0)
    model = load_model(preset="tiny", device="cpu", hidden=32, layers=2, heads=2, image_size=(16, 16),
                       parametrization="prior", view_dependence=0.5, view_dependence_deg=20.0)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    cams, times = ring(4, 16), np.linspace(-0.6, 0.0, 4)
    return model, reconstruct(model, images, cams, times), cams, times


def test_each_pixel_gaussian_is_weighted_by_its_own_input_camera(window):
    model, rec, cams, times = window
    assert rec.view_dependence == (0.5, 20.0)
    sources = rec.source_centres()
    n = 16 * 16
    for v in range(4):  # view-major pixel order, the input cameras' centres in the fixed frame
        assert torch.allclose(sources[v * n:(v + 1) * n], cams.cam_to_world[v, :3, 3].expand(n, 3).to(sources), atol=1e-5)
    # the render of an input camera equals the plain rasterization of the same cloud with the
    # opacities weighted here, in numpy, by the angle to each Gaussian's own input camera
    t = float(times[1])
    cloud = rec.slice(t, inference_filter=True)
    g4 = rec.gaussians_model
    keep = (g4.marginal_t(float(rec.time.to_model(t))) >= 0.05) & (g4.slice(float(rec.time.to_model(t))).opacities >= 0.05)
    src = sources[keep].double().numpy()
    means = cloud.means.double().numpy()
    centre = cams.cam_to_world[1, :3, 3].numpy()
    # the best-placed input among those whose Gaussians show at t (half the largest input's opacity)
    opacity = cloud.opacities.double().numpy()
    inputs = cams.cam_to_world[:, :3, 3].numpy()
    mass = np.array([opacity[np.abs(src - c).max(-1) < 1e-4].sum() for c in inputs])
    live = inputs[mass >= 0.5 * mass.max()]
    best = np.min([angle_np(centre, means, np.broadcast_to(c, means.shape)) for c in live], 0)
    weight = torch.from_numpy(weight_np(angle_np(centre, means, src) - best, 0.5, 20.0)).to(cloud.opacities)
    expected = rasterize_over(rec, replace(cloud, opacities=cloud.opacities * weight), cams[1:2], backend="torch")
    got = render(rec, cams[1:2], t, backend="torch")
    assert torch.allclose(got.color, expected.color, atol=1e-5) and 0.3 < float(weight.min()) < 0.99


def test_view_cloud_is_the_slice_and_the_forecast(window):
    model, rec, cams, times = window
    for t in (-0.3, 0.0, 0.4):
        cloud, views = rec.view_cloud(t, forecast_from=0.0)
        reference = rec.forecast(t, 0.0, inference_filter=True)
        assert torch.equal(cloud.means, reference.means) and torch.equal(cloud.opacities, reference.opacities)
        assert views.index.shape == cloud.opacities.shape and views.give_way is None
    cloud, _ = rec.view_cloud(0.4)  # no forecast: the slice at t
    assert torch.equal(cloud.means, rec.slice(0.4, inference_filter=True).means)


def test_off_renders_as_before(window):
    model, rec, cams, times = window
    off = replace(rec, view_dependence=(0.0, 20.0))
    cloud, views = off.view_cloud(0.0)
    assert views is None
    plain = rasterize_over(off, off.slice(0.0, inference_filter=True), cams, backend="torch")
    assert torch.equal(render(off, cams, 0.0, backend="torch").color, plain.color)
    on = render(rec, cams, 0.0, backend="torch").color
    assert not torch.allclose(on, plain.color, atol=1e-3)  # and it does act where it is on


def test_inputs_whose_gaussians_have_faded_do_not_count_as_placed(window):
    """`live_inputs`: an input whose Gaussians show with less than half the largest input's opacity
    at this time is not a stand-in for the others."""
    from lrm4d_core.model.api import live_inputs

    model, rec, cams, times = window
    cloud, views = rec.view_cloud(float(times[-1]), inference_filter=False)
    sources = rec.source_centres()
    centres = cams.cam_to_world[:, :3, 3].to(cloud.means)
    before = live_inputs(rec, cloud, views)
    assert torch.allclose(before[-1], centres[3], atol=1e-5)  # the newest input shows at the newest time
    newest = (sources - centres[3]).abs().amax(-1) < 1e-4
    assert int(newest.sum()) == 16 * 16
    dim = replace(cloud, opacities=torch.where(newest, 1e-3 * cloud.opacities, cloud.opacities))
    after = live_inputs(rec, dim, views)
    assert len(after) >= 1 and not any(torch.allclose(c, centres[3], atol=1e-5) for c in after)


def test_training_renders_targets_with_the_same_view_dependent_opacity(window):
    """`train.losses.render_targets` with the model's view weighting: each target (model frame, no
    inference filter) equals the plain rasterization of the slice with the opacities weighted in
    numpy; gradients reach the opacities and stay finite at an input's own camera (the factor is a
    constant there, where the arccos has no derivative)."""
    from lrm4d_core.render import rasterize
    from lrm4d_core.train.losses import render_targets

    model, rec, cams, times = window
    g4 = rec.gaussians_model
    fields = ("means", "scales", "q_left", "q_right", "opacities", "colors")
    leaf = {f: getattr(g4, f).detach().float().clone().requires_grad_(f in ("means", "opacities")) for f in fields}
    batched = type(g4)(**{f: leaf[f][None] for f in fields})
    model_cams = rec.model_cameras.to(dtype=torch.float32)
    centres = model_cams.cam_to_world[:, :3, 3]
    tm = rec.time.to_model(torch.tensor([times[1], times[3]])).float()
    targets = Cameras.cat([model_cams[1:2], model_cams[3:4]])
    background = torch.tensor([1.0, 1.0, 1.0])
    got = render_targets(batched, targets, tm[None], background, None, (0.5, 20.0), centres[None], 16 * 16)
    plain = render_targets(batched, targets, tm[None], background, None)
    inputs = centres.double().numpy()
    src = np.repeat(inputs, 16 * 16, axis=0)
    for j, v in enumerate((1, 3)):
        cloud = type(g4)(**{f: leaf[f] for f in fields}).slice(tm[j])
        means, opacity = cloud.means.detach().double().numpy(), cloud.opacities.detach().double().numpy()
        mass = opacity[:len(src)].reshape(4, -1).sum(-1)
        live = inputs[mass >= 0.5 * mass.max()]
        best = np.min([angle_np(inputs[v], means, np.broadcast_to(c, means.shape)) for c in live], 0)
        weight = np.ones(len(means))
        weight[:len(src)] = weight_np(angle_np(inputs[v], means[:len(src)], src) - best[:len(src)], 0.5, 20.0)
        seen = replace(cloud, opacities=cloud.opacities * torch.from_numpy(weight).float())
        expected = rasterize(seen, targets[j:j + 1], background, backend="torch").color[0].permute(2, 0, 1)
        assert torch.allclose(got[0, j], expected, atol=1e-5)
        assert weight.min() < 0.9 and not torch.allclose(got[0, j], plain[0, j], atol=1e-3)
    got.sum().backward()
    assert torch.isfinite(leaf["means"].grad).all() and leaf["opacities"].grad.abs().sum() > 0
