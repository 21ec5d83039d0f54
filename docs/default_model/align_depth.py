"""Depth of the input pixels' Gaussians with and without the view alignment (docs/default_model/experiments.md).

    python docs/default_model/align_depth.py DATA_DIR [--protocol alternating] [--scenes 2]
        [--checkpoint lrm4d_core/weights/lrm4d_tiny_default.safetensors]

For the first scenes of DATA_DIR under an evaluation protocol (the inputs `lrm4d eval` gives the
model), reconstructs with the checkpoint as shipped and with its `prior.align` turned off, and
compares each foreground input pixel's Gaussian (its z in its own camera) with the true depth of
that pixel: mean |log(z / z_true)|, the share within 2% and 5%, the per-view bias (the median
log ratio of a view, whose spread over the views is what the alignment removes: its mean
magnitude, its range, the median spread within a view, and per camera the mean and spread of its
views' biases over time), and the mean reconstruct time (one thread: run it with
OMP_NUM_THREADS=1 on an idle core). The model-free reference: the same network with a head that
outputs zeros, i.e. every pixel at the prior's depth (the heuristic-depth splats' guess), without
the alignment. Foreground: not the background colour, as the model sees it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lrm4d_core.eval.baselines import _timed_reconstruct, example_from_batch
from lrm4d_core.eval.protocols import EvalDataset
from lrm4d_core.io.checkpoint import load_checkpoint

DEFAULT = Path(__file__).resolve().parents[2] / "lrm4d_core" / "weights" / "lrm4d_tiny_default.safetensors"


def log_errors(model, data: str, protocol: str, scenes: int) -> tuple[torch.Tensor, list[tuple[int, float, float]], float]:
    """(log(z / z_true) of every foreground input pixel with a finite true depth, per view
    (camera key, median, median absolute deviation), mean reconstruct seconds)."""
    ds = EvalDataset([data], protocol, image_size=model.config.image_size, seed=0, with_depth=True)
    errors, views, seconds = [], [], []
    background = torch.tensor(model.config.background, dtype=torch.float64)
    for i in range(min(scenes, len(ds))):
        ex = example_from_batch(ds[i])
        rec, dt = _timed_reconstruct(model, ex.images, ex.cameras, ex.times, ground_z=ex.ground_z)
        seconds.append(dt)
        V, _, H, W = ex.images.shape
        c2w = ex.cameras.cam_to_world.double()
        means = rec.gaussians.means[: V * H * W, :3].reshape(V, H * W, 3).double()
        z = torch.einsum("vnk,vk->vn", means - c2w[:, None, :3, 3], c2w[:, :3, 2]).reshape(V, H, W)
        truth = ex.input_depths.double()
        foreground = (ex.images.double() - background[None, :, None, None]).abs().amax(1) >= model.config.prior.background_tolerance
        for v, (camera, _) in enumerate(ex.input_pairs):
            valid = foreground[v] & torch.isfinite(truth[v]) & (truth[v] > 0)
            if valid.sum() >= 10:
                e = torch.log(z[v][valid] / truth[v][valid])
                errors.append(e)
                views.append((i * 1000 + camera, float(e.median()), float((e - e.median()).abs().median())))
    return torch.cat(errors), views, sum(seconds) / len(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--protocol", default="alternating")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--checkpoint", default=str(DEFAULT))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    shipped, config, _ = load_checkpoint(args.checkpoint)
    off = load_checkpoint(args.checkpoint, prior={"align": {"search": 0.0}})[0]
    heuristic = load_checkpoint(args.checkpoint, prior={"align": {"search": 0.0}})[0]
    heuristic.pixel_head.weight.data.zero_(), heuristic.pixel_head.bias.data.zero_()
    print(f"{args.data} / {args.protocol}, {args.scenes} scenes; shipped align: {config.prior.align}")
    for name, model in (("prior depth (no network)", heuristic), ("alignment off", off), ("as shipped", shipped)):
        e, views, seconds = log_errors(model.float(), args.data, args.protocol, args.scenes)
        bias = torch.tensor([m for _, m, _ in views])
        cameras: dict[int, list[float]] = {}
        for key, m, _ in views:
            cameras.setdefault(key, []).append(m)
        per_camera = [(sum(ms) / len(ms), float(torch.tensor(ms).std()) if len(ms) > 1 else 0.0) for ms in cameras.values()]
        print(f"  {name:24s} mean |log z/z_true| {float(e.abs().mean()):.4f}  within 2% {float((e.abs() < 0.02).double().mean()):.3f}"
              f"  within 5% {float((e.abs() < 0.05).double().mean()):.3f}; reconstruct {seconds:.3f} s (views {len(views)}, pixels {len(e)})")
        print(f"  {'':24s} per-view bias: mean |median| {float(bias.abs().mean()):.3f}, range {float(bias.min()):+.3f} to {float(bias.max()):+.3f},"
              f" spread within a view (MAD, median over views) {float(torch.tensor([d for _, _, d in views]).median()):.3f};"
              f" per camera (scene*1000+view) mean / std over time: "
              + ", ".join(f"{k}: {mu:+.3f}/{sd:.3f}" for k, (mu, sd) in zip(cameras, per_camera)))


if __name__ == "__main__":
    main()
