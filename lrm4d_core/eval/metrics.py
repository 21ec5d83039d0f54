"""Image metrics: PSNR and SSIM (always available) and LPIPS (when the user supplies its weights).

Images are float tensors in [0, 1], shaped [..., 3, H, W]; metrics reduce over C, H, W and keep `...`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim"]


def psnr(pred: Tensor, target: Tensor, max_value: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image: [..., C, H, W] -> [...]; identical images give +inf."""
    mse = ((pred - target) ** 2).flatten(-3).mean(-1)
    return 10.0 * torch.log10(max_value**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, max_value: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, averaged over channels and the
    valid region (no padding), as scikit-image's `structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=max_value)`. Differentiable: usable as a loss.

    [..., C, H, W] -> [...]
    """
    batch = pred.shape[:-3]
    c, h, w = pred.shape[-3:]
    if min(h, w) < window:
        raise ValueError(f"images of {h}x{w} are smaller than the {window}x{window} SSIM window")
    x = pred.reshape(-1, c, h, w)
    y = target.reshape(-1, c, h, w)
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    kernel_h = g.view(1, 1, window, 1).expand(c, 1, window, 1)
    kernel_w = g.view(1, 1, 1, window).expand(c, 1, 1, window)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kernel_h, groups=c), kernel_w, groups=c)

    c1 = (0.01 * max_value) ** 2
    c2 = (0.03 * max_value) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(-1).reshape(batch)
