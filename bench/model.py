"""Benchmark of the 4D-LRM model; prints one JSON object to stdout.

    python bench/model.py                 # CPU: tiny, 8 and 24 views; GPU parts when CUDA exists
    python bench/model.py --repeats 10 --gpu-presets base large

CPU (always): the `tiny` preset at its resolution, forward latency (torch.inference_mode, float32,
median of --repeats after one warm-up) for 8 and 24 views, and peak memory. Each CPU case runs in
a fresh subprocess so its peak RSS (ru_maxrss) is its own; `forward_extra_mib` is the peak minus
the RSS just before the timed forwards (model and inputs already allocated).

GPU (only when torch.cuda.is_available()): `base` and `large` with 24 views at 256x256 under bf16
autocast: forward latency (CUDA events, median), peak allocated memory
(torch.cuda.max_memory_allocated), achieved TFLOP/s, and the whole `reconstruct()` (uint8 images
in, normalization, forward) + `render()` of 24 frames in the world frame (one view per frame at
its own time, sliced through `Reconstruction.slice`); the conversion of the full 4D set to the
world frame (`Reconstruction.gaussians`) is reported separately as `to_world_4d_s`.

FLOPs are counted analytically, matmuls only, 2 FLOPs per multiply-add, forward pass:
    T = V * (H/p) * (W/p) + N tokens, d = hidden, m = MLP width, L = layers
    per layer: 2*T*(4*d^2 + 2*d*m)   (qkv 3d^2 + proj d^2 + MLP 2*d*m)
             + 4*T^2*d                (Q K^T and softmax(.) V over all heads)
    + tokenizer 2*T_pix*(10 p^2)*d + pixel head 2*T_pix*d*(20 p^2) + free head 2*N*d*20
LayerNorm, softmax, GeLU and the activations are not counted (they are memory-bound).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lrm4d_core.cameras import Cameras  # noqa: E402
from lrm4d_core.model.config import ModelConfig, preset  # noqa: E402
from lrm4d_core.model.lrm4d import LRM4D  # noqa: E402

FLOP_FORMULA = (
    "sum over L layers of 2*T*(4*d^2 + 2*d*m) + 4*T^2*d, plus 2*T_pix*10p^2*d (tokenizer) + "
    "2*T_pix*d*20p^2 (pixel head) + 2*N*d*20 (free head); T = V*(H/p)*(W/p) + N"
)


def forward_flops(config: ModelConfig, views: int, height: int, width: int) -> int:
    p, d, m, n_free = config.patch_size, config.hidden, config.mlp_hidden, config.num_free_tokens
    t_pix = views * (height // p) * (width // p)
    t = t_pix + n_free
    per_layer = 2 * t * (4 * d * d + 2 * d * m) + 4 * t * t * d
    return config.layers * per_layer + 2 * t_pix * (10 * p * p) * d + 2 * t_pix * d * (20 * p * p) + 2 * n_free * d * 20


def ring_cameras(views: int, height: int, width: int, distance: float = 2.5) -> Cameras:
    """Inward-looking cameras on a tilted ring around the origin (50 degree field of view)."""
    f = 0.5 * width / math.tan(math.radians(25))
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64).expand(views, 3, 3)
    c2w = torch.zeros(views, 4, 4, dtype=torch.float64)
    for i in range(views):
        a = 2 * math.pi * i / views
        eye = torch.tensor([distance * math.cos(a), distance * math.sin(a), 0.6 * math.sin(3 * a)], dtype=torch.float64)
        z = -eye / eye.norm()
        x = torch.linalg.cross(torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), z)
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        c2w[i, :3, :3] = torch.stack([x, y, z], 1)
        c2w[i, :3, 3] = eye
        c2w[i, 3, 3] = 1
    return Cameras(K.clone(), c2w, width, height)


def model_inputs(config: ModelConfig, views: int, device: torch.device):
    H, W = config.image_size
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, views, 3, H, W, generator=gen).to(device)
    cams = ring_cameras(views, H, W).to(device=device, dtype=torch.float32)
    times = torch.linspace(-1, 1, views)[None].to(device)
    return images, cams, times


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------------------- CPU
def cpu_worker(name: str, views: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = preset(name)
    model = LRM4D(config).eval()
    images, cams, times = model_inputs(config, views, torch.device("cpu"))
    with torch.inference_mode():
        model(images, cams, times)  # warm-up
        rss_before = _rss_mib()
        lat = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(images, cams, times)
            lat.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    H, W = config.image_size
    flops = forward_flops(config, views, H, W)
    med = statistics.median(lat)
    return {
        "preset": name,
        "views": views,
        "resolution": [H, W],
        "tokens": config.tokens_per_view() * views + config.num_free_tokens,
        "gaussians": views * H * W + config.num_free_tokens,
        "forward_s_median": round(med, 5),
        "forward_s_min": round(min(lat), 5),
        "repeats": repeats,
        "forward_gflop": round(flops / 1e9, 3),
        "achieved_gflop_s": round(flops / med / 1e9, 2),
        "peak_rss_mib": round(peak, 1),
        "forward_extra_mib": round(peak - rss_before, 1),
    }


def run_cpu(name: str, views_list: list[int], repeats: int) -> list[dict]:
    out = []
    for views in views_list:
        cmd = [sys.executable, __file__, "--cpu-worker", json.dumps({"name": name, "views": views, "repeats": repeats})]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            out.append({"preset": name, "views": views, "error": res.stderr.strip().splitlines()[-1:]})
        else:
            out.append(json.loads(res.stdout))
    return out


# ---------------------------------------------------------------------------- GPU
def _device_time(fn, repeats: int, device: torch.device) -> list[float]:
    """Seconds per call after one warm-up: CUDA events on CUDA, perf_counter elsewhere."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flash_available() -> bool | str:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q = torch.randn(1, 2, 256, 64, device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return True
    except Exception as exc:  # report, don't fail the bench
        return f"no: {type(exc).__name__}: {str(exc)[:120]}"


def run_gpu(name: str, views: int, size: int, repeats: int, device: str = "cuda") -> dict:
    """One preset on the GPU (`device` may be "cpu" only to smoke-test this code path)."""
    from lrm4d_core.model import api

    device = torch.device(device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    config = preset(name, image_size=(size, size))
    model = LRM4D(config).to(device).eval()
    images, cams, times = model_inputs(config, views, device)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        lat = _device_time(lambda: model(images, cams, times), repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    flops = forward_flops(config, views, size, size)
    med = statistics.median(lat)
    result = {
        "preset": name,
        "parameters": model.num_parameters(),
        "views": views,
        "resolution": [size, size],
        "tokens": config.tokens_per_view() * views,
        "dtype": "bf16 autocast (heads fp32)" if cuda else "fp32",
        "forward_s_median": round(med, 4),
        "forward_s_min": round(min(lat), 4),
        "peak_allocated_mib": round(peak, 1) if peak is not None else None,
        "forward_tflop": round(flops / 1e12, 3),
        "achieved_tflop_s": round(flops / med / 1e12, 1),
    }
    # whole pipeline: uint8 images + world cameras + seconds -> Gaussians in the world -> 24 renders
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(views)]
    world_cams = ring_cameras(views, size, size, distance=7.0)
    seconds = np.linspace(0.0, 1.0, views)
    try:
        from lrm4d_core.render import rasterize  # noqa: F401

        have_render = True
    except Exception as exc:
        have_render = False
        result["render_error"] = f"{type(exc).__name__}: {exc}"

    def pipeline():
        # world-frame renders via Reconstruction.slice (no 4D re-factorization); to_world of the
        # full 4D set is timed separately below
        rec = api.reconstruct(model, frames, world_cams, seconds, world=False)
        if have_render:
            for i in range(views):
                api.render(rec, world_cams[i], float(seconds[i]))
        return rec

    pipeline()  # warm-up
    lat_e2e, stages = [], []
    for _ in range(max(3, repeats // 2)):
        _sync(device)
        t0 = time.perf_counter()
        rec = pipeline()
        _sync(device)
        lat_e2e.append(time.perf_counter() - t0)
        stages.append(rec.timings)
    result["reconstruct_render_s_median"] = round(statistics.median(lat_e2e), 4)
    result["reconstruct_render_frames"] = views if have_render else 0
    result["reconstruct_stages_s_median"] = {
        k: round(statistics.median(s[k] for s in stages), 4) for k in stages[0]
    }
    rec.gaussians  # noqa: B018
    result["to_world_4d_s"] = round(rec.timings["to_world"], 4)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-preset", default="tiny")
    parser.add_argument("--cpu-views", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--gpu-presets", nargs="+", default=["base", "large"])
    parser.add_argument("--gpu-views", type=int, default=24)
    parser.add_argument("--gpu-size", type=int, default=256)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--cpu-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_worker:
        spec = json.loads(args.cpu_worker)
        print(json.dumps(cpu_worker(spec["name"], spec["views"], spec["repeats"])))
        return 0
    out = {
        "bench": "model",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "flop_formula": FLOP_FORMULA,
        "cpu_results": [] if args.skip_cpu else run_cpu(args.cpu_preset, args.cpu_views, args.repeats),
    }
    if torch.cuda.is_available() and not args.skip_gpu:
        out["gpu"] = torch.cuda.get_device_name()
        out["flash_attention"] = _flash_available()
        out["gpu_results"] = [run_gpu(name, args.gpu_views, args.gpu_size, args.repeats) for name in args.gpu_presets]
        out["targets"] = {"paper_a100_24_frames_s": 1.5, "ours_h100_large_s": 0.3}
    else:
        out["gpu"] = None
        out["gpu_results"] = "skipped: no CUDA device" if not args.skip_gpu else "skipped (--skip-gpu)"
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
