"""Window filters over image-shaped tensors that the no-learning priors share (block matching in
`model.motion_prior`, the plane sweep in `model.stereo`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["box_mean", "box_sum"]


def box_sum(x: Tensor, size: int) -> Tensor:
    """Sum over the size x size window (size odd) around each pixel of x [..., H, W], windows
    clipped at the border, by cumulative sums: a pooling layer over hundreds of cost planes is the
    slowest part of matching on a CPU. Sums of small integers (counts) come out exact."""
    half = size // 2

    def along(t: Tensor, dim: int) -> Tensor:
        c = F.pad(t, (half, half) if dim == -1 else (0, 0, half, half)).cumsum(dim)
        c = F.pad(c, (1, 0) if dim == -1 else (0, 0, 1, 0))
        n = c.shape[dim]
        return c.narrow(dim, size, n - size) - c.narrow(dim, 0, n - size)

    return along(along(x, -2), -1)


def box_mean(x: Tensor, size: int) -> Tensor:
    """Mean over the size x size window (size odd) around each pixel of x [..., H, W], windows
    clipped at the border (`box_sum` over the pixels the window holds)."""
    return box_sum(x, size) / box_sum(x.new_ones(x.shape[-2:]), size)
