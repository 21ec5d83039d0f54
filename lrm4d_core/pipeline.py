"""Window -> 4D Gaussians -> products (DESIGN.md "Data flow"): the one core both shells drive.

    rec = Reconstructor(LocalBackend(model), PipelineConfig(forecast_horizons_s=(0.5, 1.0)))
    products = rec.process(window)        # a stream.Window
    products.cloud                        # Gaussians3D at the newest stamp, fixed frame
    products.forecasts[0.5]               # Gaussians3D half a second beyond the window
    products.renders                      # predicted views (colour and depth): every input camera, virtual cameras
    rec.process(window, views=lambda name: name == "front")   # only the predicted views someone watches
    products.dynamic, products.objects    # the moving part: Gaussians above a speed, grouped into objects

Time inside: seconds relative to the window end (0 = newest stamp, negative = past). Products
carry the window end (the newest source stamp); the shells stamp each output with the time it
shows (window end, or window end + horizon for forecasts and future views; `shell.OutputEncoder`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np
import torch

from .cameras import Cameras, SceneNormalization
from .gaussians import Gaussians3D, Gaussians4D
from .stream import Window

if TYPE_CHECKING:
    from .model.api import Reconstruction

__all__ = [
    "VirtualCamera",
    "PipelineConfig",
    "RenderedView",
    "Products",
    "Backend",
    "LocalBackend",
    "Reconstructor",
    "prune",
    "predicted_view_name",
    "predicted_view_names",
]

log = logging.getLogger(__name__)

DEPTH_MIN_ALPHA = 0.5
"""Predicted depth is NaN where the accumulated opacity is below this: a mostly transparent pixel's
expected depth is an average over fog, not the distance to a surface."""


@dataclass(frozen=True)
class VirtualCamera:
    """A camera to render predictions for that is not an input camera.

    Either fixed in the fixed frame (`cam_to_world`), or following an input camera (`follow`: its
    name) with an offset `cam_to_world` expressed in that camera's optical frame (e.g. 2 m back and
    up: a chase view). Intrinsics in pixels for `width` x `height`.
    """

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    cam_to_world: tuple[tuple[float, ...], ...] = ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1))
    follow: str | None = None
    time_offset_s: float = 0.0

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True)
class PipelineConfig:
    """What to produce from each window.

    Attributes:
        forecast_horizons_s: horizons beyond the window end for forecast clouds (DESIGN.md).
        max_points: cap on published Gaussians per cloud, keeping the largest weighted opacities.
        inference_filter: SPEC §1 inference-time filter (p(t) < 0.05 or p(t) * opacity < 0.05).
        render_inputs_at_s: times (relative to the window end; > 0 predicts the future) at which
            every input camera's newest pose is rendered. Empty: no input-camera renders.
        virtual_cameras: extra cameras to render at the window end (plus their time offset).
        render_max_side: renders are scaled so that their longer side is at most this (CPU cost).
        background: RGB in [0, 1] behind the Gaussians, or None (default): what the model predicts
            there (its environment map) or, for models without one, the colour it was trained on
            (stored in its checkpoint), so that predicted views look like its training images.
        scene_center, scene_scale: a fixed scene normalization (fixed frame -> model box); None lets
            the backend estimate one per window from the camera poses.
        dynamic_speed_threshold: Gaussians of the window-end cloud faster than this (m/s) are the
            moving part (`Products.dynamic`, `Products.objects`; `lrm4d_core.motion`).
        ground_z: height of the ground in the fixed frame (world z up), or None (unknown); the
            model puts what it sees near the ground on it (`model.api.reconstruct`).
    """

    forecast_horizons_s: tuple[float, ...] = (0.5,)
    max_points: int = 100_000
    inference_filter: bool = True
    render_inputs_at_s: tuple[float, ...] = (0.0,)
    virtual_cameras: tuple[VirtualCamera, ...] = ()
    render_max_side: int = 256
    background: tuple[float, float, float] | None = None
    scene_center: tuple[float, float, float] | None = None
    scene_scale: float | None = None
    dynamic_speed_threshold: float = 0.3
    ground_z: float | None = None

    def __post_init__(self) -> None:
        if self.ground_z is not None and not math.isfinite(self.ground_z):
            raise ValueError(f"ground_z must be finite or None, got {self.ground_z}")
        if self.max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {self.max_points}")
        if any(h <= 0 for h in self.forecast_horizons_s):
            raise ValueError(f"forecast horizons must be > 0 s, got {self.forecast_horizons_s}")
        if (self.scene_center is None) != (self.scene_scale is None):
            raise ValueError("give both scene_center and scene_scale, or neither")
        if self.background is not None and (len(self.background) != 3 or not all(0.0 <= c <= 1.0 for c in self.background)):
            raise ValueError(f"background must be 3 values in [0, 1] or None, got {self.background}")

    def scene(self) -> SceneNormalization | None:
        if self.scene_center is None:
            return None
        return SceneNormalization(torch.tensor(self.scene_center, dtype=torch.float64), float(self.scene_scale))


def predicted_view_name(camera: str, t: float) -> str:
    """The name of the predicted view of input camera `camera` at `t` s from the window end (the
    camera's own name at the window end; `RenderedView.name`, and the shells' topic token)."""
    return camera if t == 0 else f"{camera}@{t:+.2f}s"


def predicted_view_names(cameras: Sequence[str], config: PipelineConfig) -> list[str]:
    """Every predicted view `Reconstructor.process` can render for a window of `cameras`, by name:
    known before any window, so that a live node can offer each one's topics up front."""
    return [predicted_view_name(c, t) for t in config.render_inputs_at_s for c in cameras] \
        + [vc.name for vc in config.virtual_cameras]


@dataclass(frozen=True)
class RenderedView:
    """A predicted image. `source` names the input camera it predicts ('' for virtual cameras)."""

    name: str
    source: str
    t: float
    image: np.ndarray  # HxWx3 uint8
    K: np.ndarray  # 3x3 for image
    cam_to_world: np.ndarray  # 4x4 in the fixed frame
    depth: np.ndarray | None = None  # HxW float32 z-depth (metres along the optical axis), NaN where the
    #                                  accumulated opacity is below DEPTH_MIN_ALPHA (nothing solid renders)


@dataclass
class Products:
    """Everything one window yields; stamps are `window.end_ns`.

    `gaussians4d` (the full set in the fixed frame, for GaussianCloud4D) is computed on first use:
    re-factoring 4D covariances into fixed-frame units is the costliest step on a CPU, and a live
    node with no subscriber to that topic should not pay for it.
    """

    window: Window
    reconstruction: Reconstruction
    cloud: Gaussians3D
    forecasts: dict[float, Gaussians3D]
    renders: list[RenderedView]
    max_points: int
    timings: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    dynamic_speed_threshold: float = 0.3

    @cached_property
    def dynamic(self) -> Gaussians3D:
        """The moving part of `cloud`: speed above `dynamic_speed_threshold` (m/s)."""
        from .motion import moving

        return moving(self.cloud, self.dynamic_speed_threshold)

    @cached_property
    def objects(self) -> list:
        """`dynamic` grouped into moving objects (`motion.moving_objects`), heaviest first."""
        from .motion import moving_objects

        return moving_objects(self.dynamic)

    @cached_property
    def gaussians4d(self) -> Gaussians4D:
        """At most `max_points` 4D Gaussians (largest opacity over the window) in the fixed frame,
        times in seconds relative to the window end."""
        rec = self.reconstruction
        g = rec.gaussians_model
        if len(g) > self.max_points:
            span = torch.linspace(-1.0, 1.0, 9, dtype=g.means.dtype, device=g.means.device)
            weight = torch.stack([g.marginal_t(t) for t in span]).amax(0) * g.opacities
            g = g.select(torch.topk(weight, self.max_points, sorted=False).indices)
        t0 = time.perf_counter()
        out = g.to_world(rec.scene, rec.time)
        finite = torch.stack([torch.isfinite(t).reshape(len(out), -1).all(-1) for t in
                              (out.means, out.scales, out.q_left, out.q_right, out.opacities, out.colors)]).all(0)
        if not bool(finite.all()):  # never publish a non-finite value; count what was dropped
            self.counters["nonfinite_gaussians"] = self.counters.get("nonfinite_gaussians", 0) + int((~finite).sum())
            out = out.select(finite)
        self.timings["to_world"] = time.perf_counter() - t0
        return out


class Backend(Protocol):
    """Turns a window's posed images into a `model.api.Reconstruction` (model-box Gaussians plus the
    normalizations that map them to the fixed frame, seconds relative to the window end)."""

    model_id: str

    def reconstruct(self, images: Sequence[np.ndarray], cameras: Cameras, times: np.ndarray,
                    scene: SceneNormalization | None, ground_z: float | None = None) -> Reconstruction: ...


class LocalBackend:
    """The model in this process (CPU or CUDA)."""

    def __init__(self, model: torch.nn.Module, model_id: str = "") -> None:
        self.model = model
        self.model_id = model_id or f"lrm4d-{model.config.preset}"
        self.last_timings: dict[str, float] = {}

    def reconstruct(self, images: Sequence[np.ndarray], cameras: Cameras, times: np.ndarray,
                    scene: SceneNormalization | None, ground_z: float | None = None) -> Reconstruction:
        from .model.api import reconstruct

        # the 4D world set is computed lazily, per Products
        return reconstruct(self.model, list(images), cameras, times, scene=scene, world=False, ground_z=ground_z)


def prune(cloud: Gaussians3D, max_points: int) -> Gaussians3D:
    """Keep at most `max_points` Gaussians, those with the largest (time-weighted) opacity."""
    if len(cloud) <= max_points:
        return cloud
    keep = torch.topk(cloud.opacities, max_points, sorted=False).indices
    return cloud.select(keep)


def _render_cameras(K: np.ndarray, cam_to_world: np.ndarray, width: int, height: int, max_side: int) -> Cameras:
    cams = Cameras(torch.from_numpy(K)[None].double(), torch.from_numpy(cam_to_world)[None].double(), width, height)
    scale = min(1.0, max_side / max(width, height))
    if scale < 1.0:
        cams = cams.resized(max(1, round(width * scale)), max(1, round(height * scale)))
    return cams


class Reconstructor:
    """Window -> Products with per-stage timings. Stateless between windows except the counters."""

    def __init__(self, backend: Backend, config: PipelineConfig = PipelineConfig()) -> None:
        self.backend = backend
        self.config = config
        self.counters: dict[str, int] = {"windows": 0, "empty_clouds": 0, "pruned_points": 0}

    def process(self, window: Window, views: Callable[[str], bool] | None = None) -> Products:
        """Reconstruct `window` and make its products.

        Args:
            window: the frames (oldest first) of one window.
            views: which predicted views to render, by name (`predicted_view_name`): a live node
                renders only those someone watches, since the renders are a large share of a
                window's cost on a CPU. None (the replay): all of them.
        """
        cfg = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        frames = window.frames
        if not frames:
            raise ValueError("cannot reconstruct an empty window")
        sizes = {(f.image.shape[1], f.image.shape[0]) for f in frames}
        if len(sizes) != 1:
            raise ValueError(f"cameras of one window must share an image size, got {sorted(sizes)}")
        width, height = sizes.pop()
        cameras = Cameras(
            torch.from_numpy(np.stack([f.K for f in frames])).double(),
            torch.from_numpy(np.stack([f.cam_to_world for f in frames])).double(),
            width,
            height,
        )
        times = window.times
        timings["prepare"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        rec = self.backend.reconstruct([f.image for f in frames], cameras, times, cfg.scene(), cfg.ground_z)
        timings["model"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        slice_opts = {"inference_filter": cfg.inference_filter}
        cloud = self._bounded(rec.slice(0.0, **slice_opts))
        # beyond the window end a forecast is the end's cloud moved along its velocities
        # (`Reconstruction.forecast`): the same Gaussians, shapes and opacities, so it is made from
        # `cloud` (and shares its principal axes when published)
        forecasts = {h: cloud.moved(h) for h in cfg.forecast_horizons_s}
        timings["slice"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        renders = self._render(rec, window, views)
        timings["render"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0
        self.counters["windows"] += 1
        return Products(window, rec, cloud, forecasts, renders, cfg.max_points, timings, dict(self.counters),
                        cfg.dynamic_speed_threshold)

    def _bounded(self, cloud: Gaussians3D) -> Gaussians3D:
        finite = cloud.finite_mask()
        if not bool(finite.all()):  # never publish a non-finite value; count what was dropped
            self.counters["nonfinite_gaussians"] = self.counters.get("nonfinite_gaussians", 0) + int((~finite).sum())
            cloud = cloud.select(finite)
        if len(cloud) == 0:
            self.counters["empty_clouds"] += 1
        if len(cloud) > self.config.max_points:
            self.counters["pruned_points"] += len(cloud) - self.config.max_points
        return prune(cloud, self.config.max_points)

    def _render(self, rec: Reconstruction, window: Window, views: Callable[[str], bool] | None) -> list[RenderedView]:
        from .model.api import rasterize_over

        cfg = self.config
        like = rec.gaussians_model.means
        background = None if cfg.background is None else torch.tensor(cfg.background, dtype=like.dtype, device=like.device)
        newest: dict[str, object] = {}
        for f in window.frames:
            newest[f.camera] = f  # frames are oldest first, so this keeps each camera's newest
        jobs: list[tuple[str, str, float, Cameras]] = []
        wanted = views or (lambda name: True)
        for t in cfg.render_inputs_at_s:
            for cam, f in newest.items():
                name = predicted_view_name(cam, t)
                if wanted(name):
                    h, w = f.image.shape[:2]
                    jobs.append((name, cam, t, _render_cameras(f.K, f.cam_to_world, w, h, cfg.render_max_side)))
        for vc in cfg.virtual_cameras:
            if not wanted(vc.name):
                continue
            pose = np.asarray(vc.cam_to_world, dtype=np.float64)
            if vc.follow is not None:
                if vc.follow not in newest:
                    log.warning("virtual camera %s follows %s, which is not in this window", vc.name, vc.follow)
                    continue
                pose = newest[vc.follow].cam_to_world @ pose
            jobs.append((vc.name, "", vc.time_offset_s, _render_cameras(vc.K, pose, vc.width, vc.height, cfg.render_max_side)))
        renders = []
        clouds: dict[float, tuple] = {}  # views at one time render one cloud
        for name, source, t, cams in jobs:
            if t not in clouds:
                clouds[t] = rec.view_cloud(t, forecast_from=0.0, inference_filter=cfg.inference_filter)
            cloud, views = clouds[t]
            out = rasterize_over(rec, cloud, cams, background, views=views)
            image = (torch.nan_to_num(out.color[0], nan=0.0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            depth = torch.where(out.alpha[0, ..., 0] >= DEPTH_MIN_ALPHA, out.depth[0, ..., 0], torch.nan)
            depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.nan).float().cpu().numpy()
            renders.append(RenderedView(name, source, t, image, cams.K[0].numpy(), cams.cam_to_world[0].numpy(), depth))
        return renders
