"""Functional inference API: load a model, reconstruct a window in the caller's frame, render.

    model = load_model("tiny.safetensors")            # or load_model(preset="tiny"): random weights
    rec = reconstruct(model, images, cameras, times)  # images: list of uint8 HxWx3, times: seconds
    out = render(rec, cameras, t=times[-1])           # out.color [C, H, W, 3]
    rec.gaussians                                     # Gaussians4D in the caller's frame

`reconstruct()` maps the caller's fixed frame into the model box and back:

    world cameras (any image size) --resize images, Cameras.resized--> model resolution
      --SceneNormalization.cameras_to_model--> model box     times --TimeNormalization--> [-1, 1]
      --LRM4D under torch.inference_mode--> Gaussians4D (model box, model time)
      --Gaussians4D.to_world(scene, time)--> `Reconstruction.gaussians` in the fixed frame (metres,
        seconds); computed at once, or on first access with world=False, since renders and slices
        need not wait for it (`Reconstruction.slice`)

The model is equivariant to the order of the views (no positional embedding), so reconstruct()
takes them in any order.

Scene normalization when the caller passes none (`estimate_scene_normalization`):
- inward-looking rigs (objects): the least-squares point nearest every optical axis is the centre
  (where the axes all lie along one line, as with two cameras facing each other, the centroid of
  the camera centres, which each camera must see within 60 degrees of its axis; only with
  `config.facing_inward`, which checkpoints before session 11 lack) if it lies in
  front of every camera and the cameras are spread around it (largest baseline > 0.1 x mean
  distance, which rules out e.g. a slightly toed-in stereo pair whose axes meet far away); the
  scale makes the mean camera distance equal `config.camera_distance` model units.
- otherwise (outward-looking rigs, e.g. driving; a single camera; parallel axes looking the same
  way): the centroid of the camera centres is the centre and `config.scene_radius` world units
  make one model unit.
Time normalization: `TimeNormalization.spanning(min(times), max(times))` unless given.

Ground: a caller that knows the height of the ground in its fixed frame (world z up; REP 105 puts
z = 0 on the ground in `map` / `odom`) passes it as `ground_z`; the "prior" parametrization then
puts the pixels it decodes within `config.prior.ground_snap` of the ground onto it
(`model.prior.snap_to_ground`). Without it nothing is assumed about the ground.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
import time as _time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrm4d_core.cameras import Cameras, SceneNormalization, TimeNormalization
from lrm4d_core.environment import Environment
from lrm4d_core.gaussians import MIN_MARGINAL, MIN_OPACITY, Gaussians3D, Gaussians4D

from .config import ModelConfig, preset as make_preset
from .lrm4d import LRM4D
from .nearest_copy import reconstruction_windows, window_factor
from .own_view import approach_blur, reconstruction_splats, visibility
from .view_weight import VIEW_DEPENDENCE_OFF, live_centres, pixel_views, view_mass, view_opacity_factor, view_sources

__all__ = [
    "Reconstruction",
    "load_model",
    "default_checkpoint",
    "prepare_images",
    "prepare_window",
    "PreparedWindow",
    "estimate_scene_normalization",
    "reconstruct",
    "render",
    "rasterize_over",
    "SourceViews",
]


def _gaussians3d_to_world(g: Gaussians3D, scene: SceneNormalization, time: TimeNormalization) -> Gaussians3D:
    """Model box -> fixed frame for Gaussians already sliced at a time: x_w = s x + c, so
    means -> s mu + c, covariances -> s^2 Sigma, velocities (per model time unit) -> s / tau."""
    s = scene.scale
    return Gaussians3D(
        means=scene.points_to_world(g.means),
        covars=g.covars * s**2,
        opacities=g.opacities,
        colors=g.colors,
        velocities=g.velocities * (s / time.half_span),
    )


@dataclass(frozen=True)
class Reconstruction:
    """Result of `reconstruct()` for one window.

    Attributes:
        gaussians_model: Gaussians4D [V*H*W + N, ...] in the model box and model time, as the
            network output them.
        scene, time: the normalizations used; reuse them for the next window or for rendering in
            model space (`render(gaussians_model, scene.cameras_to_model(cams), time.to_model(t))`).
        model_cameras: the V cameras given to the network (model resolution, model box, float32).
        model_times: [V] the normalized times given to the network.
        timings: seconds per stage: prepare, forward, total (and to_world once `gaussians` is read).
        environment: the predicted environment map (sky and far background; None for models
            without one); directions are the same in the model box and the fixed frame.
        background: the colour the model was trained to composite on (`ModelConfig.background`);
            renders use it where the model has no environment map.
        view_dependence: (strength, width in degrees) of the view-dependent opacity its renders
            give the pixel-aligned Gaussians (`model.view_weight`; strength 0: none).
        nearest_copy, time_windows: the nearest copy in time its renders use (`model.nearest_copy`).
        own_view: the own-view splats [V*H*W] of its renders, in the model box and model time
            (`model.own_view`; None: none), and own_view_deg their visibility's width in degrees.

    `gaussians` (the 4D set in the caller's fixed frame, metres and seconds) is computed on first
    access: when space and time scales differ, `Gaussians4D.to_world` re-factors every 4D
    covariance (a float64 4x4 eigendecomposition per Gaussian), which costs about as much as the forward itself on a
    CPU. `slice(t)` / `forecast(t)` give world-frame 3D Gaussians without it: slicing commutes
    with the change of units (x_w = s x + c, t_w = tau t + t0), so they slice in model space at
    the model time and map the 3D result, exactly.
    """

    gaussians_model: Gaussians4D
    scene: SceneNormalization
    time: TimeNormalization
    model_cameras: Cameras
    model_times: Tensor
    timings: dict[str, float] = field(default_factory=dict)
    environment: Environment | None = None
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    view_dependence: tuple[float, float] = VIEW_DEPENDENCE_OFF
    nearest_copy: float = 0.0
    time_windows: Tensor | None = None
    own_view: Gaussians4D | None = None
    own_view_deg: float = 0.0

    @cached_property
    def gaussians(self) -> Gaussians4D:
        """Gaussians4D [V*H*W + N, ...] in the caller's fixed frame (world units, seconds)."""
        device = self.gaussians_model.means.device
        t0 = _time.perf_counter()
        with torch.inference_mode():
            out = self.gaussians_model.to_world(self.scene, self.time)
        _sync(device)
        self.timings["to_world"] = _time.perf_counter() - t0
        return out

    def slice(self, t: float, **slice_options: Any) -> Gaussians3D:
        """World-frame 3D Gaussians at time t (seconds); options as `Gaussians4D.slice`."""
        g = self.gaussians_model.slice(float(self.time.to_model(t)), **slice_options)
        return _gaussians3d_to_world(g, self.scene, self.time)

    def forecast(self, t: float, t_end: float | None = None, **slice_options: Any) -> Gaussians3D:
        """World-frame 3D Gaussians at t (seconds), extrapolated past `t_end` (default: the window
        end, the latest input time) as `Gaussians4D.forecast` does."""
        t_end = self.time.to_world(1.0) if t_end is None else t_end
        g = self.gaussians_model.forecast(
            float(self.time.to_model(t)), float(self.time.to_model(t_end)), **slice_options
        )
        return _gaussians3d_to_world(g, self.scene, self.time)

    def input_centres(self) -> Tensor:
        """[V, 3] the fixed-frame centres of the input cameras."""
        return self.scene.points_to_world(self.model_cameras.cam_to_world[:, :3, 3].to(self.gaussians_model.means))

    def source_views(self) -> Tensor:
        """[V*H*W + N] the input view each Gaussian is aligned to (the pixel-aligned ones in
        view-major pixel order), -1 for the N free Gaussians."""
        cams = self.model_cameras
        return pixel_views(len(cams), cams.width * cams.height, len(self.gaussians_model), self.gaussians_model.means.device)

    def source_centres(self) -> Tensor:
        """[V*H*W + N, 3] the fixed-frame centre of the input camera each Gaussian is aligned to, NaN
        for the free Gaussians (`source_views`)."""
        return view_sources(self.input_centres(), self.source_views())

    def view_cloud(self, t: float, forecast_from: float | None = None,
                   inference_filter: bool = True) -> tuple[Gaussians3D, SourceViews | None]:
        """The world-frame cloud at t (seconds) and where each of its Gaussians comes from
        (`SourceViews`; None where neither the view-dependent opacity nor the own-view splats
        are on), for `rasterize_over`: as `slice(t)`, or with `forecast_from` as
        `forecast(t, forecast_from)` (extrapolated past it), followed by the own-view splats
        where they are on."""
        # windows belong to the set they were computed on: a subset (a diagnostic's) renders without
        windowed = self.time_windows is not None and self.nearest_copy > 0 and len(self.gaussians_model) >= len(self.time_windows)
        own = self.own_view if self.own_view is not None and self.own_view_deg > 0 else None
        if self.view_dependence[0] <= 0 and not windowed and own is None:  # the plain slice or forecast, as fast as before
            if forecast_from is None:
                return self.slice(t, inference_filter=inference_filter), None
            return self.forecast(t, forecast_from, inference_filter=inference_filter), None
        g4 = self.gaussians_model
        tm = float(self.time.to_model(t))
        t_end = math.inf if forecast_from is None else float(self.time.to_model(forecast_from))
        at = min(tm, t_end)
        views = self.source_views()
        cloud = g4.slice(at)
        if windowed:  # the nearest copy in time of what a standing camera saw alike shows
            factor = torch.ones_like(cloud.opacities)  # the free Gaussians after the pixel-aligned ones keep theirs
            windows = self.time_windows.to(cloud.opacities.device)
            factor[: len(windows)] = window_factor(windows, g4.means[: len(windows), 3].to(windows), at, self.nearest_copy).to(factor)
            cloud = replace(cloud, opacities=cloud.opacities * factor)
        give_way = None
        if own is not None:  # each pixel's Gaussian gives way to its splat as far as that shows at t (forecasts too)
            own = own.to(device=g4.means.device, dtype=g4.means.dtype)
            shown = own.marginal_t(tm) * (own.opacities > 0).to(g4.means)
            give_way = torch.cat([shown, torch.zeros(len(g4) - len(own), dtype=shown.dtype, device=shown.device)])
        if inference_filter:  # as `Gaussians4D.slice(inference_filter=True)` keeps them
            keep = (g4.marginal_t(at) >= MIN_MARGINAL) & (cloud.opacities >= MIN_OPACITY)
            cloud, views = cloud.select(keep), views[keep]
            give_way = None if give_way is None else give_way[keep]
        if tm > t_end:
            cloud = cloud.moved(tm - t_end)
        if own is not None:  # the splats, still, as they show at t
            splats = own.slice(tm)
            cams = self.model_cameras
            splat_views = torch.arange(len(cams), device=views.device).repeat_interleave(len(own) // len(cams))
            if inference_filter:
                kept = (own.marginal_t(tm) >= MIN_MARGINAL) & (splats.opacities >= MIN_OPACITY)
                splats, splat_views = splats.select(kept), splat_views[kept]
            cloud = Gaussians3D.cat([cloud, splats])
            views = torch.cat([views, len(cams) + splat_views])
            give_way = torch.cat([give_way, torch.zeros(len(splats), dtype=give_way.dtype, device=give_way.device)])
        sources = SourceViews(views, give_way) if self.view_dependence[0] > 0 or own is not None else None
        return _gaussians3d_to_world(cloud, self.scene, self.time), sources


@dataclass(frozen=True)
class SourceViews:
    """Where each Gaussian of a `Reconstruction.view_cloud` comes from, for `rasterize_over`.

    Attributes:
        index: [N] the input view v its pixel-aligned Gaussians are aligned to, V + v for view v's
            own-view splats (`model.own_view`), -1 for free Gaussians.
        give_way: [N] how far each pixel-aligned Gaussian gives way to its own-view splat near its
            input camera (the splat's temporal marginal at the cloud's time; None: no splats).
    """

    index: Tensor
    give_way: Tensor | None = None


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


RENDER_DEPTH_MODE = "plane"
"""The depth a splat gives each pixel in renders of reconstructions (`render.rasterize`): its depth
plane, so that the rendered (and published) depth of wide flat splats, such as the ground discs,
is right across them. Colours do not depend on it; training and fitting render colours only."""

RENDER_BLUR = 0.3
"""The rasterizer's 2D blur (pixels^2) at the model's resolution (`model_resolution_blur`; the
own-view splats' `approach_blur`)."""

DEFAULT_CHECKPOINT = "weights/lrm4d_tiny_default.safetensors"
"""Path, inside the lrm4d_core package, of the embedded default model (docs/default_model.md)."""


def default_checkpoint() -> Path | None:
    """The embedded default checkpoint shipped inside the package, or None if this build has none."""
    path = Path(__file__).resolve().parent.parent / DEFAULT_CHECKPOINT
    return path if path.is_file() else None


def load_model(
    checkpoint: str | os.PathLike | None = None,
    preset: str = "tiny",
    device: str | torch.device | None = None,
    **overrides: Any,
) -> LRM4D:
    """An `LRM4D` in eval mode on `device` (default: CUDA if available, else CPU).

    With a checkpoint, its stored config is used (`preset` is ignored; `overrides` may change
    run-time fields such as grad_checkpointing). Without one, the preset is built with freshly
    initialised (untrained) weights, which is what tests and benchmarks want.
    """
    device = torch.device(device) if device is not None else _default_device()
    if checkpoint is not None:
        from lrm4d_core.io.checkpoint import load_checkpoint

        model, _, _ = load_checkpoint(checkpoint, device=device, **overrides)
        return model
    return LRM4D(make_preset(preset, **overrides)).to(device).eval()


def prepare_images(images: Any) -> Tensor:
    """Caller images -> float32 [V, 3, H, W] in [0, 1] on the CPU (or the tensor's device).

    Accepted: a list of uint8 HxWx3 numpy arrays (one size), a uint8 numpy array [V, H, W, 3],
    a float numpy array [V, H, W, 3] in [0, 1], a float tensor [V, 3, H, W] in [0, 1], or a
    uint8 tensor [V, H, W, 3].
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        shapes = {tuple(np.shape(im)) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"all images of a window must have one size, got shapes {sorted(shapes)}")
        if isinstance(images[0], torch.Tensor):
            images = torch.stack(list(images))
        else:
            images = np.stack([np.asarray(im) for im in images])
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy images must be [V, H, W, 3] (or a list of HxWx3), got {images.shape}")
        if images.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        if np.issubdtype(images.dtype, np.floating):
            return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        raise ValueError(f"numpy images must be uint8 or float in [0, 1], got {images.dtype}")
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 tensor images must be [V, H, W, 3], got {tuple(images.shape)}")
            return images.permute(0, 3, 1, 2).float() / 255.0
        if images.is_floating_point():
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"float tensor images must be [V, 3, H, W] in [0, 1], got {tuple(images.shape)}")
            return images.float()
        raise ValueError(f"tensor images must be uint8 or float, got {images.dtype}")
    raise ValueError(f"unsupported images type {type(images).__name__}")


def estimate_scene_normalization(cameras: Cameras, config: ModelConfig) -> SceneNormalization:
    """Centre and scale from the camera poses alone (see the module docstring). float64, CPU."""
    c2w = cameras.cam_to_world.detach().to("cpu", torch.float64)
    origins = c2w[:, :3, 3]
    axes = c2w[:, :3, 2]
    axes = axes / torch.linalg.norm(axes, dim=-1, keepdim=True)
    if len(cameras) >= 2:
        proj = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]  # [V, 3, 3]
        A = proj.sum(0)
        b = (proj @ origins[:, :, None]).sum(0)[:, 0]
        evals = torch.linalg.eigvalsh(A)
        parallel = bool(evals[0] <= 1e-3 * len(cameras))  # the axes all (nearly) along one line
        if parallel and not config.facing_inward:  # how models before session 11 were trained
            return SceneNormalization(origins.mean(0), float(config.scene_radius))
        # cameras facing each other along one line look at their centroid
        centre = origins.mean(0) if parallel else torch.linalg.solve(A, b)
        depth = ((centre - origins) * axes).sum(-1)
        ranges = torch.linalg.norm(origins - centre, dim=-1)
        distance = float(ranges.mean())
        baseline = float(torch.cdist(origins, origins).max())
        in_front = bool((depth > 0.5 * ranges).all()) if parallel else bool((depth > 0).all())
        if in_front and distance > 0 and baseline > 0.1 * distance:
            return SceneNormalization(centre, distance / config.camera_distance)
    return SceneNormalization(origins.mean(0), float(config.scene_radius))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class PreparedWindow:
    """A window as the network takes it: pixels [V, 3, H, W] at the model resolution on the model's
    device, the V cameras in the model box (float32) and model times [V], the normalizations, and
    the ground's height in the model box (NaN: unknown)."""

    pixels: Tensor
    cameras: Cameras
    times: Tensor
    scene: SceneNormalization
    time: TimeNormalization
    ground: float = float("nan")


def prepare_window(
    model: LRM4D,
    images: Any,
    cameras: Cameras,
    times: Any,
    scene: SceneNormalization | None = None,
    time: TimeNormalization | None = None,
    image_size: tuple[int, int] | None = None,
    ground_z: float | None = None,
) -> PreparedWindow:
    """Resize, rescale intrinsics and normalize one window exactly as `reconstruct` does (the
    inference server batches these). Arguments as in `reconstruct`."""
    device = model.device
    config = model.config
    pixels = prepare_images(images)
    V, _, H_in, W_in = pixels.shape
    if len(cameras) != V:
        raise ValueError(f"{V} images but {len(cameras)} cameras")
    if (cameras.height, cameras.width) != (H_in, W_in):
        raise ValueError(f"images are {W_in}x{H_in} but the cameras are for {cameras.width}x{cameras.height}")
    times64 = torch.as_tensor(np.asarray(times, dtype=np.float64) if not isinstance(times, Tensor) else times)
    times64 = times64.detach().to("cpu", torch.float64).reshape(-1)
    if times64.numel() != V:
        raise ValueError(f"{V} images but {times64.numel()} times")
    if not torch.isfinite(times64).all():
        raise ValueError("times must be finite")

    H, W = image_size if image_size is not None else config.image_size
    pixels = resized_pixels(pixels.to(device), (H, W))
    cams = cameras.resized(W, H) if (H, W) != (H_in, W_in) else cameras
    cams = cams.to(device="cpu", dtype=torch.float64)
    if scene is None:
        scene = estimate_scene_normalization(cams, config)
    if time is None:
        time = TimeNormalization.spanning(float(times64.min()), float(times64.max()))
    model_cams = scene.cameras_to_model(cams).to(device=device, dtype=torch.float32)
    model_times = time.to_model(times64).to(device=device, dtype=torch.float32)
    ground = float("nan")
    if ground_z is not None:
        if not math.isfinite(float(ground_z)):
            raise ValueError(f"ground_z must be finite (None: unknown), got {ground_z}")
        ground = scene.height_to_model(ground_z)
    return PreparedWindow(pixels, model_cams, model_times, scene, time, ground)


def resized_pixels(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """pixels [V, 3, H_in, W_in] in [0, 1] at `size` (H, W), as the network takes them (bilinear,
    antialiased when shrinking)."""
    H, W = size
    if tuple(pixels.shape[-2:]) == (H, W):
        return pixels
    downscale = H < pixels.shape[-2] or W < pixels.shape[-1]
    return F.interpolate(pixels, size=(H, W), mode="bilinear", align_corners=False, antialias=downscale).clamp(0.0, 1.0)


def reconstruct(
    model: LRM4D,
    images: Any,
    cameras: Cameras,
    times: Any,
    scene: SceneNormalization | None = None,
    time: TimeNormalization | None = None,
    image_size: tuple[int, int] | None = None,
    world: bool = True,
    ground_z: float | None = None,
) -> Reconstruction:
    """Reconstruct one window of V posed, timed images as 4D Gaussians in the caller's frame.

    Args:
        model: an `LRM4D` (its device is used).
        images: V images, any form `prepare_images` accepts, all of size cameras.width x height.
        cameras: the V cameras (world frame, float64 preferred), image size of `images`.
        times: [V] capture times in seconds (float64 numpy, tensor or list).
        scene, time: normalizations to use; estimated from the cameras / times when None.
        image_size: (H, W) to run the model at; default `model.config.image_size`.
        world: compute `Reconstruction.gaussians` (the 4D set in the fixed frame) now; with False
            it is computed on first access (use `rec.slice(t)` / `render(rec, ...)` meanwhile).
        ground_z: height of the ground in the fixed frame (world z up), if known (module docstring).
    Returns:
        `Reconstruction`: `.gaussians` in the fixed frame, normalizations, timings.
    """
    t0 = _time.perf_counter()
    device = model.device
    prepared = prepare_window(model, images, cameras, times, scene, time, image_size, ground_z)
    pixels, model_cams, model_times = prepared.pixels, prepared.cameras, prepared.times
    scene, time = prepared.scene, prepared.time
    _sync(device)
    t1 = _time.perf_counter()
    with torch.inference_mode():
        out = model(pixels[None], model_cams, model_times[None], world_scale=scene.scale, with_environment=True,
                    ground_height=prepared.ground)
        gaussians = out.gaussians[0]  # one object: what the splats cache, the renders reuse
        pixel_aligned = len(model_cams) * model_cams.width * model_cams.height  # which copy shows when
        windows = reconstruction_windows(model.config, gaussians.means[:pixel_aligned], pixels, model_cams, model_times)
        own = reconstruction_splats(model.config, gaussians, pixels, model_cams, model_times)
    _sync(device)
    t2 = _time.perf_counter()
    timings = {"prepare": t1 - t0, "forward": t2 - t1, "total": t2 - t0}
    env = out.environment[0] if out.environment is not None else None
    rec = Reconstruction(gaussians, scene, time, model_cams, model_times, timings, env, model.config.background,
                         model.config.view_weighting, model.config.nearest_copy, windows, own, model.config.own_view.angle_deg)
    if world:
        rec.gaussians  # noqa: B018  (computes and times the world-frame set)
        timings["total"] = _time.perf_counter() - t0
    return rec


def render(
    gaussians4d: Gaussians4D | Reconstruction,
    cameras: Cameras,
    t: float | Tensor,
    background: Tensor | None = None,
    backend: str = "auto",
    inference_filter: bool = True,
):
    """Slice a 4D set at time t and rasterize it into every camera.

    Args:
        gaussians4d: an unbatched Gaussians4D [N, ...] (world or model frame), or a
            `Reconstruction` (then sliced in model space and mapped to the world: the same
            Gaussians as its `.gaussians`, without the 4D re-factorization, see `Reconstruction`;
            rendered as `rasterize_over` does, with the blur of the model's resolution, which
            differs from the plain 0.3 px^2 only for cameras finer than the model's inputs).
        cameras: C cameras in the same frame as the Gaussians (world for a Reconstruction).
        t: time in the Gaussians' time units (seconds for world-frame sets and Reconstructions).
        background: [3] colour behind the Gaussians. None: a Reconstruction's environment map,
            else the colour its model was trained on; for a bare Gaussians4D, black.
        backend: passed to `lrm4d_core.render.rasterize` ("auto", "gsplat", "torch").
        inference_filter: drop Gaussians with p(t) < 0.05 or p(t) * opacity < 0.05 (SPEC §1).
    Returns:
        the rasterizer's result: `.color` [C, H, W, 3], `.alpha`, `.depth`.
    """
    if isinstance(gaussians4d, Reconstruction):
        sliced, views = gaussians4d.view_cloud(float(t), inference_filter=inference_filter)
        return rasterize_over(gaussians4d, sliced, cameras, background, backend, views)
    from lrm4d_core.render import rasterize  # imported lazily: optional backends

    if gaussians4d.means.ndim != 2:
        raise ValueError(
            f"render() takes an unbatched Gaussians4D ([N, 4] means), got {tuple(gaussians4d.means.shape)}"
        )
    sliced = gaussians4d.slice(t, inference_filter=inference_filter)
    cams = cameras.to(device=sliced.means.device, dtype=sliced.means.dtype)
    return rasterize(sliced, cams, background=background, backend=backend, depth_mode=RENDER_DEPTH_MODE)


def rasterize_over(
    rec: Reconstruction, cloud: Gaussians3D, cameras: Cameras, background: Tensor | None = None, backend: str = "auto",
    views: SourceViews | None = None,
):
    """Rasterize a world-frame cloud of `rec` (a slice or forecast) as users see it: over
    `background` [3] when given, else over `rec`'s environment map, else over the colour its model
    was trained on (`Reconstruction.background`). With `views` (from `Reconstruction.view_cloud`),
    each camera sees the pixel-aligned Gaussians with `rec.view_dependence`'s view-dependent
    opacity (`model.view_weight`) and the own-view splats by their visibility, their pixels'
    Gaussians giving way to them (`model.own_view`), one camera at a time."""
    if views is not None:
        V = len(rec.model_cameras)
        splat = views.index >= V
        strength, width = rec.view_dependence
        inputs = live_inputs(rec, cloud, views)
        view_of = torch.where(splat, views.index - V, views.index)
        sources = view_sources(rec.input_centres().to(cloud.means), view_of)
        if views.give_way is not None:  # the splats' input focal lengths, for `approach_blur`
            focals = rec.model_cameras.K[:, [0, 1], [0, 1]].mean(-1).to(cloud.means)
            splat_focal = torch.where(splat, focals[view_of.clamp_min(0)], torch.full_like(cloud.opacities, math.nan))
            eye = torch.eye(3, dtype=cloud.covars.dtype, device=cloud.covars.device)
        outs = []
        for c in range(len(cameras)):
            centre = cameras.cam_to_world[c, :3, 3]
            factor = view_opacity_factor(cloud.means, sources, centre, strength, width, inputs)
            covars = cloud.covars
            if views.give_way is not None:
                a = visibility(cloud.means, sources, centre, rec.own_view_deg)
                factor = torch.where(splat, a, factor * (1.0 - a * views.give_way.to(a)))
                blur = approach_blur(cloud.means, sources, splat_focal, centre.to(cloud.means), RENDER_BLUR)
                covars = covars + blur.to(covars)[:, None, None] * eye
            seen = replace(cloud, opacities=cloud.opacities * factor, covars=covars)
            outs.append(rasterize_over(rec, seen, cameras[c:c + 1], background, backend))
        stats = {k: sum(o.stats.get(k, 0) for o in outs) for k in outs[0].stats}
        return replace(outs[0], stats=stats, **{k: torch.cat([getattr(o, k) for o in outs]) for k in ("color", "alpha", "depth")})
    from lrm4d_core.environment import composite
    from lrm4d_core.render import rasterize  # imported lazily: optional backends

    like = cloud.means
    cams = cameras.to(device=like.device, dtype=like.dtype)
    eps2d = model_resolution_blur(rec, cams)
    if background is None and rec.environment is not None:
        out = rasterize(cloud, cams, background=None, backend=backend, eps2d=eps2d, depth_mode=RENDER_DEPTH_MODE)
        return replace(out, color=composite(out.color, out.alpha, cams, rec.environment.to(device=like.device)))
    if background is None:
        background = torch.tensor(rec.background, dtype=like.dtype, device=like.device)
    return rasterize(cloud, cams, background=background.to(device=like.device, dtype=like.dtype), backend=backend, eps2d=eps2d,
                     depth_mode=RENDER_DEPTH_MODE)


def live_inputs(rec: Reconstruction, cloud: Gaussians3D, views: SourceViews, share: float = 0.5) -> Tensor:
    """[K, 3] centres of the input cameras whose pixel-aligned Gaussians (`views`, from
    `Reconstruction.view_cloud`) show in `cloud` (a slice: opacities times p(t)) with at least
    `share` of the largest input's opacity: the inputs that can stand in for each other at this
    time (an input whose Gaussians have faded out cannot; own-view splats do not count)."""
    centres = rec.input_centres().to(cloud.means)
    network = views.index < len(centres)
    return live_centres(centres, view_mass(views.index[network], cloud.opacities[network], len(centres)), share)


def model_resolution_blur(rec: Reconstruction, cameras: Cameras, eps2d: float = RENDER_BLUR) -> float:
    """The rasterizer's 2D blur (pixels^2) that makes a render at any resolution look as one at the
    model's: eps2d scaled by the square of the focal-length ratio of `cameras` to the model's input
    cameras (at least 1). The network sized its Gaussians for the model's pixels with eps2d of
    blur; rendered at 2x with the same blur in the new, smaller pixels they show as separate dots."""
    f_model = float(rec.model_cameras.K[:, [0, 1], [0, 1]].mean())
    f_render = float(cameras.K[:, [0, 1], [0, 1]].mean())
    return eps2d * max(1.0, f_render / f_model) ** 2
