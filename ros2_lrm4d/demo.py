"""`lrm4d demo`: the whole mission on a laptop, no ROS, no GPU, no arguments.

1. writes a synthetic rosbag2 with ground truth beside it (`--rig driving`, the default: 6 cameras
   on a moving car; `--rig workspace`: static cameras over a floor with movers),
2. replays it through the node's core with the shipped default model (`lrm4d replay`'s code),
3. writes, into one folder: the output rosbag2, a contact sheet PNG (inputs, ground truth and
   predictions at held-out views and held-out times, and a forecast beyond the window), a GIF of a
   virtual chase camera flying through the reconstruction over time, the Gaussians at the window
   end as a 3DGS PLY and as a coloured point cloud (points.ply), and metrics.json.

Held-out means: a (camera, time) pair of the window that was not a model input (the window holds
one camera per time step, round robin), so every prediction is checked against an image the model
never saw. The forecast is checked against the ground truth 0.5 s after the window end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from lrm4d_core.cameras import Cameras
from lrm4d_core.eval.metrics import psnr, ssim
from lrm4d_core.io.ply import write_gaussian_ply, write_point_cloud
from lrm4d_core.pipeline import Products
from lrm4d_core.model.api import rasterize_over

from .backend import make_backend
from .params import NodeParams
from .replay import replay
from .synth_bag import load_ground_truth, write_synthetic_bag

__all__ = ["run_demo", "main"]

log = logging.getLogger(__name__)
NS = 1_000_000_000
FORECAST_S = 0.5
RIGS = ("driving", "workspace")


def _render(products: Products, K: np.ndarray, c2w: np.ndarray, width: int, height: int, t: float) -> np.ndarray:
    """Predicted HxWx3 uint8 view at core time t (seconds relative to the window end)."""
    rec = products.reconstruction
    like = rec.gaussians_model.means
    cams = Cameras(torch.from_numpy(K)[None].to(like), torch.from_numpy(c2w)[None].to(like), width, height)
    cloud, views = rec.view_cloud(t, forecast_from=0.0)
    out = rasterize_over(rec, cloud, cams, views=views)  # as the node's predicted views: over the environment map
    return (out.color[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _mean(scores: list[tuple[float, float]], k: int) -> float | None:
    return float(np.mean([s[k] for s in scores])) if scores else None


def _metrics(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    a = torch.from_numpy(np.array(pred)).permute(2, 0, 1).double() / 255  # a copy: pred may be read-only
    b = torch.from_numpy(np.array(truth)).permute(2, 0, 1).double() / 255
    return float(psnr(a, b)), float(ssim(a, b))


def _label(image: np.ndarray, text: str, scale: int) -> Image.Image:
    tile = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, 6 * len(text) + 4, 11], fill=(0, 0, 0))
    draw.text((2, 0), text, fill=(255, 255, 0))
    return tile


def _sheet(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], scale: int) -> Image.Image:
    tiles = [[_label(img, text, scale) for img, text in row] for _, row in rows]
    w = max(t.width for row in tiles for t in row)
    h = max(t.height for row in tiles for t in row)
    label_w = 150
    sheet = Image.new("RGB", (label_w + w * max(len(r) for r in tiles), h * len(tiles)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, ((name, _), row) in enumerate(zip(rows, tiles)):
        draw.text((4, r * h + h // 2 - 6), name, fill=(0, 0, 0))
        for c, tile in enumerate(row):
            sheet.paste(tile, (label_w + c * w, r * h))
    return sheet


def _chase_pose(front_c2w: np.ndarray) -> np.ndarray:
    """A virtual camera 7 m behind and 3.5 m above the front camera, pitched 15 degrees down."""
    pitch = np.deg2rad(15.0)
    tilt = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    pose = np.eye(4)
    pose[:3, :3] = front_c2w[:3, :3] @ tilt
    pose[:3, 3] = front_c2w[:3, 3] + front_c2w[:3, :3] @ np.array([0.0, -3.5, -7.0])
    return pose


def run_demo(out: Path, size: int = 128, frames: int = 24, device: str = "auto", progress: bool = True,
             rig: str = "driving") -> dict[str, Any]:
    """Run the demo into `out` (replaced if it exists); returns the metrics dict. `rig`: "driving"
    (6 surround cameras on a moving car) or "workspace" (3-6 static cameras over a floor with
    movers: where the motion prior of the default model sees motion)."""
    if rig not in RIGS:
        raise ValueError(f"unknown demo rig {rig!r}; choose from {RIGS}")
    started = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    width = height = size  # square, as the default model was trained
    say = print if progress else log.info

    say(f"[1/4] writing a synthetic {rig} bag ({width}x{height}, {frames} frames)")
    bag = write_synthetic_bag(out / "input_bag", rig, seed=7, width=width, height=height, frames=frames,
                              gt_dir=out / "ground_truth", progress=progress)
    gt = load_ground_truth(bag.gt_dir)
    cameras = tuple(dict.fromkeys(r["camera"] for r in gt.index["images"]))  # the bag's, in its order (driving: front first)
    params = NodeParams(cameras=cameras, window_duration_s=1.0, update_rate_hz=2.0, max_views=12, min_steps=4,
                        forecast_horizons_s=(FORECAST_S,), render_max_side=max(width, height), device=device)

    say("[2/4] replaying it through the node's core with the default model")
    backend = make_backend(params, offline=True)
    windows: list[Products] = []
    summary = replay(bag.path, out / "output_bag", params, backend, progress=progress, on_products=windows.append)
    if not windows:
        raise RuntimeError(f"the replay made no windows: {summary.line()}")

    say("[3/4] comparing predictions with the ground truth at held-out views and times")
    records = gt.index["images"]
    last_stamp = max(r["stamp_ns"] for r in records)
    usable = [p for p in windows if p.window.end_ns + FORECAST_S * NS <= last_stamp] or windows
    products = usable[-1]
    end = products.window.end_ns
    inputs = {(f.camera, f.stamp_ns) for f in products.window.frames}
    scene = gt.scene

    def gt_image(rec: dict) -> tuple[np.ndarray, Any]:
        meta = scene.images[rec["gt_index"]]
        from lrm4d_core.data.format import read_image

        return read_image(scene, meta), meta

    held_out = [r for r in records if products.window.start_ns <= r["stamp_ns"] <= end and (r["camera"], r["stamp_ns"]) not in inputs]
    future = [r for r in records if abs(r["stamp_ns"] - (end + FORECAST_S * NS)) < 0.05 * NS]
    # the model-free reference beside each number: a flat image of the window's mean input colour
    mean_colour = np.mean([f.image.reshape(-1, 3).mean(0) for f in products.window.frames], axis=0)

    def score(targets: list[dict]) -> tuple[list, list]:
        model, flat = [], []
        for r in targets:
            truth, meta = gt_image(r)
            pred = _render(products, meta.K, meta.cam_to_world, meta.width, meta.height, (r["stamp_ns"] - end) / NS)
            model.append(_metrics(pred, truth))
            flat.append(_metrics(np.broadcast_to(np.round(mean_colour).astype(np.uint8), truth.shape), truth))
        return model, flat

    scores, mean_scores = score(held_out)
    forecast_scores, forecast_mean_scores = score(future)

    # contact sheet: the inputs; ground truth and prediction for held-out views at the window end,
    # for held-out times in the middle of the window, and 0.5 s beyond the window (forecast)
    scale = max(1, 256 // width)
    input_row = [(f.image, f"{f.camera} {(f.stamp_ns - end) / NS:+.1f}s") for f in products.window.frames[-6:]]

    def nearest(camera: str, stamp: float) -> dict:
        return min((r for r in records if r["camera"] == camera), key=lambda r: abs(r["stamp_ns"] - stamp))

    rows: list[tuple[str, list]] = [("inputs (last 6)", input_row)]
    for title, stamp in (("window end", end), ("mid window", end - 0.5 * NS), (f"forecast +{FORECAST_S}s", end + FORECAST_S * NS)):
        truths, preds = [], []
        for cam in cameras[:4]:
            r = nearest(cam, stamp)
            truth, meta = gt_image(r)
            t = (r["stamp_ns"] - end) / NS
            pred = _render(products, meta.K, meta.cam_to_world, meta.width, meta.height, t)
            seen = "INPUT" if (cam, r["stamp_ns"]) in inputs else "held-out"
            truths.append((truth, f"{cam} {t:+.2f}s"))
            preds.append((pred, f"{seen} {_metrics(pred, truth)[0]:.1f}dB"))
        rows += [(f"truth: {title}", truths), (f"predicted: {title}", preds)]
    _sheet(rows, scale).save(out / "contact_sheet.png")

    say("[4/4] fly-through GIF, PLY export, metrics")
    front = nearest(cameras[0], end)
    _, front_meta = gt_image(front)
    # driving: a chase camera behind the car; a static rig: its first camera
    chase = _chase_pose(front_meta.cam_to_world) if rig == "driving" else front_meta.cam_to_world
    K = front_meta.K.copy()
    gif = []
    for t in np.linspace(float(products.window.times[0]), FORECAST_S, 16):
        gif.append(Image.fromarray(_render(products, K, chase, front_meta.width, front_meta.height, float(t)))
                   .resize((front_meta.width * scale, front_meta.height * scale), Image.NEAREST))
    gif[0].save(out / "flythrough.gif", save_all=True, append_images=gif[1:], duration=150, loop=0)
    write_gaussian_ply(out / "gaussians_3dgs.ply", products.cloud)
    points = write_point_cloud(out / "points.ply", products.cloud)

    metrics = {
        "held_out": {"count": len(scores), "psnr": _mean(scores, 0), "ssim": _mean(scores, 1),
                     "mean_colour_psnr": _mean(mean_scores, 0), "mean_colour_ssim": _mean(mean_scores, 1)},
        "forecast": {"horizon_s": FORECAST_S, "count": len(forecast_scores), "psnr": _mean(forecast_scores, 0),
                     "mean_colour_psnr": _mean(forecast_mean_scores, 0)},
        "window": {"end_ns": end, "views": len(products.window.frames), "gaussians_published": len(products.cloud)},
        "replay": dataclasses.asdict(summary),
        "model": backend.model_id,
        "timings_s": {k: round(v, 4) for k, v in products.timings.items()},
        "seconds": time.perf_counter() - started,
        "outputs": {"output_bag": str(out / "output_bag"), "contact_sheet": str(out / "contact_sheet.png"),
                    "flythrough": str(out / "flythrough.gif"), "ply_3dgs": str(out / "gaussians_3dgs.ply"),
                    "points_ply": str(points) if points else None},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    held, fc, nan = metrics["held_out"], metrics["forecast"], float("nan")
    say(f"demo: {summary.windows} windows reconstructed; held-out views PSNR {held['psnr'] or nan:.2f} dB "
        f"(a flat mean-colour image: {held['mean_colour_psnr'] or nan:.2f}) over {len(scores)} images, forecast "
        f"+{FORECAST_S}s PSNR {fc['psnr'] or nan:.2f} dB (mean colour {fc['mean_colour_psnr'] or nan:.2f}); "
        f"{metrics['seconds']:.0f} s; everything is in {out}/ (contact_sheet.png, flythrough.gif, output_bag/, "
        f"gaussians_3dgs.ply, metrics.json)")
    return metrics


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(Path(args.out), size=args.size, frames=args.frames, device=args.device, rig=args.rig)
    return 0
