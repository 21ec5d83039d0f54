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
        # one zero more in front than the window needs: the running sum then starts at 0 as it should
        c = F.pad(t, (half + 1, half) if dim == -1 else (0, 0, half + 1, half)).cumsum(dim)
        n = c.shape[dim]
        return c.narrow(dim, size, n - size) - c.narrow(dim, 0, n - size)

    return along(along(x, -2), -1)


def box_mean(x: Tensor, size: int) -> Tensor:
    """Mean over the size x size window (size odd) around each pixel of x [..., H, W], windows
    clipped at the border (`box_sum` over the pixels the window holds)."""
    return box_sum(x, size) / box_sum(x.new_ones(x.shape[-2:]), size)
