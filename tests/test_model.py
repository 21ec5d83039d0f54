"""The 4D-LRM model, checkpoints and the inference API, on small configs (fast on a 2-core CPU).

Reference computations (rays, Plücker coordinates, the input layout) are written here in numpy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, SceneNormalization, TimeNormalization
from lrm4d_core.gaussians import GaussianActivation, Gaussians4D
from lrm4d_core.io.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_header, save_checkpoint
from lrm4d_core.model import api, info
from lrm4d_core.model.config import PRESETS, ModelConfig, preset
from lrm4d_core.model.inputs import build_inputs
from lrm4d_core.model.lrm4d import LRM4D

SMALL = ModelConfig(preset="test", hidden=32, layers=2, heads=2, image_size=(16, 24))


# ------------------------------------------------------------------ helpers
def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def look_at(eye: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """OpenCV cam_to_world with z towards target and a random roll."""
    z = target - eye
    z = z / np.linalg.norm(z)
    up = rng.normal(size=3)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, y, z], axis=1)
    out[:3, 3] = eye
    return out


def random_cameras(n: int, width: int, height: int, seed: int = 0, inward: bool = True) -> Cameras:
    """Cameras at distance ~2.5 around the origin looking at it (inward) or random (not)."""
    rng = np.random.default_rng(seed)
    K = np.zeros((n, 3, 3))
    c2w = np.zeros((n, 4, 4))
    for i in range(n):
        f = rng.uniform(0.9, 1.4) * width
        K[i] = [[f, 0, width / 2 + rng.uniform(-1, 1)], [0, f * rng.uniform(0.9, 1.1), height / 2 + rng.uniform(-1, 1)], [0, 0, 1]]
        if inward:
            eye = rng.normal(size=3)
            eye = 2.5 * eye / np.linalg.norm(eye)
            c2w[i] = look_at(eye, rng.normal(size=3) * 0.05, rng)
        else:
            c2w[i, :3, :3] = random_rotation(rng)
            c2w[i, :3, 3] = rng.normal(size=3)
            c2w[i, 3, 3] = 1
    return Cameras(torch.from_numpy(K), torch.from_numpy(c2w), width, height)


def random_inputs(B: int, V: int, H: int, W: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(B, V, 3, H, W, generator=gen)
    cams = [random_cameras(V, W, H, seed=seed * 10 + b).to(dtype=torch.float32) for b in range(B)]
    times = torch.rand(B, V, generator=gen) * 2 - 1
    return images, cams, times


def perturbed(model: LRM4D, std: float = 0.3, seed: int = 0) -> LRM4D:
    """Random, non-small weights everywhere (heads included) so equivariance is not trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std / math.sqrt(max(p.shape[-1], 1)))
    return model


def numpy_inputs(images: np.ndarray, K: np.ndarray, c2w: np.ndarray, times: np.ndarray) -> np.ndarray:
    """[V, 3, H, W], [V, 3, 3], [V, 4, 4], [V] -> [V, H, W, 10]: rgb, d, o - <o,d> d, t; loops."""
    V, _, H, W = images.shape
    out = np.zeros((V, H, W, 10))
    for v in range(V):
        Kinv = np.linalg.inv(K[v])
        R, o = c2w[v, :3, :3], c2w[v, :3, 3]
        for y in range(H):
            for x in range(W):
                d = R @ (Kinv @ np.array([x + 0.5, y + 0.5, 1.0]))
                d = d / np.linalg.norm(d)
                nearest = o - np.dot(o, d) * d
                out[v, y, x] = [*(2 * images[v, :, y, x] - 1), *d, *nearest, times[v]]
    return out


# ------------------------------------------------------------------ inputs
def test_input_builder_matches_numpy():
    B, V, H, W = 2, 3, 5, 7
    images = torch.rand(B, V, 3, H, W, dtype=torch.float64)
    cams = [random_cameras(V, W, H, seed=b, inward=False) for b in range(B)]
    times = torch.rand(B, V, dtype=torch.float64) * 2 - 1
    feats = build_inputs(images, cams, times).features
    assert feats.shape == (B, V, 10, H, W)
    last = build_inputs(images, Cameras.cat(cams), times, channels_last=True)
    assert last.features.shape == (B, V, H, W, 10)
    torch.testing.assert_close(last.features, feats.permute(0, 1, 3, 4, 2))
    for b in range(B):
        ref = numpy_inputs(images[b].numpy(), cams[b].K.numpy(), cams[b].cam_to_world.numpy(), times[b].numpy())
        np.testing.assert_allclose(last.features[b].numpy(), ref, atol=1e-12)
        np.testing.assert_allclose(last.ray_origins[b].numpy(), np.broadcast_to(
            cams[b].cam_to_world.numpy()[:, None, None, :3, 3], (V, H, W, 3)))
        np.testing.assert_allclose(last.ray_directions[b].numpy(), ref[..., 3:6], atol=1e-12)


def test_input_builder_rejects_mismatches():
    images, cams, times = random_inputs(1, 2, 8, 8)
    with pytest.raises(ValueError, match="cameras"):
        build_inputs(images, cams[0][:1], times)
    with pytest.raises(ValueError, match="times"):
        build_inputs(images, cams, times[:, :1])
    with pytest.raises(ValueError, match="8x8"):
        build_inputs(torch.rand(1, 2, 3, 8, 16), cams, times)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("V,H,W,N,patch", [(1, 16, 24, 0, 8), (3, 8, 8, 5, 8), (2, 24, 16, 0, 4), (5, 16, 8, 7, 8)])
def test_token_count_and_output_shapes(V, H, W, N, patch):
    config = SMALL.replace(num_free_tokens=N, patch_size=patch)
    model = LRM4D(config)
    B = 2
    images, cams, times = random_inputs(B, V, H, W)
    seen = {}
    model.transformer.register_forward_hook(lambda m, a, o: seen.update(shape=tuple(a[0].shape)))
    g = model(images, cams, times)
    assert seen["shape"] == (B, V * (H // patch) * (W // patch) + N, config.hidden)
    n = V * H * W + N
    assert g.means.shape == (B, n, 4) and g.scales.shape == (B, n, 4)
    assert g.q_left.shape == g.q_right.shape == (B, n, 4)
    assert g.opacities.shape == (B, n) and g.colors.shape == (B, n, 3)
    for t in (g.means, g.scales, g.q_left, g.opacities, g.colors):
        assert torch.isfinite(t).all()


def test_batch_elements_are_independent():
    model = perturbed(LRM4D(SMALL.replace(num_free_tokens=2))).eval()
    images, cams, times = random_inputs(2, 3, *SMALL.image_size, seed=4)
    with torch.no_grad():
        both = model.forward_raw(images, cams, times)
        for b in range(2):
            one = model.forward_raw(images[b : b + 1], [cams[b]], times[b : b + 1])
            torch.testing.assert_close(one.pixel_raw[0], both.pixel_raw[b], atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(one.free_raw[0], both.free_raw[b], atol=2e-5, rtol=1e-5)


def test_pixel_gaussians_lie_on_their_own_rays_and_start_sane():
    model = LRM4D(SMALL.replace(num_free_tokens=4))
    V, (H, W) = 3, SMALL.image_size
    images, cams, times = random_inputs(1, V, H, W)
    raw = model.forward_raw(images, cams, times)
    g = model.decode(raw)
    dirs = build_inputs(images, cams, times).ray_directions  # [B, V, H, W, 3]
    # ray of Gaussian v*H*W + y*W + x is the ray through pixel (x, y) of view v
    torch.testing.assert_close(raw.ray_directions[0], dirs[0].reshape(V * H * W, 3))
    offset = g.means[0, : V * H * W, :3] - raw.ray_origins[0]
    depth = (offset * raw.ray_directions[0]).sum(-1)
    inside = (g.means[0, : V * H * W, :3].abs() < 0.999).all(-1)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(offset[inside], depth[inside, None] * raw.ray_directions[0][inside], atol=1e-5, rtol=0)
    act = SMALL.activation
    assert ((depth[inside] >= act.near - 1e-5) & (depth[inside] <= act.far + 1e-5)).all()
    # initial head: depth near camera_distance, opacity sigmoid(-2), unit quaternions, grey
    assert abs(depth[inside].median().item() - SMALL.camera_distance) < 0.3
    assert torch.allclose(g.opacities, torch.full_like(g.opacities, 1 / (1 + math.exp(2))), atol=0.05)
    torch.testing.assert_close(g.q_left.norm(dim=-1), torch.ones(g.opacities.shape))
    assert (g.scales[..., :3] < 0.1).all() and (g.scales[..., 3] > 0.3).all()
    # free Gaussians are not on pixel rays: their xyz is the head's output, clipped to the box
    assert g.means.shape[1] == V * H * W + 4


def test_pixel_order_patches_and_unpatchify():
    """With no transformer layers, Gaussian v*H*W + y*W + x depends only on the patch holding
    pixel (x, y) of view v (token order), and the within-patch position maps to the right pixel."""
    p = 4
    config = SMALL.replace(layers=0, patch_size=p, image_size=(8, 12))
    model = perturbed(LRM4D(config))
    V, H, W = 2, 8, 12
    images, cams, times = random_inputs(1, V, H, W)
    images.requires_grad_(True)
    for v, y, x in [(0, 0, 0), (1, 5, 9), (0, 7, 3), (1, 2, 11)]:
        raw = model.forward_raw(images, cams, times)
        raw.pixel_raw[0, v * H * W + y * W + x].sum().backward()
        grad = images.grad[0].abs().sum(1)  # [V, H, W]
        images.grad = None
        mask = torch.zeros(V, H, W, dtype=torch.bool)
        mask[v, y // p * p : y // p * p + p, x // p * p : x // p * p + p] = True
        assert (grad[~mask] == 0).all() and (grad[mask] > 0).any()
    # within a patch: head bias pattern (py, px) -> pixel (y % p, x % p)
    with torch.no_grad():
        model.pixel_head.weight.zero_()
        bias = model.pixel_head.bias.view(p, p, 20)
        bias[..., 4] = torch.arange(p * p, dtype=torch.float32).view(p, p)
        raw = model.forward_raw(images, cams, times)
    got = raw.pixel_raw[0, :, 4].view(V, H, W)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    torch.testing.assert_close(got, ((yy % p) * p + xx % p).float().expand(V, H, W))


def test_rejects_resolution_not_divisible_by_patch_and_uint8():
    model = LRM4D(SMALL)
    images, cams, times = random_inputs(1, 1, 12, 16)
    with pytest.raises(ValueError, match="patch size"):
        model(images, cams, times)
    images, cams, times = random_inputs(1, 1, 16, 16)
    with pytest.raises(ValueError, match="float"):
        model((images * 255).to(torch.uint8), cams, times)


# ------------------------------------------------------------------ equivariance
def test_equivariant_to_view_order():
    N, V = 3, 4
    model = perturbed(LRM4D(SMALL.replace(num_free_tokens=N))).eval()
    H, W = SMALL.image_size
    images, cams, times = random_inputs(1, V, H, W, seed=3)
    perm = torch.tensor([2, 0, 3, 1])
    cams_p = Cameras(cams[0].K[perm], cams[0].cam_to_world[perm], W, H)
    with torch.no_grad():
        raw = model.forward_raw(images, cams, times)
        raw_p = model.forward_raw(images[:, perm], [cams_p], times[:, perm])
    pix = raw.pixel_raw.view(1, V, H * W, 20)
    pix_p = raw_p.pixel_raw.view(1, V, H * W, 20)
    torch.testing.assert_close(pix_p, pix[:, perm], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(raw_p.free_raw, raw.free_raw, atol=2e-5, rtol=1e-5)
    # not trivially satisfied: outputs vary across views and pixels, and free tokens see the input
    assert (pix[0, 0] - pix[0, 1]).abs().mean() > 0.05
    assert pix[0, 0].std(0).mean() > 0.05
    with torch.no_grad():
        raw_other = model.forward_raw(images.flip(-1), cams, times)
    assert (raw_other.free_raw - raw.free_raw).abs().max() > 1e-3
    g, g_p = model.decode(raw), model.decode(raw_p)
    torch.testing.assert_close(
        g_p.means[0, : V * H * W].view(V, H * W, 4), g.means[0, : V * H * W].view(V, H * W, 4)[perm], atol=1e-4, rtol=1e-4
    )


# ------------------------------------------------------------------ presets
def test_base_and_large_parameter_counts_on_meta_device():
    targets = {"base": 85e6, "large": 300e6}
    for name, target in targets.items():
        with torch.device("meta"):
            model = LRM4D(preset(name))
        n = model.num_parameters()
        assert abs(n - target) / target < 0.05, (name, n)
        assert all(p.is_meta for p in model.parameters())
    cfg = PRESETS["large"]
    assert (cfg.hidden, cfg.layers, cfg.heads) == (1024, 24, 16)
    cfg = PRESETS["base"]
    assert (cfg.hidden, cfg.layers, cfg.heads) == (768, 12, 12)
    assert tuple(PRESETS) == info.PRESET_NAMES
    assert all(c.patch_size == 8 for c in PRESETS.values())


def test_config_json_round_trip_and_errors():
    cfg = preset("small", num_free_tokens=16, activation={"near": 0.01, "far": 100.0})
    assert cfg.activation == GaussianActivation(near=0.01, far=100.0)
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden=30, heads=4)
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(image_size=(60, 64))
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


# ------------------------------------------------------------------ gradient checkpointing
def test_gradient_checkpointing_same_output_and_gradients():
    torch.manual_seed(0)
    plain = perturbed(LRM4D(SMALL.replace(num_free_tokens=2)))
    ckpt = LRM4D(SMALL.replace(num_free_tokens=2, grad_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    images, cams, times = random_inputs(1, 2, *SMALL.image_size)
    outs = []
    for model in (plain, ckpt):
        model.train()
        g = model(images, cams, times)
        loss = (g.means**2).sum() + g.colors.sum() + g.opacities.sum() + g.scales.sum()
        loss.backward()
        outs.append((g, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (g0, grads0), (g1, grads1) = outs
    torch.testing.assert_close(g1.means, g0.means, rtol=0, atol=0)
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], rtol=1e-5, atol=1e-7, msg=k)
    assert any(g.abs().sum() > 0 for k, g in grads0.items() if k.startswith("transformer"))


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_identical_outputs(tmp_path):
    model = perturbed(LRM4D(SMALL.replace(num_free_tokens=3))).eval()
    prov = {"steps": 12, "data": "synthetic", "git": "abc123"}
    path = save_checkpoint(tmp_path / "m.safetensors", model, provenance=prov)
    loaded, config, provenance = load_checkpoint(path)
    assert config == model.config and provenance == prov and not loaded.training
    images, cams, times = random_inputs(1, 2, *SMALL.image_size)
    with torch.no_grad():
        a, b = model(images, cams, times), loaded(images, cams, times)
    for name in ("means", "scales", "q_left", "q_right", "opacities", "colors"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    header = read_checkpoint_header(tmp_path)  # a directory with one checkpoint works too
    assert header.num_parameters == model.num_parameters()
    assert api.load_model(path, device="cpu").config == model.config


def _rewrite(src, dst, change):
    """Copy a checkpoint with its tensors changed by `change(dict)`, keeping the metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    change(tensors, meta)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_checkpoint_claiming_a_huge_model_fails_before_allocating_it(tmp_path):
    """A small file whose config claims hidden 2048 x 8 layers (400M parameters, 1.6 GB) is
    rejected on shapes without building that model (peak memory of a fresh process stays far below
    it); non-finite weights are rejected."""
    import subprocess
    import sys

    path = save_checkpoint(tmp_path / "good.safetensors", LRM4D(SMALL), provenance={})

    def huge(t, m):
        cfg = json.loads(m["config"])
        cfg.update(hidden=2048, layers=8, heads=16)
        m["config"] = json.dumps(cfg)

    def nan(t, m):
        t["pixel_head.weight"][0, 0] = float("nan")

    bad = _rewrite(path, tmp_path / "huge.safetensors", huge)
    code = ("import resource, sys\nfrom lrm4d_core.io.checkpoint import CheckpointError, load_checkpoint\n"
            "try:\n    load_checkpoint(sys.argv[1])\nexcept CheckpointError as e:\n    print('ERROR', e)\n"
            # VmHWM is this process image's own peak; ru_maxrss on Linux keeps the parent's RSS
            # from before the exec (a large pytest process makes it look like ours)
            "import pathlib\nhwm = [l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')] "
            "if pathlib.Path('/proc/self/status').exists() else []\n"
            "print('PEAK_KB', int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=300)
    assert "ERROR" in out.stdout and "shape mismatches" in out.stdout, out.stdout + out.stderr
    peak_kb = int(out.stdout.split("PEAK_KB")[1])
    assert peak_kb < 1_000_000, f"peak RSS {peak_kb / 1024:.0f} MB: the claimed model was built"
    with pytest.raises(CheckpointError, match="non-finite weights .*pixel_head.weight"):
        load_checkpoint(_rewrite(path, tmp_path / "nan.safetensors", nan))


def test_checkpoint_errors_name_the_problem(tmp_path):
    path = save_checkpoint(tmp_path / "good.safetensors", LRM4D(SMALL), provenance={})

    def drop(t, m):
        del t["pixel_head.bias"]

    def extra(t, m):
        t["extra.weight"] = torch.zeros(2)

    def reshape(t, m):
        t["tokenizer.weight"] = torch.zeros(7, 640)

    def newer(t, m):
        m["format_version"] = "99"

    def foreign(t, m):
        m.clear()

    cases = {
        "missing": (drop, "pixel_head.bias"),
        "unexpected": (extra, "extra.weight"),
        "shape": (reshape, "tokenizer.weight"),
        "version": (newer, "version 99"),
        "foreign": (foreign, "not an lrm4d checkpoint"),
    }
    for name, (change, expected) in cases.items():
        bad = _rewrite(path, tmp_path / f"{name}.safetensors", change)
        with pytest.raises(CheckpointError, match=expected.replace(".", r"\.")):
            load_checkpoint(bad)

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    pickled = tmp_path / "model.pt"
    torch.save(LRM4D(SMALL).state_dict(), pickled)
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": 1}, legacy, _use_new_zipfile_serialization=False)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    js = tmp_path / "config.json"
    js.write_text(json.dumps(SMALL.to_dict()))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    for bad, expected in [
        (junk, "not an lrm4d checkpoint"),
        (pickled, "torch.save"),
        (legacy, "pickle"),
        (empty, "empty"),
        (js, "JSON"),
        (truncated, "truncated"),
        (tmp_path / "nope.safetensors", "does not exist"),
    ]:
        with pytest.raises(CheckpointError, match=expected):
            load_checkpoint(bad)


# ------------------------------------------------------------------ reconstruct / render
def test_reconstruct_uint8_other_resolution_in_world_frame():
    model = perturbed(LRM4D(SMALL.replace(num_free_tokens=2))).eval()
    H, W = SMALL.image_size
    V = 3
    cams = random_cameras(V, 2 * W, 2 * H, seed=5)  # model box cameras at distance 2.5
    scene = SceneNormalization(torch.tensor([10.0, -4.0, 1.5], dtype=torch.float64), 3.0)
    world_cams = scene.cameras_to_world(cams)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(2 * H, 2 * W, 3), dtype=np.uint8) for _ in range(V)]
    times = np.array([100.0, 100.4, 100.2])
    rec = api.reconstruct(model, images, world_cams, times, scene=scene)
    # cameras handed to the model: K halved, model-box poses
    assert (rec.model_cameras.width, rec.model_cameras.height) == (W, H)
    torch.testing.assert_close(rec.model_cameras.K.double(), cams.K * torch.tensor([0.5, 0.5, 1.0])[:, None], atol=1e-5, rtol=0)
    torch.testing.assert_close(rec.model_cameras.cam_to_world.double(), cams.cam_to_world, atol=1e-5, rtol=0)
    assert rec.time == TimeNormalization.spanning(100.0, 100.4)
    torch.testing.assert_close(rec.model_times, torch.tensor([-1.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    # the same forward done by hand, then to_world
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    pixels = torch.nn.functional.interpolate(pixels, size=(H, W), mode="bilinear", antialias=True)
    with torch.no_grad():
        g_model = model(pixels[None], rec.model_cameras, rec.model_times[None])[0]
    expected = g_model.to_world(scene, rec.time)
    assert len(rec.gaussians) == V * H * W + 2
    for name in ("means", "scales", "opacities", "colors"):
        torch.testing.assert_close(getattr(rec.gaussians, name), getattr(expected, name), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rec.gaussians.covariance(), expected.covariance(), atol=1e-5, rtol=1e-3)
    # pixel-aligned means are in metres around the scene centre; times in seconds
    pix = rec.gaussians.means[: V * H * W]
    assert ((pix[:, :3] - scene.center.float()).abs() <= 3.0 * 1.0001).all()
    torch.testing.assert_close(rec.gaussians.means[:, 3], expected.means[:, 3])
    assert set(rec.timings) == {"prepare", "forward", "to_world", "total"}
    # world-frame slices and forecasts without the 4D re-factorization agree with the 4D set
    for t, fast, slow in [
        (100.1, rec.slice(100.1), rec.gaussians.slice(100.1)),
        (100.3, rec.slice(100.3, inference_filter=True), rec.gaussians.slice(100.3, inference_filter=True)),
        (100.9, rec.forecast(100.9), rec.gaussians.forecast(100.9, t_end=100.4)),
    ]:
        assert len(fast) > 0
        for name in ("means", "covars", "opacities", "colors", "velocities"):
            torch.testing.assert_close(getattr(fast, name), getattr(slow, name), atol=2e-4, rtol=1e-3, msg=f"{t} {name}")
    # float tensor input at the model resolution gives the same as the resized uint8 path did
    rec2 = api.reconstruct(model, pixels, scene.cameras_to_world(cams.resized(W, H)), torch.tensor(times), scene=scene)
    torch.testing.assert_close(rec2.gaussians_model.means, rec.gaussians_model.means, atol=1e-5, rtol=0)


def test_reconstruct_rejects_bad_input():
    model = LRM4D(SMALL)
    cams = random_cameras(2, 24, 16)
    with pytest.raises(ValueError, match="cameras"):
        api.reconstruct(model, np.zeros((3, 16, 24, 3), np.uint8), cams, [0, 1, 2])
    with pytest.raises(ValueError, match="times"):
        api.reconstruct(model, np.zeros((2, 16, 24, 3), np.uint8), cams, [0])
    with pytest.raises(ValueError, match="one size"):
        api.reconstruct(model, [np.zeros((16, 24, 3), np.uint8), np.zeros((8, 24, 3), np.uint8)], cams, [0, 1])
    with pytest.raises(ValueError, match="images"):
        api.reconstruct(model, np.zeros((2, 16, 24), np.uint8), cams, [0, 1])


def test_scene_normalization_estimate_inward_and_outward():
    config = SMALL
    rng = np.random.default_rng(1)
    target = np.array([5.0, -2.0, 1.0])
    c2w = np.stack([look_at(target + 7.0 * u / np.linalg.norm(u), target, rng) for u in rng.normal(size=(6, 3))])
    inward = Cameras(torch.eye(3, dtype=torch.float64).expand(6, 3, 3), torch.from_numpy(c2w), 8, 8)
    scene = api.estimate_scene_normalization(inward, config)
    np.testing.assert_allclose(scene.center.numpy(), target, atol=1e-9)
    assert scene.scale == pytest.approx(7.0 / config.camera_distance)
    # a driving-style ring looking outwards: centroid and the configured radius
    ring = np.stack([look_at(np.array([np.cos(a), np.sin(a), 0.0]) + [3, 0, 0],
                             np.array([5 * np.cos(a), 5 * np.sin(a), 0.0]) + [3, 0, 0], rng)
                     for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)])
    outward = Cameras(torch.eye(3, dtype=torch.float64).expand(6, 3, 3), torch.from_numpy(ring), 8, 8)
    scene = api.estimate_scene_normalization(outward, config)
    np.testing.assert_allclose(scene.center.numpy(), [3, 0, 0], atol=1e-9)
    assert scene.scale == config.scene_radius
    # a toed-in stereo pair whose axes meet 200 m ahead is not an object rig
    pair = np.stack([look_at(np.array([x, 0.0, 0.0]), np.array([0.0, 0.0, 200.0]), rng) for x in (-0.3, 0.3)])
    stereo = Cameras(torch.eye(3, dtype=torch.float64).expand(2, 3, 3), torch.from_numpy(pair), 8, 8)
    assert api.estimate_scene_normalization(stereo, config).scale == config.scene_radius
    # two cameras facing each other across the target (anti-parallel axes): inward, centred between
    facing = np.stack([look_at(target + 7.0 * u, target, rng) for u in np.array([[1.0, 0, 0], [-1.0, 0, 0]])])
    facing_cams = Cameras(torch.eye(3, dtype=torch.float64).expand(2, 3, 3), torch.from_numpy(facing), 8, 8)
    scene = api.estimate_scene_normalization(facing_cams, config.replace(facing_inward=True))
    np.testing.assert_allclose(scene.center.numpy(), target, atol=1e-9)
    assert scene.scale == pytest.approx(7.0 / config.camera_distance)
    # a checkpoint from before `facing_inward` keeps the outward rule it was trained with
    assert api.estimate_scene_normalization(facing_cams, config.replace(facing_inward=False)).scale == config.scene_radius
    # ... but two cameras back to back, and a side-by-side stereo pair, are not
    back = np.stack([look_at(target + 0.5 * u, target + 7.0 * u, rng) for u in np.array([[1.0, 0, 0], [-1.0, 0, 0]])])
    side = np.stack([look_at(target + np.array([0, x, 0]), target + np.array([7.0, x, 0]), rng) for x in (-0.3, 0.3)])
    for pair in (back, side):
        cams = Cameras(torch.eye(3, dtype=torch.float64).expand(2, 3, 3), torch.from_numpy(pair), 8, 8)
        assert api.estimate_scene_normalization(cams, config.replace(facing_inward=True)).scale == config.scene_radius
    # one camera seen repeatedly (parallel axes): outward rule, no division by zero
    same = Cameras(torch.eye(3, dtype=torch.float64).expand(3, 3, 3), torch.from_numpy(c2w[:1]).expand(3, 4, 4), 8, 8)
    assert api.estimate_scene_normalization(same, config).scale == config.scene_radius


def test_render_slices_and_calls_rasterize(monkeypatch):
    calls = {}

    def fake_rasterize(gaussians3d, cameras, background=None, backend="auto", **options):
        calls.update(n=len(gaussians3d), cams=cameras, background=background, backend=backend, options=options)
        return types.SimpleNamespace(color=torch.zeros(len(cameras), cameras.height, cameras.width, 3))

    fake = types.ModuleType("lrm4d_core.render")
    fake.rasterize = fake_rasterize
    monkeypatch.setitem(sys.modules, "lrm4d_core.render", fake)
    model = LRM4D(SMALL).eval()
    cams = random_cameras(2, 24, 16)
    rec = api.reconstruct(model, np.zeros((2, 16, 24, 3), np.uint8), cams, [0.0, 1.0])
    out = api.render(rec.gaussians, cams, 0.5, backend="torch")
    assert out.color.shape == (2, 16, 24, 3)
    assert calls["backend"] == "torch" and calls["cams"].K.dtype == torch.float32
    assert 0 < calls["n"] <= len(rec.gaussians)
    n_4d = calls["n"]
    api.render(rec, cams, 0.5)  # a Reconstruction: sliced in model space, same Gaussians
    assert calls["n"] == n_4d and calls["backend"] == "auto"
    # the input cameras: the model's own blur; rendered depth from each splat's depth plane
    assert calls["options"] == {"eps2d": pytest.approx(0.3), "depth_mode": "plane"}
    batched = Gaussians4D(*(getattr(rec.gaussians, f.name)[None] for f in dataclasses.fields(Gaussians4D)))
    with pytest.raises(ValueError, match="unbatched"):
        api.render(batched, cams, 0.5)


def test_reconstruct_and_render_with_the_real_rasterizer():
    render_pkg = pytest.importorskip("lrm4d_core.render")
    if not hasattr(render_pkg, "rasterize"):
        pytest.skip("lrm4d_core.render.rasterize not available")
    model = LRM4D(SMALL.replace(num_free_tokens=4)).eval()
    cams = random_cameras(2, 24, 16, seed=2)
    scene = SceneNormalization(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 2.0)
    world_cams = scene.cameras_to_world(cams)
    images = np.full((2, 16, 24, 3), 200, np.uint8)
    rec = api.reconstruct(model, images, world_cams, [5.0, 5.5], scene=scene, world=False)
    grey = torch.tensor([0.3, 0.4, 0.5])
    out = api.render(rec, world_cams, 5.25, background=grey, backend="torch")
    assert out.color.shape == (2, 16, 24, 3) and torch.isfinite(out.color).all()
    # untrained head: grey Gaussians at the scene centre's depth cover the views
    assert out.alpha.mean() > 0.3
    # the same image from the world-frame 4D set, and from model space
    same = api.render(rec.gaussians, world_cams, 5.25, background=grey, backend="torch")
    torch.testing.assert_close(same.color, out.color, atol=1e-3, rtol=0)
    model_space = api.render(rec.gaussians_model, rec.model_cameras, 0.0, background=grey, backend="torch")
    torch.testing.assert_close(model_space.color, out.color, atol=1e-3, rtol=0)
    # without a background: the SPEC model (no environment map) composites on its training colour
    assert rec.environment is None and rec.background == (1.0, 1.0, 1.0)
    white = api.render(rec, world_cams, 5.25, backend="torch")
    torch.testing.assert_close(white.color, api.render(rec, world_cams, 5.25, background=torch.ones(3), backend="torch").color)


# ------------------------------------------------------------------ model-info
def _info(argv):
    parser = argparse.ArgumentParser()
    info.add_arguments(parser)
    return info.main(parser.parse_args(argv))


def test_model_info_json(tmp_path, capsys):
    assert _info(["--preset", "large", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "large" and out["patch_size"] == 8 and out["input_resolution"] == [256, 256]
    assert abs(out["parameters"] - 300e6) / 300e6 < 0.05
    model = LRM4D(SMALL)
    path = save_checkpoint(tmp_path / "s.safetensors", model, provenance={"steps": 3})
    assert _info(["--checkpoint", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"] == model.num_parameters() and out["provenance"] == {"steps": 3}
    assert out["input_resolution"] == [16, 24]
    assert _info(["--preset", "tiny"]) == 0
    assert "parameters" in capsys.readouterr().out
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense" * 10)
    assert _info(["--checkpoint", str(tmp_path / "bad.safetensors")]) == 1
    assert "not an lrm4d checkpoint" in capsys.readouterr().err
    assert _info(["--preset", "huge"]) == 1


def test_convert_checkpoint_to_float16_loads_and_matches(tmp_path):
    from lrm4d_core.io.checkpoint import convert_checkpoint, load_checkpoint, save_checkpoint
    from lrm4d_core.model.config import preset
    from lrm4d_core.model.lrm4d import LRM4D

    torch.manual_seed(0)
    model = LRM4D(preset("tiny", hidden=32, layers=1, heads=2, image_size=(16, 16))).eval()
    src = save_checkpoint(tmp_path / "a.safetensors", model, provenance={"run": "x"})
    dst = convert_checkpoint(src, tmp_path / "b.safetensors", provenance_update={"shipped": True})
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    half, _, prov = load_checkpoint(dst)
    assert prov["run"] == "x" and prov["shipped"] is True and prov["stored_dtype"] == "torch.float16"
    for (k, a), (_, b) in zip(model.state_dict().items(), half.state_dict().items()):
        assert b.dtype == a.dtype
        torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0)
