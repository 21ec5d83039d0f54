"""Benchmark of the torch rasterizer against a naive dense implementation of the same math.

Prints one JSON document to stdout (progress goes to stderr):

    python bench/render.py            # N in {10k, 50k, 200k} x {128^2, 256^2}
    python bench/render.py --quick    # smaller dense budget, fewer repeats

Scenes: N Gaussians spread in a box in front of one camera (50 degree FOV), anisotropic, with
footprints from a few to tens of pixels and uniform opacities; `--translucent` adds rows with
low opacities, where few pixels terminate early and every splat-pixel pair must be evaluated.
`--plane-depth` also times each scene with `depth_mode="plane"` (each splat's depth plane, what
renders of reconstructions use) beside the default, and prints the ratio (`plane_depth_cost`).

"dense" evaluates every visible Gaussian at every pixel (chunks of pixels, so it fits in
memory; its backward runs chunk by chunk into the projected splats), with the same compositing
rules. Its cost is exactly proportional to the number of
pixels, so when the full image would take longer than --dense-budget seconds it runs on an evenly
spread subset of pixel rows and the time is extrapolated ("estimated": true, with the fraction).
Speed-ups are measured side by side in one run. Each row runs in its own process; peak memory is
that process's peak RSS during the measured call (VmHWM, reset before the call; it includes the
~0.3 GiB of the torch import and the scene), and "peak_extra_mib" subtracts the RSS before it.
When CUDA and gsplat are available, gsplat is timed on the same scenes too.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time

import torch
from torch import Tensor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lrm4d_core.cameras import Cameras  # noqa: E402
from lrm4d_core.gaussians import Gaussians3D  # noqa: E402
from lrm4d_core.render import rasterize  # noqa: E402
from lrm4d_core.render.projection import ALPHA_THRESHOLD, project  # noqa: E402

GIB = 1024**3


# ----------------------------------------------------------------------------- scenes
def make_scene(
    n: int, res: int, seed: int = 0, opacity: tuple[float, float] = (0.05, 0.95)
) -> tuple[Gaussians3D, Cameras]:
    """N Gaussians in a box 2.5-5.5 units in front of a res x res camera with a 50 degree FOV.

    Standard deviations 0.01-0.15 units (x 0.5-1.5 per axis, random rotation) project to about
    0.5-25 px at 256^2, so 3-sigma footprints span a few to tens of pixels.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.empty(n).uniform_(2.5, 5.5, generator=g)
    xy = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.5 * z[:, None]
    rot, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))
    s = torch.empty(n).uniform_(math.log(0.01), math.log(0.15), generator=g).exp()
    s = s[:, None] * torch.empty(n, 3).uniform_(0.5, 1.5, generator=g)
    covars = rot @ torch.diag_embed(s**2) @ rot.transpose(-1, -2)
    gaussians = Gaussians3D(
        means=torch.cat([xy, z[:, None]], 1),
        covars=covars,
        opacities=torch.empty(n).uniform_(*opacity, generator=g),
        colors=torch.rand(n, 3, generator=g),
        velocities=torch.zeros(n, 3),
    )
    f = 0.5 * res / math.tan(math.radians(25))
    cams = Cameras(torch.tensor([[[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]]]), torch.eye(4)[None], res, res)
    return gaussians, cams


def with_grad(g: Gaussians3D) -> tuple[Gaussians3D, list[Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in (g.means, g.covars, g.opacities, g.colors)]
    return Gaussians3D(*leaves, g.velocities), leaves


def loss_of(color: Tensor, alpha: Tensor, depth: Tensor) -> Tensor:
    return color.sum() + 0.1 * depth.sum() + alpha.sum()


# ----------------------------------------------------------------------------- dense reference
def dense_render(gaussians: Gaussians3D, cameras: Cameras, rows: Tensor, backward: bool = False,
                 max_elements: int = 1 << 23):
    """Every visible splat against every pixel of the given image rows (same math, no tiles).

    Returns color [C, R, W, 3], alpha and depth [C, R, W, 1] for the R rows. With backward=True
    it also backpropagates `loss_of` chunk by chunk into the projected splats (so memory stays
    bounded by one chunk's graph) and from there once into the Gaussians' parameters.
    """
    dtype = gaussians.means.dtype
    covars = 0.5 * (gaussians.covars + gaussians.covars.transpose(-1, -2))
    width = cameras.width
    with torch.set_grad_enabled(backward):
        proj = project(gaussians.means, covars, cameras.world_to_cam.to(dtype), cameras.K.to(dtype), width,
                       cameras.height, opacities=gaussians.opacities)
    u = torch.arange(width, dtype=dtype) + 0.5
    pix = torch.stack([u.repeat(rows.numel()), (rows.to(dtype) + 0.5).repeat_interleave(width)], -1)  # [R*W, 2]
    outs, roots, root_grads = [], [], []
    for c in range(len(cameras)):
        vis = proj.visible[c].nonzero()[:, 0]
        vis = vis[torch.argsort(proj.depths[c, vis].detach())]
        with torch.set_grad_enabled(backward):
            z = proj.depths[c, vis]
            splats = (proj.means2d[c, vis], proj.conics[c, vis], gaussians.opacities[vis],
                      torch.cat([gaussians.colors[vis], z[:, None], torch.ones_like(z[:, None])], 1))
        leaves = [t.detach().requires_grad_(backward) for t in splats]
        chunk = max(1, max_elements // max(vis.numel(), 1))
        parts = []
        for start in range(0, pix.shape[0], chunk):
            with torch.set_grad_enabled(backward):
                acc = _dense_chunk(pix[start : start + chunk], *leaves)
                if backward:
                    alpha = acc[:, 4:5]
                    loss_of(acc[:, :3], alpha, acc[:, 3:4] / alpha.clamp_min(1e-10)).backward()
            parts.append(acc.detach())
        outs.append(torch.cat(parts).reshape(rows.numel(), width, 5))
        if backward:
            roots += list(splats)
            root_grads += [leaf.grad for leaf in leaves]
    if backward:
        torch.autograd.backward(roots, root_grads)
    acc = torch.stack(outs)
    alpha = acc[..., 4:5]
    return acc[..., :3], alpha, acc[..., 3:4] / alpha.clamp_min(1e-10)


def _dense_chunk(pix: Tensor, m: Tensor, con: Tensor, o: Tensor, feat: Tensor) -> Tensor:
    dx = pix[:, None, 0] - m[None, :, 0]  # [P, N]
    dy = pix[:, None, 1] - m[None, :, 1]
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    alpha = torch.clamp_max(o * torch.exp(-sigma.clamp_max(50.0)), 0.999)
    alpha = torch.where(alpha >= ALPHA_THRESHOLD, alpha, torch.zeros_like(alpha))
    log1m = torch.log1p(-alpha)
    cum = torch.cumsum(log1m, 1)
    trans = torch.exp(torch.where(cum > math.log(1e-4), cum - log1m, torch.full_like(cum, -math.inf)))
    return (alpha * trans) @ feat  # [P, 5]


# ----------------------------------------------------------------------------- measurement
def _proc_status(field: str) -> int:
    """Bytes of a /proc/self/status field (VmRSS, VmHWM); -1 where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure(fn, repeats: int) -> dict:
    """Best wall time of `repeats` calls of fn(), and the peak RSS of one call."""
    gc.collect()
    times, cpu_times = [], []
    peak, base = -1, -1
    for i in range(repeats):
        gc.collect()
        if i == 0:
            base = _proc_status("VmRSS")
            has_reset = _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        if i == 0 and has_reset:
            peak = _proc_status("VmHWM")
    out = {"seconds": round(min(times), 4), "seconds_median": round(sorted(times)[len(times) // 2], 4),
           "seconds_all": [round(t, 4) for t in times], "cpu_seconds": round(min(cpu_times), 4)}
    if peak > 0:
        out["peak_rss_mib"] = round(peak / 2**20, 1)
        out["peak_extra_mib"] = round((peak - base) / 2**20, 1)
    return out


def bench_torch(g: Gaussians3D, cams: Cameras, repeats: int, options: dict) -> dict:
    stats: dict = {}

    def forward() -> None:
        with torch.no_grad():
            stats.update(rasterize(g, cams, backend="torch", **options).stats)

    def forward_backward() -> None:
        gg, _ = with_grad(g)
        out = rasterize(gg, cams, backend="torch", **options)
        loss_of(out.color, out.alpha, out.depth).backward()

    forward()  # warm-up
    res = {"forward": measure(forward, repeats), "forward_backward": measure(forward_backward, repeats)}
    res["stats"] = {k: stats[k] for k in ("n_visible", "n_intersections", "n_rounds", "n_evaluated") if k in stats}
    return res


def bench_dense(g: Gaussians3D, cams: Cameras, budget_s: float, repeats: int) -> dict:
    """Dense forward and forward+backward, on a row subset (extrapolated) when over budget."""
    height = cams.height
    probe_rows = torch.arange(0, height, max(1, height // 4))[:4]
    with torch.no_grad():
        dense_render(g, cams, probe_rows[:1])  # warm-up
    dense_render(with_grad(g)[0], cams, probe_rows[:1], backward=True)  # warm-up
    t0 = time.perf_counter()
    with torch.no_grad():
        dense_render(g, cams, probe_rows)
    per_row_fwd = (time.perf_counter() - t0) / probe_rows.numel()
    # forward+backward costs ~3x forward; size the subset so both fit the budget.
    n_rows = max(8, min(height, int(budget_s / (4.0 * per_row_fwd * max(repeats, 1)))))
    rows = torch.linspace(0, height - 1, n_rows).round().long().unique()
    fraction = rows.numel() / height

    def forward() -> None:
        with torch.no_grad():
            dense_render(g, cams, rows)

    def forward_backward() -> None:
        dense_render(with_grad(g)[0], cams, rows, backward=True)

    res = {"forward": measure(forward, repeats), "forward_backward": measure(forward_backward, repeats)}
    for k in ("forward", "forward_backward"):
        for key in ("seconds", "seconds_median", "cpu_seconds"):
            res[k][key] = round(res[k][key] / fraction, 3)
        res[k]["seconds_all"] = [round(t / fraction, 3) for t in res[k]["seconds_all"]]
    res["rows_evaluated"] = int(rows.numel())
    res["estimated"] = fraction < 1.0
    if fraction < 1.0:
        res["skipped"] = (
            f"the full image would take more than the {budget_s:g} s budget: ran {rows.numel()} of {height} rows "
            f"(evenly spread) and scaled the time by {1 / fraction:.2f} (dense cost is linear in pixels; "
            f"peak memory is that of the subset, which is bounded by the pixel chunking anyway)"
        )
    # Correctness cross-check on the evaluated rows.
    with torch.no_grad():
        ref = dense_render(g, cams, rows)
        ours = rasterize(g, cams, backend="torch")
    res["max_abs_diff_vs_torch"] = {
        "color": float((ours.color[:, rows] - ref[0]).abs().max()),
        "alpha": float((ours.alpha[:, rows] - ref[1]).abs().max()),
    }
    return res


def bench_gsplat(g: Gaussians3D, cams: Cameras, repeats: int) -> dict:
    gc_, cc = g.to(device="cuda"), cams.to(device="cuda")

    def forward() -> None:
        with torch.no_grad():
            rasterize(gc_, cc, backend="gsplat")
        torch.cuda.synchronize()

    def forward_backward() -> None:
        gg, _ = with_grad(gc_)
        out = rasterize(gg, cc, backend="gsplat")
        loss_of(out.color, out.alpha, out.depth).backward()
        torch.cuda.synchronize()

    forward()
    res = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        torch.cuda.reset_peak_memory_stats()
        res[name] = measure(fn, repeats)
        res[name]["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="dense budget 8 s; 3 repeats (dense: 1)")
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--res", default="128,256")
    ap.add_argument("--dense-budget", type=float, default=None,
                    help="seconds per dense measurement (default 60, quick 8)")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--translucent", action="store_true", help="also opacities 0.005-0.05 (little early termination)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed calls per measurement (default 5, quick 3; dense 2, quick 1)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--option", action="append", default=[], help="torch backend option key=value (repeatable)")
    ap.add_argument("--plane-depth", action="store_true",
                    help="also time depth_mode='plane' (depth planes) beside the default, with the ratio")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: scene:n:res in a child process
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = args.dense_budget if args.dense_budget is not None else (8.0 if args.quick else 60.0)
    repeats = args.repeats or (3 if args.quick else 5)
    dense_repeats = 1 if args.quick else 2
    options = {k: int(v) for k, v in (o.split("=") for o in args.option)}
    use_gsplat = torch.cuda.is_available()
    if use_gsplat:
        from lrm4d_core.render import gsplat_available

        use_gsplat = gsplat_available()

    scenes = {"uniform_opacity_0.05-0.95": (0.05, 0.95)}
    if args.translucent:
        scenes["translucent_opacity_0.005-0.05"] = (0.005, 0.05)

    def run_row(scene_name: str, n: int, res: int) -> dict:
        g, cams = make_scene(n, res, opacity=scenes[scene_name])
        row: dict = {"scene": scene_name, "n_gaussians": n, "resolution": res}
        row["torch"] = bench_torch(g, cams, repeats, options)
        if args.plane_depth:  # side by side: the same scene with each splat's depth plane
            row["torch_plane_depth"] = bench_torch(g, cams, repeats, options | {"depth_mode": "plane"})
            row["plane_depth_cost"] = {
                k: round(row["torch_plane_depth"][k]["seconds"] / row["torch"][k]["seconds"], 2)
                for k in ("forward", "forward_backward")
            }
        if not args.no_dense:
            row["dense"] = bench_dense(g, cams, budget, dense_repeats)
            row["speedup_vs_dense"] = {
                k: round(row["dense"][k]["seconds"] / row["torch"][k]["seconds"], 1)
                for k in ("forward", "forward_backward")
            }
        if use_gsplat:
            row["gsplat"] = bench_gsplat(g, cams, repeats)
        return row

    if args.row:  # child process: one row, as JSON
        scene_name, n, res = args.row.split(":")
        json.dump(run_row(scene_name, int(n), int(res)), sys.stdout)
        return

    results = []
    for scene_name in scenes:
        for n in (int(s) for s in args.sizes.split(",")):
            for res in (int(r) for r in args.res.split(",")):
                print(f"[bench] {scene_name} N={n} {res}x{res}", file=sys.stderr, flush=True)
                # One process per row, so that peak-RSS figures do not inherit earlier rows' heap.
                cmd = [sys.executable, os.path.abspath(__file__), "--row", f"{scene_name}:{n}:{res}"] + sys.argv[1:]
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
                row = json.loads(proc.stdout)
                results.append(row)
                print(f"[bench]   torch fwd {row['torch']['forward']['seconds']} s, fwd+bwd "
                      f"{row['torch']['forward_backward']['seconds']} s"
                      + (f", speed-up vs dense {row['speedup_vs_dense']}" if "speedup_vs_dense" in row else ""),
                      file=sys.stderr, flush=True)

    def find(n: int, res: int) -> dict | None:
        main_scene = next(iter(scenes))
        matches = [r for r in results if (r["n_gaussians"], r["resolution"], r["scene"]) == (n, res, main_scene)]
        return matches[0] if matches else None

    targets = {}
    if (r := find(50000, 256)) and "speedup_vs_dense" in r:
        v = r["speedup_vs_dense"]["forward"]
        targets["50k_256_forward_speedup_vs_dense_>=10"] = {"value": v, "met": v >= 10}
    if r := find(50000, 128):
        v = r["torch"]["forward_backward"]["seconds"]
        targets["50k_128_forward_backward_<1s"] = {"value": v, "met": v < 1.0}
    if (r := find(200000, 256)) and "peak_rss_mib" in r["torch"]["forward_backward"]:
        v = r["torch"]["forward_backward"]["peak_rss_mib"]
        targets["200k_256_forward_backward_peak_rss_<8GiB"] = {"value_mib": v, "met": v * 2**20 < 8 * GIB}
    doc = {
        "benchmark": "lrm4d_core.render torch backend vs dense",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "settings": {"quick": args.quick, "dense_budget_s": budget, "repeats": repeats, "dense_repeats": dense_repeats,
                     "torch_options": options, "dtype": "float32", "cameras": 1,
                     "timing": "'seconds': best wall-clock time of the repeats; 'cpu_seconds': best process CPU "
                               "time (user + sys, all threads); the CPU may be shared with other jobs"},
        "results": results,
        "targets": targets,
    }
    json.dump(doc, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
