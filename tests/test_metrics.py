"""Metrics against scikit-image (an independent implementation) and the VGG/LPIPS weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lrm4d_core.eval.metrics import psnr, ssim
from lrm4d_core.eval.perceptual import LPIPS, PerceptualLoss, VGG16Features, WeightFileError


def noisy_pair(seed: int, shape=(3, 40, 52)):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    return a, np.clip(a + rng.normal(0, 0.08, shape), 0, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_and_ssim_match_scikit_image(seed):
    a, b = noisy_pair(seed)
    ref_ssim = structural_similarity(a, b, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0)
    ref_psnr = peak_signal_noise_ratio(a, b, data_range=1.0)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert ssim(ta, tb).item() == pytest.approx(ref_ssim, abs=1e-10)
    assert psnr(ta, tb).item() == pytest.approx(ref_psnr, abs=1e-10)


def test_metrics_keep_batch_dims_and_ssim_is_differentiable():
    a = torch.rand(2, 4, 3, 16, 16, requires_grad=True)
    b = torch.rand(2, 4, 3, 16, 16)
    assert ssim(a, b).shape == (2, 4) and psnr(a, b).shape == (2, 4)
    ssim(a, b).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))


def _fake_vgg_file(tmp_path):
    torch.manual_seed(0)
    net = VGG16Features()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_perceptual_loss_and_lpips_load_and_behave(tmp_path):
    vgg = _fake_vgg_file(tmp_path)
    lins = tmp_path / "lpips_lin.safetensors"
    save_file({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}, str(lins))
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32)
    loss = PerceptualLoss.from_file(vgg)
    assert loss(y, y).item() == 0.0
    value = loss(x, y)
    value.backward()
    assert value.item() > 0 and x.grad.abs().sum() > 0
    lpips = LPIPS.from_files(vgg, lins)
    d = lpips(x.detach(), y)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(lpips(y, y), torch.zeros(2))


def test_weight_file_errors_are_clear(tmp_path):
    with pytest.raises(WeightFileError, match="not found"):
        VGG16Features.from_file(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(WeightFileError, match="not a safetensors"):
        VGG16Features.from_file(junk)
    partial = tmp_path / "partial.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(partial))
    with pytest.raises(WeightFileError, match="missing"):
        VGG16Features.from_file(partial)
