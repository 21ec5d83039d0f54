"""What makes an input view's own Gaussians re-render it badly: the network's residuals, one at a
time replaced by the prior's own values (docs/default_model/experiments.md, "Why the interpolation inputs
fall short").

    python docs/default_model/own_gaussians_diag.py data/val_object --protocol interpolation [--scene 0] [--views 3]

For the first `--views` inputs of one scene, the view rendered from its own pixel-aligned Gaussians
alone (no view-dependent opacity), against the input image (PSNR), and what those Gaussians are
like where they show (opacity > 0.05): the opacity-weighted temporal marginal at the view's own
time and the opacity share below 0.5 there; the colour residual (mean |colour - pixel|); the
largest spatial scale in pixel footprints (median); the centre's offset from its pixel's ray in
pixels (median). Then the same render with the residuals replaced by the prior's values: centres
back at the view's time and on the pixel's ray, colours the pixel's, and isotropic scales of
0.1 / 0.3 footprints (the prior's own is 0.7; at 64 px that blurs by a pixel).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from lrm4d_core.cameras import pixel_rays
from lrm4d_core.eval.baselines import example_from_batch, render_targets
from lrm4d_core.eval.metrics import psnr
from lrm4d_core.eval.protocols import EvalDataset
from lrm4d_core.io.checkpoint import load_checkpoint
from lrm4d_core.model.api import default_checkpoint, reconstruct
from lrm4d_core.model.view_weight import VIEW_DEPENDENCE_OFF

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--protocol", default="interpolation")
    parser.add_argument("--scene", type=int, default=0)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--checkpoint", default=str(default_checkpoint()))
    args = parser.parse_args()
    model, config, _ = load_checkpoint(args.checkpoint)
    model = model.float().eval()
    scene = sorted(d for d in Path(args.data).iterdir() if (d / "scene.json").is_file())[args.scene]
    ex = example_from_batch(EvalDataset([str(scene)], args.protocol, image_size=tuple(config.image_size), seed=0)[0])
    with torch.inference_mode():
        rec = reconstruct(model, ex.images, ex.cameras, ex.times, ground_z=ex.ground_z)
    g, cams, times = rec.gaussians_model, rec.model_cameras, rec.model_times
    V, _, H, W = ex.images.shape
    origins, directions = pixel_rays(cams)
    for v in range(min(args.views, V)):
        own = g.select(torch.arange(v * H * W, (v + 1) * H * W))
        image = ex.images[v:v + 1].double()

        def score(gaussians) -> float:
            part = replace(rec, gaussians_model=gaussians, view_dependence=VIEW_DEPENDENCE_OFF)
            return float(psnr(render_targets(part, ex.cameras[v:v + 1], ex.times[v:v + 1], None).double(), image).mean())

        shows = own.opacities > 0.05
        weight = own.opacities[shows] / own.opacities[shows].sum()
        marginal = own.marginal_t(times[v])[shows]
        pixels = ex.images[v].permute(1, 2, 0).reshape(-1, 3).to(own.colors)
        c2w = cams.cam_to_world[v].to(own.means)
        rel = (own.means[:, :3] - c2w[:3, 3]) @ c2w[:3, :3]  # camera frame
        z = rel[:, 2]
        focal = float(cams.K[v, 0, 0])
        footprint = z / focal
        rays = directions[v].reshape(-1, 3).to(z)
        on_ray = origins[v].reshape(-1, 3).to(z) + (z / (rays @ c2w[:3, 2]))[:, None] * rays  # same depth, on the ray
        offset_px = (own.means[:, :3] - on_ray).norm(dim=-1) / footprint
        print(f"view {v} ({scene.name}, {args.protocol}): own alone {score(own):.2f} dB; where it shows: "
              f"temporal marginal at its time {float((weight * marginal).sum()):.2f} "
              f"(opacity below 0.5: {float(weight[marginal < 0.5].sum()):.2f}), "
              f"colour residual {float((own.colors - pixels).abs()[shows].mean()):.3f}, "
              f"largest scale {float((own.scales[shows, :3].amax(-1) / footprint[shows]).median()):.2f} footprints, "
              f"offset {float(offset_px[shows].median()):.2f} px", flush=True)
        at_time = torch.cat([on_ray, times[v].expand(len(own))[:, None].to(z)], dim=-1)
        prior_like = replace(own, means=at_time, colors=pixels.clone())
        identity = torch.zeros_like(own.q_left)
        identity[:, 0] = 1.0

        def isotropic(k: float):  # the prior-like set with round Gaussians of k footprints
            scales = torch.cat([(k * footprint)[:, None].expand(-1, 3), own.scales[:, 3:]], dim=-1)
            return replace(prior_like, scales=scales, q_left=identity, q_right=identity)

        print(f"  own time + on its ray + pixel colours: {score(prior_like):.2f} dB; and isotropic scales "
              + ", ".join(f"{k} footprints {score(isotropic(k)):.2f} dB" for k in (0.1, 0.3)), flush=True)


if __name__ == "__main__":
    main()
