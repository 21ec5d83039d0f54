"""Batched inference for `lrm4d serve`: a shared request queue and one model + worker thread per device.

    engine = Engine([load_model(ckpt, device="cuda:0"), load_model(ckpt, device="cuda:1")], max_batch=8)
    with engine.arrival():                      # counts a request being decoded (see batching below)
        item = WorkItem(images, K, cam_to_world, times, scene)
        future = engine.submit(item)
    result = future.result()                     # WorkResult: packed float16 Gaussians, normalizations

Batching. The model takes [B, V, 3, H, W]; every request is resized to the model resolution, so
requests batch when they have the same number of views V. A worker takes the oldest queued request
and every queued request with the same V (up to `max_batch`). If the batch is not full and other
requests are still being decoded by gRPC handler threads (`arrival()`), it waits for them, at most
`max_delay_ms` after it took the first one; a lone client therefore never waits. Requests with
another V stay queued for the next batch. If a batched forward fails (e.g. out of memory), its
requests are retried one by one so one bad request cannot fail the others.

Devices. One model per device, each with its own worker thread pulling from the shared queue: a free
device takes the next batch (work stealing, which balances unequal devices better than a fixed
round robin). On a CPU-only machine there is one model.

Per request the preparation is exactly `model.api.reconstruct()`'s (resize with antialiasing when
downscaling, `Cameras.resized`, scene normalization estimated from the cameras unless given, time
normalization spanning the request's times), so a remote reconstruction equals a local one up to
the float16 transport (tests/test_serve.py checks it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from lrm4d_core.cameras import Cameras, SceneNormalization, TimeNormalization
from lrm4d_core.model.api import prepare_window
from lrm4d_core.model.nearest_copy import reconstruction_windows
from lrm4d_core.model.view_weight import VIEW_DEPENDENCE_OFF

__all__ = ["WorkItem", "WorkResult", "Engine", "EngineStats"]

log = logging.getLogger(__name__)


@dataclass
class WorkItem:
    """One decoded, validated request."""

    images: list[np.ndarray]  # V x uint8 HxWx3
    K: np.ndarray  # [V, 3, 3] float64
    cam_to_world: np.ndarray  # [V, 4, 4] float64
    times: np.ndarray  # [V] float64 seconds
    scene: SceneNormalization | None = None
    is_active: Callable[[], bool] = lambda: True  # False once the caller gave up (deadline, cancel)
    request_id: str = ""
    future: Future = field(default_factory=Future)
    enqueued: float = 0.0
    ground_z: float | None = None  # height of the ground in the fixed frame, if the client knows it

    @property
    def key(self) -> int:
        return len(self.images)


@dataclass
class WorkResult:
    gaussians_f16: bytes
    count: int
    scene: SceneNormalization
    time: TimeNormalization
    model_width: int
    model_height: int
    timings: dict[str, float]
    environment: list[float] | None = None  # [3 * K] SH coefficients of the environment map, row-major
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the model's training background
    view_dependence: tuple[float, float] = VIEW_DEPENDENCE_OFF  # its renders' view-dependent opacity
    nearest_copy: float = 0.0  # its renders' nearest-copy strength (lrm4d_core.model.nearest_copy)
    time_windows: bytes = b""  # ... and the pixel-aligned Gaussians' windows, float32 pairs (empty: none)
    own_view: tuple[float, ...] = ()  # its renders' own-view splats (OwnViewConstants.to_list(); empty: none)


@dataclass
class EngineStats:
    requests: int = 0
    errors: int = 0
    cancelled: int = 0
    batches: int = 0
    max_batch_seen: int = 0


class _Queue:
    """FIFO of WorkItems that hands out same-key batches (see the module docstring)."""

    def __init__(self, max_batch: int, max_delay_s: float) -> None:
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self._items: deque[WorkItem] = deque()
        self._cond = threading.Condition()
        self._arriving = 0
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @contextlib.contextmanager
    def arrival(self) -> Iterator[None]:
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def put(self, item: WorkItem) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            item.enqueued = time.perf_counter()
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self) -> list[WorkItem] | None:
        """The next batch; None once closed and drained."""
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._items.popleft()
            batch = [first]
            deadline = time.monotonic() + self.max_delay_s
            while len(batch) < self.max_batch:
                for item in [i for i in self._items if i.key == first.key][: self.max_batch - len(batch)]:
                    self._items.remove(item)
                    batch.append(item)
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0 or self._arriving == 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch


class Engine:
    """Queue + one worker thread per model (one model per device)."""

    def __init__(self, models: Sequence[torch.nn.Module], max_batch: int = 8, max_delay_ms: float = 5.0) -> None:
        if not models:
            raise ValueError("the engine needs at least one model")
        if max_batch < 1 or max_delay_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_delay_ms >= 0, got {max_batch}, {max_delay_ms}")
        self.models = list(models)
        self.config = self.models[0].config
        self.max_batch, self.max_delay_ms = max_batch, max_delay_ms
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()
        self._queue = _Queue(max_batch, max_delay_ms / 1000.0)
        self._workers = [
            threading.Thread(target=self._work, args=(m,), name=f"lrm4d-worker-{m.device}", daemon=True)
            for m in self.models
        ]
        for w in self._workers:
            w.start()

    @property
    def devices(self) -> list[str]:
        return [str(m.device) for m in self.models]

    @property
    def queued(self) -> int:
        return len(self._queue)

    def arrival(self) -> contextlib.AbstractContextManager[None]:
        """Wrap the decoding of a request that will be submitted: batches wait for it (bounded)."""
        return self._queue.arrival()

    def submit(self, item: WorkItem) -> Future:
        self._queue.put(item)
        return item.future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests; workers finish what is queued, then exit."""
        self._queue.close()
        for w in self._workers:
            w.join(timeout)

    # ------------------------------------------------------------------------------------- workers
    def _work(self, model: torch.nn.Module) -> None:
        while True:
            batch = self._queue.take()
            if batch is None:
                return
            live = []
            for item in batch:
                if item.is_active():
                    live.append(item)
                else:  # the caller's deadline passed while it was queued: do not spend the GPU on it
                    with self._stats_lock:
                        self.stats.cancelled += 1
                    item.future.cancel()
            if live:
                self._run(model, live)

    def _run(self, model: torch.nn.Module, batch: list[WorkItem]) -> None:
        started = time.perf_counter()
        prepared, ok = [], []
        for item in batch:
            try:
                prepared.append(_prepare(model, item))
                ok.append(item)
            except Exception as err:  # noqa: BLE001 - reported to that caller alone
                self._fail(item, err)
        if not ok:
            return
        try:
            outputs = _forward(model, prepared)
            sizes = [len(ok)]
        except Exception as err:  # noqa: BLE001
            if len(ok) == 1:
                self._fail(ok[0], err)
                return
            log.warning("batched forward of %d requests failed (%s: %s); running them one by one",
                        len(ok), type(err).__name__, err)
            outputs, sizes = [], []
            for p, item in zip(prepared, ok):
                try:
                    outputs.extend(_forward(model, [p]))
                except Exception as err1:  # noqa: BLE001
                    outputs.append(err1)
                sizes.append(1)
        done = time.perf_counter()
        with self._stats_lock:
            self.stats.batches += len(sizes)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, *sizes)
        for p, item, out in zip(prepared, ok, outputs):
            if isinstance(out, Exception):
                self._fail(item, out)
                continue
            data, count, forward_s, env, windows = out
            H, W = p["size"]
            timings = {
                "queue": started - item.enqueued,
                "prepare": p["prepare_s"],
                "forward": forward_s,
                "batch_size": float(len(ok) if sizes == [len(ok)] else 1),
                "engine_total": done - item.enqueued,
            }
            with self._stats_lock:
                self.stats.requests += 1
            if item.future.set_running_or_notify_cancel():
                item.future.set_result(WorkResult(data, count, p["scene"], p["time"], W, H, timings, env,
                                                  tuple(model.config.background),
                                                  model.config.view_weighting,
                                                  model.config.nearest_copy if windows else 0.0, windows,
                                                  tuple(model.config.own_view.to_list()) if model.config.own_view.angle_deg > 0 else ()))

    def _fail(self, item: WorkItem, err: BaseException) -> None:
        with self._stats_lock:
            self.stats.errors += 1
        if item.future.set_running_or_notify_cancel():
            item.future.set_exception(err)


def _prepare(model: torch.nn.Module, item: WorkItem) -> dict[str, Any]:
    """`model.api.reconstruct()`'s preparation for one request (the same function)."""
    t0 = time.perf_counter()
    H_in, W_in = item.images[0].shape[:2]
    cameras = Cameras(torch.from_numpy(item.K), torch.from_numpy(item.cam_to_world), W_in, H_in)
    p = prepare_window(model, item.images, cameras, item.times, scene=item.scene, ground_z=item.ground_z)
    return {"pixels": p.pixels, "cams": p.cameras, "times": p.times, "scene": p.scene, "time": p.time, "ground": p.ground,
            "size": tuple(p.pixels.shape[-2:]), "prepare_s": time.perf_counter() - t0}


def _forward(model: torch.nn.Module, prepared: list[dict[str, Any]]) -> list[tuple[bytes, int, float, list[float] | None, bytes]]:
    """One forward over the batch -> per request (float16 bytes, count, forward seconds, environment
    map coefficients or None, the pixel-aligned Gaussians' nearest-copy time windows as float32
    bytes or b"": none, or some were dropped, so that their order is lost)."""
    device = model.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pixels = torch.stack([p["pixels"] for p in prepared])
        times = torch.stack([p["times"] for p in prepared])
        scales = torch.tensor([p["scene"].scale for p in prepared], dtype=torch.float32)
        grounds = torch.tensor([p["ground"] for p in prepared], dtype=torch.float32)  # NaN: unknown
        out = model(pixels, [p["cams"] for p in prepared], times, world_scale=scales, with_environment=True,
                    ground_height=grounds)
        channels = out.gaussians.to_channels()
        finite = torch.isfinite(channels).all(-1)  # [B, N]: a non-finite Gaussian is never sent
        channels = channels.clamp(-65504.0, 65504.0).to(torch.float16).cpu().numpy()
        finite = finite.cpu().numpy()
        env = out.environment.coefficients.float().cpu().reshape(len(prepared), -1) if out.environment is not None else None
        windows = [b""] * len(prepared)
        for b, p in enumerate(prepared):  # as `reconstruct` computes them, where the order survives
            pixel_aligned = len(p["cams"]) * p["cams"].width * p["cams"].height
            if not finite[b, :pixel_aligned].all():
                continue
            w = reconstruction_windows(model.config, out.gaussians.means[b, :pixel_aligned], p["pixels"], p["cams"], p["times"])
            if w is not None:
                windows[b] = w.float().cpu().numpy().astype("<f4", copy=False).tobytes()
    forward_s = time.perf_counter() - t0
    if not finite.all():
        log.warning("dropped %d non-finite Gaussians from the model's output", int((~finite).sum()))
    # little-endian float16 bytes, as codec.pack_gaussians (not imported: the engine needs no protobuf)
    out_list = []
    for b in range(len(prepared)):
        rows = channels[b][finite[b]]
        out_list.append((rows.astype("<f2", copy=False).tobytes(), int(rows.shape[0]), forward_s,
                         env[b].tolist() if env is not None and np.isfinite(env[b].numpy()).all() else None, windows[b]))
    return out_list
