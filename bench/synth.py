"""Speed of the synthetic-scene renderer (analytic ray casting, numpy, one process).

Prints one JSON document to stdout:

    python bench/synth.py            # 128^2 and 256^2, object and driving rigs, supersample 1 and 2
    python bench/synth.py --quick    # 128^2 only, fewer scenes

For each setting it renders every view of a few frames of several random scenes (the same work
as `lrm4d synth`, without writing files) and reports seconds per image and images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lrm4d_core.data.rigs import driving_rig, object_rig  # noqa: E402
from lrm4d_core.data.scenes import random_driving_scene, random_object_scene  # noqa: E402


def bench(rig: str, size: int, supersample: int, scenes: int, frames: int) -> dict:
    images = 0
    primitives = []
    t0 = time.perf_counter()
    for seed in range(scenes):
        if rig == "object":
            times = np.arange(24) / 12.0
            scene = random_object_scene(seed, times[-1])
            cams = object_rig(np.random.default_rng(seed), times, size, size)
        else:
            times = np.arange(24) / 10.0
            scene = random_driving_scene(seed, times[-1])
            cams = driving_rig(scene, times, size, size)
        for f in np.linspace(0, 23, frames).round().astype(int):
            state = scene.evaluate(times[f])
            primitives.append(len(state.prims))
            for v in range(cams.num_views):
                state.render(cams.K[v, f], cams.cam_to_world[v, f], size, size, supersample)
                images += 1
    dt = time.perf_counter() - t0
    return {
        "rig": rig,
        "size": size,
        "supersample": supersample,
        "images": images,
        "mean_primitives": float(np.mean(primitives)),
        "seconds_per_image": dt / images,
        "images_per_second": images / dt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [128] if args.quick else [128, 256]
    scenes = 2 if args.quick else 4
    frames = 2 if args.quick else 3
    rows = []
    for size in sizes:
        for rig in ("object", "driving"):
            for ss in (1, 2):
                print(f"bench synth: {rig} {size}^2 supersample {ss}", file=sys.stderr)
                rows.append(bench(rig, size, ss, scenes, frames))
    print(json.dumps({"platform": platform.platform(), "processor": platform.processor(), "numpy": np.__version__, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
