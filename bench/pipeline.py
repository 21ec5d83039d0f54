"""Replay throughput and per-window latency breakdown of the reconstruction pipeline (JSON out).

    python bench/pipeline.py [--size 64] [--frames 40] [--rig driving|object|workspace] [--checkpoint FILE]
        [--params config/reconstruct.yaml] [--watched-views N]

Writes a synthetic 6-camera driving bag (`--rig object`: the object rig's 8 cameras around a
subject before a plain background, where the silhouette alignment and the thickness act, with no
ground plane assumed; `--rig workspace`: 3 static cameras over a floor, where the motion prior's
block matching acts), replays it through `ros2_lrm4d.replay.replay` (the node's core) with the
default model and the node's default parameters (config/reconstruct.yaml: 6 cameras, a 2 s window,
12 views, 2 reconstructions per second) on this machine, and reports frames/s through the replay
and, per window, the time spent in each stage: decode (image messages -> RGB), tf (pose lookups),
model (reconstruct), slice (clouds and forecasts), render (predicted views), encode (ROS messages,
GaussianCloud4D included). Stage timers wrap the real functions the replay calls; nothing is
re-implemented here.

The replay renders every predicted view. A live node renders only those someone subscribes to
(`predicted_views_on_demand`, the default): `--watched-views N` renders only the first N of
`pipeline.predicted_view_names` (e.g. 1: RViz showing one camera's prediction; 0: none watched),
as the node would, with everything else unchanged.

"keeps_up" compares the time one window costs (all stages, decoding its share of the images
included) with the period the node must sustain, 1 / update_rate_hz: below 1.0 the live node keeps
up on this machine; above it, "slowdown" says by how much it does not and "share" where the time goes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import lrm4d_core.pipeline as pipeline
import ros2_lrm4d.shell as shell
from ros2_lrm4d.backend import make_backend
from ros2_lrm4d.params import NodeParams, load_params_file
from ros2_lrm4d.replay import replay
from ros2_lrm4d.synth_bag import write_synthetic_bag
from ros2_lrm4d.tf import TfBuffer


def timed(totals: dict, key: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    return wrapper


def cpu_model() -> str:
    """The processor's name (machines differ between runs; the figures only compare within one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--rig", choices=("driving", "object", "workspace"), default="driving")
    parser.add_argument("--params", default=str(Path(__file__).resolve().parent.parent / "config" / "reconstruct.yaml"),
                        help="node parameter file (default: the shipped config/reconstruct.yaml)")
    parser.add_argument("--watched-views", type=int, default=None, metavar="N",
                        help="render only the first N predicted views, as a live node with N watched (default: all)")
    args = parser.parse_args()
    totals: dict[str, float] = defaultdict(float)
    windows: list[dict] = []
    shell.image_to_rgb = timed(totals, "decode", shell.image_to_rgb)
    TfBuffer.lookup = timed(totals, "tf", TfBuffer.lookup)
    shell.OutputEncoder.encode = timed(totals, "encode", shell.OutputEncoder.encode)
    with tempfile.TemporaryDirectory() as tmp:
        bag = write_synthetic_bag(Path(tmp) / "bag", args.rig, seed=0, width=args.size, height=args.size,
                                  frames=args.frames, progress=False)
        base = load_params_file(args.params)
        cameras = tuple(bag.cameras)  # the driving rig's six, the object rig's eight, the workspace's three
        params = NodeParams(**{**dataclasses.asdict(base), "cameras": cameras, "checkpoint": args.checkpoint or base.checkpoint,
                               "use_ground_plane": base.use_ground_plane and args.rig != "object"})
        backend = make_backend(params)
        if args.watched_views is not None:  # what the live node asks `process` for
            watched = set(pipeline.predicted_view_names(cameras, params.pipeline_config())[: args.watched_views])
            process = pipeline.Reconstructor.process
            pipeline.Reconstructor.process = lambda self, window, views=None: process(self, window, views=watched.__contains__)
        t0 = time.perf_counter()
        summary = replay(bag.path, Path(tmp) / "out", params, backend, progress=False,
                         on_products=lambda p: windows.append(dict(p.timings)))
        wall = time.perf_counter() - t0
    n = max(1, len(windows))
    stages = {k: sum(w.get(k, 0.0) for w in windows) / n for k in ("prepare", "model", "slice", "render", "to_world")}
    per_window = {
        "decode": totals["decode"] / n,
        "tf": totals["tf"] / n,
        "model": stages["model"] + stages["prepare"],
        "slice": stages["slice"],
        "render_predicted_views": stages["render"],
        "encode": totals["encode"] / n,
    }
    period = 1.0 / params.update_rate_hz
    window_cost = sum(per_window.values())
    print(json.dumps({
        "bench": "pipeline",
        "machine": {"cpu": cpu_model(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "bag": {"rig": args.rig, "cameras": len(cameras), "frames": args.frames, "size": args.size, "images": summary.frames_in},
        "model": backend.model_id,
        "replay_wall_s": round(wall, 3),
        "frames_per_s": round(summary.frames_in / wall, 2),
        "windows": summary.windows,
        "mean_window_latency_s": round(summary.mean_latency_s, 4),
        "per_window_s": {k: round(v, 4) for k, v in per_window.items()},
        "params": {"file": args.params, "update_rate_hz": params.update_rate_hz, "max_views": params.max_views,
                   "window_duration_s": params.window_duration_s, "render_max_side": params.render_max_side,
                   "publish_gaussians_4d": params.publish_gaussians_4d,
                   "watched_views": "all" if args.watched_views is None else args.watched_views},
        "period_s": round(period, 4),
        "window_cost_s": round(window_cost, 4),
        "keeps_up": window_cost <= period,
        "slowdown": round(window_cost / period, 3),
        "share": {k: round(v / window_cost, 3) for k, v in per_window.items()} if window_cost > 0 else {},
        "note": "encode includes GaussianCloud4D (its to_world re-factoring of 4D covariances)",
    }, indent=2))


if __name__ == "__main__":
    main()
