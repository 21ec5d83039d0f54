"""Replay throughput and per-window latency breakdown of the reconstruction pipeline (JSON out).

    python bench/pipeline.py [--size 64] [--frames 40] [--checkpoint FILE]

Writes a synthetic 6-camera driving bag, replays it through `ros2_lrm4d.replay.replay` (the node's
core) with the tiny model on this machine, and reports frames/s through the replay and, per window,
the time spent in each stage: decode (image messages -> RGB), tf (pose lookups), model (reconstruct),
slice (clouds and forecasts), render (predicted views), encode (ROS messages, GaussianCloud4D
included). Stage timers wrap the real functions the replay calls; nothing is re-implemented here.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import ros2_lrm4d.shell as shell
from ros2_lrm4d.backend import make_backend
from ros2_lrm4d.params import NodeParams
from ros2_lrm4d.replay import replay
from ros2_lrm4d.synth_bag import write_synthetic_bag
from ros2_lrm4d.tf import TfBuffer

CAMERAS = ("front", "front_left", "front_right", "back", "back_left", "back_right")


def timed(totals: dict, key: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--checkpoint", default="")
    args = parser.parse_args()
    totals: dict[str, float] = defaultdict(float)
    windows: list[dict] = []
    shell.image_to_rgb = timed(totals, "decode", shell.image_to_rgb)
    TfBuffer.lookup = timed(totals, "tf", TfBuffer.lookup)
    shell.OutputEncoder.encode = timed(totals, "encode", shell.OutputEncoder.encode)
    with tempfile.TemporaryDirectory() as tmp:
        bag = write_synthetic_bag(Path(tmp) / "bag", "driving", seed=0, width=args.size, height=args.size,
                                  frames=args.frames, progress=False)
        params = NodeParams(cameras=CAMERAS, window_duration_s=1.0, update_rate_hz=2.0, max_views=12,
                            checkpoint=args.checkpoint, forecast_horizons_s=(0.5, 1.0))
        backend = make_backend(params)
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
    print(json.dumps({
        "bench": "pipeline",
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "bag": {"cameras": len(CAMERAS), "frames": args.frames, "size": args.size, "images": summary.frames_in},
        "model": backend.model_id,
        "replay_wall_s": round(wall, 3),
        "frames_per_s": round(summary.frames_in / wall, 2),
        "windows": summary.windows,
        "mean_window_latency_s": round(summary.mean_latency_s, 4),
        "per_window_s": {k: round(v, 4) for k, v in per_window.items()},
        "note": "encode includes GaussianCloud4D (its to_world re-factoring of 4D covariances)",
    }, indent=2))


if __name__ == "__main__":
    main()
