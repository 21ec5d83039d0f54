"""The ROS-free half of the live node: the reconstruction worker and the camera watchdog.

`node.py` only moves messages between rclpy and these objects, so the scheduling logic is tested
without ROS (tests/test_node.py). The worker drives the same core objects, in the same order, as
the bag replay (`replay.py`): FrameAssembler -> WindowBuffer.add_step -> Reconstructor.process ->
OutputEncoder.encode.

Threads: the rclpy executor thread calls `LiveWorker.submit()` (from the synchronizer callback),
`frame_received()`, `set_stalled()` and `diagnostics_msg()`; the worker thread does everything
else. `submit()` never blocks on the worker: it appends to a bounded queue and returns.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from lrm4d_core.pipeline import Reconstructor
from lrm4d_core.stream import Window, WindowBuffer

from .convert import stamp_to_ns
from .msgdefs import MessageFactory
from .params import NodeParams
from .shell import Diagnostics, FrameAssembler, FrameDropped, OutputEncoder, RateLimitedLog
from .tf import TfLookupError

__all__ = ["SyncedGroup", "LiveWorker", "CameraLiveness", "stall_timeout_s", "queue_limit", "output_age"]

NS = 1_000_000_000
TF_POLL_S = 0.01  # how often the worker re-checks TF for a group waiting on it (wall time)
IDLE_WAIT_S = 0.5  # longest sleep of an idle worker (it also wakes on every submit and on stop)


def stall_timeout_s(params: NodeParams) -> float:
    """A camera that has delivered nothing (image or camera_info) for this long, while another
    camera has, is stalled: three reconstruction periods, and never less than one second."""
    return max(1.0, 3.0 / params.update_rate_hz)


def queue_limit(params: NodeParams) -> int:
    """Synchronized groups buffered while a reconstruction runs: four windows' worth of views
    (`max_views` steps is the most any view selection uses), at least 16. The oldest group is
    dropped (and counted as `sync_queue_overflow`) beyond that."""
    return max(16, 4 * params.max_views)


@dataclass(frozen=True)
class SyncedGroup:
    """One ApproximateTimeSynchronizer output: (camera, image msg, camera_info msg) per live camera."""

    received_ns: int  # node clock when the synchronizer fired
    members: tuple[tuple[str, Any, Any], ...]


TfLookup = Callable[[str, str, int], Any]


class LiveWorker:
    """Decodes, poses, windows and reconstructs synchronized groups on its own thread.

    - Every group reaches `WindowBuffer.add_step`, in arrival order (it chooses views over time).
    - A group waits (up to `tf_wait_s` after it arrived) until TF can pose all its images, like
      tf2_ros.MessageFilter: TF for a stamp often arrives after the image. After that its frames
      are posed or dropped (tf_missing / tf_extrapolation), counted and logged (rate-limited).
    - One reconstruction at a time. When several windows fall due while one runs ("latest wins"),
      only the newest is reconstructed; the others are counted as `windows_skipped`.

    Args:
        reconstructor, encoder: the shared core objects (`Reconstructor`, `OutputEncoder`).
        tf_lookup: (target, source, stamp_ns) -> 4x4, non-blocking (`Tf2Lookup.lookup` live).
        publish: gets the `encoder.encode()` list of (relative topic, type, message).
        clock_ns: the node clock (ROS time: simulated time under use_sim_time).
        with_4d: whether to encode the 4D set this time (e.g. only when someone subscribes).
        views: which predicted views to render this time, by name (e.g. those someone subscribes
            to); None renders all of them.
        ok: False once the ROS context is shutting down: failures are then expected and silent.
    """

    def __init__(
        self,
        params: NodeParams,
        reconstructor: Reconstructor,
        encoder: OutputEncoder,
        tf_lookup: TfLookup,
        publish: Callable[[list[tuple[str, str, Any]]], None],
        clock_ns: Callable[[], int],
        log_warning: Callable[[str], None],
        log_error: Callable[[str], None] | None = None,
        with_4d: Callable[[], bool] | None = None,
        ok: Callable[[], bool] | None = None,
        views: Callable[[str], bool] | None = None,
    ) -> None:
        self.params = params
        self.reconstructor, self.encoder = reconstructor, encoder
        self.tf_lookup, self.publish, self.clock_ns = tf_lookup, publish, clock_ns
        self.with_4d = with_4d or (lambda: params.publish_gaussians_4d)
        self.ok = ok or (lambda: True)
        self.views = views
        self.assembler = FrameAssembler(params)
        self.buffer = WindowBuffer(params.window_config(), camera_order=params.cameras)
        self.diag = Diagnostics()
        self.lock = threading.Lock()  # guards diag; never held while taking _cond
        self.limit = queue_limit(params)
        self.busy = False
        self._warn = RateLimitedLog(log_warning)
        self._error = log_error or log_warning
        self._queue: deque[SyncedGroup] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer_counters: dict[str, int] = {}

    # ------------------------------------------------------------------ executor-thread side
    def submit(self, group: SyncedGroup) -> None:
        """Queue a synchronized group for the worker; never blocks on a running reconstruction."""
        dropped = None
        with self._cond:
            if len(self._queue) >= self.limit:
                dropped = self._queue.popleft()
            self._queue.append(group)
            self._cond.notify()
        if dropped is not None:
            with self.lock:
                for _ in dropped.members:
                    self.diag.frame_dropped("sync_queue_overflow")
            self._warn("overflow", f"reconstruction is falling behind: dropped the oldest of {self.limit} queued groups")

    def frame_received(self, camera: str, now_ns: int) -> None:
        with self.lock:
            self.diag.frame_received(camera, now_ns)

    def set_stalled(self, cameras: Iterable[str]) -> None:
        cameras = sorted(cameras)
        with self.lock:
            self.diag.extra["stalled_cameras"] = ",".join(cameras) or "none"
            if cameras:
                self.diag.warnings["stalled"] = f"stalled cameras: {', '.join(cameras)}"
            else:
                self.diag.warnings.pop("stalled", None)

    def qos_incompatible(self, topic: str, policy: str) -> None:
        """A publisher on `topic` whose QoS cannot reach our subscription (e.g. best effort into
        reliable): its messages never arrive, so say so in /diagnostics (WARN) and count it."""
        with self.lock:
            self.diag.counters["qos_incompatible"] += 1
            self.diag.warnings[f"qos:{topic}"] = f"incompatible QoS ({policy}) from a publisher on {topic}"

    def diagnostics_msg(self, factory: MessageFactory, now_ns: int, hardware_id: str) -> Any:
        with self._cond:
            queued = len(self._queue)
        with self.lock:
            self.diag.extra["queued_groups"] = str(queued)
            self.diag.extra["reconstructing"] = str(self.busy).lower()
            for key, value in self._buffer_counters.items():
                self.diag.extra[f"window_buffer/{key}"] = str(value)
            return self.diag.to_msg(factory, now_ns, hardware_id)

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # ------------------------------------------------------------------ thread control
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lrm4d-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the worker to stop and wait up to `timeout_s`; False if it is still inside a
        reconstruction (it is a daemon thread and publishes nothing once stopped)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """The worker thread is alive (e.g. still inside a reconstruction after `stop` timed out)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or not self.ok()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                consumed = self.step()
            except Exception as err:  # noqa: BLE001 - a bug must not kill the worker silently
                if self.stopping:
                    return
                self._error(f"lrm4d worker: unexpected {type(err).__name__}: {err}")
                consumed = 0
            with self._cond:
                if self._stop.is_set():
                    return
                if not self._queue:
                    self._cond.wait(IDLE_WAIT_S)
                elif consumed == 0:  # the head group waits for TF
                    self._cond.wait(TF_POLL_S)

    # ------------------------------------------------------------------ worker side
    def step(self) -> int:
        """Feed every ready group to the window, then reconstruct the newest due window (if any).

        Returns the number of groups consumed. Public so tests can run the worker synchronously.
        """
        consumed, due = 0, None
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    break
                group = self._queue[0]
            if not self._tf_ready(group):
                break
            with self._cond:
                if not self._queue or self._queue[0] is not group:
                    continue  # dropped by an overflow meanwhile
                self._queue.popleft()
            consumed += 1
            window = self._add(group)
            if window is not None:
                if due is not None:
                    with self.lock:
                        self.diag.counters["windows_skipped"] += 1
                due = window
        if due is not None and not self.stopping:
            self._reconstruct(due)
        return consumed

    def _tf_ready(self, group: SyncedGroup) -> bool:
        """True once TF poses every image of the group, or once the group waited tf_wait_s (or the
        clock jumped back since it arrived: a looping bag must not leave it waiting forever)."""
        age_ns = self.clock_ns() - group.received_ns
        if age_ns < 0 or age_ns >= self.params.tf_wait_s * NS:
            return True
        for _camera, image, info in group.members:
            # The optical frame as FrameAssembler takes it: the image's frame_id, else camera_info's.
            frame = str(image.header.frame_id) or str(info.header.frame_id)
            try:
                self.tf_lookup(self.params.fixed_frame, frame, stamp_to_ns(image.header.stamp))
            except TfLookupError:
                return False
        return True

    def _add(self, group: SyncedGroup) -> Window | None:
        frames = []
        for camera, image, info in group.members:
            try:
                frames.append(self.assembler.make_frame(camera, image, self.tf_lookup, info))
            except FrameDropped as drop:
                with self.lock:
                    self.diag.frame_dropped(drop.reason)
                self._warn(drop.reason, f"dropped frame: {drop}")
        window = self.buffer.add_step(frames) if frames else None
        counters = dict(self.buffer.counters)
        with self.lock:
            self._buffer_counters = counters
        return window

    def _reconstruct(self, window: Window) -> None:
        self.busy = True
        t0 = time.perf_counter()
        try:
            products = self.reconstructor.process(window, views=self.views)
        except Exception as err:  # noqa: BLE001 - a failed window must not stop the node
            if self.stopping:
                return
            with self.lock:
                self.diag.frame_dropped("reconstruction_failed")
                self.diag.update_backend(getattr(self.reconstructor, "backend", None), err)
            self._warn("reconstruction", f"window ending {window.end_ns / NS:.3f} s failed: {type(err).__name__}: {err}")
            return
        finally:
            self.busy = False
        latency = time.perf_counter() - t0
        if self.stopping:
            return
        try:
            self.publish(self.encoder.encode(products, with_4d=self.with_4d()))
        except Exception as err:  # noqa: BLE001 - e.g. the context went down mid-publish
            if self.stopping:
                return
            with self.lock:
                self.diag.frame_dropped("publish_failed")
            self._warn("publish", f"publishing window ending {window.end_ns / NS:.3f} s failed: {type(err).__name__}: {err}")
            return
        with self.lock:
            self.diag.window_done(products, latency)
            self.diag.update_backend(getattr(self.reconstructor, "backend", None))
            self.diag.extra["output_age_s"] = output_age(self.clock_ns(), window.end_ns)


AGE_PLAUSIBLE_S = 3600.0


def output_age(now_ns: int, stamp_ns: int) -> str:
    """Node clock minus the window's stamp (s), or "n/a" with the reason when the two clocks are
    not the same clock (a recorded bag played without use_sim_time: stamps from another day)."""
    age = (now_ns - stamp_ns) / NS
    if abs(age) > AGE_PLAUSIBLE_S:
        return (f"n/a: the stamps are {age:.0f} s from the node clock, not the clock they come from "
                "(a recorded bag? play it with --clock and set use_sim_time)")
    return f"{age:.3f}"


class CameraLiveness:
    """Which cameras the synchronizer should wait for.

    ApproximateTimeSynchronizer fires only when every input has a message, so one dead camera
    would stop all output. A camera is *stalled* when its image or camera_info topic has been
    silent for more than `timeout_s` while some other camera has delivered both within
    `timeout_s`; the node then rebuilds the synchronizer over the live cameras. A stalled camera
    is live again as soon as both its topics have delivered within `timeout_s`. When every camera
    is silent (input stopped, bag paused) nothing changes. A camera that never published counts
    as silent since the first message of any camera. Times are the node clock; a clock that jumps
    back (looping bag) makes stale times look fresh, which at worst re-stalls a dead camera one
    timeout later.
    """

    KINDS = ("image", "info")

    def __init__(self, cameras: Sequence[str], timeout_s: float) -> None:
        self.cameras = tuple(cameras)
        self.timeout_ns = int(timeout_s * NS)
        self._last: dict[tuple[str, str], int] = {}
        self._first_ns: int | None = None
        self._stalled: set[str] = set()

    @property
    def stalled(self) -> tuple[str, ...]:
        return tuple(c for c in self.cameras if c in self._stalled)

    @property
    def live(self) -> tuple[str, ...]:
        return tuple(c for c in self.cameras if c not in self._stalled)

    def seen(self, camera: str, kind: str, now_ns: int) -> bool:
        """Record a message; True if the set of live cameras changed (a stalled camera is back)."""
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        if self._first_ns is None:
            self._first_ns = now_ns
        self._last[(camera, kind)] = now_ns
        return camera in self._stalled and self.check(now_ns)

    def check(self, now_ns: int) -> bool:
        """Re-evaluate every camera (the node's watchdog timer); True if the live set changed."""
        if self._first_ns is None:
            return False
        silent = {c for c in self.cameras if self._age(c, now_ns) > self.timeout_ns}
        if len(silent) == len(self.cameras):
            return False  # all silent: input stopped, nothing to route around
        changed = silent != self._stalled
        self._stalled = silent
        return changed

    def _age(self, camera: str, now_ns: int) -> int:
        oldest = min(self._last.get((camera, k), self._first_ns) for k in self.KINDS)  # type: ignore[type-var]
        return max(0, now_ns - oldest)
