"""How the known ground plane changes the decoded depth of the input pixels (session 6).

For the first two scenes of each data directory (protocol "random"): which input pixels the shipped
model puts on the ground (ground_z 0, the synthesizer's floor and road), how many of those truly
see the ground (true depth within 1% of the ray's ground hit), how many true-ground pixels it
snaps, and the share of input pixels whose decoded depth is within 1% / 25% of the truth, without
and with the ground.

    python docs/default_model/ground_diag.py data/val_driving data/val_workspace [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse

import torch

from lrm4d_core.cameras import pixel_rays
from lrm4d_core.eval.baselines import example_from_batch
from lrm4d_core.eval.protocols import EvalDataset
from lrm4d_core.eval.references import true_ray_depth
from lrm4d_core.eval.run import scene_info
from lrm4d_core.model.api import default_checkpoint, load_model, reconstruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--checkpoint", default=str(default_checkpoint()))
    parser.add_argument("--scenes", type=int, default=2)
    args = parser.parse_args()
    model = load_model(args.checkpoint, device="cpu")
    for root in args.data:
        ds = EvalDataset([root], "random", with_depth=True)
        for i in range(min(args.scenes, len(ds))):
            ex = example_from_batch(ds[i])
            V, _, H, W = ex.images.shape
            o, d = pixel_rays(ex.cameras.to(dtype=torch.float64))
            true_depth, _ = true_ray_depth(ex.input_depths, ex.cameras, scene_info(ds.meta(i)))
            depth = {}
            for ground_z in (None, 0.0):
                g = reconstruct(model, ex.images, ex.cameras, ex.times, world=False, ground_z=ground_z).gaussians
                depth[ground_z] = ((g.means[: V * H * W, :3].double().reshape(V, H, W, 3) - o) * d).sum(-1)
            hit = -o[..., 2] / d[..., 2]
            snapped = (depth[0.0] - depth[None]).abs() > 1e-6
            ground = (d[..., 2] < 0) & ((true_depth - hit).abs() < 0.01 * hit)
            finite = torch.isfinite(ex.input_depths)
            err = {k: ((v - true_depth).abs() / true_depth)[finite] for k, v in depth.items()}

            def share(mask):
                return float(mask.double().mean())

            print(f"{root} scene {i}: snapped {share(snapped):.3f} of the input pixels, {share(ground[snapped]):.3f} of them "
                  f"truly ground; {share(snapped[ground]):.3f} of the true-ground pixels snapped; depth within 1%: "
                  f"{share(err[None] < 0.01):.3f} -> {share(err[0.0] < 0.01):.3f}, within 25%: "
                  f"{share(err[None] < 0.25):.3f} -> {share(err[0.0] < 0.25):.3f}", flush=True)


if __name__ == "__main__":
    main()
