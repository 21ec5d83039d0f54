"""Training configuration, read from a YAML or JSON file (`lrm4d train --config FILE`).

Every field has a default, so a file names only what it changes. Unknown keys are errors: a typo
must not silently train with a default. Example (docs/train_tiny.yaml is the shipped default's):

    model: {preset: tiny}
    data: [{root: data/object, weight: 3}, {root: data/driving, weight: 1}]
    steps: 20000
    curriculum: [{step: 0, image_size: [64, 64], batch_size: 2}]
    num_input: 8
    num_target: 4
    out_dir: runs/tiny
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DataSource", "CurriculumStage", "TrainConfig", "load_train_config"]


@dataclass(frozen=True)
class DataSource:
    """A dataset root (the on-disk scene format, docs/data_format.md) and its sampling weight."""

    root: str
    weight: float = 1.0


@dataclass(frozen=True)
class CurriculumStage:
    """From `step` on, train at `image_size` (H, W) with `batch_size` examples per process (SPEC §3),
    and (view-count curriculum) `num_input` / `num_target` views when given (else the config's)."""

    step: int
    image_size: tuple[int, int]
    batch_size: int
    num_input: int | None = None
    num_target: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; stored in every checkpoint as provenance.

    Optimizer defaults follow SPEC §3 (the GS-LRM family's AdamW settings).
    """

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: tuple[DataSource, ...] = ()
    out_dir: str = "runs/lrm4d"
    steps: int = 1000
    curriculum: tuple[CurriculumStage, ...] = (CurriculumStage(0, (64, 64), 2),)
    num_input: int = 8
    num_target: int = 4
    # also render this many input views at their own time as targets (train.loop.with_input_targets)
    input_targets: int = 0
    # render the targets from Gaussians decoded with the prior's inference-time steps (align, stereo,
    # carving, ground discs, held-still views, thickness), so the network's residuals are fitted to
    # what inference makes of them; the input-pixel losses (depth, opacity, velocity, persistence)
    # still read its own decoding (model.LRM4D.inference_steps_in_training, SceneOutput.own)
    inference_steps: bool = False
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    lambda_perceptual: float = 0.5
    perceptual_weights: str | None = None
    lambda_ssim: float = 0.0
    lambda_depth: float = 0.0
    lambda_opacity: float = 0.0
    lambda_velocity: float = 0.0
    # velocity loss averaged over moving pixels and static pixels separately (train.losses.velocity_loss)
    velocity_balance: bool = False
    # true speed (model units per model time) above which an input pixel counts as moving
    moving_speed: float = 0.05
    # static pixels' temporal scale at least persistence_gaps input-time gaps (train.losses.persistence_loss)
    lambda_persistence: float = 0.0
    persistence_gaps: float = 4.0
    cache_dir: str | None = None
    input_protocols: dict[str, float] = field(default_factory=lambda: {"random": 1.0})
    init_from: str | None = None
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    max_bad_steps: int = 20
    log_every: int = 10
    image_every: int = 200
    save_every: int = 500
    seed: int = 0
    grad_checkpointing: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(d if isinstance(d, DataSource) else DataSource(**d) for d in self.data))
        stages = tuple(
            s if isinstance(s, CurriculumStage) else CurriculumStage(
                int(s["step"]), tuple(s["image_size"]), int(s["batch_size"]),
                *(None if s.get(k) is None else int(s[k]) for k in ("num_input", "num_target")))
            for s in self.curriculum
        )
        object.__setattr__(self, "curriculum", tuple(sorted(stages, key=lambda s: s.step)))
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "background", tuple(self.background))
        problems = []
        if not self.data:
            problems.append("data: at least one dataset root is needed")
        if not self.curriculum or self.curriculum[0].step != 0:
            problems.append("curriculum: the first stage must start at step 0")
        if self.steps < 1 or self.num_input < 1 or self.num_target < 1:
            problems.append("steps, num_input and num_target must be >= 1")
        if min(self.lambda_depth, self.lambda_ssim, self.lambda_perceptual, self.lambda_opacity, self.lambda_velocity,
               self.lambda_persistence) < 0:
            problems.append("loss weights (lambda_*) must be >= 0")
        from lrm4d_core.data.dataset import TRAINING_LAYOUTS

        weights = self.input_protocols
        layouts = tuple(name for name in TRAINING_LAYOUTS if name != "surround_random")  # that one is automatic
        if not weights or any(k not in layouts for k in weights) or any(w < 0 for w in weights.values()) \
                or sum(weights.values()) <= 0:
            problems.append(f"input_protocols: weights >= 0 (not all 0) over {layouts}, got {weights}")
        if self.input_targets < 0:
            problems.append("input_targets must be >= 0")
        if self.moving_speed < 0 or self.persistence_gaps <= 0:
            problems.append("moving_speed must be >= 0 and persistence_gaps > 0")
        if self.max_bad_steps < 1:
            problems.append("max_bad_steps must be >= 1")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def stage(self, step: int) -> CurriculumStage:
        """The curriculum stage in force at `step`."""
        current = self.curriculum[0]
        for s in self.curriculum:
            if s.step <= step:
                current = s
        return current

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or JSON file; `overrides` replace top-level keys (CLI flags)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known keys are {sorted(known)}")
    return TrainConfig(**data)
