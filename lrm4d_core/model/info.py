"""`lrm4d model-info`: parameter count, preset, input resolution and patch size of a model.

    lrm4d model-info --preset base --json
    lrm4d model-info --checkpoint runs/tiny/last.safetensors

With `--checkpoint` the numbers come from the file's header alone (no weights are read, nothing is
unpickled); otherwise the preset is built on the meta device, so even `large` costs no memory.
CLI wiring: `add_arguments(parser)` adds the options, `main(args) -> int` runs; importing this
module does not import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["PRESET_NAMES", "add_arguments", "model_info", "main"]

PRESET_NAMES = ("tiny", "small", "base", "large")  # mirrors model.config.PRESETS (checked by a test)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default=None, metavar="NAME",
        help=f"model preset: {', '.join(PRESET_NAMES)} (default: tiny; ignored with --checkpoint)",
    )
    parser.add_argument("--checkpoint", default=None, metavar="FILE", help="a .safetensors checkpoint to describe")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def model_info(preset: str | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """The facts `model-info` prints, as a JSON-safe dict. Raises ValueError / CheckpointError."""
    provenance = None
    if checkpoint is not None:
        from lrm4d_core.io.checkpoint import read_checkpoint_header

        header = read_checkpoint_header(checkpoint)
        config, parameters, provenance = header.config, header.num_parameters, header.provenance
        checkpoint = str(header.path)
    else:
        import torch

        from .config import preset as make_preset
        from .lrm4d import LRM4D

        config = make_preset(preset or "tiny")
        with torch.device("meta"):
            parameters = LRM4D(config, initialize=False).num_parameters()
    out = {
        "preset": config.preset,
        "parameters": parameters,
        "input_resolution": list(config.image_size),
        "patch_size": config.patch_size,
        "hidden": config.hidden,
        "layers": config.layers,
        "heads": config.heads,
        "num_free_tokens": config.num_free_tokens,
        "tokens_per_view": config.tokens_per_view(),
        "checkpoint": checkpoint,
        "config": config.to_dict(),
    }
    if provenance is not None:
        out["provenance"] = provenance
    return out


def main(args: argparse.Namespace) -> int:
    try:
        info = model_info(getattr(args, "preset", None), getattr(args, "checkpoint", None))
    except Exception as exc:  # CheckpointError, unknown preset: one clear line, no traceback
        from lrm4d_core.io.checkpoint import CheckpointError

        if not isinstance(exc, (CheckpointError, ValueError)):
            raise
        print(f"lrm4d model-info: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(info, sort_keys=True))
        return 0
    h, w = info["input_resolution"]
    lines = [
        f"preset:           {info['preset']}",
        f"parameters:       {info['parameters']:,} ({info['parameters'] / 1e6:.1f} M)",
        f"input resolution: {h}x{w} (H x W)",
        f"patch size:       {info['patch_size']} ({info['tokens_per_view']} tokens per view)",
        f"transformer:      hidden {info['hidden']}, {info['layers']} layers, {info['heads']} heads",
        f"free tokens:      {info['num_free_tokens']}",
    ]
    if info["checkpoint"]:
        lines.append(f"checkpoint:       {info['checkpoint']}")
        if info.get("provenance"):
            lines.append(f"provenance:       {json.dumps(info['provenance'], sort_keys=True)}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="lrm4d model-info", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
