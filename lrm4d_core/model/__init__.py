"""The 4D-LRM model (SPEC §2): config presets, input builder, transformer, `LRM4D`, inference API.

Names are imported lazily so that `import lrm4d_core.model` (e.g. by the CLI for `model-info`'s
arguments) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "config",
    "PRESETS": "config",
    "preset": "config",
    "build_inputs": "inputs",
    "ModelInputs": "inputs",
    "INPUT_LAYOUT": "inputs",
    "LRM4D": "lrm4d",
    "RawOutput": "lrm4d",
    "Reconstruction": "api",
    "load_model": "api",
    "reconstruct": "api",
    "render": "api",
    "estimate_scene_normalization": "api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
