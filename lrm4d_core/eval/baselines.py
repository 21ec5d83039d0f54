"""The evaluated methods on one example: the model and the three baselines, rendered at the targets.

All four methods see the same input images, cameras and times and render the same target cameras
at the same target times, through the public inference path (`model.api.reconstruct` in the
world frame, then `model.api.render` of the `Reconstruction`: sliced in model space and mapped to
the world, exactly what users get):

* ``model``: the 4D model on the inputs, each target rendered at its own time.
* ``no_time``: the model with every input time set to one value (the middle of the input times,
  i.e. model time 0), used as a static 3D LRM: its cloud is rendered at that one time for every
  target, so its renders do not depend on the target time at all.
* ``per_frame``: for each target frame, the model on only the inputs of that frame, or of the
  nearest frame that has inputs (ties -> the earlier frame): the "3D LRM per frame" baseline
  (SPEC §4). Each such reconstruction (cached per distinct input subset) is static in time and is
  rendered at its own input time. It uses the scene normalization of the ``model`` reconstruction
  (estimated from all input cameras): estimated from one camera alone it would put the scene
  centre at that camera (`estimate_scene_normalization`'s fallback), a framing the model never
  saw, which would make this baseline weaker for a reason that has nothing to do with time.
* ``fit``: test-time optimization of 4D Gaussians (`lrm4d_core.fit.fit_gaussians4d`) on the same
  inputs in the model's normalization (the ``model`` reconstruction's scene and time maps, its
  model-resolution cameras and model times, its activation constants), with a wall-clock budget
  equal to the model's measured reconstruct time for this example by default. Rendered through a
  `Reconstruction` with those same maps.
"""

from __future__ import annotations

import math
import time as _time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core import fit as _fit
from lrm4d_core.cameras import Cameras, SceneNormalization
from lrm4d_core.gaussians import Gaussians4D
from lrm4d_core.model import api as _api
from lrm4d_core.model.lrm4d import LRM4D

from .protocols import nearest_input_frame

__all__ = ["METHODS", "METHOD_LABELS", "Example", "example_from_batch", "render_targets", "evaluate_example"]

METHODS = ("model", "no_time", "per_frame", "fit")
METHOD_LABELS = {
    "model": "4D-LRM (ours)",
    "no_time": "no time (static 3D LRM)",
    "per_frame": "3D LRM per frame",
    "fit": "4DGS test-time fit (equal time)",
}


@dataclass
class Example:
    """One evaluation example in the world frame (seconds since the scene start), on the CPU."""

    scene_id: str
    images: Tensor  # [V, 3, H, W] float in [0, 1]
    cameras: Cameras  # V, float64
    times: Tensor  # [V] float64 seconds
    views: Tensor  # [V] int64
    frames: Tensor  # [V] int64
    target_images: Tensor  # [T, 3, H, W]
    target_cameras: Cameras
    target_times: Tensor  # [T] float64
    target_views: Tensor
    target_frames: Tensor
    extra: dict[str, Any] = field(default_factory=dict)
    input_depths: Tensor | None = None  # [V, H, W] z-depth (inf: nothing hit), when the data has it
    target_depths: Tensor | None = None  # [T, H, W]
    target_masks: Tensor | None = None  # [T, H, W] bool foreground
    ground_z: float | None = None  # height of a horizontal ground plane (world z up), when the scene records one

    @property
    def input_pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.views.tolist(), self.frames.tolist()))

    @property
    def target_pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.target_views.tolist(), self.target_frames.tolist()))


def example_from_batch(batch: dict) -> Example:
    """An `Example` from a `SceneDataset` / `EvalDataset` batch (unbatched dict)."""
    h, w = batch["input_images"].shape[-2:]
    th, tw = batch["target_images"].shape[-2:]
    return Example(
        scene_id=str(batch["scene_id"]),
        images=batch["input_images"].float(),
        cameras=Cameras(batch["input_K"].double(), batch["input_cam_to_world"].double(), int(w), int(h)),
        times=batch["input_times"].double(),
        views=batch["input_views"].long(),
        frames=batch["input_frames"].long(),
        target_images=batch["target_images"].float(),
        target_cameras=Cameras(batch["target_K"].double(), batch["target_cam_to_world"].double(), int(tw), int(th)),
        target_times=batch["target_times"].double(),
        target_views=batch["target_views"].long(),
        target_frames=batch["target_frames"].long(),
        input_depths=batch["input_depths"].double() if "input_depths" in batch else None,
        target_depths=batch["target_depths"].double() if "target_depths" in batch else None,
        target_masks=batch["target_masks"].bool() if "target_masks" in batch else None,
        # the ground the splat references know too, as a robot's fixed frame gives it
        ground_z=float(batch["ground_z"]) if "ground_z" in batch and math.isfinite(float(batch["ground_z"])) else None,
    )


def _select(ex: Example, index: Tensor) -> tuple[Tensor, Cameras, Tensor]:
    return ex.images[index], ex.cameras[index], ex.times[index]


RENDER_CHUNK = 8
"""Cameras per `render` call (bounds the rasterizer's memory; results do not depend on it)."""


def render_targets(
    rec: _api.Reconstruction | Gaussians4D,
    cameras: Cameras,
    times: Tensor,
    background: Tensor | None,
    at: float | None = None,
    with_depth: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Render every target camera at its time (or all at time `at`): [T, 3, H, W] float32 CPU in [0, 1]
    (and with `with_depth` the expected z-depth [T, H, W], 0 where nothing renders).

    `rec`: a Reconstruction (rendered as `model.api.render` does: over its environment map when
    `background` is None) or a world-frame Gaussians4D. Targets sharing a time are rendered
    together (`RENDER_CHUNK` cameras per call), and identical cameras at the same time (a static
    camera under a static cloud) are rendered once.
    """
    out = torch.empty(len(cameras), 3, cameras.height, cameras.width, dtype=torch.float32)
    depth_out = torch.zeros(len(cameras), cameras.height, cameras.width, dtype=torch.float32)
    render_times = torch.full_like(times, float(at)) if at is not None else times
    with torch.inference_mode():
        for t in torch.unique(render_times).tolist():
            idx = torch.nonzero(render_times == t).flatten()
            flat = torch.cat([cameras.K[idx].flatten(1), cameras.cam_to_world[idx].flatten(1)], dim=1)
            unique, inverse = torch.unique(flat, dim=0, return_inverse=True)
            first = torch.full((len(unique),), -1, dtype=torch.long)
            for k, u in enumerate(inverse.tolist()):  # one representative target per distinct camera
                if first[u] < 0:
                    first[u] = idx[k]
            colors, depths = [], []
            for c in range(0, len(first), RENDER_CHUNK):
                res = _api.render(rec, cameras[first[c:c + RENDER_CHUNK]], float(t), background=background)
                colors.append(res.color.permute(0, 3, 1, 2).float().clamp(0.0, 1.0).cpu())
                depths.append(res.depth[..., 0].float().cpu())
            out[idx] = torch.cat(colors)[inverse]
            depth_out[idx] = torch.cat(depths)[inverse]
    return (out, depth_out) if with_depth else out


def _timed_reconstruct(
    model: LRM4D, images: Tensor, cameras: Cameras, times: Tensor, scene: SceneNormalization | None = None,
    ground_z: float | None = None,
) -> tuple[_api.Reconstruction, float]:
    t0 = _time.perf_counter()
    rec = _api.reconstruct(model, images, cameras, times, scene=scene, world=False, ground_z=ground_z)
    return rec, _time.perf_counter() - t0


def _model_pixels(model: LRM4D, images: Tensor) -> Tensor:
    """The inputs as reconstruct() feeds them to the network (model resolution, model device)."""
    H, W = model.config.image_size
    pixels = images.to(model.device, torch.float32)
    if tuple(pixels.shape[-2:]) != (H, W):
        downscale = H < pixels.shape[-2] or W < pixels.shape[-1]
        pixels = F.interpolate(pixels, size=(H, W), mode="bilinear", align_corners=False, antialias=downscale).clamp(0, 1)
    return pixels


def run_model(model: LRM4D, ex: Example, background: Tensor | None) -> tuple[Tensor, dict, _api.Reconstruction, Tensor]:
    rec, seconds = _timed_reconstruct(model, ex.images, ex.cameras, ex.times, ground_z=ex.ground_z)
    preds, depth = render_targets(rec, ex.target_cameras, ex.target_times, background, with_depth=True)
    return preds, {"seconds": seconds}, rec, depth


def run_no_time(model: LRM4D, ex: Example, background: Tensor | None) -> tuple[Tensor, dict]:
    t_static = 0.5 * float(ex.times.min() + ex.times.max())
    rec, seconds = _timed_reconstruct(model, ex.images, ex.cameras, torch.full_like(ex.times, t_static), ground_z=ex.ground_z)
    preds = render_targets(rec, ex.target_cameras, ex.target_times, background, at=t_static)
    return preds, {"seconds": seconds, "static_time": t_static}


def per_frame_groups(input_frames: Tensor, target_frames: Tensor) -> dict[int, list[int]]:
    """Input frame used for each target frame: {input frame: [target indices]} (nearest, ties earlier)."""
    frames = input_frames.tolist()
    groups: dict[int, list[int]] = {}
    for j, f in enumerate(target_frames.tolist()):
        groups.setdefault(nearest_input_frame(f, frames), []).append(j)
    return groups


def run_per_frame(
    model: LRM4D, ex: Example, background: Tensor | None, scene: SceneNormalization | None = None
) -> tuple[Tensor, dict]:
    preds = torch.empty_like(ex.target_images)
    seconds = 0.0
    cache: dict[tuple[int, ...], tuple[_api.Reconstruction, float]] = {}
    for frame, targets in per_frame_groups(ex.frames, ex.target_frames).items():
        index = torch.nonzero(ex.frames == frame).flatten()
        key = tuple(index.tolist())
        if key not in cache:
            images, cams, times = _select(ex, index)
            rec, dt = _timed_reconstruct(model, images, cams, times, scene, ex.ground_z)
            seconds += dt
            cache[key] = (rec, float(times.mean()))
        rec, t_in = cache[key]
        tidx = torch.tensor(targets)
        preds[tidx] = render_targets(rec, ex.target_cameras[tidx], ex.target_times[tidx], background, at=t_in)
    return preds, {"seconds": seconds, "reconstructions": len(cache)}


def run_fit(
    model: LRM4D,
    ex: Example,
    rec: _api.Reconstruction,
    budget_s: float,
    background: Tensor | None,
    num_gaussians: int = 4096,
    seed: int = 0,
    max_steps: int | None = None,
) -> tuple[Tensor, dict]:
    """Baseline (3): fit 4D Gaussians in `rec`'s normalization within `budget_s` seconds.

    `fit_gaussians4d` checks the budget before each step, so the last step may end after it:
    ``info["seconds"]`` is the wall-clock actually spent (set-up included), ``info["steps"]`` the
    optimization steps it got (0 when the set-up alone used the budget: the fit is then its
    initialization, Gaussians on input pixel rays coloured by their pixels). With ``max_steps``
    (warm-up only) the budget is ignored.
    """
    device = model.device
    cfg = _fit.FitConfig(num_gaussians=num_gaussians, budget_s=float(budget_s) if max_steps is None else 1e9,
                         activation=model.config.activation, seed=seed,
                         **({"max_steps": int(max_steps)} if max_steps is not None else {}))
    pixels = _model_pixels(model, ex.images)
    cams = rec.model_cameras.to(device=device, dtype=torch.float32)
    times = rec.model_times.to(device=device, dtype=torch.float32)
    if background is None:  # the fit has no environment map: the model's training background
        background = torch.tensor(model.config.background, dtype=torch.float32)
    bg = background.to(device)
    t0 = _time.perf_counter()
    init = None
    if device.type != "cpu":
        # fit_gaussians4d draws its initial Gaussians with a CPU generator and mixes them with the
        # images' device; draw them on the CPU (the same draw) and hand them over as `init`
        gen = torch.Generator().manual_seed(cfg.seed)
        init = _fit._initial_gaussians(pixels.cpu(), cams.to(device="cpu"), times.cpu(), cfg, gen).to(device=device)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
        result = _fit.fit_gaussians4d(pixels, cams, times, cfg, init=init, background=bg)
    seconds = _time.perf_counter() - t0
    fitted = _api.Reconstruction(result.gaussians.detach(), rec.scene, rec.time, rec.model_cameras, rec.model_times,
                                 background=tuple(float(c) for c in background.tolist()))
    preds = render_targets(fitted, ex.target_cameras, ex.target_times, background)
    info = {"seconds": seconds, "budget_s": float(budget_s), "steps": int(result.steps), "final_loss": float(result.final_loss),
            "num_gaussians": int(num_gaussians), "device": str(device)}
    return preds, info


def warm_up(model: LRM4D, ex: Example, background: Tensor | None, fit: bool = True, fit_gaussians: int = 4096) -> None:
    """Untimed first calls (allocator, kernels, autograd and optimizer set-up) so that the timed
    reconstructions and the fit budget of the first example are not charged one-off costs."""
    rec, _ = _timed_reconstruct(model, ex.images, ex.cameras, ex.times, ground_z=ex.ground_z)
    if fit:
        run_fit(model, ex, rec, 0.0, background, num_gaussians=fit_gaussians, max_steps=1)


def evaluate_example(
    model: LRM4D,
    ex: Example,
    background: Tensor | None,
    methods: tuple[str, ...] = METHODS,
    fit_budget: str | float = "match",
    fit_gaussians: int = 4096,
    seed: int = 0,
) -> tuple[dict[str, Tensor], dict[str, dict], _api.Reconstruction, Tensor | None]:
    """Run `methods` on one example: ({method: renders [T, 3, H, W]}, {method: timing/info}, the
    model's reconstruction, the model's rendered z-depth [T, H, W] (None without "model")).

    ``background``: a colour every method composites on, or None: each renders as users get it
    (over the model's environment map, or the colour it was trained on).
    ``fit_budget``: "match" (the ``model`` reconstruct time of this example; the model is then
    run even if not in `methods`) or seconds.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
    preds: dict[str, Tensor] = {}
    info: dict[str, dict] = {}
    # the model's reconstruction always runs: it fixes the scene normalization of the per-frame
    # baseline and the fit, and its time is the fit's budget
    depth = None
    if "model" in methods:
        preds["model"], info["model"], rec, depth = run_model(model, ex, background)
        model_seconds = info["model"]["seconds"]
    else:
        rec, model_seconds = _timed_reconstruct(model, ex.images, ex.cameras, ex.times, ground_z=ex.ground_z)
    if "no_time" in methods:
        preds["no_time"], info["no_time"] = run_no_time(model, ex, background)
    if "per_frame" in methods:
        preds["per_frame"], info["per_frame"] = run_per_frame(model, ex, background, rec.scene)
    if "fit" in methods:
        budget = model_seconds if fit_budget == "match" else float(fit_budget)
        preds["fit"], info["fit"] = run_fit(model, ex, rec, budget, background, fit_gaussians, seed)
    return preds, info, rec, depth
