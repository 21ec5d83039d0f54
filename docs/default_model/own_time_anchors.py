"""`lrm4d eval` with own-time anchors: a second pixel-aligned layer of small Gaussians that keeps
what each input pixel saw at the time it saw it (docs/default_model/experiments.md, "Own-time
anchors for the inputs", session 23; not shipped). An experiment harness, not a feature.

    python docs/default_model/own_time_anchors.py [--scale 0.2] [--width 0.25] [--gate 1.0]
        [--view-gate 1.0] [--unweighted] -- EVAL_ARGS...

For every input pixel that does not show the model's background colour, an anchor Gaussian:
- at its view's own time, on the pixel's ray, at the depth of the pixel's network Gaussian at
  that time (its centre moved along its velocity, then projected onto the ray);
- isotropic, `--scale` pixel footprints wide in space and `--width` input-time gaps long;
- of the pixel's colour, with no velocity;
- with opacity `PriorConstants.opacity` times (1 - m), m the network Gaussian's temporal marginal
  at that time (what that Gaussian leaves unseen there), or the full opacity with `--unweighted`;
- only where m < `--gate`, and only in views whose foreground Gaussians' opacity-weighted mean m
  is below `--view-gate`.

The anchors are appended after the pixel-aligned Gaussians as a second layer in the same
view-major order, and `pixel_views` is wrapped so that each anchor takes its view's
view-dependent opacity. It wraps `model.thickness.thickened` as `decode_prior` calls it (the
shipped file has the thickness on, so every rig goes through it), which is where the
held-still, carved Gaussians are final. EVAL_ARGS are `lrm4d eval`'s, `--checkpoint` included,
e.g. `--checkpoint lrm4d_core/weights/lrm4d_tiny_default.safetensors --data data/val_object8
--protocols interpolation --max-scenes 2 --no-fit --no-figure --out OUT`.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import Tensor

import lrm4d_core.model.api as api
import lrm4d_core.model.lrm4d as lrm4d_module
import lrm4d_core.model.prior as prior_module
from lrm4d_core.cli import main as lrm4d
from lrm4d_core.gaussians import Gaussians4D


def own_time_anchors(gaussians: Gaussians4D, pixels: Tensor, is_background: Tensor, ray_origins: Tensor,
                     ray_directions: Tensor, focal: Tensor, times: Tensor, gap: Tensor, opacity: float,
                     args: argparse.Namespace) -> Gaussians4D:
    """[B, V*H*W] anchors (module docstring) for the pixel-aligned `gaussians` [B, V*H*W, ...];
    pixels [B, V*H*W, 3]; is_background [B, V, H, W]; focal, times [B, V]; gap [B]."""
    B, V, H, W = is_background.shape
    n = V * H * W
    own_t = times[:, :, None].expand(B, V, H * W).reshape(B, n)
    sigma_tt, velocity, _ = gaussians._conditional
    lag = own_t - gaussians.means[..., 3]
    marginal = torch.exp(-0.5 * lag**2 / sigma_tt)
    at_own_time = gaussians.means[..., :3] + velocity * lag[..., None]
    along = ((at_own_time - ray_origins) * ray_directions).sum(-1, keepdim=True) / (ray_directions**2).sum(-1, keepdim=True)
    footprint = along / focal[:, :, None].expand(B, V, H * W).reshape(B, n, 1)
    foreground = (~is_background).reshape(B, V, H * W).to(marginal)
    weight = foreground * gaussians.opacities.reshape(B, V, H * W)
    view_marginal = (weight * marginal.reshape(B, V, H * W)).sum(-1) / weight.sum(-1).clamp_min(1e-12)  # [B, V]
    in_view = (view_marginal < args.view_gate)[:, :, None].expand(B, V, H * W).reshape(B, n)
    seen = (~is_background.reshape(B, n)) & (marginal < args.gate) & in_view
    share = torch.ones_like(marginal) if args.unweighted else 1.0 - marginal
    identity = torch.zeros(B, n, 4, dtype=gaussians.means.dtype, device=gaussians.means.device)
    identity[..., 0] = 1.0
    return Gaussians4D(
        means=torch.cat([ray_origins + along * ray_directions, own_t[..., None]], dim=-1),
        scales=torch.cat([(args.scale * footprint).expand(B, n, 3), (args.width * gap)[:, None, None].expand(B, n, 1)], -1),
        q_left=identity,
        q_right=identity.clone(),
        opacities=opacity * share * seen.to(share),
        colors=pixels,
    )


def install(args: argparse.Namespace) -> None:
    """Wrap `decode_prior` (to see the inputs), `thickened` (to append the anchors) and `pixel_views`."""
    seen: dict = {}
    decode_prior, thickened, pixel_views = lrm4d_module.decode_prior, prior_module.thickened, api.pixel_views

    def recording_decode_prior(raw, images, cameras, times, *rest, **options):
        seen.update(images=images, opacity=rest[4].opacity)  # rest: rays, directions, prior, background, constants
        return decode_prior(raw, images, cameras, times, *rest, **options)

    def anchored_thickened(gaussians, is_background, ray_origins, ray_directions, cameras, focal, times, gap, *rest, **options):
        out = thickened(gaussians, is_background, ray_origins, ray_directions, cameras, focal, times, gap, *rest, **options)
        images = seen["images"]
        pixels = images.permute(0, 1, 3, 4, 2).reshape(images.shape[0], -1, 3).to(gaussians.means)
        anchors = own_time_anchors(gaussians, pixels, is_background, ray_origins, ray_directions, focal, times, gap,
                                   seen["opacity"], args)
        return Gaussians4D.cat([out, anchors])

    def layered_pixel_views(views, pixels_per_view, count, device="cpu"):
        if count == 2 * views * pixels_per_view:  # the pixel-aligned layer, then the anchors' layer
            return torch.arange(views, device=device).repeat_interleave(pixels_per_view).repeat(2)
        return pixel_views(views, pixels_per_view, count, device)

    lrm4d_module.decode_prior, prior_module.thickened, api.pixel_views = recording_decode_prior, anchored_thickened, layered_pixel_views


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.2, help="spatial standard deviation, pixel footprints")
    parser.add_argument("--width", type=float, default=0.25, help="temporal standard deviation, input-time gaps")
    parser.add_argument("--gate", type=float, default=1.0, help="anchor only where the marginal at the own time is below")
    parser.add_argument("--view-gate", type=float, default=1.0,
                        help="anchor only views whose foreground's mean marginal at their own time is below")
    parser.add_argument("--unweighted", action="store_true", help="full opacity instead of 1 - marginal")
    parser.add_argument("eval_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    install(args)
    eval_args = args.eval_args[1:] if args.eval_args[:1] == ["--"] else args.eval_args
    return lrm4d(["eval", *eval_args])


if __name__ == "__main__":
    sys.exit(main())
