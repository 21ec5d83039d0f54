"""Model-free references for the evaluation: what a number means between "learned nothing" and
"perfect geometry".

Every method of `eval.baselines` uses the model; these do not, and they render the same targets:

* ``blank``: the background colour everywhere (the scene's recorded background; black for rigs
  that have none, where sky and ground fill every image).
* ``mean_color``: every pixel the mean colour of the example's input images.
* ``splats_heuristic``: every input pixel one small Gaussian: its colour, a standard deviation of
  `footprint` pixels at its depth, centred at its view's time with a temporal standard deviation
  of `time_width` input-time gaps, no motion, at a depth from a fixed prior: inward rigs (no
  ground plane recorded, e.g. objects) the plane through the scene centre facing the camera, with
  pixels of the background colour dropped; rigs with a ground plane (driving, workspace): the
  ground if the ray goes down and meets it inside the scene box, else the scene box's boundary
  (the "far dome").
* ``splats_true_depth``: the same Gaussians at the dataset's depth (rays that hit nothing:
  dropped on background-colour rigs, on the far dome otherwise).

Neither splat reference is a straw man: each takes the best of a small sweep of `footprint` and
`time_width` (`SWEEP`), chosen per data group and protocol on the first examples' targets
(`choose_sweep`) by PSNR, before the evaluation proper uses it on every example. Splats are built
and rendered in the world frame (metres or scene units, seconds), composited on ``blank``'s colour
for rigs with a background colour and on the mean input colour for open rigs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.gaussians import Gaussians4D

__all__ = [
    "REFERENCES",
    "REFERENCE_LABELS",
    "SWEEP",
    "SplatSettings",
    "SceneInfo",
    "heuristic_ray_depth",
    "true_ray_depth",
    "splat_gaussians",
    "blank_image",
    "mean_color_image",
]

REFERENCES = ("blank", "mean_color", "splats_heuristic", "splats_true_depth")
REFERENCE_LABELS = {
    "blank": "blank background (no model)",
    "mean_color": "mean input colour (no model)",
    "splats_heuristic": "splats at heuristic depth (no model)",
    "splats_true_depth": "splats at true depth (no model)",
}
OPACITY = 0.98
BACKGROUND_TOLERANCE = 0.04  # max-abs RGB distance at which a pixel counts as background


@dataclass(frozen=True)
class SplatSettings:
    """Footprint (Gaussian standard deviation in pixels at its depth) and temporal width (standard
    deviation in input-time gaps) of the splat references."""

    footprint: float
    time_width: float

    def label(self) -> str:
        return f"footprint {self.footprint:g} px, time width {self.time_width:g} gaps"


# The grid reaches past the optima seen on the three rigs (objects: the smallest footprint and
# 0.25-0.5 gaps; driving: 4 gaps or more), so that no reference is chosen at an edge of its sweep.
SWEEP = tuple(SplatSettings(f, w) for f in (0.35, 0.5, 0.8) for w in (0.125, 0.25, 0.5, 1.5, 4.0, 8.0))
DEFAULT_SETTINGS = SplatSettings(0.5, 1.5)  # where no example of a group could be read


@dataclass(frozen=True)
class SceneInfo:
    """What the references know of a scene: its box, ground plane and background colour."""

    box: np.ndarray | None  # [2, 3] scene box (min, max) or None
    ground_plane: np.ndarray | None  # [4] (a, b, c, d), unit up normal, or None
    background: tuple[float, float, float] | None  # the recorded background colour, or None (open rig)

    @property
    def center(self) -> np.ndarray:
        return np.zeros(3) if self.box is None else 0.5 * (self.box[0] + self.box[1])


def _box_exit(o: Tensor, d: Tensor, box: np.ndarray | None, fallback: float) -> Tensor:
    """Distance along unit rays from inside points to the scene box boundary ([...] per ray)."""
    if box is None:
        return torch.full(o.shape[:-1], fallback, dtype=o.dtype)
    lo = torch.as_tensor(box[0], dtype=o.dtype)
    hi = torch.as_tensor(box[1], dtype=o.dtype)
    safe = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t = torch.maximum((lo - o) / safe, (hi - o) / safe)  # exit distance per axis slab
    return t.amin(-1).clamp_min(1e-3)


def heuristic_ray_depth(images: Tensor, cameras: Cameras, scene: SceneInfo) -> tuple[Tensor, Tensor]:
    """Prior depth along each pixel ray and which pixels are kept: ([V, H, W], [V, H, W] bool)."""
    o, d = pixel_rays(cameras.to(dtype=torch.float64))
    if scene.ground_plane is None:
        c2w = cameras.cam_to_world.double()
        axes, centres = c2w[:, :3, 2], c2w[:, :3, 3]
        along = ((torch.as_tensor(scene.center) - centres) * axes).sum(-1).clamp_min(1e-3)
        depth = along[:, None, None] / (d * axes[:, None, None, :]).sum(-1).clamp_min(1e-3)
    else:
        n = torch.as_tensor(scene.ground_plane[:3], dtype=torch.float64)
        off = float(scene.ground_plane[3])
        down = (d * n).sum(-1)
        hit = -((o * n).sum(-1) + off) / torch.where(down < -1e-9, down, torch.full_like(down, -1e-9))
        dome = _box_exit(o, d, scene.box, 100.0)
        depth = torch.where((down < -1e-9) & (hit > 0), torch.minimum(hit, dome), dome)
    keep = torch.ones_like(depth, dtype=torch.bool)
    if scene.background is not None:
        bg = torch.tensor(scene.background, dtype=images.dtype)
        keep = (images.permute(0, 2, 3, 1) - bg).abs().amax(-1) >= BACKGROUND_TOLERANCE
    return depth, keep


def true_ray_depth(depths: Tensor, cameras: Cameras, scene: SceneInfo) -> tuple[Tensor, Tensor]:
    """The dataset's z-depth maps [V, H, W] as depth along each pixel ray, and the kept pixels."""
    o, d = pixel_rays(cameras.to(dtype=torch.float64))
    axes = cameras.cam_to_world.double()[:, :3, 2]
    cos = (d * axes[:, None, None, :]).sum(-1).clamp_min(1e-6)
    depth = depths.double() / cos
    finite = torch.isfinite(depth)
    if scene.background is not None or scene.ground_plane is None:
        return torch.where(finite, depth, torch.ones_like(depth)), finite
    return torch.where(finite, depth, _box_exit(o, d, scene.box, 100.0)), torch.ones_like(finite)


def _time_gap(times: Tensor) -> float:
    t = torch.unique(times.double())
    return float((t.max() - t.min()) / (len(t) - 1)) if len(t) > 1 else 1.0


def splat_gaussians(
    images: Tensor, cameras: Cameras, times: Tensor, ray_depth: Tensor, keep: Tensor, settings: SplatSettings
) -> Gaussians4D:
    """One static Gaussian per kept input pixel (module docstring), world frame, times in seconds.

    Args: images [V, 3, H, W] in [0, 1]; cameras V (world); times [V] s; ray_depth / keep [V, H, W].
    """
    o, d = pixel_rays(cameras.to(dtype=torch.float64))
    means = o + ray_depth[..., None] * d  # [V, H, W, 3]
    z = ray_depth * (d * cameras.cam_to_world.double()[:, None, None, :3, 2]).sum(-1)
    focal = 0.5 * (cameras.K[:, 0, 0] + cameras.K[:, 1, 1]).double()
    sigma = settings.footprint * z / focal[:, None, None]
    sigma_t = settings.time_width * _time_gap(times)
    V, _, H, W = images.shape
    t = times.double()[:, None, None].expand(V, H, W)
    sel = keep.reshape(-1)
    n = int(sel.sum())
    one = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).expand(n, 4)
    return Gaussians4D(
        means=torch.cat([means.reshape(-1, 3)[sel], t.reshape(-1, 1)[sel]], -1).float(),
        scales=torch.cat([sigma.reshape(-1, 1)[sel].expand(n, 3), torch.full((n, 1), sigma_t, dtype=torch.float64)], -1).float(),
        q_left=one.float(),
        q_right=one.float(),
        opacities=torch.full((n,), OPACITY),
        colors=images.permute(0, 2, 3, 1).reshape(-1, 3)[sel].float(),
    )


def blank_image(count: int, height: int, width: int, color: Sequence[float]) -> Tensor:
    return torch.tensor(color, dtype=torch.float32)[None, :, None, None].expand(count, 3, height, width).clone()


def mean_color_image(images: Tensor, count: int) -> Tensor:
    h, w = images.shape[-2:]
    return blank_image(count, h, w, images.float().mean(dim=(0, 2, 3)).tolist())


def psnr_of(pred: Tensor, target: Tensor) -> float:
    mse = float(((pred.double() - target.double()) ** 2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def _fill_color(ex, scene: SceneInfo) -> tuple[float, float, float]:
    """What the splat references composite on: the recorded background, else the mean input colour."""
    if scene.background is not None:
        return scene.background
    return tuple(float(c) for c in ex.images.float().mean(dim=(0, 2, 3)))


def reference_gaussians(ex, scene: SceneInfo, name: str, settings: SplatSettings) -> Gaussians4D | None:
    """The splat reference `name` of an `eval.baselines.Example` (None: true depth without depth maps)."""
    if name == "splats_heuristic":
        depth, keep = heuristic_ray_depth(ex.images, ex.cameras, scene)
    elif name == "splats_true_depth":
        if ex.input_depths is None:
            return None
        depth, keep = true_ray_depth(ex.input_depths, ex.cameras, scene)
    else:
        raise ValueError(f"not a splat reference: {name!r}")
    return splat_gaussians(ex.images, ex.cameras, ex.times, depth, keep, settings)


def run_references(ex, scene: SceneInfo, settings: dict[str, SplatSettings], render_targets) -> tuple[dict, dict, dict]:
    """Every reference on one example: ({name: renders [T, 3, H, W]}, {name: z-depth [T, H, W]} for
    the splats, {name: world Gaussians4D} for the splats). `render_targets` is `eval.baselines`'s."""
    T, _, H, W = ex.target_images.shape
    preds = {"blank": blank_image(T, H, W, scene.background or (0.0, 0.0, 0.0)), "mean_color": mean_color_image(ex.images, T)}
    depths, clouds = {}, {}
    fill = torch.tensor(_fill_color(ex, scene), dtype=torch.float32)
    for name in ("splats_heuristic", "splats_true_depth"):
        g = reference_gaussians(ex, scene, name, settings[name])
        if g is None:
            continue
        preds[name], depths[name] = render_targets(g, ex.target_cameras, ex.target_times, fill, with_depth=True)
        clouds[name] = g
    return preds, depths, clouds


def choose_sweep(examples: list, scene_infos: list[SceneInfo], render_targets, max_targets: int = 24) -> tuple[dict, dict]:
    """Per splat reference, the `SWEEP` setting with the best mean PSNR over (at most `max_targets`
    spread) targets of `examples`: ({name: SplatSettings}, {name: {setting label: PSNR}})."""
    best, table = {}, {}
    for name in ("splats_heuristic", "splats_true_depth"):
        scores: dict[SplatSettings, list[float]] = {s: [] for s in SWEEP}
        for ex, scene in zip(examples, scene_infos):
            T = len(ex.target_cameras)
            pick = torch.linspace(0, T - 1, min(T, max_targets)).round().long().unique()
            fill = torch.tensor(_fill_color(ex, scene), dtype=torch.float32)
            for setting in SWEEP:
                g = reference_gaussians(ex, scene, name, setting)
                if g is None:
                    break
                pred = render_targets(g, ex.target_cameras[pick], ex.target_times[pick], fill)
                scores[setting].append(psnr_of(pred, ex.target_images[pick]))
        if all(scores[s] for s in SWEEP):
            means = {s: float(np.mean(v)) for s, v in scores.items()}
            best[name] = max(means, key=means.get)
            table[name] = {s.label(): v for s, v in means.items()}
        else:
            best[name] = DEFAULT_SETTINGS
    return best, table
