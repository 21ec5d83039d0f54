"""Why the inputs re-render at 20-25 dB: each input view rendered from every Gaussian, from its own
pixel-aligned Gaussians alone, and from the other inputs' alone (PSNR against the input image).

    python docs/default_model/input_views_diag.py data/val_workspace [--protocol random] [--scenes 2]
        [--checkpoint CKPT] [--view-dependence 0] [--nearest-copy 0]

Session 7 (the shipped weights, before the view-dependent opacity): workspace validation windows
27.0 / 21.9 dB with every Gaussian, 30.2 / 25.1 with the input's own alone: the other inputs'
Gaussians, seen from far off their own directions, cover each input's own with their errors.
Session 15 (`--view-dependence 0.75 --nearest-copy 0` and `0.7`, the shipped file's): see
docs/default_model/experiments.md, "Nearest copy in time".
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from lrm4d_core.eval.baselines import example_from_batch, render_targets
from lrm4d_core.eval.metrics import psnr
from lrm4d_core.eval.protocols import EvalDataset
from lrm4d_core.io.checkpoint import load_checkpoint
from lrm4d_core.model.api import default_checkpoint, reconstruct

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--protocol", default="random")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--checkpoint", default=str(default_checkpoint()))
    parser.add_argument("--view-dependence", type=float, default=0.0, help="strength of the view-dependent opacity")
    parser.add_argument("--nearest-copy", type=float, default=0.0, help="strength of the nearest copy in time")
    args = parser.parse_args()
    model, config, _ = load_checkpoint(args.checkpoint, view_dependence=args.view_dependence, nearest_copy=args.nearest_copy)
    model = model.float().eval()
    dirs = sorted(d for d in Path(args.data).iterdir() if (d / "scene.json").is_file())[: args.scenes]
    ds = EvalDataset([str(d) for d in dirs], args.protocol, image_size=tuple(config.image_size), seed=0)
    for i in range(len(dirs)):
        ex = example_from_batch(ds[i])
        with torch.inference_mode():
            rec = reconstruct(model, ex.images, ex.cameras, ex.times, ground_z=ex.ground_z)
        g = rec.gaussians_model
        V, _, H, W = ex.images.shape
        scores = {"every Gaussian": float(psnr(render_targets(rec, ex.cameras, ex.times, None).double(),
                                               ex.images.double()).mean())}
        for name, own_kept in (("its own alone", True), ("the others alone", False)):
            values = []
            for v in range(V):
                own = torch.zeros(len(g), dtype=torch.bool)
                own[v * H * W:(v + 1) * H * W] = True
                part = replace(rec, gaussians_model=g.select(own if own_kept else ~own), view_dependence=(0.0, 15.0))
                seen = render_targets(part, ex.cameras[v:v + 1], ex.times[v:v + 1], None)
                values.append(float(psnr(seen.double(), ex.images[v:v + 1].double()).mean()))
            scores[name] = sum(values) / len(values)
        print(ex.scene_id, ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()
