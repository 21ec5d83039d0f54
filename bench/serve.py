"""Remote inference overhead on loopback: `lrm4d serve` vs the local backend, in one run. Prints JSON.

    python bench/serve.py                          # tiny model, CPU, 4 views of 64x48, 1/4/16 clients
    python bench/serve.py --requests 400 --encoding jpeg --device cuda

The server runs in a subprocess (`python -m lrm4d_core.serve.server`, as deployed) with the same
checkpoint as the local backend (a tiny random model saved to a temporary directory, or
--checkpoint). For each concurrency C, C client threads each own a RemoteBackend (one gRPC channel
per client) and send `--requests / C` windows back to back; the local side runs the same number of
threads calling a LocalBackend on one in-process model. Reported per side: requests/s, p50 / p99
latency of one `reconstruct()` call, and for the server the mean batch size it formed.

    overhead.p50_ratio = remote p50 / local p50      (> 1: the remote path is slower per call)
    overhead.rps_ratio = remote req/s / local req/s  (> 1: the server's batching wins)

Two local variants: `local` is the node's LocalBackend as it is (it also converts the full 4D set
to the fixed frame, `Reconstruction.gaussians`, on every call), `local_model_only` does exactly the
server's work (model.api.reconstruct(..., world=False)). The ratios use `local_model_only`, the
like-for-like comparison; `overhead_vs_local_backend` uses `local`.
Both sides get OMP_NUM_THREADS threads (default 1) for torch. On a loaded machine the absolute
numbers move; the ratios, measured side by side, are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lrm4d_core import __version__  # noqa: E402
from lrm4d_core.io.checkpoint import save_checkpoint  # noqa: E402
from lrm4d_core.model.api import load_model, reconstruct  # noqa: E402
from lrm4d_core.pipeline import LocalBackend  # noqa: E402
from lrm4d_core.serve.client import RemoteBackend  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from model import ring_cameras  # noqa: E402

TOKEN = "bench-token"


def make_windows(n: int, views: int, width: int, height: int) -> list:
    rng = np.random.default_rng(0)
    cams = ring_cameras(views, height, width)
    out = []
    for i in range(n):
        images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(views)]
        out.append((images, cams, np.linspace(-1.0, 0.0, views) + 0.01 * i))
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_clients(make_call, concurrency: int, per_client: int, windows: list) -> dict:
    """`make_call()` -> (call(window), close()) per client thread; returns throughput and latency."""
    latencies: list[float] = []
    extras: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def client(index: int) -> None:
        call, close = make_call()
        try:
            call(windows[index % len(windows)])  # warm-up (connection, first forward)
            barrier.wait()
            for k in range(per_client):
                w = windows[(index * per_client + k) % len(windows)]
                t0 = time.perf_counter()
                extra = call(w)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if extra:
                        extras.append(extra)
        except Exception as err:  # noqa: BLE001
            with lock:
                errors.append(f"{type(err).__name__}: {err}")
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass
        finally:
            close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out = {
        "requests": len(latencies),
        "wall_s": round(wall, 4),
        "requests_per_s": round(len(latencies) / wall, 2) if wall > 0 else None,
        "p50_ms": round(1000 * percentile(latencies, 50), 3),
        "p99_ms": round(1000 * percentile(latencies, 99), 3),
        "mean_ms": round(1000 * statistics.fmean(latencies), 3) if latencies else None,
    }
    if extras:
        out["server_mean_batch_size"] = round(statistics.fmean(e["batch_size"] for e in extras), 2)
        out["server_forward_ms_p50"] = round(1000 * percentile([e["forward"] for e in extras], 50), 3)
        out["server_queue_ms_p50"] = round(1000 * percentile([e["queue"] for e in extras], 50), 3)
    if errors:
        out["errors"] = errors[:5]
    return out


def start_server(checkpoint: Path, workdir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    token_file = workdir / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    port_file = workdir / "port"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrm4d_core.serve.server", "--checkpoint", str(checkpoint), "--port", "0",
         "--port-file", str(port_file), "--token-file", str(token_file), "--devices", args.device,
         "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms), "--grace-s", "2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {proc.stderr.read()}")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model to serve (default: a tiny random model, see --hidden)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--model-size", type=int, default=32, help="model input resolution (square)")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=160, help="timed calls per concurrency level (split over clients)")
    p.add_argument("--encoding", default="raw", choices=["raw", "jpeg", "png"])
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                   help="torch threads on each side (default: OMP_NUM_THREADS or 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="lrm4d-bench-serve-") as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            checkpoint = Path(args.checkpoint)
        else:
            torch.manual_seed(0)
            heads = 2 if args.hidden % 2 == 0 else 1
            model = load_model(preset="tiny", device="cpu", hidden=args.hidden, layers=args.layers, heads=heads,
                               image_size=(args.model_size, args.model_size))
            checkpoint = save_checkpoint(tmp / "bench.safetensors", model)
        local_model = load_model(checkpoint, device=args.device)
        windows = make_windows(32, args.views, args.width, args.height)
        proc, port = start_server(checkpoint, tmp, args)
        try:
            probe = RemoteBackend(f"127.0.0.1:{port}", TOKEN, image_encoding=args.encoding, timeout_s=60)
            request_bytes = probe.encode_request(*windows[0], None).ByteSize()
            rec = probe.reconstruct(*windows[0], None)
            response_bytes = rec.gaussians_model.means.shape[0] * 20 * 2
            info = probe.info
            probe.close()

            def remote_client():
                b = RemoteBackend(f"127.0.0.1:{port}", TOKEN, image_encoding=args.encoding, timeout_s=60, retries=0)

                def call(w):
                    r = b.reconstruct(*w, None)
                    return {k: r.timings[f"server_{k}"] for k in ("batch_size", "forward", "queue")}

                return call, b.close

            backend = LocalBackend(local_model)

            def local_client():
                return (lambda w: backend.reconstruct(*w, None) and None), (lambda: None)

            def model_only_client():
                return (lambda w: reconstruct(local_model, w[0], w[1], w[2], world=False) and None), (lambda: None)

            results = []
            for c in args.concurrency:
                per_client = max(2, args.requests // c)
                row = {"concurrency": c, "requests_per_client": per_client}
                row["remote"] = run_clients(remote_client, c, per_client, windows)
                row["local_model_only"] = run_clients(model_only_client, c, per_client, windows)
                row["local"] = run_clients(local_client, c, per_client, windows)
                ref = row["local_model_only"]
                row["overhead"] = {
                    "p50_ratio": round(row["remote"]["p50_ms"] / ref["p50_ms"], 3),
                    "rps_ratio": round(row["remote"]["requests_per_s"] / ref["requests_per_s"], 3),
                }
                row["overhead_vs_local_backend"] = {
                    "p50_ratio": round(row["remote"]["p50_ms"] / row["local"]["p50_ms"], 3),
                    "rps_ratio": round(row["remote"]["requests_per_s"] / row["local"]["requests_per_s"], 3),
                }
                results.append(row)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    cfg = local_model.config
    print(json.dumps({
        "benchmark": "serve",
        "lrm4d_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "device": args.device,
        "torch_threads_per_side": args.threads,
        "model": {"preset": cfg.preset, "hidden": cfg.hidden, "layers": cfg.layers, "input": list(cfg.image_size),
                  "parameters": int(info.num_parameters), "server_model_id": info.model_id},
        "window": {"views": args.views, "width": args.width, "height": args.height, "encoding": args.encoding,
                   "request_bytes": request_bytes, "response_bytes": response_bytes},
        "server": {"transport": "gRPC over 127.0.0.1, separate process", "max_batch": args.max_batch,
                   "max_delay_ms": args.max_delay_ms},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
