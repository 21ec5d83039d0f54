"""Remote inference on loopback: `lrm4d serve` (lrm4d_core.serve.server) and RemoteBackend.

- the committed generated modules are what grpc_tools.protoc makes of lrm4d.proto;
- remote output equals local output with the same checkpoint (raw and PNG images: lossless), up to
  the float16 transport, with identical normalizations and model-box cameras and times;
- missing or wrong token -> UNAUTHENTICATED; oversize requests rejected with a clear error on the
  client (before sending) and on the server;
- the server killed (SIGKILL, a subprocess) mid-run and restarted: the client counts the failures,
  never raises anything but BackendUnavailable, opens its breaker, and recovers by itself;
- with a fallback backend the windows keep coming while the server is gone, and diagnostics say so;
- concurrent clients (batched and unbatched shapes) each get their own correct answer;
- graceful stop finishes the in-flight call; TLS; the circuit breaker's states.

Tiny model (hidden 32, 2 layers, 16x16), CPU, 127.0.0.1 with ports picked by the OS. Every call
has a deadline, so nothing here can hang.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, SceneNormalization
from lrm4d_core.io.checkpoint import save_checkpoint
from lrm4d_core.model.api import load_model, render
from lrm4d_core.pipeline import LocalBackend, PipelineConfig, Reconstructor
from lrm4d_core.serve import lrm4d_pb2 as pb
from lrm4d_core.serve import lrm4d_pb2_grpc as pb_grpc
from lrm4d_core.serve.client import (
    BackendUnavailable,
    CircuitBreaker,
    RemoteAuthError,
    RemoteBackend,
    RemoteCallError,
    RequestTooLarge,
)
from lrm4d_core.serve.codec import encode_image
from lrm4d_core.serve.server import Server, ServeConfig

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-123"
pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------------------------ fixtures
def ring(views: int, width: int, height: int, distance: float = 2.5) -> Cameras:
    f = 0.5 * width / math.tan(math.radians(25))
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64).expand(views, 3, 3)
    c2w = torch.zeros(views, 4, 4, dtype=torch.float64)
    for i in range(views):
        a = 2 * math.pi * i / views
        eye = torch.tensor([distance * math.cos(a), distance * math.sin(a), 0.3], dtype=torch.float64)
        z = -eye / eye.norm()
        x = torch.linalg.cross(torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), z)
        x = x / x.norm()
        c2w[i, :3, :3] = torch.stack([x, torch.linalg.cross(z, x), z], 1)
        c2w[i, :3, 3] = eye
        c2w[i, 3, 3] = 1
    return Cameras(K.clone(), c2w, width, height)


def window(views: int = 3, width: int = 24, height: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(views)]
    times = np.linspace(-0.8, 0.0, views) + 0.01 * seed
    return images, ring(views, width, height, 2.0 + 0.1 * seed), times


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = load_model(preset="tiny", device="cpu", hidden=32, layers=2, heads=2, image_size=(16, 16),
                       prior={"ground_snap": 0.3},  # so that a known ground changes the result
                       view_dependence=0.4, view_dependence_deg=20.0,  # so that renders depend on it
                       nearest_copy=0.7,  # ... and on the time windows, sent with the result
                       own_view={"angle_deg": 10.0})  # ... and on the own-view splats, built by the client
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, provenance={"test": True})


@pytest.fixture(scope="module")
def local(checkpoint) -> LocalBackend:
    return LocalBackend(load_model(checkpoint, device="cpu"), model_id="local")


@pytest.fixture(scope="module")
def server(checkpoint):
    s = Server([load_model(checkpoint, device="cpu")], ServeConfig(port=0, token=TOKEN, max_delay_ms=20), model_id="tiny-test").start()
    yield s
    s.stop(grace_s=1.0)


def remote(port: int, **kwargs) -> RemoteBackend:
    kwargs.setdefault("timeout_s", 10.0)
    return RemoteBackend(f"127.0.0.1:{port}", kwargs.pop("token", TOKEN), **kwargs)


def assert_same_reconstruction(a, b) -> None:
    """b (remote, float16 on the wire) equals a (local) within float16 precision."""
    ca, cb = a.gaussians_model.to_channels().float().cpu(), b.gaussians_model.to_channels().float().cpu()
    assert ca.shape == cb.shape
    assert torch.allclose(cb, ca, rtol=1e-3, atol=1e-6), float(((cb - ca).abs() / (ca.abs() + 1e-6)).max())
    assert torch.equal(a.scene.center.cpu(), b.scene.center.cpu()) and a.scene.scale == b.scene.scale
    assert (a.time.center, a.time.half_span) == (b.time.center, b.time.half_span)
    assert torch.equal(a.model_cameras.cam_to_world.cpu(), b.model_cameras.cam_to_world.cpu())
    assert torch.equal(a.model_cameras.K.cpu(), b.model_cameras.K.cpu())
    assert (a.model_cameras.width, a.model_cameras.height) == (b.model_cameras.width, b.model_cameras.height)
    assert torch.equal(a.model_times.cpu(), b.model_times.cpu())
    assert b.view_dependence == pytest.approx(a.view_dependence)
    assert b.nearest_copy == pytest.approx(a.nearest_copy)
    if a.time_windows is None:
        assert b.time_windows is None
    else:
        assert torch.equal(b.time_windows.cpu(), a.time_windows.float().cpu())
    assert b.own_view_deg == pytest.approx(a.own_view_deg)
    if a.own_view is None:
        assert b.own_view is None
    else:  # built by the client from the float16 Gaussians and its own images
        ga, gb = a.own_view.to_channels().float().cpu(), b.own_view.to_channels().float().cpu()
        assert torch.allclose(gb, ga, rtol=2e-3, atol=1e-3), float((gb - ga).abs().max())  # float16 steps near 1: 1e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowModel(torch.nn.Module):
    """Wraps a model; the forward sleeps `delay_s` first (only the first `times` calls, if given)."""

    def __init__(self, inner, delay_s: float, times: int | None = None) -> None:
        super().__init__()
        self.inner, self.delay_s, self.times = inner, delay_s, times
        self.config = inner.config
        self.calls = 0

    @property
    def device(self):
        return self.inner.device

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.times is None or self.calls <= self.times:
            time.sleep(self.delay_s)
        return self.inner(*args, **kwargs)


# ------------------------------------------------------------------------------------------ wire format
def test_generated_modules_match_the_proto(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc")
    src = ROOT / "lrm4d_core" / "serve"
    (tmp_path / "lrm4d_core" / "serve").mkdir(parents=True)
    shutil.copy(src / "lrm4d.proto", tmp_path / "lrm4d_core" / "serve" / "lrm4d.proto")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc = protoc.main(["protoc", "-I.", "--python_out=.", "--grpc_python_out=.", "lrm4d_core/serve/lrm4d.proto"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    for name in ("lrm4d_pb2.py", "lrm4d_pb2_grpc.py"):
        assert (tmp_path / "lrm4d_core" / "serve" / name).read_bytes() == (src / name).read_bytes(), (
            f"{name} is stale: regenerate it (see the header of lrm4d.proto)")


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_remote_equals_local(server, local, encoding):
    images, cams, times = window(3, 24, 20)
    with remote(server.port, image_encoding=encoding) as backend:
        assert backend.model_id == "tiny-test" and backend.info.model_width == 16
        rec = backend.reconstruct(images, cams, times, None)
        assert_same_reconstruction(local.reconstruct(images, cams, times, None), rec)
        assert rec.view_dependence == pytest.approx((0.4, 20.0))  # the server's model's, sent with the result
        # a fixed scene normalization is used as given
        scene = SceneNormalization(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), 1.7)
        rec2 = backend.reconstruct(images, cams, times, scene)
        assert_same_reconstruction(local.reconstruct(images, cams, times, scene), rec2)
        assert rec2.scene.scale == 1.7
        # a known ground travels with the request and acts on the server as it does locally
        grounded = local.reconstruct(images, cams, times, None, ground_z=-0.6)
        plain = local.reconstruct(images, cams, times, None)
        moved = (grounded.gaussians_model.means - plain.gaussians_model.means).abs().amax(-1) > 1e-3
        assert 0 < int(moved.sum()) < len(moved)
        assert_same_reconstruction(grounded, backend.reconstruct(images, cams, times, None, ground_z=-0.6))
        assert backend.status == "ok" and backend.counters["ok"] == 3
        assert {"server_forward", "server_queue", "rpc", "client_total"} <= set(rec.timings)


def test_client_builds_the_own_view_splats_and_survives_constants_it_does_not_understand(server, local):
    """The client renders a remote reconstruction as the local one, own-view splats included; a
    response whose splat constants it cannot read (another server version) gives a reconstruction
    without them, a counter and no exception."""
    images, cams, times = window(3, 24, 20)
    ref = local.reconstruct(images, cams, times, None)
    with remote(server.port, image_encoding="png") as backend:
        rec = backend.reconstruct(images, cams, times, None)
        got = render(rec, cams, float(times[1]), backend="torch").color
        expected = render(ref, cams, float(times[1]), backend="torch").color
        without = render(replace(ref, own_view=None), cams, float(times[1]), backend="torch").color
        assert float((got - expected).abs().max()) < 0.01  # float16 Gaussians on the wire
        assert float((without - expected).abs().max()) > 0.05  # where the splats act (0.09 here)
        response = backend._call(backend.encode_request(images, cams, times, None, None), attempts=1)
        assert len(response.own_view) == 8
        for bad in ([10.0, 0.2], [10.0, 0.2, 0.4, 4.0, 0.98, 0.04, 0.0, 0.05, 1.0], [-10.0, 0.2, 0.4, 4.0, 0.98, 0.04, 0.0, 0.05]):
            response.own_view[:] = bad
            odd = backend.decode_response(response, cams, times, images)
            assert odd.own_view is None
        assert backend.counters["bad_own_view"] == 3


def test_remote_sends_the_time_windows_of_a_standing_camera(server, local):
    """A window where each camera gave two inputs, at two times: the pixel-aligned Gaussians that the
    other input of their camera saw alike have a finite window, and the remote one equals the local."""
    images, cams, times = window(3, 24, 20)
    same = Cameras(torch.cat([cams.K, cams.K]), torch.cat([cams.cam_to_world, cams.cam_to_world]), cams.width, cams.height)
    images2, times2 = images + images, np.concatenate([times, times + 1.0])
    with remote(server.port, image_encoding="png") as backend:
        rec = backend.reconstruct(images2, same, times2, None)
    ref = local.reconstruct(images2, same, times2, None)
    assert_same_reconstruction(ref, rec)
    assert rec.nearest_copy == pytest.approx(0.7) and torch.isfinite(rec.time_windows).any()


def test_pipeline_runs_unchanged_on_the_remote_backend(server, local):
    """Reconstructor products (clouds, forecasts, renders) from the remote backend match local ones."""
    from lrm4d_core.stream import Frame, Window

    images, cams, times = window(2, 24, 20, seed=3)
    frames = tuple(Frame(f"c{i}", int(round((10 + t) * 1e9)), images[i], cams.K[i].numpy(), cams.cam_to_world[i].numpy())
                   for i, t in enumerate(times))
    win = Window(frames=frames, end_ns=frames[-1].stamp_ns, start_ns=frames[0].stamp_ns)
    cfg = PipelineConfig(forecast_horizons_s=(0.5,), render_max_side=16)
    with remote(server.port) as backend:
        pr = Reconstructor(backend, cfg).process(win)
    pl = Reconstructor(local, cfg).process(win)
    assert len(pr.cloud) == len(pl.cloud)
    assert torch.allclose(pr.cloud.means.float(), pl.cloud.means.float(), rtol=1e-2, atol=1e-3)
    assert [r.name for r in pr.renders] == [r.name for r in pl.renders]


def test_jpeg_images_are_smaller_and_work(server):
    images, cams, times = window(3, 64, 48)
    with remote(server.port, image_encoding="jpeg", jpeg_quality=80) as jpeg, remote(server.port) as raw:
        assert jpeg.encode_request(images, cams, times, None).ByteSize() < raw.encode_request(images, cams, times, None).ByteSize() / 1.5
        rec = jpeg.reconstruct(images, cams, times, None)
        assert len(rec.gaussians_model) == 3 * 16 * 16 and torch.isfinite(rec.gaussians_model.means).all()


# ------------------------------------------------------------------------------------------ security and limits
def test_missing_or_wrong_token_is_rejected(server):
    images, cams, times = window(2)
    before = server.auth.rejected
    for token in (None, "wrong-token"):
        with remote(server.port, token=token, connect_info=False, retries=0) as backend:
            with pytest.raises(RemoteAuthError, match="UNAUTHENTICATED"):
                backend.reconstruct(images, cams, times, None)
            assert backend.failures["UNAUTHENTICATED"] == 1 and backend.status != "ok"
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.ReconstructorStub(channel)
    for method, request in ((stub.Health, pb.HealthRequest()), (stub.ServerInfo, pb.ServerInfoRequest())):
        for metadata in ((), (("authorization", "Bearer nope"),), (("authorization", TOKEN),)):
            with pytest.raises(grpc.RpcError) as info:
                method(request, timeout=5, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.Health(pb.HealthRequest(), timeout=5, metadata=(("authorization", f"Bearer {TOKEN}"),)).status == pb.HealthResponse.SERVING
    channel.close()
    assert server.auth.rejected == before + 8


def test_oversize_request_is_rejected_with_a_clear_error(checkpoint):
    images, cams, times = window(4, 64, 64)  # 4 x 12 KiB raw
    s = Server([load_model(checkpoint, device="cpu")], ServeConfig(port=0, token=TOKEN, max_message_mb=0.02)).start()
    try:
        # client side, before sending: its own limit
        with remote(s.port, max_message_mb=0.01, connect_info=False) as small:
            with pytest.raises(RequestTooLarge, match=r"request is 0\.0\d+ MB, limit 0\.01 MB"):
                small.reconstruct(images, cams, times, None)
        # client side: the server's limit, learnt from ServerInfo
        with remote(s.port) as informed:
            with pytest.raises(RequestTooLarge, match=r"request is 0\.0\d+ MB, limit 0\.02 MB"):
                informed.reconstruct(images, cams, times, None)
        # server side: a client that does not know the server's limit
        with remote(s.port, connect_info=False) as blind:
            with pytest.raises(RequestTooLarge, match=r"message too large: .*server limit unknown"):
                blind.reconstruct(images, cams, times, None)
            assert blind.failures["RESOURCE_EXHAUSTED"] == 1 and blind.breaker.state == "closed"
            ok = blind.reconstruct(*window(1, 24, 20), None)  # the server is fine afterwards
            assert len(ok.gaussians_model) == 256
    finally:
        s.stop(grace_s=1.0)


def test_invalid_requests_are_rejected_with_invalid_argument(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.ReconstructorStub(channel)
    md = (("authorization", f"Bearer {TOKEN}"),)
    img = encode_image(np.zeros((8, 8, 3), np.uint8))
    eye = np.eye(4).reshape(-1).tolist()
    K = [10, 0, 4, 0, 10, 4, 0, 0, 1]
    bad = {
        "at least one view": pb.ReconstructRequest(),
        "needs 192 bytes": pb.ReconstructRequest(views=[pb.View(image=pb.Image(data=b"xx", width=8, height=8), K=K, cam_to_world=eye)]),
        "K needs 9 values": pb.ReconstructRequest(views=[pb.View(image=img, K=[1.0], cam_to_world=eye)]),
        "finite": pb.ReconstructRequest(views=[pb.View(image=img, K=K, cam_to_world=eye, time_s=float("nan"))]),
        "cannot decode PNG": pb.ReconstructRequest(views=[pb.View(image=pb.Image(data=b"junk", encoding=pb.Image.PNG, width=8, height=8), K=K, cam_to_world=eye)]),
        "ground_z must be finite": pb.ReconstructRequest(views=[pb.View(image=img, K=K, cam_to_world=eye)], ground_z=float("inf")),
    }
    for words, request in bad.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.Reconstruct(request, timeout=5, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details(), (words, info.value.details())
    channel.close()
    with remote(server.port) as backend:  # the client raises at once: no retry, no breaker
        with pytest.raises(ValueError):
            backend.reconstruct([np.zeros((4, 4), np.uint8)], ring(1, 4, 4), np.zeros(1), None)
        with pytest.raises(RemoteCallError, match="65 views, this server takes at most 64") as info:
            backend.reconstruct(*window(65, 8, 8), None)
        assert info.value.code == "INVALID_ARGUMENT" and backend.counters["retries"] == 0
        assert backend.breaker.state == "closed" and backend.status == "ok"


def test_tls(checkpoint, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    s = Server([load_model(checkpoint, device="cpu")],
               ServeConfig(port=0, token=TOKEN, tls_cert=str(cert), tls_key=str(key))).start()
    try:
        images, cams, times = window(2)
        with remote(s.port, tls_ca_file=str(cert)) as backend:
            assert len(backend.reconstruct(images, cams, times, None).gaussians_model) == 512
        with remote(s.port, connect_info=False, retries=0, timeout_s=3.0) as plain:  # plaintext to a TLS port
            with pytest.raises(BackendUnavailable):
                plain.reconstruct(images, cams, times, None)
    finally:
        s.stop(grace_s=1.0)


def test_server_settings_are_checked():
    with pytest.raises(ValueError, match="no token"):
        ServeConfig()
    with pytest.raises(ValueError, match="only allowed on a loopback"):
        ServeConfig(host="0.0.0.0", allow_no_auth=True)
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        ServeConfig(token="x", tls_cert="a.pem")
    assert ServeConfig(allow_no_auth=True).token is None  # loopback without auth: allowed
    from lrm4d_core.cli import main

    assert main(["serve", "--help"]) == 0


# ------------------------------------------------------------------------------------------ concurrency
def test_concurrent_clients_batched_and_unbatched(checkpoint, local):
    """8 clients at once: 6 of 3 views (batched together) and 2 of 2 views; each answer is its own."""
    model = SlowModel(load_model(checkpoint, device="cpu"), delay_s=0.5, times=1)  # queue builds behind call 1
    s = Server([model], ServeConfig(port=0, token=TOKEN, max_batch=4, max_delay_ms=50)).start()
    shapes = [3, 3, 3, 3, 3, 3, 2, 2]
    results, errors = {}, []
    barrier = threading.Barrier(len(shapes))

    def client(i: int) -> None:
        try:
            images, cams, times = window(shapes[i], 24, 20, seed=i)
            with remote(s.port) as backend:
                barrier.wait(timeout=30)
                results[i] = backend.reconstruct(images, cams, times, None)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(shapes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        for i, rec in results.items():
            images, cams, times = window(shapes[i], 24, 20, seed=i)
            assert_same_reconstruction(local.reconstruct(images, cams, times, None), rec)
        st = s.engine.stats
        assert st.requests == len(shapes) and st.errors == 0
        assert st.max_batch_seen > 1 and st.batches < len(shapes)  # some requests shared a forward
        assert st.max_batch_seen <= 4
        assert any(r.timings["server_batch_size"] > 1 for r in results.values())
    finally:
        s.stop(grace_s=1.0)


def test_graceful_stop_finishes_in_flight_calls(checkpoint):
    s = Server([SlowModel(load_model(checkpoint, device="cpu"), delay_s=1.0)], ServeConfig(port=0, token=TOKEN)).start()
    out = {}
    images, cams, times = window(2)
    backend = remote(s.port, retries=0)

    def call() -> None:
        try:
            out["rec"] = backend.reconstruct(images, cams, times, None)
        except Exception as err:  # noqa: BLE001
            out["err"] = err

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while s.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.in_flight == 1
    s.stop(grace_s=10.0)  # returns once the in-flight call is answered
    t.join(10)
    assert "rec" in out and len(out["rec"].gaussians_model) == 512, out.get("err")
    with pytest.raises(BackendUnavailable):
        backend.reconstruct(images, cams, times, None)
    backend.close()


# ------------------------------------------------------------------------------------------ failures and recovery
def test_circuit_breaker_states():
    now = [0.0]
    b = CircuitBreaker(failures=2, open_s=5.0, clock=lambda: now[0])
    assert b.allow() and b.state == "closed"
    b.failure()
    assert b.allow() and b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow() and b.opens == 1
    now[0] = 4.9
    assert not b.allow()
    now[0] = 5.0
    assert b.allow() and b.state == "half-open"
    assert not b.allow()  # a single probe at a time
    b.failure()
    assert b.state == "open" and b.opens == 2 and not b.allow()
    now[0] = 10.1
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.consecutive_failures == 0


def _start_server_process(checkpoint: Path, token_file: Path, port: int, port_file: Path) -> subprocess.Popen:
    port_file.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrm4d_core.serve.server", "--checkpoint", str(checkpoint), "--port", str(port),
         "--token-file", str(token_file), "--port-file", str(port_file), "--devices", "cpu", "--grace-s", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server did not start within 60 s")
        time.sleep(0.05)
    return proc


def test_server_killed_mid_run_and_restarted(checkpoint, tmp_path):
    """SIGKILL the server while a client loops; restart it on the same port; the client recovers."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port_file, port = tmp_path / "port", free_port()
    proc = _start_server_process(checkpoint, token_file, port, port_file)
    backend = remote(port, timeout_s=2.0, retries=1, backoff_s=0.05, breaker_failures=2, breaker_open_s=0.5,
                     reconnect_max_s=0.5)
    images, cams, times = window(2)
    outcomes: list[str] = []
    unexpected: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                backend.reconstruct(images, cams, times, None)
                outcomes.append("ok")
            except BackendUnavailable as err:
                outcomes.append(err.code)
                time.sleep(0.05)
            except BaseException as err:  # noqa: BLE001 - anything else fails the test
                unexpected.append(err)
                return

    def wait_for(predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert not unexpected, unexpected
            assert time.monotonic() < deadline, f"timed out waiting for {what}; outcomes {outcomes[-20:]}"
            time.sleep(0.02)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        wait_for(lambda: outcomes.count("ok") >= 3, 30, "first successes")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        n_ok = outcomes.count("ok")
        wait_for(lambda: backend.breaker.state != "closed" and backend.counters["short_circuited"] >= 1, 30, "the breaker to open")
        assert backend.status.startswith(f"remote 127.0.0.1:{port} unavailable")
        proc = _start_server_process(checkpoint, token_file, port, port_file)
        wait_for(lambda: outcomes.count("ok") >= n_ok + 3, 60, "recovery")
    finally:
        stop.set()
        worker.join(15)
        proc.kill()
        proc.wait(10)
    assert not unexpected, unexpected
    assert not worker.is_alive()
    failures = [o for o in outcomes if o != "ok"]
    assert failures and set(failures) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "BREAKER_OPEN"}
    c = backend.counters
    assert c["failed_calls"] >= 2 and c["breaker_opens"] >= 1 and c["short_circuited"] >= 1 and c["retries"] >= 1
    assert backend.failures["UNAVAILABLE"] >= 1
    assert backend.status == "ok" and backend.breaker.state == "closed"
    backend.close()


def test_fallback_while_the_server_is_down_and_diagnostics(checkpoint, local):
    from ros2_lrm4d.msgdefs import RosbagsFactory, make_typestore
    from ros2_lrm4d.shell import Diagnostics

    port = free_port()
    cfg = ServeConfig(port=port, token=TOKEN)
    s = Server([load_model(checkpoint, device="cpu")], cfg, model_id="tiny-test").start()
    backend = remote(port, timeout_s=2.0, retries=0, breaker_failures=1, breaker_open_s=0.3, reconnect_max_s=0.3,
                     fallback=local)
    diag = Diagnostics()
    images, cams, times = window(2)
    backend.reconstruct(images, cams, times, None)
    diag.update_backend(backend)
    assert diag.backend_status == "ok" and diag.extra["backend/ok"] == "1"
    s.stop(grace_s=1.0)
    for _ in range(3):  # the server is gone: every window is still answered, by the fallback
        rec = backend.reconstruct(images, cams, times, None)
        assert len(rec.gaussians_model) == 512
    diag.update_backend(backend)
    assert "unavailable" in diag.backend_status and "local fallback" in diag.backend_status
    assert int(diag.extra["backend/fallback_calls"]) == 3
    msg = diag.to_msg(RosbagsFactory(make_typestore()), 0)
    assert msg.status[0].level == 1 and "degraded" in msg.status[0].message
    s = Server([load_model(checkpoint, device="cpu")], cfg, model_id="tiny-test").start()  # back, same port
    try:
        deadline = time.monotonic() + 30
        while backend.status != "ok":
            assert time.monotonic() < deadline, backend.status
            backend.reconstruct(images, cams, times, None)
            time.sleep(0.05)
        ok_before = backend.counters["ok"]
        backend.reconstruct(images, cams, times, None)
        assert backend.counters["ok"] == ok_before + 1  # answered remotely again
    finally:
        s.stop(grace_s=1.0)
        backend.close()


def test_make_backend_remote(server, checkpoint, tmp_path):
    from ros2_lrm4d.backend import make_backend
    from ros2_lrm4d.params import NodeParams

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    params = NodeParams(backend="remote", remote_address=f"127.0.0.1:{server.port}", remote_token_file=str(token_file),
                        remote_image_encoding="png", fallback_to_local=True, checkpoint=str(checkpoint), device="cpu")
    backend = make_backend(params)
    try:
        assert isinstance(backend, RemoteBackend) and isinstance(backend.fallback, LocalBackend)
        assert backend.model_id == "tiny-test" and backend.image_encoding == "png"
        images, cams, times = window(2)
        backend.reconstruct(images, cams, times, None)
        assert backend.counters["ok"] == 1 and backend.status == "ok"
    finally:
        backend.close()
    with pytest.raises(ValueError, match="remote_image_encoding"):
        NodeParams(remote_image_encoding="webp")


def test_round_robin_over_replicas_and_the_probe(checkpoint, server, capsys):
    """A static list of replicas as the target: calls are spread over both; the probe CLI reports."""
    from lrm4d_core.serve.client import main as probe

    other = Server([load_model(checkpoint, device="cpu")], ServeConfig(port=0, token=TOKEN), model_id="tiny-test").start()
    try:
        before = (server.engine.stats.requests, other.engine.stats.requests)
        images, cams, times = window(1)
        with RemoteBackend(f"ipv4:127.0.0.1:{server.port},127.0.0.1:{other.port}", TOKEN, timeout_s=10.0) as backend:
            for _ in range(8):
                backend.reconstruct(images, cams, times, None)
        assert server.engine.stats.requests > before[0] and other.engine.stats.requests > before[1]
    finally:
        other.stop(grace_s=1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LRM4D_TOKEN", TOKEN)
        assert probe(["--address", f"127.0.0.1:{server.port}"]) == 0
        assert '"status": "SERVING"' in capsys.readouterr().out
        assert probe(["--address", f"127.0.0.1:{free_port()}", "--timeout-s", "1"]) == 1
        assert '"status": "UNREACHABLE"' in capsys.readouterr().out


def _listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket (IPv4 and IPv6) in this network namespace."""
    out = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr, port = fields[1].split(":")
            raw = bytes.fromhex(addr)
            if len(raw) == 4:
                host = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # four little-endian 32-bit words
                host = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.add((host.removeprefix("::ffff:"), int(port, 16)))  # gRPC binds v4-mapped IPv6 sockets
    return out


def test_listens_only_on_the_configured_address(checkpoint):
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs Linux /proc/net/tcp")
    before = _listening()
    s = Server([load_model(checkpoint, device="cpu")], ServeConfig(port=0, token=TOKEN)).start()
    try:
        new = _listening() - before
    finally:
        s.stop(grace_s=0.5)
    assert new == {("127.0.0.1", s.port)}, new


# ------------------------------------------------------------------------------------------ hostile input
def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (IHDR patched, CRC recomputed)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read the server's peak memory")
def test_hostile_requests_cost_the_server_no_memory(checkpoint, tmp_path):
    """Two 12000x12000 PNGs in 2 kB: refused from their headers (INVALID_ARGUMENT), not decoded
    (9 GB before); a 40 MB body without a token: refused on its metadata, not buffered."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    proc = _start_server_process(checkpoint, token_file, port, tmp_path / "port")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 256 << 20)])
        stub = pb_grpc.ReconstructorStub(channel)
        md = (("authorization", f"Bearer {TOKEN}"),)
        stub.Health(pb.HealthRequest(), timeout=10, metadata=md)
        before = _vm_hwm_mb(proc.pid)
        bomb = pb.Image(data=_png_claiming(12000, 12000), encoding=pb.Image.PNG, width=12000, height=12000)
        K = [9000.0, 0, 6000, 0, 9000, 6000, 0, 0, 1]
        views = [pb.View(image=bomb, K=K, cam_to_world=np.eye(4).reshape(-1).tolist(), time_s=float(i)) for i in range(2)]
        with pytest.raises(grpc.RpcError) as info:
            stub.Reconstruct(pb.ReconstructRequest(views=views), timeout=30, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max-image-mp" in info.value.details()
        big = pb.ReconstructRequest(views=[pb.View(image=pb.Image(data=b"\0" * (40 << 20), width=4096, height=3414))])
        with pytest.raises(grpc.RpcError) as info:
            stub.Reconstruct(big, timeout=30, metadata=(("authorization", "Bearer wrong"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        grown = _vm_hwm_mb(proc.pid) - before
        assert grown < 30, f"the server's peak memory grew by {grown:.0f} MB"
        channel.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_garbage_and_implausible_cameras_are_invalid_argument_with_one_log_line(server, caplog):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    md = (("authorization", f"Bearer {TOKEN}"),)
    raw = channel.unary_unary("/lrm4d.v1.Reconstructor/Reconstruct", request_serializer=None, response_deserializer=None)
    with caplog.at_level("WARNING", logger="lrm4d.serve"):
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\x00not a protobuf \x12\x80", timeout=10, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in info.value.details()
        stub = pb_grpc.ReconstructorStub(channel)
        img = encode_image(np.zeros((8, 8, 3), np.uint8))
        K = [10, 0, 4, 0, 10, 4, 0, 0, 1]
        for pose, words in (([0.0] * 16, "last row"), ((np.eye(4) * [1, 1, 1, 1]).reshape(-1).tolist()[:3] + [1e300] + np.eye(4).reshape(-1).tolist()[4:], "translation"),
                            ([0.0] * 15 + [1.0], "not a rotation")):
            with pytest.raises(grpc.RpcError) as info:
                stub.Reconstruct(pb.ReconstructRequest(views=[pb.View(image=img, K=K, cam_to_world=pose)]), timeout=10, metadata=md)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details(), info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.Reconstruct(pb.ReconstructRequest(views=[pb.View(image=img, K=[1e-300, 0, 4, 0, 1e-300, 4, 0, 0, 1],
                                                                  cam_to_world=np.eye(4).reshape(-1).tolist())]), timeout=10, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "absurd" in info.value.details()
    channel.close()
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged for bad input
    assert server.invalid_requests >= 5


def test_offline_backend_waits_out_the_breaker_so_a_short_outage_costs_only_its_windows():
    """Replay runs faster than real time: an open breaker on the wall clock used to refuse every
    window the replay reached before it closed. Offline, the call waits for the probe instead."""
    now = [0.0]
    backend = RemoteBackend("127.0.0.1:1", None, timeout_s=1.0, retries=0, breaker_failures=1, breaker_open_s=5.0,
                            connect_info=False, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
                            wait_while_open_s=20.0)
    calls = []

    def fake_call(request, attempts):
        calls.append(now[0])
        if len(calls) == 1:  # the outage: one failed call
            raise BackendUnavailable("down", "UNAVAILABLE")
        return "response"

    backend._call = fake_call
    backend.encode_request = lambda *a: "request"
    backend.decode_response = lambda response, cameras, times, images=None: types.SimpleNamespace(timings={})
    with pytest.raises(BackendUnavailable):
        backend.reconstruct([], None, np.zeros(0), None)  # the window inside the outage is lost
    assert backend.breaker.state == "open"
    backend.reconstruct([], None, np.zeros(0), None)  # the next one waits 5 s (simulated) and succeeds
    assert calls == [0.0, 5.0] and backend.counters["waited_for_breaker"] >= 1 and backend.counters["short_circuited"] == 0
    live = RemoteBackend("127.0.0.1:1", None, retries=0, breaker_failures=1, connect_info=False)
    live._call = lambda request, attempts: (_ for _ in ()).throw(BackendUnavailable("down", "UNAVAILABLE"))
    live.encode_request = lambda *a: "request"
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            live.reconstruct([], None, np.zeros(0), None)
    assert live.counters["short_circuited"] == 2  # a live node refuses at once
    backend.close()
    live.close()
