"""The result type shared by all rasterizer backends."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["RenderOutput"]


@dataclass(frozen=True)
class RenderOutput:
    """Images rendered for C cameras of size H x W.

    Attributes:
        color: [C, H, W, 3] composited colour, background included.
        alpha: [C, H, W, 1] accumulated opacity 1 - T_final.
        depth: [C, H, W, 1] expected camera-space depth sum(w z) / alpha, 0 where nothing renders.
        stats: counters (python ints): dropped_nonfinite, n_visible, n_intersections, and
            backend-specific ones.
    """

    color: Tensor
    alpha: Tensor
    depth: Tensor
    stats: dict = field(default_factory=dict)
