"""`lrm4d serve`: the gRPC inference server (lrm4d.proto, service lrm4d.v1.Reconstructor).

    lrm4d serve --checkpoint model.safetensors --port 50051 --token-file token.txt
    lrm4d serve --checkpoint model.safetensors --host 0.0.0.0 --port 50051 --token-file token.txt \
        --tls-cert server.crt --tls-key server.key          # docs/serving.md

- Auth: every call must carry the metadata `authorization: Bearer <token>` (token from
  --token-file or the LRM4D_TOKEN environment variable); others get UNAUTHENTICATED. --no-auth
  turns this off and is refused unless the server listens on a loopback address only.
- TLS from --tls-cert/--tls-key (PEM); --tls-client-ca additionally requires client certificates.
- It listens on --host only (default 127.0.0.1: nothing is reachable from other machines until you
  say so). --port 0 picks a free port; the bound one is logged (and written to --port-file).
- Messages larger than --max-message-mb are rejected by gRPC in both directions
  (RESOURCE_EXHAUSTED); the client checks the limit before sending (it reads it from ServerInfo).
  Images are checked against --max-image-mp and all images of a request against --max-request-mp
  from their headers, before anything is decoded. Invalid requests (malformed protobuf, implausible
  poses or intrinsics, too many pixels) get INVALID_ARGUMENT and one rate-limited log line.
- Unauthenticated calls are refused on their metadata, before their body is read.
- One model per device (--devices; default every CUDA device, else the CPU) and dynamic batching
  of concurrent requests (--max-batch, --max-delay-ms): see `engine.py`.
- SIGTERM / SIGINT: Health turns NOT_SERVING, new calls are refused, in-flight calls finish
  (at most --grace-s), then the workers stop.

torch is imported only when a server is built, so `lrm4d --help` stays fast.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import grpc

from lrm4d_core import __version__

from . import lrm4d_pb2 as pb
from . import lrm4d_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ServeConfig", "Server", "read_token", "add_arguments", "main", "TOKEN_ENV"]

log = logging.getLogger("lrm4d.serve")

TOKEN_ENV = "LRM4D_TOKEN"
MB = 1 << 20
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class ServeConfig:
    """Server settings (the CLI flags of `lrm4d serve`)."""

    host: str = "127.0.0.1"
    port: int = 50051
    token: str | None = None  # None only with allow_no_auth
    allow_no_auth: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    max_message_mb: float = 64.0
    max_image_mp: float = 8.4
    max_request_mp: float = 64.0
    max_batch: int = 8
    max_delay_ms: float = 5.0
    max_views: int = 64
    threads: int = 32
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        problems = []
        if self.token is not None and not self.token.strip():
            problems.append("the token is empty")
        if self.token is None and not self.allow_no_auth:
            problems.append(f"no token: give --token-file or set {TOKEN_ENV} (or --no-auth on a loopback address)")
        if self.token is None and self.allow_no_auth and self.host not in _LOOPBACK:
            problems.append(f"--no-auth is only allowed on a loopback address, not {self.host!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("give both --tls-cert and --tls-key, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca needs --tls-cert and --tls-key")
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if self.max_message_mb <= 0 or self.max_batch < 1 or self.max_delay_ms < 0 or self.max_views < 1 or self.threads < 1:
            problems.append("need max_message_mb > 0, max_batch >= 1, max_delay_ms >= 0, max_views >= 1, threads >= 1")
        if not (self.max_image_mp > 0 and self.max_request_mp > 0):
            problems.append("need max_image_mp > 0 and max_request_mp > 0")
        if problems:
            raise ValueError("invalid server settings: " + "; ".join(problems))

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MB)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


def read_token(path: str | os.PathLike) -> str:
    """The bearer token in a file (surrounding whitespace stripped); warns if others can read it."""
    p = Path(path)
    token = p.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {p} is empty")
    if os.name == "posix" and p.stat().st_mode & 0o077:
        log.warning("token file %s is readable by other users (chmod 600 it)", p)
    return token


class _RateLimited:
    """At most one log line per 5 s, with the count of lines suppressed in between."""

    def __init__(self, logger: Any, period_s: float = 5.0) -> None:
        self.logger, self.period_s = logger, period_s
        self._last, self._suppressed = -1e18, 0
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.period_s:
                self._suppressed += 1
                return
            extra = f" ({self._suppressed} more suppressed)" if self._suppressed else ""
            self._last, self._suppressed = now, 0
        self.logger(text + extra)


# ------------------------------------------------------------------------------------------ auth
class _TokenInterceptor(grpc.ServerInterceptor):
    """Rejects every call whose `authorization` metadata is not `Bearer <token>` (constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._log = _RateLimited(log.warning)
        self._lock = threading.Lock()
        self.rejected = 0

        def deny(requests: Any, context: grpc.ServicerContext) -> None:
            # a stream handler that never iterates `requests`: the call is refused on its metadata,
            # before its body is received, so an unauthenticated peer cannot make us buffer it
            self._log_rejection(context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (metadata 'authorization: Bearer <token>')")

        self._deny = grpc.stream_unary_rpc_method_handler(deny)

    def _log_rejection(self, peer: str) -> None:
        with self._lock:
            self.rejected += 1
        self._log(f"rejected a call from {peer}: missing or wrong bearer token")

    def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201
        got = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                got = value if isinstance(value, str) else value.decode("latin-1")
                break
        if hmac.compare_digest(got.encode(), self._expected):
            return continuation(handler_call_details)
        return self._deny


# ------------------------------------------------------------------------------------------ service
class _Servicer(pb_grpc.ReconstructorServicer):
    def __init__(self, server: Server) -> None:
        self.s = server

    def Reconstruct(self, raw: bytes, context: grpc.ServicerContext) -> pb.ReconstructResponse:
        from google.protobuf.message import DecodeError

        from .codec import WireError, scene_from_proto, scene_to_proto, time_to_proto, view_arrays
        from .engine import WorkItem

        s = self.s
        request = pb.ReconstructRequest()
        try:  # parsed here, not by grpc, so that garbage is INVALID_ARGUMENT with one log line
            request.ParseFromString(raw)
        except DecodeError as err:
            s.log_invalid(context.peer(), f"malformed ReconstructRequest ({len(raw)} bytes): {err}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ReconstructRequest: {err}")
        t0 = time.perf_counter()
        with s._count_in_flight():
            if s.stopping:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            if len(request.views) > s.config.max_views:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{len(request.views)} views, this server takes at most {s.config.max_views}")
            try:
                with s.engine.arrival():
                    images, K, c2w, times = view_arrays(request.views, int(s.config.max_image_mp * 1e6),
                                                        int(s.config.max_request_mp * 1e6))
                    scene = scene_from_proto(request.scene) if request.HasField("scene") else None
                    ground_z = request.ground_z if request.HasField("ground_z") else None  # checked by prepare_window
                    item = WorkItem(images, K, c2w, times, scene, is_active=context.is_active,
                                    request_id=request.request_id, ground_z=ground_z)
                    decode_s = time.perf_counter() - t0
                    future = s.engine.submit(item)
            except WireError as err:
                s.log_invalid(context.peer(), f"request {request.request_id!r}: {err}")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            except RuntimeError as err:  # queue closed: shutting down
                context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
            remaining = context.time_remaining()
            try:
                result = future.result(timeout=remaining)
            except futures.TimeoutError:
                future.cancel()
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while queued or running")
            except futures.CancelledError:
                context.abort(grpc.StatusCode.CANCELLED, "cancelled")
            except ValueError as err:
                s.log_invalid(context.peer(), f"request {request.request_id!r}: {err}")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(err).__name__}: {err}")
            except Exception as err:  # noqa: BLE001
                log.exception("request %r failed", request.request_id)
                context.abort(grpc.StatusCode.INTERNAL, f"reconstruction failed: {type(err).__name__}: {err}")
            t_enc = time.perf_counter()
            response = pb.ReconstructResponse(
                gaussians_f16=result.gaussians_f16,
                count=result.count,
                scene=scene_to_proto(result.scene),
                time=time_to_proto(result.time),
                model_id=s.model_id,
                model_width=result.model_width,
                model_height=result.model_height,
                environment=result.environment or [],
                background=list(result.background),
                view_dependence=list(result.view_dependence),
                nearest_copy=result.nearest_copy,
                time_windows_f32=result.time_windows,
                own_view=list(result.own_view),
            )
            size = response.ByteSize()
            if size > s.config.max_message_bytes:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"response is {size / MB:.3g} MB, limit {s.config.max_message_bytes / MB:.3g} MB: "
                              "send fewer views or raise --max-message-mb on both sides")
            timings = dict(result.timings)
            timings["decode"] = decode_s
            timings["encode"] = time.perf_counter() - t_enc
            timings["total"] = time.perf_counter() - t0
            response.timings.update(timings)
            return response

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        s = self.s
        st = s.engine.stats
        return pb.HealthResponse(
            status=pb.HealthResponse.NOT_SERVING if s.stopping else pb.HealthResponse.SERVING,
            queued=s.engine.queued, in_flight=s.in_flight, requests=st.requests, batches=st.batches,
            max_batch_seen=st.max_batch_seen, uptime_s=time.monotonic() - s.started,
        )

    def ServerInfo(self, request: pb.ServerInfoRequest, context: grpc.ServicerContext) -> pb.ServerInfoResponse:
        s = self.s
        cfg = s.engine.config
        H, W = cfg.image_size
        return pb.ServerInfoResponse(
            model_id=s.model_id, preset=cfg.preset, version=__version__, devices=s.engine.devices,
            model_width=W, model_height=H, max_message_bytes=s.config.max_message_bytes,
            max_batch=s.config.max_batch, max_delay_ms=s.config.max_delay_ms, max_views=s.config.max_views,
            num_parameters=sum(p.numel() for p in s.engine.models[0].parameters()),
        )


class Server:
    """A running server: `Server(models, config).start()`, then `.stop()` (graceful)."""

    def __init__(self, models: Sequence[Any], config: ServeConfig, model_id: str = "") -> None:
        from .engine import Engine

        self.config = config
        self.engine: Engine = Engine(models, max_batch=config.max_batch, max_delay_ms=config.max_delay_ms)
        self.model_id = model_id or f"lrm4d-{self.engine.config.preset}"
        self.stopping = False
        self.started = time.monotonic()
        self.in_flight = 0
        self._lock = threading.Lock()
        self.port: int | None = None
        interceptors = [] if config.token is None else [_TokenInterceptor(config.token)]
        self.auth = interceptors[0] if interceptors else None
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="lrm4d-rpc"),
            interceptors=interceptors, options=options, maximum_concurrent_rpcs=4 * config.threads,
        )
        servicer = _Servicer(self)
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("lrm4d.v1.Reconstructor", {
            # Reconstruct takes raw bytes and parses them itself (malformed input: INVALID_ARGUMENT)
            "Reconstruct": grpc.unary_unary_rpc_method_handler(
                servicer.Reconstruct, response_serializer=pb.ReconstructResponse.SerializeToString),
            "Health": grpc.unary_unary_rpc_method_handler(
                servicer.Health, request_deserializer=pb.HealthRequest.FromString,
                response_serializer=pb.HealthResponse.SerializeToString),
            "ServerInfo": grpc.unary_unary_rpc_method_handler(
                servicer.ServerInfo, request_deserializer=pb.ServerInfoRequest.FromString,
                response_serializer=pb.ServerInfoResponse.SerializeToString),
        }),))
        self.invalid_requests = 0
        self._invalid_log = _RateLimited(log.warning)

    def log_invalid(self, peer: str, text: str) -> None:
        """One rate-limited line per invalid request (never a traceback), and a counter."""
        with self._lock:
            self.invalid_requests += 1
        self._invalid_log(f"invalid request from {peer}: {text}")

    def _count_in_flight(self):  # noqa: ANN202
        server = self

        class _Counter:
            def __enter__(self) -> None:
                with server._lock:
                    server.in_flight += 1

            def __exit__(self, *exc: Any) -> None:
                with server._lock:
                    server.in_flight -= 1

        return _Counter()

    def start(self) -> Server:
        cfg = self.config
        try:
            if cfg.tls_cert:
                key = Path(cfg.tls_key).read_bytes()
                cert = Path(cfg.tls_cert).read_bytes()
                ca = Path(cfg.tls_client_ca).read_bytes() if cfg.tls_client_ca else None
                creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
                port = self._grpc.add_secure_port(cfg.address, creds)
            else:
                port = self._grpc.add_insecure_port(cfg.address)
        except RuntimeError as err:
            self.engine.close()
            raise OSError(f"cannot listen on {cfg.address}: {err}") from err
        if not port:
            self.engine.close()
            raise OSError(f"cannot listen on {cfg.address} (in use, or not an address of this machine)")
        self.port = port
        self._grpc.start()
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish (at most `grace_s`), then stop the workers."""
        grace = self.config.grace_s if grace_s is None else grace_s
        self.stopping = True
        self._grpc.stop(grace).wait()
        self.engine.close(timeout=grace + 5.0)

    def wait(self, timeout: float | None = None) -> bool:
        return self._grpc.wait_for_termination(timeout)


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `lrm4d serve` (no torch import here)."""
    parser.add_argument("--checkpoint", metavar="FILE", help="model checkpoint (.safetensors); default: the embedded default model")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 or :: for every interface (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=50051, help="TCP port; 0 = any free port (default: %(default)s)")
    parser.add_argument("--port-file", metavar="FILE", help="write the bound port to FILE once listening")
    parser.add_argument("--token-file", metavar="FILE", help=f"file holding the bearer token clients must send (or set {TOKEN_ENV})")
    parser.add_argument("--no-auth", action="store_true", help="accept calls without a token (loopback addresses only)")
    parser.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (enables TLS, with --tls-key)")
    parser.add_argument("--tls-key", metavar="PEM", help="server private key")
    parser.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument("--devices", default="auto",
                        help="comma-separated devices, one model each (cuda:0,cuda:1 or cpu); auto = every CUDA device, else cpu")
    parser.add_argument("--max-message-mb", type=float, default=64.0, help="largest request/response message (default: %(default)s)")
    parser.add_argument("--max-image-mp", type=float, default=8.4,
                        help="largest image of a request in megapixels, checked before decoding (default: %(default)s)")
    parser.add_argument("--max-request-mp", type=float, default=64.0,
                        help="most pixels of all images of one request in megapixels, checked before decoding (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=8, help="most requests per forward pass (default: %(default)s)")
    parser.add_argument("--max-delay-ms", type=float, default=5.0,
                        help="longest a request waits for others to batch with (default: %(default)s)")
    parser.add_argument("--max-views", type=int, default=64, help="most views per request (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=32, help="gRPC handler threads (default: %(default)s)")
    parser.add_argument("--grace-s", type=float, default=30.0, help="on SIGTERM/SIGINT, time for in-flight calls (default: %(default)s)")


def _devices(spec: str) -> list[str]:
    import torch

    if spec == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    return [d.strip() for d in spec.split(",") if d.strip()]


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)


def main(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT. Exit codes: 0 after a graceful stop, 2 bad settings, 1 start-up failure."""
    _setup_logging()
    try:
        token = read_token(args.token_file) if args.token_file else (os.environ.get(TOKEN_ENV) or None)
        config = ServeConfig(
            host=args.host, port=args.port, token=token, allow_no_auth=args.no_auth, tls_cert=args.tls_cert,
            tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, max_message_mb=args.max_message_mb,
            max_image_mp=args.max_image_mp, max_request_mp=args.max_request_mp,
            max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, max_views=args.max_views,
            threads=args.threads, grace_s=args.grace_s,
        )
    except (OSError, ValueError) as err:
        log.error("%s", err)
        return 2

    from lrm4d_core.model.api import default_checkpoint, load_model

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        log.error("no --checkpoint given and this build has no embedded default model")
        return 2
    devices = _devices(args.devices)
    log.info("lrm4d %s serve: loading %s on %s", __version__, checkpoint, ", ".join(devices))
    t0 = time.perf_counter()
    try:
        models = [load_model(checkpoint, device=d) for d in devices]
    except Exception as err:  # noqa: BLE001 - CheckpointError, bad device, ...
        log.error("cannot load the model: %s: %s", type(err).__name__, err)
        return 1
    cfg = models[0].config
    model_id = f"lrm4d-{cfg.preset}:{Path(checkpoint).name}"
    n_params = sum(p.numel() for p in models[0].parameters())
    log.info("model %s: preset %s, %.2fM parameters, input %dx%d, %d model(s) loaded in %.1f s",
             model_id, cfg.preset, n_params / 1e6, cfg.image_size[1], cfg.image_size[0], len(models), time.perf_counter() - t0)
    try:
        server = Server(models, config, model_id=model_id).start()
    except OSError as err:
        log.error("%s", err)
        return 1
    bound = f"{config.address.rsplit(':', 1)[0]}:{server.port}"
    log.info("auth: %s; TLS: %s; max message %.0f MB; batching up to %d within %.1f ms; at most %d views",
             "bearer token" if config.token else "OFF (--no-auth)",
             ("on, client certificates required" if config.tls_client_ca else "on") if config.tls_cert else "off",
             config.max_message_mb, config.max_batch, config.max_delay_ms, config.max_views)
    if config.token and not config.tls_cert and config.host not in _LOOPBACK:
        log.warning("listening beyond this machine without TLS: the token and images travel in clear text")
    if args.port_file:
        Path(args.port_file).write_text(f"{server.port}\n", encoding="utf-8")
    log.info("ready: listening on %s (Ctrl-C or SIGTERM stops gracefully)", bound)

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not stop.wait(0.5):
        pass
    name = signal.Signals(received[0]).name if received else "stop"
    log.info("%s: refusing new calls, finishing %d in-flight call(s) (at most %.0f s)", name, server.in_flight, config.grace_s)
    server.stop()
    st = server.engine.stats
    log.info("stopped: %d requests in %d batches (largest %d), %d errors, %d cancelled, %d unauthenticated calls rejected",
             st.requests, st.batches, st.max_batch_seen, st.errors, st.cancelled, server.auth.rejected if server.auth else 0)
    return 0


if __name__ == "__main__":  # python -m lrm4d_core.serve.server ...
    _parser = argparse.ArgumentParser(prog="python -m lrm4d_core.serve.server", description="lrm4d inference server")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
