"""Model configuration: hyper-parameters, output activation constants and normalization constants.

`ModelConfig` is a frozen dataclass; `to_dict()` / `from_dict()` give the JSON-safe form stored in
checkpoints (SPEC §2 / DESIGN.md "Checkpoints"). `PRESETS` holds the four named sizes and
`preset(name, **overrides)` returns one with fields replaced.

Presets (parameter counts are the exact counts of `LRM4D` with 0 free tokens):

| preset | hidden | layers | heads | input   | params   | why |
|--------|--------|--------|-------|---------|----------|-----|
| tiny   | 256    | 6      | 4     | 64x64   | 5.24 M   | trainable on a 2-core CPU (see below) |
| small  | 384    | 8      | 6     | 128x128 | 14.94 M  | one consumer GPU; SPEC §3 stage-1 resolution |
| base   | 768    | 12     | 12    | 256x256 | 86.55 M  | SPEC §2 "base" (85M, +1.8%) |
| large  | 1024   | 24     | 16    | 256x256 | 304.30 M | SPEC §2 "large" (~300M, +1.4%) |

All use patch 8, MLP ratio 4 and 64-dimensional attention heads (the FlashAttention sweet spot).

Why `tiny` is 256 wide x 6 layers x 4 heads at 64x64: 64 tokens per view, so the SPEC §3 training
example of 12 input views is a 768-token sequence and the 24-view evaluation setting 1536 tokens.
Measured on the 2-core development CPU (torch 2.13, float32, idle machine, `bench/model.py`):
forward 0.040 s for 8 views, 0.171 s for 24 views (peak RSS 281 / 315 MiB); one training step
on 12 input views (forward + backward + AdamW, without rendering) 0.22 s. Rendering the 24
supervision views with the CPU rasterizer will dominate a training step; the network alone allows
~16k steps per hour, so a few hours of CPU training fit thousands of steps even with rendering. Alternatives measured the same way: 192 x 6 (3.0 M) was only 1.4x cheaper per
step (0.15 s) for 0.6x the capacity; 256 x 8 (6.8 M) 1.3x dearer; 96x96 input multiplies tokens
by 2.25 and made a 12-view step 3.2x dearer (0.49 s at 192 x 6), too slow next to rendering
2.25x more pixels.

Normalization constants (used by `model.api.reconstruct`, stored in every checkpoint):
- `camera_distance`: for inward-looking rigs (objects), the mean distance, in model units, from the
  scene centre to the cameras that the model was trained with; reconstruct() scales the caller's
  world so its cameras sit at this distance.
- `scene_radius`: for outward-looking rigs (driving), where camera poses carry no scale, the number
  of world units (metres) that map to one model unit; the centroid of the camera centres becomes
  the origin.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lrm4d_core.gaussians import GaussianActivation

from .own_view import OwnViewConstants
from .prior import PriorConstants

__all__ = ["ModelConfig", "PRESETS", "preset", "INPUT_CHANNELS", "RAW_CHANNELS", "PARAMETRIZATIONS"]

PARAMETRIZATIONS = ("spec", "prior")
"""How raw head output becomes pixel-aligned Gaussians: "spec" (SPEC §1 activations, depth between
near and far) or "prior" (residuals on the heuristic reconstruction, `model.prior`)."""

INPUT_CHANNELS = 10
"""Per-pixel input channels: rgb(3), plücker(6), t(1); see `model.inputs`."""

RAW_CHANNELS = 20
"""Per-Gaussian raw output channels in `gaussians.CHANNEL_LAYOUT` order (SPEC §1)."""


@dataclass(frozen=True)
class ModelConfig:
    """Every hyper-parameter of `LRM4D` plus the constants `reconstruct()` needs.

    Attributes:
        preset: name of the preset this config came from (informational; "custom" if none).
        hidden: transformer width d.
        layers: number of transformer blocks.
        heads: attention heads (hidden % heads == 0).
        mlp_ratio: MLP hidden width = round(mlp_ratio * hidden).
        patch_size: p; tokens are p x p patches of the 10-channel input.
        image_size: (H, W) default input resolution; reconstruct() resizes to it. The model itself
            runs at any H, W divisible by patch_size.
        num_free_tokens: N learnable free Gaussian tokens appended to the sequence (0 = none).
        activation: SPEC §1 activation constants (near/far/box, scale and opacity biases).
        grad_checkpointing: recompute each block in backward (torch.utils.checkpoint).
        bf16_autocast: run the transformer under bf16 autocast on CUDA (never on CPU).
        camera_distance: model-unit camera distance for inward rigs (see module docstring).
        scene_radius: world units per model unit for outward rigs (see module docstring).
        parametrization: "spec" or "prior" (`PARAMETRIZATIONS`); checkpoints without the key are "spec".
        prior: constants of the "prior" parametrization (`model.prior.PriorConstants`).
        environment: predict an environment map (sky and far background, `lrm4d_core.environment`)
            from a learned global token, composited behind the Gaussians.
        environment_degree: SH degree of that map (0..3).
        background: RGB in [0, 1] the model was trained to composite on (without an environment
            map: what every render path composites on; with one: the map's initial colour).
        view_dependence, view_dependence_deg: renders of a reconstruction lower a pixel-aligned
            Gaussian's opacity by up to `view_dependence` with the angle between the rendering
            camera and its input camera (width in degrees; `lrm4d_core.model.view_weight`; 0, the
            default of checkpoints that predate it: off).
        nearest_copy: renders of a reconstruction lower by this share the opacity of a pixel-aligned
            Gaussian at times nearer another input of the same standing camera that saw its point
            alike (`lrm4d_core.model.nearest_copy`; 0, the default of checkpoints that predate it:
            off).
        own_view: renders of a reconstruction show, near each input camera and time, that input's
            pixels as small splats at the network's depths (`lrm4d_core.model.own_view`;
            `angle_deg` 0, the default of checkpoints that predate it: off).
        facing_inward: cameras whose optical axes all lie along one line, facing each other (SPEC
            §4's interpolation layout), are normalized as an object rig around their centroid
            (`model.api.estimate_scene_normalization`). Checkpoints without the key (trained
            before session 11) took them for an outward rig and keep doing so: False.
    """

    preset: str = "custom"
    hidden: int = 256
    layers: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    patch_size: int = 8
    image_size: tuple[int, int] = (64, 64)
    num_free_tokens: int = 0
    activation: GaussianActivation = field(default_factory=GaussianActivation)
    grad_checkpointing: bool = False
    bf16_autocast: bool = True
    camera_distance: float = 2.5
    scene_radius: float = 20.0
    parametrization: str = "spec"
    prior: PriorConstants = field(default_factory=PriorConstants)
    environment: bool = False
    environment_degree: int = 3
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    view_dependence: float = 0.0
    view_dependence_deg: float = 15.0
    nearest_copy: float = 0.0
    own_view: OwnViewConstants = field(default_factory=OwnViewConstants)
    facing_inward: bool = False

    def __post_init__(self) -> None:
        # normalise types coming from JSON (lists, dicts) so equality and hashing work
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if isinstance(self.activation, dict):
            object.__setattr__(self, "activation", GaussianActivation(**self.activation))
        if isinstance(self.prior, dict):
            object.__setattr__(self, "prior", PriorConstants(**self.prior))
        if isinstance(self.own_view, dict):
            object.__setattr__(self, "own_view", OwnViewConstants(**self.own_view))
        object.__setattr__(self, "background", tuple(float(c) for c in self.background))
        problems = []
        if self.hidden <= 0 or self.layers < 0 or self.heads <= 0:
            problems.append(f"hidden, layers, heads must be positive (got {self.hidden}, {self.layers}, {self.heads})")
        elif self.hidden % self.heads:
            problems.append(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.patch_size <= 0:
            problems.append(f"patch_size must be positive, got {self.patch_size}")
        elif len(self.image_size) != 2 or any(s <= 0 or s % self.patch_size for s in self.image_size):
            problems.append(f"image_size {self.image_size} must be (H, W), both divisible by patch_size {self.patch_size}")
        if self.num_free_tokens < 0:
            problems.append(f"num_free_tokens must be >= 0, got {self.num_free_tokens}")
        if self.mlp_ratio <= 0:
            problems.append(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not self.camera_distance > 0 or not self.scene_radius > 0:
            problems.append("camera_distance and scene_radius must be positive")
        if self.parametrization not in PARAMETRIZATIONS:
            problems.append(f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        if not 0 <= self.environment_degree <= 3:
            problems.append(f"environment_degree must be in 0..3, got {self.environment_degree}")
        if len(self.background) != 3 or not all(0.0 <= c <= 1.0 for c in self.background):
            problems.append(f"background must be 3 values in [0, 1], got {self.background}")
        if not 0.0 <= self.view_dependence <= 1.0 or not self.view_dependence_deg > 0:
            problems.append(f"view_dependence must be in [0, 1] and view_dependence_deg positive, got "
                            f"{self.view_dependence}, {self.view_dependence_deg}")
        if not 0.0 <= self.nearest_copy <= 1.0:
            problems.append(f"nearest_copy must be in [0, 1], got {self.nearest_copy}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def view_weighting(self) -> tuple[float, float]:
        """(view_dependence, view_dependence_deg), as `Reconstruction.view_dependence` takes it."""
        return (self.view_dependence, self.view_dependence_deg)

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.hidden))

    @property
    def patch_dim(self) -> int:
        """Input values per token: 10 * p * p."""
        return INPUT_CHANNELS * self.patch_size**2

    def tokens_per_view(self, height: int | None = None, width: int | None = None) -> int:
        h, w = self.image_size if height is None else (height, width)
        return (h // self.patch_size) * (w // self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (nested activation dict, image_size as a list)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["activation"] = dataclasses.asdict(self.activation)
        out["prior"] = dataclasses.asdict(self.prior)
        out["own_view"] = dataclasses.asdict(self.own_view)
        out["image_size"] = list(self.image_size)
        out["background"] = list(self.background)
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict()`. Unknown keys are an error (they would be silently dropped
        hyper-parameters); missing keys take the defaults above."""
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {unknown}")
        data = dict(data)
        for key, cls in (("activation", GaussianActivation), ("prior", PriorConstants), ("own_view", OwnViewConstants)):
            if key in data:
                value, allowed = data[key], {f.name for f in dataclasses.fields(cls)}
                if not isinstance(value, dict) or set(value) - allowed:
                    raise ValueError(f"bad {key} entry {value!r}; allowed keys {sorted(allowed)}")
                data[key] = cls(**value)
        return ModelConfig(**data)

    def replace(self, **overrides: Any) -> ModelConfig:
        if isinstance(overrides.get("activation"), dict):
            overrides["activation"] = dataclasses.replace(self.activation, **overrides["activation"])
        if isinstance(overrides.get("prior"), dict):
            prior = dict(overrides["prior"])
            for name, value in prior.items():  # a partial override keeps the other constants of that prior
                if isinstance(value, dict) and dataclasses.is_dataclass(getattr(self.prior, name, None)):
                    prior[name] = dataclasses.replace(getattr(self.prior, name), **value)
            overrides["prior"] = dataclasses.replace(self.prior, **prior)
        if isinstance(overrides.get("own_view"), dict):
            overrides["own_view"] = dataclasses.replace(self.own_view, **overrides["own_view"])
        return dataclasses.replace(self, **overrides)


_NEW = dict(parametrization="prior", environment=True, facing_inward=True)
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(preset="tiny", hidden=256, layers=6, heads=4, image_size=(64, 64), **_NEW),
    "small": ModelConfig(preset="small", hidden=384, layers=8, heads=6, image_size=(128, 128), **_NEW),
    "base": ModelConfig(preset="base", hidden=768, layers=12, heads=12, image_size=(256, 256), **_NEW),
    "large": ModelConfig(preset="large", hidden=1024, layers=24, heads=16, image_size=(256, 256), **_NEW),
}
"""Presets use the "prior" parametrization and an environment map; `preset(name,
parametrization="spec", environment=False)` gives the SPEC §1 model of the paper."""


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset with fields replaced, e.g. `preset("base", num_free_tokens=1024)`.
    `activation` may be a GaussianActivation or a dict of the fields to change."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
