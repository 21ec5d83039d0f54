"""Exact-resume training state without pickle: model checkpoint + optimizer/scheduler/RNG in safetensors.

Layout under `<out_dir>/checkpoints/`:
    step_0000500.safetensors         the model checkpoint (io.checkpoint format; shippable as is)
    step_0000500.train.safetensors   optimizer moments and RNG states, with a JSON header holding
                                     the optimizer's param_groups, the scheduler state and counters
    latest                           text file naming the newest step file
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lrm4d_core.io.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["TrainingState", "save_training_state", "load_training_state", "latest_checkpoint"]


@dataclass
class TrainingState:
    step: int
    counters: dict[str, int]


def _flatten_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in opt_state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{idx}/{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def save_training_state(
    out_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    counters: dict[str, int],
    provenance: dict[str, Any],
) -> Path:
    """Write the model checkpoint and the resume state for `step` (call on rank 0 only)."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stem = f"step_{step:07d}"
    model_path = save_checkpoint(ckpt_dir / f"{stem}.safetensors", model, provenance=provenance | {"step": step})
    tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    meta = {
        "step": str(step),
        "optimizer": json.dumps(opt_meta),
        "scheduler": json.dumps(scheduler.state_dict()),
        "counters": json.dumps(dict(counters)),
    }
    tmp = ckpt_dir / f"{stem}.train.safetensors.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, ckpt_dir / f"{stem}.train.safetensors")
    (ckpt_dir / "latest.tmp").write_text(stem + "\n")
    os.replace(ckpt_dir / "latest.tmp", ckpt_dir / "latest")
    return model_path


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest model checkpoint of a run, or None if the run has none yet."""
    pointer = Path(out_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    return pointer.parent / f"{pointer.read_text().strip()}.safetensors"


def load_training_state(
    model_path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> TrainingState:
    """Restore weights, optimizer, scheduler and RNG from a `save_training_state` pair."""
    model_path = Path(model_path)
    loaded, _, _ = load_checkpoint(model_path, device="cpu")
    model.load_state_dict(loaded.state_dict())
    train_path = model_path.with_name(model_path.name.replace(".safetensors", ".train.safetensors"))
    with safe_open(str(train_path), framework="pt", device="cpu") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    opt_meta = json.loads(meta["optimizer"])
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in opt_meta["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    scheduler.load_state_dict(json.loads(meta["scheduler"]))
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return TrainingState(int(meta["step"]), json.loads(meta["counters"]))
