"""The background as a function of viewing direction: sky and far scenery without Gaussians.

Open rigs (driving, yards) see sky and distant scenery in most images; pixel-aligned Gaussians put
there either float at an arbitrary depth or leave holes that render in the background colour.
The leading feed-forward driving models predict that part of the image separately (a sky token,
SPEC §6); so does the model here: a global token's output is an environment map, colour as a
function of the unit viewing direction, in real spherical harmonics of degree L:

    colour(d) = clamp(0.5 + sum_k c_k Y_k(d), 0, 1)        c: [3, (L + 1)^2]

Directions are world (or model-box) unit vectors; the normalizations between the two are a
translation and a uniform scale, so one map serves both frames. Renders composite it behind the
Gaussians: I = C + (1 - alpha) * colour(ray direction) (`composite`). A constant background is the
special case of the degree-0 term alone (`Environment.constant`).

The SH basis is the standard real one (the 3DGS / gsplat `eval_sh` order and constants), written
out up to degree 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .cameras import Cameras, pixel_rays

__all__ = ["MAX_DEGREE", "num_coefficients", "sh_basis", "Environment", "composite"]

MAX_DEGREE = 3
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
       1.445305721320277, -0.5900435899266435)


def num_coefficients(degree: int) -> int:
    return (degree + 1) ** 2


def sh_basis(directions: Tensor, degree: int) -> Tensor:
    """Real SH basis functions at unit directions: [..., 3] -> [..., (degree + 1)^2]."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_DEGREE}, got {degree}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [_C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)


@dataclass(frozen=True)
class Environment:
    """An environment map: `coefficients` [..., 3, K], K = (degree + 1)^2 (module docstring)."""

    coefficients: Tensor

    @property
    def degree(self) -> int:
        k = self.coefficients.shape[-1]
        d = int(round(k**0.5)) - 1
        if (d + 1) ** 2 != k:
            raise ValueError(f"{k} coefficients is not a square number of SH terms")
        return d

    @staticmethod
    def constant(rgb: Sequence[float] | Tensor, degree: int = 0, **like) -> Environment:
        """The map that is `rgb` in every direction."""
        rgb = torch.as_tensor(rgb, **({"dtype": torch.float32} | like))
        coeffs = torch.zeros(*rgb.shape[:-1], 3, num_coefficients(degree), dtype=rgb.dtype, device=rgb.device)
        coeffs[..., 0] = (rgb - 0.5) / _C0
        return Environment(coeffs)

    def color(self, directions: Tensor) -> Tensor:
        """Colour [..., 3] in [0, 1] seen along unit directions [..., 3] (unbatched maps only)."""
        basis = sh_basis(directions.to(self.coefficients.dtype), self.degree)  # [..., K]
        return (0.5 + basis @ self.coefficients.transpose(-1, -2)).clamp(0.0, 1.0)

    def __getitem__(self, index: int) -> Environment:
        return Environment(self.coefficients[index])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Environment:
        return Environment(self.coefficients.to(device=device, dtype=dtype))

    def detach(self) -> Environment:
        return Environment(self.coefficients.detach())


def composite(color: Tensor, alpha: Tensor, cameras: Cameras, environment: Environment) -> Tensor:
    """Gaussians rendered on black (`color` [C, H, W, 3], `alpha` [C, H, W, 1]) over the environment
    seen through each pixel of `cameras` (same frame as the map's directions): [C, H, W, 3]."""
    _, directions = pixel_rays(cameras.to(device=color.device, dtype=color.dtype))
    return color + (1.0 - alpha) * environment.color(directions)
