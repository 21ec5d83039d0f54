"""`lrm4d replay` against crafted bad input (issue: nothing a bag sends can crash, exhaust or silently
corrupt it). Each bag is a synthetic bag with one kind of message replaced; the output bag is read
back with mcap-ros2-support (an independent reader)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from lrm4d_core import cli
from lrm4d_core.model.api import load_model
from lrm4d_core.pipeline import LocalBackend
from ros2_lrm4d.msgdefs import make_typestore
from ros2_lrm4d.params import NodeParams
from ros2_lrm4d.replay import replay
from ros2_lrm4d.synth_bag import write_synthetic_bag

CAMS = ("front", "front_left", "front_right", "back", "back_left", "back_right")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultbags")
    return write_synthetic_bag(root / "clean", "driving", seed=4, width=32, height=24, frames=10, progress=False)


@pytest.fixture(scope="module")
def backend():
    torch.manual_seed(0)
    return LocalBackend(load_model(preset="tiny", device="cpu", hidden=32, layers=1, heads=2, image_size=(16, 16)))


def params(**kw) -> NodeParams:
    base = dict(cameras=CAMS, window_duration_s=0.5, update_rate_hz=4.0, max_views=6, min_steps=2,
                forecast_horizons_s=(0.5,), render_max_side=16)
    base.update(kw)
    return NodeParams(**base)


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a bag with `edit(topic, msg, index)` applied to every message (returns the message to write,
    or None to drop it); `index` counts messages of that topic."""
    from rosbags.rosbag2 import Reader, Writer

    typestore = make_typestore()
    counts: dict[str, int] = {}
    with Reader(src) as reader, Writer(dst, version=9) as writer:
        conns = {}
        for c in reader.connections:
            conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=typestore)
        for conn, t, raw in reader.messages():
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            i = counts.get(conn.topic, 0)
            counts[conn.topic] = i + 1
            msg = edit(conn.topic, msg, i)
            if msg is not None:
                writer.write(conns[conn.id], t, typestore.serialize_cdr(msg, conn.msgtype))
    return dst


def png_claiming(width: int, height: int) -> np.ndarray:
    """A tiny PNG file whose header claims width x height (IHDR patched, CRC recomputed): what a
    decompression bomb looks like to a decoder before it decodes."""
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over type + 13 data bytes
    return np.frombuffer(bytes(data), np.uint8)


def decoded(bag: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with open(next(bag.glob("*.mcap")), "rb") as f:
        for _, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            out.setdefault(channel.topic, []).append(msg)
    return out


def all_finite(bag: Path) -> bool:
    for topic, msgs in decoded(bag).items():
        for msg in msgs:
            if topic.endswith("gaussians") or "forecast" in topic:
                arr = np.frombuffer(bytes(msg.data), "<f4")
                if not np.isfinite(arr).all():
                    return False
    return True


def test_absurd_tf_translation_is_rejected_where_it_enters(clean, backend, tmp_path):
    """A single /tf translation of 1e300 used to crash the 4D encoding (LinAlgError) or publish
    non-finite Gaussians; now the transform is ignored and counted, and the rest is processed."""
    def edit(topic, msg, i):
        if topic == "/tf" and i == 8:
            msg.transforms[0].transform.translation.x = 1e300
        if topic == "/tf" and i == 12:
            msg.transforms[0].transform.rotation.w = float("nan")
        return msg

    bad = rewrite(clean.path, tmp_path / "bad", edit)
    summary = replay(bad, tmp_path / "out", params(), backend, progress=False)
    assert summary.drops.get("tf_ignored/tf_absurd_translation") == 1 and summary.drops.get("tf_ignored/tf_nonfinite") == 1
    assert summary.windows >= 3 and all_finite(tmp_path / "out")
    diag = decoded(tmp_path / "out")["/diagnostics"][-1].status[0]
    values = {kv.key: kv.value for kv in diag.values}
    assert values["dropped/tf_ignored/tf_absurd_translation"] == "1"


def test_image_bombs_and_absurd_intrinsics_are_dropped_not_fatal(clean, backend, tmp_path):
    """A 14000x14000 PNG (a few hundred kB) as CompressedImage, a raw Image claiming 9000x9000 and a
    CameraInfo with fx=1e-300: each is one counted drop; the replay goes on."""
    bomb, big = png_claiming(14000, 14000), png_claiming(6000, 6000)
    comp = write_synthetic_bag(tmp_path / "comp", "driving", seed=4, width=32, height=24, frames=10, compressed=True,
                               progress=False)

    def edit_comp(topic, msg, i):
        if topic.endswith("front/image_raw/compressed") and i == 3:
            msg.format, msg.data = "png", bomb  # beyond Pillow's own bomb limit
        if topic.endswith("front/image_raw/compressed") and i == 5:
            msg.format, msg.data = "png", big  # within Pillow's limit, beyond ours
        if topic.endswith("back/camera_info") and i == 5:
            k = np.array(msg.k)
            k[0] = 1e-300
            msg.k = k
        return msg

    bad = rewrite(comp.path, tmp_path / "bad", edit_comp)
    summary = replay(bad, tmp_path / "out", params(image_transport="compressed", max_image_pixels=4096 * 4096), backend,
                     progress=False)
    assert summary.drops.get("image_too_large") == 2 and summary.drops.get("bad_camera_info") == 1
    assert "max_image_pixels" in summary.drop_examples["image_too_large"]
    assert "absurd" in summary.drop_examples["bad_camera_info"] and summary.windows >= 3

    def edit_raw(topic, msg, i):  # a raw header claiming a huge image: rejected before any decoding
        if topic.endswith("front/image_raw") and i == 2:
            msg.height, msg.width, msg.step = 9000, 9000, 27000
        return msg

    bad = rewrite(clean.path, tmp_path / "bad_raw", edit_raw)
    summary = replay(bad, tmp_path / "out_raw", params(max_image_pixels=1000 * 1000), backend, progress=False)
    assert summary.drops.get("image_too_large") == 1 and summary.windows >= 3


def test_zero_windows_exit_non_zero_and_say_why(clean, tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("lrm4d:\n  ros__parameters:\n    cameras: " + json.dumps(list(CAMS)) + "\n    fixed_frame: nowhere\n"
                   "    window_duration_s: 0.5\n    update_rate_hz: 4.0\n    max_views: 6\n    render_max_side: 16\n")
    rc = cli.main(["replay", str(clean.path), str(tmp_path / "out"), "--config", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "no window reconstructed: all 60 frames dropped: tf_missing" in err and "'map'" in err
    assert (tmp_path / "out" / "metadata.yaml").exists()  # still a readable bag, with the final diagnostics
    diag = decoded(tmp_path / "out")["/diagnostics"]
    assert len(diag) == 1 and {kv.key: kv.value for kv in diag[0].status[0].values}["dropped/tf_missing"] == "60"


def test_why_no_windows_names_window_failures_and_counts_only_frame_drops_as_frames():
    from ros2_lrm4d.replay import ReplaySummary

    failed = ReplaySummary(frames_in=60, drops={"reconstruction_failed": 3},
                           drop_examples={"reconstruction_failed": "RuntimeError: out of memory"})
    assert failed.why_no_windows() == "all 3 window(s) failed to reconstruct: RuntimeError: out of memory"
    infos = ReplaySummary(frames_in=60, drops={"bad_camera_info": 40, "no_camera_info": 60, "tf_ignored/nan": 9})
    assert infos.why_no_windows() == "all 60 frames dropped: no_camera_info"
    some = ReplaySummary(frames_in=60, drops={"bad_camera_info": 80, "tf_missing": 12})
    assert some.why_no_windows() == "12 of 60 frames dropped, most for tf_missing"


def test_parameter_file_mistakes_are_one_line_errors(clean, tmp_path, capsys):
    cases = {
        "cameras: cam0": "'cameras' must be of type string_array",
        "max_views: 12.0": "'max_views' must be of type integer",
        "bogus: 1": "unknown lrm4d parameters ['bogus']",
    }
    for i, (line, expected) in enumerate(cases.items()):
        cfg = tmp_path / f"p{i}.yaml"
        cfg.write_text(f"lrm4d:\n  ros__parameters:\n    {line}\n")
        assert cli.main(["replay", str(clean.path), str(tmp_path / f"o{i}"), "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / f"o{i}").exists()  # nothing half-written
    assert cli.main(["replay", str(clean.path), str(tmp_path / "o"), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "nosection.yaml").write_text("other: {}\n")
    assert cli.main(["replay", str(clean.path), str(tmp_path / "o"), "--config", str(tmp_path / "nosection.yaml")]) == 2
    assert "no 'lrm4d: ros__parameters:' section" in capsys.readouterr().err


def test_interrupted_replay_leaves_a_closed_readable_bag(clean, backend, tmp_path, monkeypatch):
    """Ctrl-C in the middle: the output bag has its metadata and reads back; rerunning to the same
    path works with --overwrite."""
    import lrm4d_core.pipeline as pipeline

    real = pipeline.Reconstructor.process
    calls = {"n": 0}

    def interrupt_on_third(self, window):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, window)

    monkeypatch.setattr(pipeline.Reconstructor, "process", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        replay(clean.path, tmp_path / "out", params(), backend, progress=False)
    out = decoded(tmp_path / "out")
    assert (tmp_path / "out" / "metadata.yaml").exists() and len(out["/lrm4d/gaussians"]) == 2
    monkeypatch.setattr(pipeline.Reconstructor, "process", real)
    summary = replay(clean.path, tmp_path / "out", params(), backend, progress=False, overwrite=True)
    assert summary.windows >= 3 and len(decoded(tmp_path / "out")["/lrm4d/gaussians"]) == summary.windows


def test_non_finite_reconstructions_are_never_published(clean, backend, tmp_path):
    """A backend whose output holds NaN and inf Gaussians: they are dropped before any message is
    written and counted (pipeline/nonfinite_gaussians); every published float is finite."""
    class Poisoned:
        model_id = "poisoned"

        def reconstruct(self, images, cameras, times, scene, ground_z=None):
            rec = backend.reconstruct(images, cameras, times, scene, ground_z)
            g = rec.gaussians_model
            means = g.means.clone()
            means[::7, 0] = float("nan")
            means[1::7, 1] = float("inf")
            return type(rec)(type(g)(means, g.scales, g.q_left, g.q_right, g.opacities, g.colors), rec.scene, rec.time,
                             rec.model_cameras, rec.model_times, rec.timings, rec.environment, rec.background)

    summary = replay(clean.path, tmp_path / "out", params(publish_gaussians_4d=True), Poisoned(), progress=False)
    out = decoded(tmp_path / "out")
    assert summary.windows >= 3 and all_finite(tmp_path / "out")
    for msg in out["/lrm4d/gaussians_4d"]:
        assert np.isfinite(np.frombuffer(bytes(msg.data), "<f4")).all()
    values = {kv.key: kv.value for kv in out["/diagnostics"][-1].status[0].values}
    assert int(values["pipeline/nonfinite_gaussians"]) > 0


def test_frame_assembler_rejects_broken_poses_from_any_tf_source():
    """The live node gets poses from tf2, which accepts 1e300: the frame assembly rejects them."""
    from ros2_lrm4d.msgdefs import RosbagsFactory
    from ros2_lrm4d.shell import FrameAssembler, FrameDropped
    from ros2_lrm4d.shell import camera_info_msg

    f = RosbagsFactory(make_typestore())
    asm = FrameAssembler(params(cameras=("front",)))
    K = np.array([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]])
    asm.update_camera_info("front", camera_info_msg(f, "cam", 0, K, 32, 24))
    image = f.make("sensor_msgs/msg/Image", header=f.header("cam", 0), height=24, width=32, encoding="rgb8",
                   is_bigendian=0, step=96, data=np.zeros(24 * 96, np.uint8))
    for pose, reason in ((np.diag([1.0, 1, 1, 1]) + np.pad(np.array([[1e300], [0], [0]]), ((0, 1), (3, 0))), "tf_absurd"),
                         (np.zeros((4, 4)) + np.eye(4) * [0, 0, 0, 1], "tf_absurd"),
                         (np.full((4, 4), np.nan), "tf_absurd")):
        with pytest.raises(FrameDropped) as info:
            asm.make_frame("front", image, lambda *a, p=pose: p)
        assert info.value.reason == reason
    frame = asm.make_frame("front", image, lambda *a: np.eye(4))
    assert frame.image.shape == (24, 32, 3)


def test_cli_errors_are_one_line_unless_debug(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    assert cli.main(["train", "--config", missing]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "nope.yaml" in err and "--debug" in err
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "train", "--config", missing])


def test_chunk_crcs_are_written_and_verified(clean, backend, tmp_path):
    """Bags carry chunk CRCs (the synthetic ones, as `ros2 bag record` writes them, and replay's
    output); 1 KiB of flipped bytes inside a chunk is detected, reported, not replayed as data."""
    import shutil

    from mcap.reader import make_reader

    from ros2_lrm4d.bag_crc import mcap_file

    with open(mcap_file(clean.path), "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary.chunk_indexes  # chunked...
    with open(mcap_file(clean.path), "rb") as f:  # ...and every chunk has a CRC
        from mcap.records import Chunk
        from mcap.stream_reader import StreamReader

        chunks = [r for r in StreamReader(f, validate_crcs=True, emit_chunks=True).records if isinstance(r, Chunk)]
    assert chunks and all(c.uncompressed_crc != 0 for c in chunks)
    damaged = tmp_path / "damaged"
    shutil.copytree(clean.path, damaged)
    data = bytearray(mcap_file(damaged).read_bytes())
    start = chunks[0].uncompressed_size // 2 + 200
    for i in range(start, start + 1024):
        data[i] ^= 0xFF
    mcap_file(damaged).write_bytes(bytes(data))
    result = replay(damaged, tmp_path / "out", params(), backend, progress=False)
    assert result.truncated and result.frames_in < 60  # stopped at the damage, said so
    out = tmp_path / "out"
    with open(mcap_file(out), "rb") as f:
        written = [c for c in StreamReader(f, validate_crcs=True, emit_chunks=True).records if isinstance(c, Chunk)]
    assert written and all(c.uncompressed_crc != 0 for c in written)


def test_a_failing_window_is_one_counted_drop_and_the_rest_are_published(clean, backend, tmp_path):
    """Reconstruction (or encoding) raising in one window: that window is a `reconstruction_failed`
    drop with its reason in the summary and /diagnostics; the windows before and after go out."""
    calls = {"n": 0}

    class FailsOnce:
        model_id = "fails-once"

        def reconstruct(self, images, cameras, times, scene, ground_z=None):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("CUDA error: an illegal memory access")
            return backend.reconstruct(images, cameras, times, scene, ground_z)

    summary = replay(clean.path, tmp_path / "out", params(), FailsOnce(), progress=False)
    out = decoded(tmp_path / "out")
    assert summary.drops["reconstruction_failed"] == 1 and calls["n"] >= 3
    assert "illegal memory access" in summary.drop_examples["reconstruction_failed"]
    assert len(out["/lrm4d/gaussians"]) == summary.windows == calls["n"] - 1
    values = {kv.key: kv.value for kv in out["/diagnostics"][-1].status[0].values}
    assert int(values["dropped/reconstruction_failed"]) == 1


def test_a_full_disk_stops_the_replay_with_a_closed_readable_bag(clean, backend, tmp_path, monkeypatch):
    """The bag writer raising OSError (ENOSPC) mid-run: the replay stops saying why, and what was
    written before is a closed bag that another library reads back."""
    import errno

    from rosbags.rosbag2 import Writer

    real = Writer.write
    written = {"n": 0}

    def fills_up(self, conn, stamp, data):
        written["n"] += 1
        if written["n"] > 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, conn, stamp, data)

    monkeypatch.setattr(Writer, "write", fills_up)
    summary = replay(clean.path, tmp_path / "out", params(), backend, progress=False)
    monkeypatch.setattr(Writer, "write", real)
    assert "No space left on device" in summary.stopped
    out = decoded(tmp_path / "out")  # mcap's own reader: metadata, chunks and summary are whole
    assert (tmp_path / "out" / "metadata.yaml").is_file() and sum(len(v) for v in out.values()) == 40


def test_overwrite_replaces_only_an_output_bag(clean, backend, tmp_path):
    """`--overwrite` must never delete the input bag (or a folder holding it) or a folder that is
    not a rosbag2 output."""
    from ros2_lrm4d.replay import ReplayError

    inside = tmp_path / "data"
    inside.mkdir()
    (inside / "notes.txt").write_text("keep me")
    with pytest.raises(ReplayError, match="not a rosbag2 folder"):
        replay(clean.path, inside, params(), backend, progress=False, overwrite=True)
    with pytest.raises(ReplayError, match="holds the input bag"):
        replay(clean.path, clean.path.parent, params(), backend, progress=False, overwrite=True)
    with pytest.raises(ReplayError, match="holds the input bag"):
        replay(clean.path, clean.path, params(), backend, progress=False, overwrite=True)
    assert (inside / "notes.txt").read_text() == "keep me" and (clean.path / "metadata.yaml").is_file()
