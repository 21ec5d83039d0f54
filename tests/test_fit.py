"""Test-time 4D Gaussian fitting (the evaluation's optimization baseline) actually fits."""

from __future__ import annotations

import torch

from lrm4d_core.cameras import Cameras
from lrm4d_core.fit import FitConfig, fit_gaussians4d, raw_from_gaussians
from lrm4d_core.gaussians import GaussianActivation, Gaussians4D
from lrm4d_core.render import rasterize


def looking_at_origin(angle: float) -> torch.Tensor:
    c, s = torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle))
    c2w = torch.eye(4)
    # camera on a circle of radius 2.5 in the x-z plane, optical axis towards the origin
    c2w[:3, 2] = torch.stack([-s, torch.tensor(0.0), -c])
    c2w[:3, 0] = torch.stack([c, torch.tensor(0.0), -s])
    c2w[:3, 1] = torch.tensor([0.0, -1.0, 0.0])  # OpenCV: y down, det +1
    c2w[:3, 3] = torch.stack([2.5 * s, torch.tensor(0.0), 2.5 * c])
    return c2w


def test_fit_lowers_the_photometric_error_of_a_moving_scene():
    torch.manual_seed(0)
    n = 40
    truth = Gaussians4D(
        means=torch.cat([torch.rand(n, 3) - 0.5, torch.rand(n, 1) * 2 - 1], -1),
        scales=torch.cat([torch.full((n, 3), 0.08), torch.full((n, 1), 0.6)], -1),
        q_left=torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
        q_right=torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
        opacities=torch.full((n,), 0.9),
        colors=torch.rand(n, 3),
    )
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    angles = [0.0, 0.8, -0.8, 1.6]
    cams = Cameras(K.expand(4, 3, 3).clone(), torch.stack([looking_at_origin(a) for a in angles]), 32, 32)
    times = torch.tensor([-0.9, -0.3, 0.3, 0.9])
    images = torch.stack([rasterize(truth.slice(times[i]), cams[i]).color[0].permute(2, 0, 1) for i in range(4)])
    cfg = FitConfig(num_gaussians=300, budget_s=60.0, max_steps=60, lr=0.02, views_per_step=2, seed=1)
    before = fit_gaussians4d(images, cams, times, FitConfig(**{**cfg.__dict__, "max_steps": 1}))
    after = fit_gaussians4d(images, cams, times, cfg)
    assert after.steps == 60 and after.final_loss < 0.5 * before.final_loss


def test_raw_round_trip_through_the_free_token_activation():
    torch.manual_seed(1)
    act = GaussianActivation()
    g = Gaussians4D.from_raw(torch.randn(50, 20) * 0.5, activation=act)
    back = Gaussians4D.from_raw(raw_from_gaussians(g, act), activation=act)
    for a, b in zip((g.means, g.scales, g.opacities, g.colors), (back.means, back.scales, back.opacities, back.colors)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(back.rotation(), g.rotation(), atol=1e-5, rtol=0)
