"""Model checkpoints: one safetensors file with the JSON config embedded in its metadata header.

Format (version 1), a single file, conventionally `NAME.safetensors`, handy to ship and copy:

- tensors: the `LRM4D.state_dict()` (float32 as trained; any floating dtype is accepted on load
  and cast to the model's dtype).
- `__metadata__` (safetensors metadata is str -> str, so values are JSON-encoded strings):
    "format":          "lrm4d-checkpoint"
    "format_version":  "1"
    "config":          JSON of `ModelConfig.to_dict()`: preset, every hyper-parameter, activation
                       constants, normalization constants (camera_distance, scene_radius)
    "provenance":      JSON object from the trainer (steps, data, git commit, ...), free form
    "lrm4d_version":   package version that wrote the file
    "created_utc":     ISO-8601 time of writing

Loading never unpickles (no torch.load): the header is parsed here as JSON first, so anything that
is not such a file (empty, random bytes, a torch.save zip/pickle, a JSON file, a plain safetensors
file without our metadata, a newer format) fails with `CheckpointError` and a message that says
what the file is and what was expected. Weights are checked strictly against the model that the
stored config builds (its shapes taken from a meta-device model, so nothing is allocated before the
check passes): missing, unexpected and shape-mismatched keys are all listed by name, and weights
that are not finite are rejected.

A directory is accepted where a path is expected if it holds exactly one `*.safetensors` file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from lrm4d_core import __version__

__all__ = [
    "CheckpointError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "save_checkpoint",
    "convert_checkpoint",
    "load_checkpoint",
    "read_checkpoint_header",
    "CheckpointHeader",
]

FORMAT_NAME = "lrm4d-checkpoint"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


class CheckpointError(Exception):
    """A file is not a usable lrm4d checkpoint; the message says why."""


class CheckpointHeader:
    """What the header of a checkpoint says, read without touching the weights.

    Attributes:
        path: the file.
        config: the `ModelConfig`.
        provenance: dict.
        metadata: the raw str -> str metadata.
        tensors: name -> (dtype string, shape tuple) of every stored tensor.
    """

    def __init__(self, path: Path, config: Any, provenance: dict, metadata: dict, tensors: dict) -> None:
        self.path = path
        self.config = config
        self.provenance = provenance
        self.metadata = metadata
        self.tensors = tensors

    @property
    def num_parameters(self) -> int:
        total = 0
        for _, shape in self.tensors.values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise CheckpointError(f"{path} is a directory with {len(files)} *.safetensors files; name the file")
        path = files[0]
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file")
    return path


def _sniff(head: bytes) -> str:
    """A guess at what a non-checkpoint file is, for the error message."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save writes these; it would need unpickling, which lrm4d never does)"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "a Python pickle (torch.save legacy format; lrm4d never unpickles)"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "a JSON/text file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    return "not a safetensors file"


def read_checkpoint_header(path: str | os.PathLike) -> CheckpointHeader:
    """Parse and validate the header of a checkpoint (no weights are read)."""
    from lrm4d_core.model.config import ModelConfig

    path = _resolve(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if size == 0:
            raise CheckpointError(f"{path} is empty, not an lrm4d checkpoint")
        if len(head) < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short for a safetensors header: {_sniff(head)}")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > _MAX_HEADER or n > size - 8:
            raise CheckpointError(f"{path} is not an lrm4d checkpoint (safetensors): {_sniff(head)}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is not an lrm4d checkpoint: its safetensors header is not JSON ({_sniff(head)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not an lrm4d checkpoint: malformed safetensors header")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not an lrm4d checkpoint: malformed safetensors metadata")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a safetensors file but not an lrm4d checkpoint "
            f"(metadata 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r})"
        )
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: bad format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this lrm4d ({__version__}) reads version "
            f"{FORMAT_VERSION} (upgrade lrm4d to read newer files)"
        )
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except KeyError:
        raise CheckpointError(f"{path}: checkpoint has no 'config' metadata") from None
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint config is invalid: {exc}") from None
    try:
        provenance = json.loads(meta.get("provenance", "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: provenance metadata is not JSON: {exc}") from None
    tensors = {}
    data_end = 0
    for name, info in header.items():
        try:
            tensors[name] = (str(info["dtype"]), tuple(int(s) for s in info["shape"]))
            data_end = max(data_end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise CheckpointError(f"{path}: malformed entry {name!r} in the safetensors header") from None
    if 8 + n + data_end != size:
        raise CheckpointError(
            f"{path} is truncated or corrupt: its header describes {8 + n + data_end} bytes, the file has {size}"
        )
    return CheckpointHeader(path, config, provenance, meta, tensors)


def _check_keys(path: Path, stored: dict[str, tuple[str, tuple[int, ...]]], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    mismatched = sorted(
        f"{k}: file {list(stored[k][1])} vs model {list(expected[k].shape)}"
        for k in set(stored) & set(expected)
        if tuple(stored[k][1]) != tuple(expected[k].shape)
    )
    not_float = sorted(k for k, (dtype, _) in stored.items() if k in expected and not dtype.startswith(("F", "BF")))
    if missing or unexpected or mismatched or not_float:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append(f"shape mismatches [{'; '.join(mismatched)}]")
        if not_float:
            parts.append(f"non-float tensors {not_float}")
        raise CheckpointError(
            f"{path} does not match the model its config describes: " + ", ".join(parts)
        )


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    config: Any | None = None,
    provenance: dict | None = None,
) -> Path:
    """Write `model`'s weights and `config` (default `model.config`) to one safetensors file.

    The file is written to a temporary name and renamed, so a crash never leaves a half file under
    the final name. `provenance` must be JSON-serializable. Returns the path written.
    """
    from safetensors.torch import save_file

    config = config if config is not None else model.config
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(path.suffix + ".safetensors") if path.suffix else path.with_suffix(".safetensors")
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
        "lrm4d_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", **config_overrides: Any):
    """Build the model a checkpoint describes and load its weights, with no unpickling.

    Args:
        path: the `.safetensors` file (or a directory holding exactly one).
        device: where the model goes.
        config_overrides: run-time fields to change, e.g. grad_checkpointing=True; fields that
            change parameter shapes will then fail the strict check (by design).
    Returns:
        (model in eval mode, ModelConfig, provenance dict)
    """
    from safetensors import SafetensorError, safe_open

    from lrm4d_core.model.lrm4d import LRM4D

    header = read_checkpoint_header(path)
    config = header.config.replace(**config_overrides) if config_overrides else header.config
    # the stored shapes are checked against the model the config describes before anything is
    # allocated: a config claiming a huge model next to small weights fails here, at no cost
    with torch.device("meta"):
        shapes = LRM4D(config, initialize=False).state_dict()
    _check_keys(header.path, header.tensors, shapes)
    state = {}
    try:
        with safe_open(str(header.path), framework="pt", device="cpu") as f:
            for name in shapes:
                state[name] = f.get_tensor(name)
    except SafetensorError as exc:
        raise CheckpointError(f"{header.path}: corrupt or truncated safetensors data ({exc})") from None
    bad = sorted(name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if bad:
        raise CheckpointError(f"{header.path}: non-finite weights (NaN or inf) in {bad[:5]}"
                              + (f" and {len(bad) - 5} more" if len(bad) > 5 else "") + "; the file is unusable")
    model = LRM4D(config, initialize=False)  # strict loading below sets every parameter
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return model, config, header.provenance


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype = torch.float16,
                       provenance_update: dict | None = None) -> Path:
    """Copy a checkpoint with its floating-point weights cast to `dtype` (e.g. to ship a smaller
    file; `load_checkpoint` casts back to the model's dtype). Header and provenance are kept, with
    `provenance_update` merged in; the tensors are checked against the stored config first."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    model, config, provenance = load_checkpoint(src, device="cpu")
    header = read_checkpoint_header(src)
    with safe_open(str(header.path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata())
    meta["provenance"] = json.dumps({**provenance, **(provenance_update or {}), "stored_dtype": str(dtype)}, sort_keys=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, dst)
    return dst
