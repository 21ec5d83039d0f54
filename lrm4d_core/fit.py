"""Test-time optimization of 4D Gaussians to posed images: the per-scene baseline of the evaluation
(SPEC §4 compares feed-forward reconstruction with it) and an optional refinement of a model output.

It optimizes the raw 20-channel parameters through the same activations as the model (free-token
decoding: xyz directly, clipped to the box), so a model output can seed it and the result is an
ordinary Gaussians4D. The budget is wall-clock time, to compare with the model at equal time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .cameras import Cameras, pixel_rays
from .gaussians import SH_C0, GaussianActivation, Gaussians4D
from .render import rasterize

__all__ = ["FitConfig", "FitResult", "fit_gaussians4d", "raw_from_gaussians"]


@dataclass(frozen=True)
class FitConfig:
    """Optimization settings. Times and lengths are in model units (box [-1, 1]^3, time [-1, 1])."""

    num_gaussians: int = 4096
    budget_s: float = 10.0
    max_steps: int = 100_000
    lr: float = 0.02
    views_per_step: int = 2
    activation: GaussianActivation = GaussianActivation()
    seed: int = 0


@dataclass(frozen=True)
class FitResult:
    gaussians: Gaussians4D
    steps: int
    seconds: float
    final_loss: float


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


def raw_from_gaussians(g: Gaussians4D, activation: GaussianActivation) -> Tensor:
    """Raw parameters whose free-token activation gives back `g` (up to the scale caps): [N, 20]."""
    scale_xyz = torch.log(g.scales[:, :3].clamp_min(1e-8)) + activation.scale_bias
    scale_t = torch.log(g.scales[:, 3:].clamp_min(1e-8)) + activation.scale_bias
    return torch.cat(
        [
            g.means[:, :3],
            g.means[:, 3:],
            (g.colors - 0.5) / SH_C0,
            scale_xyz,
            scale_t,
            g.q_left,
            g.q_right,
            _logit(g.opacities)[:, None] + activation.opacity_bias,
        ],
        dim=-1,
    )


def _initial_gaussians(images: Tensor, cameras: Cameras, times: Tensor, cfg: FitConfig, gen: torch.Generator) -> Gaussians4D:
    """Gaussians on random pixel rays at random depths, coloured by their pixel and timed by their view."""
    v, _, h, w = images.shape
    origins, dirs = pixel_rays(cameras)
    n = cfg.num_gaussians
    view = torch.randint(0, v, (n,), generator=gen)
    pix = torch.randint(0, h * w, (n,), generator=gen)
    o = origins.reshape(v, h * w, 3)[view, pix]
    d = dirs.reshape(v, h * w, 3)[view, pix]
    act = cfg.activation
    depth = act.near + (act.far - act.near) * torch.rand(n, 1, generator=gen)
    xyz = (o + depth * d).clamp(act.box_min, act.box_max)
    colors = images.permute(0, 2, 3, 1).reshape(v, h * w, 3)[view, pix]
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4)
    return Gaussians4D(
        means=torch.cat([xyz, times[view, None]], -1),
        scales=torch.cat([torch.full((n, 3), 0.02), torch.full((n, 1), 0.3)], -1),
        q_left=identity.clone(),
        q_right=identity.clone(),
        opacities=torch.full((n,), 0.3),
        colors=colors,
    )


def fit_gaussians4d(
    images: Tensor,
    cameras: Cameras,
    times: Tensor,
    config: FitConfig = FitConfig(),
    init: Gaussians4D | None = None,
    background: Tensor | None = None,
) -> FitResult:
    """Fit 4D Gaussians to posed images at their times within a wall-clock budget.

    Args:
        images: [V, 3, H, W] float in [0, 1].
        cameras: V cameras (model frame) of the images' size.
        times: [V] model times in [-1, 1].
        init: optional starting point (e.g. the model's output, for refinement).
        background: [3] colour behind the Gaussians (default black).
    """
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    images = images.float()
    cameras = cameras.to(dtype=torch.float32)
    times = times.float()
    if init is not None:
        start = init.detach().to(dtype=torch.float32)
    else:  # drawn on the CPU (the generator lives there), then moved to the images' device
        start = _initial_gaussians(images.cpu(), cameras.to("cpu"), times.cpu(), config, gen).to(images.device)
    raw = raw_from_gaussians(start, config.activation).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=config.lr)
    v = images.shape[0]
    steps, loss_value = 0, math.nan
    while steps < config.max_steps and time.perf_counter() - started < config.budget_s:
        picks = torch.randperm(v, generator=gen)[: config.views_per_step]  # CPU indices
        g = Gaussians4D.from_raw(raw, activation=config.activation)
        loss = torch.zeros((), device=images.device)
        for i in picks.tolist():
            out = rasterize(g.slice(times[i]), cameras[i], background, backend="torch")
            loss = loss + torch.mean((out.color[0].permute(2, 0, 1) - images[i]) ** 2)
        loss = loss / len(picks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        loss_value = loss.item()
    final = Gaussians4D.from_raw(raw.detach(), activation=config.activation)
    return FitResult(final, steps, time.perf_counter() - started, loss_value)
