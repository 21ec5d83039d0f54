"""VGG-16 feature losses: the training perceptual term and LPIPS, from weight files the user gives.

Nothing is downloaded (DEVELOPERS.md): the network is defined here and its weights are read from a
safetensors file with torchvision's key names (`features.<i>.weight`, `features.<i>.bias`); LPIPS
additionally reads its linear heads (`lin<k>.model.1.weight`, as in the reference `lpips` package).
Convert once, in an environment you trust, e.g.
`safetensors.torch.save_file(torchvision.models.vgg16(weights="DEFAULT").state_dict(), "vgg16.safetensors")`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

__all__ = ["VGG16Features", "PerceptualLoss", "LPIPS", "WeightFileError"]

# torchvision vgg16 `features` layout: conv channel counts, "M" for max-pool
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# indices into `features` right after the ReLU that closes each block (relu1_2 ... relu5_3)
_TAPS = (3, 8, 15, 22, 29)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class WeightFileError(ValueError):
    """A weight file is missing, unreadable or does not hold the expected tensors."""


def _read(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"weight file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for junk input
        raise WeightFileError(f"{path} is not a safetensors file: {err}") from err


def _load_strict(module: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    bad_shape = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    if missing or bad_shape:
        raise WeightFileError(f"{path}: missing tensors {missing[:6]}, wrong shapes {bad_shape[:6]}")
    module.load_state_dict({k: state[k] for k in own})


class VGG16Features(nn.Module):
    """torchvision-compatible VGG-16 convolutional trunk returning the five relu_k taps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> VGG16Features:
        net = cls()
        _load_strict(net, {k: v for k, v in _read(path).items() if k.startswith("features.")}, path)
        return net.eval()

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                taps.append(x)
                if len(taps) == len(_TAPS):
                    break
        return taps


class PerceptualLoss(nn.Module):
    """Mean absolute difference of VGG-16 features over the five taps; images [B, 3, H, W] in [0, 1]."""

    def __init__(self, features: VGG16Features) -> None:
        super().__init__()
        self.net = features
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def from_file(cls, path: str | Path) -> PerceptualLoss:
        return cls(VGG16Features.from_file(path))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        x = self.net((pred - self.mean) / self.std)
        with torch.no_grad():
            y = self.net((target - self.mean) / self.std)
        return sum(F.l1_loss(a, b) for a, b in zip(x, y)) / len(x)


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018), VGG variant: unit-normalised features, learned channel weights,
    spatial mean, summed over taps. Images [B, 3, H, W] in [0, 1] -> [B]."""

    def __init__(self, features: VGG16Features) -> None:
        super().__init__()
        self.net = features
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_files(cls, vgg_path: str | Path, lin_path: str | Path) -> LPIPS:
        """`lin_path` holds `lin0.model.1.weight` ... `lin4.model.1.weight` ([1, C, 1, 1] each)."""
        model = cls(VGG16Features.from_file(vgg_path))
        state = _read(lin_path)
        renamed = {f"lins.{k}.weight": state.get(f"lin{k}.model.1.weight") for k in range(5)}
        _load_strict(model.lins, {k[len("lins."):]: v for k, v in renamed.items() if v is not None}, lin_path)
        return model.eval()

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        fx = self.net(((pred * 2 - 1) - self.shift) / self.scale)
        fy = self.net(((target * 2 - 1) - self.shift) / self.scale)
        total = torch.zeros(pred.shape[0], device=pred.device, dtype=pred.dtype)
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total
