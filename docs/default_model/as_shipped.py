"""Give a trained checkpoint the embedded default's inference-time config, saved as float16.

    python docs/default_model/as_shipped.py TRAINED.safetensors OUT.safetensors [--reference CKPT]

Why: the shipped file's no-learning steps (the motion prior, ground snapping and discs, view
alignment, stereo, carving, thickness, nearest copy, view-dependent opacity, own-view splats; docs/default_model.md,
"What the model is") live in its recorded config, not in its weights. A checkpoint fresh from
`lrm4d train` has the preset's config, with them off, so comparing it with the shipped file as it
stands would compare the steps, not the networks. This copies the reference's `prior`,
`view_dependence`, `view_dependence_deg`, `nearest_copy` and `own_view` onto the trained weights (nothing that
changes a parameter shape) and converts to float16 as the shipped file is. `facing_inward` stays the trained model's: it is the normalization the network
was trained with. bench/gpu_run.sh uses it for the `small` preset trained on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from lrm4d_core.io.checkpoint import convert_checkpoint, load_checkpoint, save_checkpoint
from lrm4d_core.model.api import default_checkpoint

INFERENCE_FIELDS = ("prior", "view_dependence", "view_dependence_deg", "nearest_copy", "own_view")


def as_shipped(trained: Path, out: Path, reference: Path) -> None:
    """Write `trained`'s weights with `reference`'s inference-time fields to `out` (float16)."""
    _, ref_config, _ = load_checkpoint(reference)
    # fields that change no parameter shape: load_checkpoint's strict check keeps the weights as stored
    model, config, provenance = load_checkpoint(trained, **{k: getattr(ref_config, k) for k in INFERENCE_FIELDS})
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.safetensors"
        save_checkpoint(full, model, config, provenance | {"inference_config_from": str(reference)})
        convert_checkpoint(full, out, torch.float16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trained", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--reference", type=Path, default=None, help="default: the embedded default model")
    args = parser.parse_args()
    reference = args.reference or default_checkpoint()
    if reference is None:
        parser.error("no embedded default model in this build; give --reference")
    as_shipped(args.trained, args.out, reference)
    print(f"wrote {args.out} with the inference-time config of {reference}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
