"""Client of `lrm4d serve`: `RemoteBackend`, a pipeline Backend (lrm4d_core.pipeline.Backend).

    backend = RemoteBackend("gpu-box:50051", token="...", timeout_s=5.0, fallback=LocalBackend(model))
    rec = backend.reconstruct(images, cameras, times, scene)   # a model.api.Reconstruction
    backend.status      # "ok", or what is wrong (for diagnostics)
    backend.counters    # calls, ok, failures by status code, retries, breaker opens, fallbacks

Failure handling, in order:
- every attempt has a deadline (`timeout_s`);
- UNAVAILABLE and DEADLINE_EXCEEDED are retried `retries` times with exponential backoff and
  jitter (delay_k = min(backoff_max_s, backoff_s * 2^k), drawn uniformly from [delay_k / 2, delay_k]),
  so the worst case for one window is about (retries + 1) * timeout_s + the backoffs;
- a circuit breaker: after `breaker_failures` consecutive failed calls it opens for `breaker_open_s`
  seconds, during which calls fail at once (BackendUnavailable) without touching the network; then
  one probe call (no retries) decides: success closes it, failure opens it again;
- with a `fallback` backend (the node's `fallback_to_local`), a call that fails or is refused by
  the open breaker is answered by the fallback instead, and `status` says so.
Recovery needs nothing from the caller: the gRPC channel reconnects by itself (reconnect backoff
capped at `reconnect_max_s`) and the breaker's probe lets traffic through once the server is back.

Errors a retry cannot fix are raised at once and do not count against the server: a request over
the message limit (`RequestTooLarge`, checked before sending with the smaller of our limit and the
server's, and mapped from the server's RESOURCE_EXHAUSTED), and INVALID_ARGUMENT (`RemoteCallError`).
A wrong token raises `RemoteAuthError` and does count (the server cannot be used as configured).

The Reconstruction is rebuilt from the response: `gaussians_model` from the float16 channels
(Gaussians4D.from_channels, float32 on `device`), `scene` and `time` exactly as the server used
them, `model_cameras` / `model_times` recomputed here from the request's cameras and times at the
model resolution the server reports (the same arithmetic as `model.api.reconstruct`, so they equal
the local ones), and `timings` = the server's stages + this side's encode / rpc / decode.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import grpc
import numpy as np

from . import lrm4d_pb2 as pb
from . import lrm4d_pb2_grpc as pb_grpc
from .codec import ENCODINGS, encode_image, scene_from_proto, scene_to_proto, time_from_proto, unpack_gaussians

if TYPE_CHECKING:
    from lrm4d_core.cameras import Cameras, SceneNormalization
    from lrm4d_core.model.api import Reconstruction

__all__ = [
    "RemoteBackend",
    "CircuitBreaker",
    "RemoteError",
    "BackendUnavailable",
    "RemoteAuthError",
    "RequestTooLarge",
    "RemoteCallError",
]

log = logging.getLogger(__name__)
MB = 1 << 20
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class RemoteError(RuntimeError):
    """A remote reconstruction failed; `code` is the gRPC status code name (or BREAKER_OPEN)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class BackendUnavailable(RemoteError):
    """The server cannot be reached (or did not answer in time), or the breaker is open."""


class RemoteAuthError(RemoteError):
    """The server rejected our token (UNAUTHENTICATED / PERMISSION_DENIED)."""


class RequestTooLarge(RemoteError, ValueError):
    """The request exceeds the message size limit."""


class RemoteCallError(RemoteError):
    """Any other error status from the server (INVALID_ARGUMENT, INTERNAL, ...)."""


class CircuitBreaker:
    """closed -> (K consecutive failures) -> open for T s -> half-open: one probe -> closed or open.

    Thread-safe. `allow()` says whether a call may go out now (and, in half-open, claims the single
    probe); every allowed call must end in `success()`, `failure()` or `release()` (no verdict).
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, failures: int = 3, open_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or open_s < 0:
            raise ValueError(f"need failures >= 1 and open_s >= 0, got {failures}, {open_s}")
        self.failures_to_open, self.open_s, self.clock = failures, open_s, clock
        self.state = self.CLOSED
        self.consecutive_failures = 0
        self.opens = 0
        self._opened_at = 0.0
        self._probing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if self.state == self.CLOSED:
                return True
            if self.state == self.OPEN and self.clock() - self._opened_at >= self.open_s:
                self.state = self.HALF_OPEN
            if self.state == self.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    @property
    def probing(self) -> bool:
        return self._probing

    def retry_in(self) -> float:
        with self._lock:
            if self.state != self.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.open_s - self.clock())

    def success(self) -> None:
        with self._lock:
            self.state, self.consecutive_failures, self._probing = self.CLOSED, 0, False

    def failure(self) -> None:
        with self._lock:
            self.consecutive_failures += 1
            if self.state == self.HALF_OPEN or self.consecutive_failures >= self.failures_to_open:
                if self.state != self.OPEN:
                    self.opens += 1
                self.state, self._opened_at, self._probing = self.OPEN, self.clock(), False

    def release(self) -> None:
        """An allowed call ended without saying anything about the server (e.g. a local error)."""
        with self._lock:
            self._probing = False


class RemoteBackend:
    """Reconstruct through `lrm4d serve` (see the module docstring).

    Args:
        address: "host:port", or any gRPC target: "dns:///lrm4d.example:50051" (every address the
            name resolves to) or "ipv4:10.0.0.1:50051,10.0.0.2:50051" (a fixed list) spread the calls
            over the replicas (see `lb_policy`).
        token: bearer token (None: send none).
        timeout_s: deadline of each attempt.
        retries, backoff_s, backoff_max_s: retries of UNAVAILABLE / DEADLINE_EXCEEDED.
        breaker_failures, breaker_open_s: circuit breaker.
        image_encoding: "raw" (lossless, large), "png" (lossless) or "jpeg" (`jpeg_quality`).
        max_message_mb: our send/receive limit; requests are also checked against the server's.
        tls: use TLS; `tls_ca_file` is the CA (PEM) to trust (default: the system roots);
            `tls_client_cert` / `tls_client_key` for servers that require client certificates;
            `tls_server_name` overrides the name checked against the certificate.
        fallback: a Backend answering while the server is unusable.
        device: where the returned Gaussians live.
        lb_policy: gRPC load-balancing policy; "auto" = "round_robin" for targets with a resolver
            scheme (dns:, ipv4:, ipv6:), else gRPC's default (pick_first). Round robin skips
            replicas whose connection is down.
        connect_info: ask the server for its model id and limits now (short deadline; failure is fine).
        wait_while_open_s: offline use (bag replay, which runs faster than real time): while the
            breaker is open, wait for its probe instead of refusing at once, up to this many seconds
            per call (0: refuse at once, what a live node needs). A short outage then costs only the
            windows whose calls failed during it, not every window the replay reaches before the
            breaker's wall-clock timer ends.
    """

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 0.1,
        backoff_max_s: float = 2.0,
        breaker_failures: int = 3,
        breaker_open_s: float = 5.0,
        image_encoding: str = "raw",
        jpeg_quality: int = 90,
        max_message_mb: float = 256.0,
        tls: bool = False,
        tls_ca_file: str | None = None,
        tls_client_cert: str | None = None,
        tls_client_key: str | None = None,
        tls_server_name: str | None = None,
        fallback: Any = None,
        device: str = "cpu",
        lb_policy: str | None = "auto",
        reconnect_max_s: float = 2.0,
        connect_info: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wait_while_open_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if image_encoding not in ENCODINGS:
            raise ValueError(f"image_encoding must be one of {sorted(ENCODINGS)}, got {image_encoding!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_message_mb <= 0:
            raise ValueError("need timeout_s > 0, retries >= 0, backoff_s >= 0, max_message_mb > 0")
        self.address = address
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.image_encoding, self.jpeg_quality = image_encoding, int(jpeg_quality)
        self.max_message_bytes = int(max_message_mb * MB)
        self.fallback = fallback
        self.device = device
        self.breaker = CircuitBreaker(breaker_failures, breaker_open_s, clock)
        self.wait_while_open_s, self._sleep, self._clock = float(wait_while_open_s), sleep, clock
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # by status code name
        self.last_error = ""
        self.info: pb.ServerInfoResponse | None = None
        self.last_timings: dict[str, float] = {}
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", int(reconnect_max_s * 1000)),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        if lb_policy == "auto":
            lb_policy = "round_robin" if address.split(":", 1)[0] in ("dns", "ipv4", "ipv6") else None
        if lb_policy:
            options.append(("grpc.lb_policy_name", lb_policy))
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls or tls_ca_file or tls_client_cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(tls_ca_file).read_bytes() if tls_ca_file else None,
                private_key=Path(tls_client_key).read_bytes() if tls_client_key else None,
                certificate_chain=Path(tls_client_cert).read_bytes() if tls_client_cert else None,
            )
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.ReconstructorStub(self._channel)
        if connect_info:
            try:
                self.server_info(timeout_s=min(self.timeout_s, 2.0))
            except RemoteError as err:
                log.warning("lrm4d server %s: no server info yet (%s); will keep trying", address, err)

    # ------------------------------------------------------------------------------------------ info
    @property
    def model_id(self) -> str:
        return self.info.model_id if self.info is not None else f"remote:{self.address}"

    def server_info(self, timeout_s: float | None = None) -> pb.ServerInfoResponse:
        self.info = self._unary(self._stub.ServerInfo, pb.ServerInfoRequest(), timeout_s)
        return self.info

    def health(self, timeout_s: float | None = None) -> pb.HealthResponse:
        return self._unary(self._stub.Health, pb.HealthRequest(), timeout_s)

    def _unary(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as err:
            raise _map_error(err, self.max_message_bytes, self._server_limit()) from None

    @property
    def status(self) -> str:
        """"ok", or a short account of what is wrong, for Diagnostics.backend_status."""
        b = self.breaker
        with self._lock:
            last = self.last_error
            fallback_used = self.counters["fallback_calls"]
        using = "; answering from the local fallback" if self.fallback is not None else ""
        if b.state == b.OPEN:
            return (f"remote {self.address} unavailable ({last}); circuit open, next probe in "
                    f"{b.retry_in():.1f} s{using}")
        if b.state == b.HALF_OPEN:
            return f"remote {self.address} unavailable ({last}); probing{using}"
        if b.consecutive_failures:
            extra = f", {fallback_used} fallback answers" if fallback_used else ""
            return f"remote {self.address} degraded: {b.consecutive_failures} consecutive failure(s) ({last}){extra}"
        return "ok"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RemoteBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ reconstruct
    def reconstruct(self, images: Sequence[np.ndarray], cameras: Cameras, times: np.ndarray,
                    scene: SceneNormalization | None, ground_z: float | None = None) -> Reconstruction:
        self._count("calls")
        allowed = self.breaker.allow()
        deadline = self._clock() + self.wait_while_open_s
        while not allowed and self._clock() < deadline:  # offline: wait for the probe instead of refusing
            self._count("waited_for_breaker")
            self._sleep(max(0.01, min(self.breaker.retry_in(), deadline - self._clock())))
            allowed = self.breaker.allow()
        if not allowed:
            self._count("short_circuited")
            err = BackendUnavailable(f"remote {self.address}: circuit open ({self.last_error})", "BREAKER_OPEN")
            return self._fallback_or_raise(err, images, cameras, times, scene, ground_z)
        t0 = time.perf_counter()
        try:
            request = self.encode_request(images, cameras, times, scene, ground_z)
        except Exception:
            self.breaker.release()
            raise
        t1 = time.perf_counter()
        probe = self.breaker.probing
        try:
            response = self._call(request, attempts=1 if probe else self.retries + 1)
        except (RequestTooLarge, RemoteCallError) as err:
            if isinstance(err, RequestTooLarge) or err.code == "INVALID_ARGUMENT":
                # the server answered, so it is up; the request is at fault: no retry, no fallback
                self.breaker.success()
                raise
            self._failed(err)  # INTERNAL, UNKNOWN, ...: the server is not usable right now
            return self._fallback_or_raise(err, images, cameras, times, scene, ground_z)
        except RemoteError as err:
            self._failed(err)
            return self._fallback_or_raise(err, images, cameras, times, scene, ground_z)
        except BaseException:
            self.breaker.release()
            raise
        t2 = time.perf_counter()
        self.breaker.success()
        self._count("ok")
        rec = self.decode_response(response, cameras, times, images)
        rec.timings.update({"encode": t1 - t0, "rpc": t2 - t1, "decode": time.perf_counter() - t2,
                            "client_total": time.perf_counter() - t0})
        self.last_timings = dict(rec.timings)
        return rec

    def encode_request(self, images: Sequence[np.ndarray], cameras: Cameras, times: np.ndarray,
                       scene: SceneNormalization | None, ground_z: float | None = None) -> pb.ReconstructRequest:
        """The request for one window; raises RequestTooLarge before anything is sent."""
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        K = cameras.K.detach().cpu().double().numpy()
        c2w = cameras.cam_to_world.detach().cpu().double().numpy()
        if not (len(images) == len(cameras) == len(times)):
            raise ValueError(f"{len(images)} images, {len(cameras)} cameras and {len(times)} times")
        views = []
        for i, image in enumerate(images):
            img = encode_image(np.asarray(image), self.image_encoding, self.jpeg_quality)
            views.append(pb.View(image=img, K=K[i].reshape(-1).tolist(), cam_to_world=c2w[i].reshape(-1).tolist(),
                                 time_s=float(times[i])))
        request = pb.ReconstructRequest(views=views, request_id=uuid.uuid4().hex[:16])
        if scene is not None:
            request.scene.CopyFrom(scene_to_proto(scene))
        if ground_z is not None:
            request.ground_z = float(ground_z)
        size, limit = request.ByteSize(), self._limit()
        if size > limit:
            self._count("too_large")
            raise RequestTooLarge(
                f"request is {_mb(size)} MB, limit {_mb(limit)} MB ({len(images)} views, "
                f"{self.image_encoding} images): use image_encoding='jpeg', fewer views, or raise the limit on both sides",
                "CLIENT",
            )
        return request

    def decode_response(self, response: pb.ReconstructResponse, cameras: Cameras, times: np.ndarray,
                        images: Sequence[np.ndarray] | None = None) -> Reconstruction:
        """The `Reconstruction` a response describes; with `images` (the request's), the own-view
        splats its renders use where the model has them on (built here, from the Gaussians)."""
        import torch

        from lrm4d_core.gaussians import Gaussians4D
        from lrm4d_core.model.api import Reconstruction
        from lrm4d_core.model.view_weight import VIEW_DEPENDENCE_OFF

        channels = torch.from_numpy(unpack_gaussians(response.gaussians_f16, response.count)).to(self.device)
        scene, time_norm = scene_from_proto(response.scene), time_from_proto(response.time)
        W, H = int(response.model_width), int(response.model_height)
        cams = cameras.resized(W, H) if (W, H) != (cameras.width, cameras.height) else cameras
        cams = cams.to(device="cpu", dtype=torch.float64)
        model_cams = scene.cameras_to_model(cams).to(device=self.device, dtype=torch.float32)
        times64 = torch.as_tensor(np.asarray(times, dtype=np.float64)).reshape(-1)
        model_times = time_norm.to_model(times64).to(device=self.device, dtype=torch.float32)
        timings = {f"server_{k}": float(v) for k, v in response.timings.items()}
        env = None
        if len(response.environment):
            from lrm4d_core.environment import Environment

            env = Environment(torch.tensor(list(response.environment), dtype=torch.float32, device=self.device).reshape(3, -1))
        background = tuple(float(c) for c in response.background) if len(response.background) == 3 else (1.0, 1.0, 1.0)
        view = tuple(float(c) for c in response.view_dependence) if len(response.view_dependence) == 2 else VIEW_DEPENDENCE_OFF
        windows = None
        if response.nearest_copy > 0 and len(response.time_windows_f32):
            windows = torch.from_numpy(np.frombuffer(response.time_windows_f32, dtype="<f4").reshape(-1, 2).copy()).to(self.device)
        gaussians = Gaussians4D.from_channels(channels)
        own, own_deg = None, 0.0
        if len(response.own_view) and images is not None:
            from lrm4d_core.model.api import prepare_images, resized_pixels
            from lrm4d_core.model.own_view import OwnViewConstants, own_view_splats

            try:
                values = [float(c) for c in response.own_view]
                if len(values) != len(dataclasses.fields(OwnViewConstants)):
                    raise ValueError(f"{len(values)} values")
                constants = OwnViewConstants(*values)
            except (TypeError, ValueError) as err:  # another server version: render without them
                self._count("bad_own_view")
                log.warning("remote %s: own-view splat constants %s not understood (%s); rendering without them",
                            self.address, list(response.own_view), err)
            else:
                pixels = resized_pixels(prepare_images(images).to(self.device), (H, W))
                own = own_view_splats(gaussians, pixels, model_cams, model_times, torch.tensor(background), constants)
                own_deg = constants.angle_deg
        return Reconstruction(gaussians, scene, time_norm, model_cams, model_times, timings, env, background, view,
                              float(response.nearest_copy) if windows is not None else 0.0, windows, own, own_deg)

    # ------------------------------------------------------------------------------------------ internals
    def _server_limit(self) -> int | None:
        return int(self.info.max_message_bytes) if self.info is not None and self.info.max_message_bytes else None

    def _limit(self) -> int:
        server = self._server_limit()
        return min(self.max_message_bytes, server) if server else self.max_message_bytes

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _failed(self, err: RemoteError) -> None:
        was_open = self.breaker.opens
        self.breaker.failure()
        with self._lock:
            self.counters["failed_calls"] += 1
            self.last_error = f"{err.code}: {err}" if err.code and err.code not in str(err) else str(err)
            if self.breaker.opens != was_open:
                self.counters["breaker_opens"] += 1
        if self.breaker.opens != was_open:
            log.warning("remote %s: %d consecutive failures, circuit open for %.1f s (%s)", self.address,
                        self.breaker.consecutive_failures, self.breaker.open_s, err)

    def _call(self, request: pb.ReconstructRequest, attempts: int) -> pb.ReconstructResponse:
        for attempt in range(attempts):
            try:
                response = self._stub.Reconstruct(request, timeout=self.timeout_s, metadata=self._metadata)
                if self.info is None:  # first contact after starting with the server down
                    try:
                        self.server_info(timeout_s=min(self.timeout_s, 2.0))
                    except RemoteError:
                        pass
                return response
            except grpc.RpcError as rpc_err:
                err = _map_error(rpc_err, self.max_message_bytes, self._server_limit())
                with self._lock:
                    self.failures[err.code] += 1
                if not isinstance(err, BackendUnavailable) or attempt + 1 >= attempts:
                    raise err from None
                self._count("retries")
                delay = min(self.backoff_max_s, self.backoff_s * (2**attempt))
                time.sleep(random.uniform(delay / 2, delay))
        raise AssertionError("unreachable")

    def _fallback_or_raise(self, err: RemoteError, images: Sequence[np.ndarray], cameras: Cameras,
                           times: np.ndarray, scene: SceneNormalization | None,
                           ground_z: float | None = None) -> Reconstruction:
        if self.fallback is None:
            raise err
        self._count("fallback_calls")
        return self.fallback.reconstruct(images, cameras, times, scene, ground_z)


def _mb(n: int) -> str:
    return f"{n / MB:.3g}"


def _map_error(err: grpc.RpcError, client_limit: int, server_limit: int | None) -> RemoteError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else "") or ""
    name = code.name if code is not None else "UNKNOWN"
    if code in RETRYABLE:
        return BackendUnavailable(f"{name}: {details}", name)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return RemoteAuthError(f"{name}: the server rejected our token ({details})", name)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "oncurrent" in details:  # maximum_concurrent_rpcs
        return BackendUnavailable(f"{name}: server overloaded ({details})", name)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        server = f"{_mb(server_limit)} MB" if server_limit else "unknown"
        return RequestTooLarge(f"message too large: {details} (client limit {_mb(client_limit)} MB, server limit {server}; "
                               "use JPEG images or fewer views, or raise the limits)", name)
    return RemoteCallError(f"{name}: {details}", name)


def main(argv: Sequence[str] | None = None) -> int:
    """Health probe for scripts and orchestrators (exit 0 when SERVING):

        python -m lrm4d_core.serve.client --address gpu-box:50051 --token-file token.txt [--tls-ca-file ca.pem]
    """
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(prog="python -m lrm4d_core.serve.client", description="probe an lrm4d server")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token-file", help="bearer token file (default: the LRM4D_TOKEN environment variable)")
    parser.add_argument("--tls-ca-file", help="CA certificate (PEM) of a TLS server")
    parser.add_argument("--tls-server-name", help="name to check the certificate against (default: from the address)")
    parser.add_argument("--timeout-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    token = Path(args.token_file).read_text(encoding="utf-8").strip() if args.token_file else os.environ.get("LRM4D_TOKEN")
    backend = RemoteBackend(args.address, token, timeout_s=args.timeout_s, tls_ca_file=args.tls_ca_file,
                            tls_server_name=args.tls_server_name, connect_info=False)
    try:
        health = backend.health()
        info = backend.server_info()
    except RemoteError as err:
        print(json.dumps({"address": args.address, "status": "UNREACHABLE", "error": str(err)}))
        return 1
    finally:
        backend.close()
    status = pb.HealthResponse.Status.Name(health.status)
    print(json.dumps({
        "address": args.address, "status": status, "model_id": info.model_id, "preset": info.preset,
        "version": info.version, "devices": list(info.devices), "queued": health.queued, "in_flight": health.in_flight,
        "requests": health.requests, "batches": health.batches, "uptime_s": round(health.uptime_s, 1),
    }))
    return 0 if health.status == pb.HealthResponse.SERVING else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
