"""`lrm4d eval` of a variant of a checkpoint: config overrides, and optionally a time preference at
render time (docs/default_model/experiments.md, session 11). An experiment harness, not a feature.

    python docs/default_model/variant_eval.py [--checkpoint CKPT] [--override JSON]
        [--time-preference S W] -- EVAL_ARGS...

- `--override` changes `ModelConfig` fields the way `load_checkpoint(CKPT, **overrides)` does
  (partial `prior.motion` / `prior.align` dicts keep the other constants), e.g.
  '{"view_dependence_deg": 8}' or, to ship a training step as the shipped file is,
  '{"prior": {"motion": {"radius": 8}}, "facing_inward": true}'. The variant is saved in float16,
  as the shipped file is, to a temporary file and evaluated with `lrm4d eval --checkpoint` it.
- `--time-preference S W`: each render at time t also multiplies the opacity of input j's
  Gaussians by 1 - S (1 - exp(-e^2 / 2)), e = (|t - t_j| - min_k |t - t_k|) / (W input-time
  gaps), on top of the view-dependent opacity. It wraps `Reconstruction.view_cloud` (to learn t)
  and `model.api.rasterize_over`; nothing in the package has it.

EVAL_ARGS are `lrm4d eval`'s arguments without `--checkpoint`, e.g. `--data data/val_object
--protocols random --max-scenes 2 --no-fit --no-figure --out OUT`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

import lrm4d_core.model.api as api
from lrm4d_core.cli import main as lrm4d
from lrm4d_core.io.checkpoint import convert_checkpoint, load_checkpoint, save_checkpoint

DEFAULT = Path(__file__).resolve().parents[2] / "lrm4d_core" / "weights" / "lrm4d_tiny_default.safetensors"


def install_time_preference(strength: float, width_gaps: float) -> None:
    """Wrap the render path so that the input nearest in time to a render dominates (docstring)."""
    render_time: dict = {}
    view_cloud, rasterize_over = api.Reconstruction.view_cloud, api.rasterize_over

    def timed_view_cloud(self, t, forecast_from=None, inference_filter=True):
        at = t if forecast_from is None else min(t, forecast_from)
        render_time.update(rec=self, t=float(self.time.to_model(at)))
        return view_cloud(self, t, forecast_from, inference_filter)

    def preferring_rasterize_over(rec, cloud, cameras, background=None, backend="auto", views=None):
        if views is not None and render_time.get("rec") is rec:
            times = rec.model_times.to(cloud.means).flatten()
            distinct = torch.unique(times)
            gap = float(torch.diff(distinct).median()) if len(distinct) > 1 else 1.0
            late = (times - render_time["t"]).abs()
            index = torch.where(views.index >= len(times), views.index - len(times), views.index)  # own-view splats: their view
            excess = (late[index] - late.min()) / (gap * width_gaps)
            cloud = replace(cloud, opacities=cloud.opacities * (1 - strength * (1 - torch.exp(-0.5 * excess**2))))
        return rasterize_over(rec, cloud, cameras, background, backend, views)

    api.Reconstruction.view_cloud = timed_view_cloud
    api.rasterize_over = preferring_rasterize_over


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT))
    parser.add_argument("--override", default="{}", help="JSON object of ModelConfig overrides")
    parser.add_argument("--time-preference", nargs=2, type=float, metavar=("S", "W"))
    parser.add_argument("eval_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    eval_args = args.eval_args[1:] if args.eval_args[:1] == ["--"] else args.eval_args
    if args.time_preference:
        install_time_preference(*args.time_preference)
    with tempfile.TemporaryDirectory() as tmp:
        model, _, provenance = load_checkpoint(args.checkpoint, **json.loads(args.override))
        full = save_checkpoint(Path(tmp) / "variant32.safetensors", model.float(), provenance=provenance)
        variant = convert_checkpoint(full, Path(tmp) / "variant.safetensors", torch.float16)
        return lrm4d(["eval", "--checkpoint", str(variant), *eval_args])


if __name__ == "__main__":
    sys.exit(main())
