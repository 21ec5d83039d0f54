"""Input-pixel depth error by true distance, on driving or workspace scenes (docs/default_model/experiments.md).

    python docs/default_model/depth_by_range.py data/val_driving [--scenes 2] [--checkpoint CKPT]

Under the surround `random` protocol (the inputs `lrm4d eval` gives the model), each input pixel's
Gaussian depth (its z in its own camera) against the true depth of that pixel, over every pixel
with a finite true depth (sky excluded): per band of true distance the share of pixels, the
median ratio z / z_true and the share within 25% (δ<1.25), for the checkpoint and for the
model-free reference beside it: the same network with a head that outputs zeros, every pixel at
the prior's depth (the ground plane where the ray meets it, else the dome). Why: driving's
held-out depth δ falls short, and this says where.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lrm4d_core.eval.baselines import _timed_reconstruct, example_from_batch
from lrm4d_core.eval.protocols import EvalDataset
from lrm4d_core.io.checkpoint import load_checkpoint

DEFAULT = Path(__file__).resolve().parents[2] / "lrm4d_core" / "weights" / "lrm4d_tiny_default.safetensors"
BANDS = ((0, 4), (4, 8), (8, 15), (15, 25), (25, 40), (40, float("inf")))


def input_depths(model, data: str, scenes: int) -> tuple[np.ndarray, np.ndarray]:
    """(decoded z, true z) of every input pixel with a finite true depth in the first scenes."""
    ds = EvalDataset([data], "random", image_size=model.config.image_size, seed=0, with_depth=True)
    decoded, truth = [], []
    for i in range(min(scenes, len(ds))):
        ex = example_from_batch(ds[i])
        rec, _ = _timed_reconstruct(model, ex.images, ex.cameras, ex.times, ground_z=ex.ground_z)
        V, _, H, W = ex.images.shape
        c2w = ex.cameras.cam_to_world.double()
        means = rec.gaussians.means[: V * H * W, :3].reshape(V, H * W, 3).double()
        z = torch.einsum("vnk,vk->vn", means - c2w[:, None, :3, 3], c2w[:, :3, 2]).reshape(V, H, W)
        true = ex.input_depths.double()
        valid = torch.isfinite(true) & (true > 0)
        decoded.append(z[valid])
        truth.append(true[valid])
    return torch.cat(decoded).numpy(), torch.cat(truth).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--checkpoint", default=str(DEFAULT))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load_checkpoint(args.checkpoint)[0].float().eval()
    prior_only = load_checkpoint(args.checkpoint)[0].float().eval()
    prior_only.pixel_head.weight.data.zero_(), prior_only.pixel_head.bias.data.zero_()
    for name, m in (("checkpoint", model), ("prior depth (no network)", prior_only)):
        z, true = input_depths(m, args.data, args.scenes)
        log_ratio = np.log(z / true)
        within = np.abs(log_ratio) < np.log(1.25)
        print(f"{name}: {len(z)} pixels, mean |log z/z_true| {np.abs(log_ratio).mean():.3f}, δ<1.25 {within.mean():.3f}")
        for lo, hi in BANDS:
            band = (true >= lo) & (true < hi)
            if band.sum() >= 20:
                print(f"  true {lo:g}-{hi:g} m: share {band.mean():.2f}, median z/z_true "
                      f"{np.exp(np.median(log_ratio[band])):.3f}, δ<1.25 {within[band].mean():.3f}")


if __name__ == "__main__":
    main()
