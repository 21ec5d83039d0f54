"""The nearest copy in time (`model.nearest_copy`), against a brute-force numpy reference: a camera
that stands still gives inputs at three times and a second camera elsewhere one more; between the
standing camera's inputs a square moves (other colour) and something stands nearer in one of them
(other depth). Renders of a `Reconstruction` with windows are compared with renders of the same
Gaussians whose opacities the test lowered itself."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, SceneNormalization, TimeNormalization, pixel_rays
from lrm4d_core.data.rigs import look_at
from lrm4d_core.gaussians import Gaussians4D
from lrm4d_core.model import nearest_copy
from lrm4d_core.model.api import Reconstruction, render
from lrm4d_core.model.config import ModelConfig
from lrm4d_core.model.nearest_copy import plain_background_views, reconstruction_windows, time_windows, window_factor

SIZE, FOCAL = 12, 10.0
TIMES = [-0.6, 0.0, 0.6, 0.2]  # the standing camera's three inputs, then the other camera's


def _scene():
    """(means [V*H*W, 4], images [V, 3, H, W], cameras): each pixel's Gaussian on its ray at the
    pixel's depth, its time the input's plus a small offset."""
    still = look_at((0.0, -3.0, 0.5), (0.0, 0.0, 0.0))
    other = look_at((2.0, -2.0, 0.5), (0.0, 0.0, 0.0))
    K = np.tile(np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]]), (4, 1, 1))
    cams = Cameras(torch.tensor(K), torch.tensor(np.stack([still, still, still, other])), SIZE, SIZE)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, (3, SIZE, SIZE))
    images = np.stack([base] * 4)
    images[3] = rng.uniform(0.2, 0.8, (3, SIZE, SIZE))
    depth = np.full((4, SIZE, SIZE), 3.0)
    images[1, :, 2:5, 2:5] = 1.0  # a square there at the second time only: another colour
    depth[2, 7:10, 6:9] = 1.5  # something nearer at the third time only: another depth
    o, d = pixel_rays(cams)
    zaxis = cams.cam_to_world[:, :3, 2][:, None, None, :]
    along = torch.tensor(depth) / (d * zaxis).sum(-1)
    xyz = (o + along[..., None] * d).reshape(-1, 3)
    mu = torch.tensor(TIMES, dtype=torch.float64)[:, None].expand(4, SIZE * SIZE).reshape(-1)
    mu = mu + 0.05 * torch.tensor(rng.uniform(-1, 1, mu.shape))
    return torch.cat([xyz, mu[:, None]], -1), torch.tensor(images), cams


def _reference(means: np.ndarray, images: np.ndarray, cams: Cameras) -> np.ndarray:
    """The module's rule, Gaussian by Gaussian in numpy."""
    V, _, H, W = images.shape
    xyz, mu = means[:, :3].reshape(V, H * W, 3), means[:, 3].reshape(V, H * W)
    c2w = cams.cam_to_world.numpy()
    w2c = np.linalg.inv(c2w)
    K = cams.K.numpy()

    def project(p, k):
        c = w2c[k, :3, :3] @ p + w2c[k, :3, 3]
        return (K[k] @ c)[:2] / c[2], c[2]

    own = np.array([[project(xyz[v, n], v)[1] for n in range(H * W)] for v in range(V)])
    reach = np.median(own, axis=1)
    out = np.stack([np.full((V, H * W), -np.inf), np.full((V, H * W), np.inf)], -1)
    for j in range(V):
        for k in range(V):
            if k == j or np.linalg.norm(c2w[k, :3, 3] - c2w[j, :3, 3]) >= nearest_copy.SAME_PLACE * reach[j] \
                    or c2w[k, :3, 2] @ c2w[j, :3, 2] <= nearest_copy.SAME_AXIS:
                continue
            for n in range(H * W):
                uv, z = project(xyz[j, n], k)
                if not (z > 0 and 0 <= uv[0] < W and 0 <= uv[1] < H):
                    continue
                r, c = int(np.floor(uv[1])), int(np.floor(uv[0]))
                theirs = own[k, r * W + c]
                if abs(theirs - z) > nearest_copy.MARGIN * theirs:
                    continue
                if np.abs(images[k, :, r, c] - images[j, :, n // W, n % W]).max() > nearest_copy.COLOUR:
                    continue
                if TIMES[k] > mu[j, n]:
                    out[j, n, 1] = min(out[j, n, 1], TIMES[k])
                else:
                    out[j, n, 0] = max(out[j, n, 0], TIMES[k])
    return out.reshape(V * H * W, 2)


def test_windows_match_the_numpy_reference():
    """Equal to the reference; copies only between the standing camera's inputs, none where the
    colour or the depth differ at the other time, and the other camera's Gaussians have none."""
    means, images, cams = _scene()
    got = time_windows(means, images, cams, torch.tensor(TIMES, dtype=torch.float64))
    want = _reference(means.numpy(), images.numpy(), cams)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    w = got.reshape(4, SIZE, SIZE, 2)
    assert torch.isinf(w[3]).all()  # the other camera: no copy of its own place
    first = w[0]
    assert torch.isfinite(first[..., 1]).all() and torch.isinf(first[..., 0]).all()  # copies only later
    # the second input's square is another colour: the first input's copy there is the third's
    assert torch.all(first[2:5, 2:5, 1] == TIMES[2]) and first[0, 0, 1] == TIMES[1]
    assert torch.isinf(w[1, 2:5, 2:5]).all()  # the square itself: seen at no other time
    assert torch.isinf(w[2, 7:10, 6:9]).all()  # the nearer thing: at no other depth


def test_window_factor():
    """Lowered where the render time is nearer a copying input's time than the Gaussian's own."""
    windows = torch.tensor([[-math.inf, 1.0], [0.0, math.inf], [-0.4, 0.4]])
    mu = torch.tensor([0.0, 0.4, 0.0])  # midpoints: 0.5; 0.2; -0.2 and 0.2
    assert window_factor(windows, mu, 0.1, 0.7).tolist() == pytest.approx([1.0, 0.3, 1.0])
    assert window_factor(windows, mu, 0.6, 0.7).tolist() == pytest.approx([0.3, 1.0, 0.3])
    assert window_factor(windows, mu, -0.3, 1.0).tolist() == pytest.approx([1.0, 0.0, 0.0])


def _reconstruction(strength: float) -> Reconstruction:
    """The scene's Gaussians (small, opaque, coloured by their pixel) in a Reconstruction whose model
    box is the world (scale 1, times as given)."""
    means, images, cams = _scene()
    n = len(means)
    g = Gaussians4D(means=means, scales=torch.cat([torch.full((n, 3), 0.03), torch.full((n, 1), 2.0)], -1).double(),
                    q_left=torch.tensor([1.0, 0, 0, 0]).double().expand(n, 4), q_right=torch.tensor([1.0, 0, 0, 0]).double().expand(n, 4),
                    opacities=torch.full((n,), 0.9).double(), colors=images.permute(0, 2, 3, 1).reshape(-1, 3))
    windows = time_windows(means, images, cams, torch.tensor(TIMES, dtype=torch.float64)) if strength > 0 else None
    return Reconstruction(g, SceneNormalization(torch.zeros(3, dtype=torch.float64), 1.0), TimeNormalization(0.0, 1.0),
                          cams, torch.tensor(TIMES), background=(0.0, 0.0, 0.0), nearest_copy=strength, time_windows=windows)


def test_renders_lower_the_opacity_of_copies_outside_their_window():
    """Rendering the standing camera at the first input's time: the Reconstruction with windows
    gives the same image as the same Gaussians whose opacities the test multiplied by the factor;
    without windows, the plain render; and the two differ."""
    rec = _reconstruction(0.7)
    cam = rec.model_cameras[0:1]
    t = TIMES[0]
    with_windows = render(rec, cam, t, backend="torch")
    lowered = rec.gaussians_model.opacities * window_factor(rec.time_windows, rec.gaussians_model.means[:, 3], t, 0.7)
    by_hand = render(replace(rec, gaussians_model=replace(rec.gaussians_model, opacities=lowered), nearest_copy=0.0,
                             time_windows=None), cam, t, backend="torch")
    plain = render(_reconstruction(0.0), cam, t, backend="torch")
    assert torch.allclose(with_windows.color, by_hand.color, atol=1e-10)
    assert not torch.allclose(with_windows.color, plain.color, atol=1e-3)
    assert float(window_factor(rec.time_windows, rec.gaussians_model.means[:, 3], t, 0.7).min()) == pytest.approx(0.3)


def test_config_records_and_checks_the_strength():
    assert ModelConfig().nearest_copy == 0.0
    assert ModelConfig(nearest_copy=0.7).nearest_copy == 0.7
    with pytest.raises(ValueError):
        ModelConfig(nearest_copy=1.5)


def test_views_of_a_subject_before_a_plain_background_get_no_windows():
    """`reconstruction_windows` as `reconstruct` uses it: with the first input mostly the model's
    background colour (white), its Gaussians get no window, the others' as `time_windows` gives them;
    with `nearest_copy` 0, none at all."""
    means, images, cams = _scene()
    times = torch.tensor(TIMES, dtype=torch.float64)
    images[0, :, :, : SIZE // 2] = 1.0  # half the first input white
    plain = plain_background_views(images, torch.ones(3), 0.04, 0.25)
    assert plain.tolist() == [True, False, False, False]
    config = ModelConfig(parametrization="prior", nearest_copy=0.7)
    got = reconstruction_windows(config, means, images, cams, times).reshape(4, SIZE * SIZE, 2)
    every = time_windows(means, images, cams, times).reshape(4, SIZE * SIZE, 2)
    assert torch.isinf(got[0]).all() and torch.isfinite(every[0]).any()
    assert torch.equal(got[1:], every[1:])
    assert reconstruction_windows(ModelConfig(parametrization="prior"), means, images, cams, times) is None
