"""Image metrics: PSNR and SSIM (always available) and LPIPS (when the user supplies its weights).

Images are float tensors in [0, 1], shaped [..., 3, H, W]; metrics reduce over C, H, W and keep `...`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "ssim_map", "masked_psnr", "masked_ssim", "depth_errors"]


def psnr(pred: Tensor, target: Tensor, max_value: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image: [..., C, H, W] -> [...]; identical images give +inf."""
    mse = ((pred - target) ** 2).flatten(-3).mean(-1)
    return 10.0 * torch.log10(max_value**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, max_value: float = 1.0) -> Tensor:
    """Per-pixel SSIM averaged over channels on the valid region: [..., C, H, W] -> [..., H-w+1, W-w+1]."""
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
    out = (num / den).mean(1)
    return out.reshape(*batch, *out.shape[-2:])


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, max_value: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, averaged over channels and the
    valid region (no padding), as scikit-image's `structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=max_value)`. Differentiable: usable as a loss.

    [..., C, H, W] -> [...]
    """
    return ssim_map(pred, target, window, sigma, max_value).flatten(-2).mean(-1)


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor, max_value: float = 1.0) -> list[float | None]:
    """PSNR over the pixels where `mask` [N, H, W] holds, per image ([N, C, H, W]); None where empty."""
    err = ((pred - target) ** 2).mean(-3)
    out = []
    for e, m in zip(err, mask.bool()):
        n = int(m.sum())
        out.append(None if n == 0 else float(10.0 * torch.log10(max_value**2 / (e[m].sum() / n))))
    return out


def masked_ssim(pred: Tensor, target: Tensor, mask: Tensor, window: int = 11, smap: Tensor | None = None) -> list[float | None]:
    """SSIM averaged over the masked pixels of the valid region (mask cropped by the window), per
    image; `smap` reuses an `ssim_map` of the same images."""
    smap = ssim_map(pred, target, window) if smap is None else smap
    r = window // 2
    crop = mask.bool()[:, r: mask.shape[-2] - r, r: mask.shape[-1] - r]
    return [None if int(m.sum()) == 0 else float(s[m].mean()) for s, m in zip(smap, crop)]


def depth_errors(pred: Tensor, target: Tensor) -> dict[str, float | None]:
    """AbsRel and the fraction within a factor 1.25 (delta < 1.25) of predicted z-depth [N, H, W]
    over pixels whose true depth [N, H, W] is finite and positive; a pixel where nothing renders
    (predicted depth 0) counts as an error of 100% and fails the threshold."""
    valid = torch.isfinite(target) & (target > 0)
    if not valid.any():
        return {"abs_rel": None, "delta_1_25": None, "pixels": 0}
    p, t = pred[valid].double(), target[valid].double()
    ratio = torch.maximum(p / t, t / p.clamp_min(1e-12))
    return {"abs_rel": float(((p - t).abs() / t).mean()), "delta_1_25": float((ratio < 1.25).double().mean()),
            "pixels": int(valid.sum())}
