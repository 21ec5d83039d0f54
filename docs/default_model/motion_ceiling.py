"""The ceiling of finite-difference motion between two inputs of one camera (docs/default_model/experiments.md).

    python docs/default_model/motion_ceiling.py [--config docs/train_tiny.yaml] [--draws 8]

On the training draws `diagnose_motion.py` uses (steps 4000, 4037, ...), for every input view with
a later partner of the motion prior (`model.motion_prior.partner_views`, radius 8) and every moving
pixel (true speed above 0.05 model units per model time), the velocity a perfect matcher would
report: the true displacement over the gap (true velocity times the gap, from the true depth),
rounded to whole pixels, lifted (a) at the pixel's own depth in the partner camera and (b) with
the partner's true point at the matched pixel. Printed: the share within 30% of the true
(instantaneous) velocity. What remains below 100% is not the matcher's fault: rounding, motion
along the ray, and turning or accelerating movers between the two times.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from lrm4d_core.cameras import pixel_rays, project_points
from lrm4d_core.io.checkpoint import load_checkpoint
from lrm4d_core.model.motion_prior import MotionPriorConstants, _lift, partner_views
from lrm4d_core.train.config import load_train_config
from lrm4d_core.train.loop import draw_examples, example_source, prepare_batch

MOVING = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="docs/train_tiny.yaml", help="training config whose data is drawn")
    parser.add_argument("--draws", type=int, default=8)
    args = parser.parse_args()
    cfg = load_train_config(args.config)
    model, _, _ = load_checkpoint("lrm4d_core/weights/lrm4d_tiny_default.safetensors")  # only to normalize the batch
    source = example_source(cfg)
    constants = MotionPriorConstants(radius=8)
    for k in range(args.draws):
        examples = draw_examples(source, cfg, 4000 + 37 * k, 0)
        batch = prepare_batch(examples, model, torch.device("cpu"))
        B, V, _, H, W = batch.input_images.shape
        origins, dirs = pixel_rays(batch.input_cameras)
        axes = batch.input_cameras.cam_to_world.float()[:, :3, 2]
        z = batch.input_depths.reshape(B * V, H, W)
        ray_depth = z / (dirs.float() * axes[:, None, None]).sum(-1)
        ray_depth = torch.where(torch.isfinite(ray_depth), ray_depth, torch.full_like(ray_depth, 5.0))
        points = (origins.float() + ray_depth[..., None] * dirs.float()).reshape(V, H * W, 3)
        later = partner_views(batch.input_cameras, batch.input_times, ray_depth.reshape(B, V, H, W), constants)[0, :, 1]
        truth = batch.input_velocities[0].reshape(V, H * W, 3)
        own, partner = [], []
        for i in range(V):
            j = int(later[i])
            if j < 0:
                continue
            t = truth[i]
            moving = torch.isfinite(t).all(-1) & (t.nan_to_num(0).norm(dim=-1) > MOVING)
            if not moving.any():
                continue
            dt = float(batch.input_times[0, j] - batch.input_times[0, i])
            cam = batch.input_cameras[[j]]
            uv0, z0 = project_points(points[i][None], cam)
            uv1, _ = project_points((points[i] + t.nan_to_num(0) * dt)[None], cam)
            q = uv0 + (uv1 - uv0).round()
            v_own = (_lift(q, z0, cam)[0] - points[i]) / dt
            grid = (torch.stack([q[..., 0] / W, q[..., 1] / H], -1) * 2 - 1).reshape(1, H, W, 2)
            at_q = F.grid_sample(points[j].reshape(H, W, 3).permute(2, 0, 1)[None], grid, mode="nearest",
                                 align_corners=False)[0].permute(1, 2, 0).reshape(-1, 3)
            v_partner = (at_q - points[i]) / dt
            for out, v in ((own, v_own), (partner, v_partner)):
                out.append((v[moving] - t[moving]).norm(dim=-1) / t[moving].norm(dim=-1))
        if own:
            share = lambda errors: float((torch.cat(errors) < 0.3).float().mean())  # noqa: E731
            print(f"draw {k} ({examples[0]['scene_id']}): within 30% lifted at own depth {share(own):.2f}, "
                  f"with the partner's point {share(partner):.2f}", flush=True)
        else:
            print(f"draw {k} ({examples[0]['scene_id']}): no moving pixel with a partner", flush=True)


if __name__ == "__main__":
    main()
