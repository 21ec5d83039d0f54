"""ros2_lrm4d.synth_bag: synthetic rosbag2 files, read back with readers independent of the writer.

mcap files are read with mcap + mcap_ros2's decoder (its own CDR decoder, from the schemas stored in the file), sqlite3
bags with rosbags' AnyReader; raw images are decoded with numpy, jpeg with OpenCV, the TF tree is
composed with pytransform3d (tf2 semantics: linear translation + SLERP between /tf samples) and
compared with the ground-truth cam_to_world each image was rendered with.
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pytransform3d import rotations as pr
from ruamel.yaml import YAML

from ros2_lrm4d import synth_bag
from ros2_lrm4d.convert import UnsupportedEncoding, compressed_to_rgb, image_to_rgb
from ros2_lrm4d.synth_bag import FAULTS, STAMP_BASE_NS, load_ground_truth, truncate_bag, write_synthetic_bag
from ros2_lrm4d.tf import LinkMissing, TfBuffer

W, H, FRAMES = 32, 24, 6
NS = 1_000_000_000
FRAME_NS = NS // 10
DRIVING_CAMERAS = ["front", "front_left", "front_right", "back", "back_left", "back_right"]
OBJECT_CAMERAS = [f"canonical_{i}" for i in range(4)] + ["moving_0", "moving_1", "random_0", "random_1"]


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bags")


@pytest.fixture(scope="module")
def driving_raw_mcap(root):
    return write_synthetic_bag(root / "driving_raw", "driving", width=W, height=H, frames=FRAMES, seed=3)


@pytest.fixture(scope="module")
def driving_jpeg_sqlite(root):
    return write_synthetic_bag(root / "driving_jpeg", "driving", width=W, height=H, frames=FRAMES, seed=4, compressed=True, storage="sqlite3")


@pytest.fixture(scope="module")
def object_raw_sqlite(root):
    return write_synthetic_bag(root / "object_raw", "object", width=W, height=H, frames=FRAMES, seed=5, encoding="bgr8", storage="sqlite3")


@pytest.fixture(scope="module")
def object_jpeg_mcap(root):
    return write_synthetic_bag(root / "object_jpeg", "object", width=W, height=H, frames=FRAMES, seed=6, compressed=True)


BAGS = ["driving_raw_mcap", "driving_jpeg_sqlite", "object_raw_sqlite", "object_jpeg_mcap"]


@pytest.fixture(params=BAGS)
def bag(request):
    return request.getfixturevalue(request.param)


# ----------------------------------------------------------------------------------- reading
def _read(path: Path, storage: str, storage_file: Path) -> list[tuple[str, str, int, object]]:
    if storage == "mcap":
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory

        # file order (not re-sorted), so the test also sees the order the writer used
        with open(storage_file, "rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            return [(c.topic, s.name, m.log_time, msg) for s, c, m, msg in reader.iter_decoded_messages(log_time_order=False)]
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        return [(c.topic, c.msgtype, t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()]


@lru_cache(maxsize=None)
def _read_cached(path: str, storage: str, storage_file: str):
    return _read(Path(path), storage, Path(storage_file))


def messages(info) -> list[tuple[str, str, int, object]]:
    """[(topic, type, log_time_ns, decoded message)] read back with an independent reader."""
    return _read_cached(str(info.path), info.storage, str(info.storage_file))


def stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)


def u8(data) -> np.ndarray:
    return np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), dtype=np.uint8)


def decode_image(msg) -> np.ndarray:
    """Independent of ros2_lrm4d.convert: numpy for raw rgb8/bgr8, OpenCV for jpeg."""
    if hasattr(msg, "format"):
        bgr = cv2.imdecode(u8(msg.data), cv2.IMREAD_COLOR)
        assert bgr is not None, f"OpenCV cannot decode {msg.format}"
        return bgr[:, :, ::-1]
    assert msg.step == 3 * msg.width
    pixels = u8(msg.data).reshape(msg.height, msg.width, 3)
    return {"rgb8": pixels, "bgr8": pixels[:, :, ::-1]}[msg.encoding]


class IndependentTf:
    """The TF tree from /tf and /tf_static messages, composed with pytransform3d."""

    def __init__(self, msgs):
        self.static, self.dynamic = {}, {}
        for topic, _, _, msg in msgs:
            if topic not in ("/tf", "/tf_static"):
                continue
            for ts in msg.transforms:
                r, t = ts.transform.rotation, ts.transform.translation
                q = np.array([r.w, r.x, r.y, r.z])
                p = np.array([t.x, t.y, t.z])
                if topic == "/tf_static":
                    self.static[ts.child_frame_id] = (ts.header.frame_id, p, q)
                else:
                    parent, samples = self.dynamic.setdefault(ts.child_frame_id, (ts.header.frame_id, {}))
                    samples[stamp_ns(ts)] = (p, q)

    def edge(self, child: str, stamp: int) -> tuple[str, np.ndarray, bool]:
        """(parent, T_parent_child, whether it was interpolated)."""
        interpolated = False
        if child in self.static:
            parent, p, q = self.static[child]
        else:
            parent, samples = self.dynamic[child]
            times = np.array(sorted(samples))
            if stamp in samples:
                p, q = samples[stamp]
            else:
                i = int(np.searchsorted(times, stamp))
                assert 0 < i < len(times), f"{child} at {stamp} outside /tf range"
                (p0, q0), (p1, q1) = samples[times[i - 1]], samples[times[i]]
                a = (stamp - times[i - 1]) / (times[i] - times[i - 1])
                p, q = (1 - a) * p0 + a * p1, pr.quaternion_slerp(q0, q1, a, shortest_path=True)
                interpolated = True
        T = np.eye(4)
        T[:3, :3] = pr.matrix_from_quaternion(q / np.linalg.norm(q))
        T[:3, 3] = p
        return parent, T, interpolated

    def lookup(self, root: str, frame: str, stamp: int) -> tuple[np.ndarray, bool]:
        """T_root_frame and whether any edge was interpolated."""
        T, any_interp = np.eye(4), False
        while frame != root:
            frame, E, interp = self.edge(frame, stamp)
            T, any_interp = E @ T, any_interp or interp
        return T, any_interp


def tf_buffer(msgs, strict: bool = True) -> TfBuffer:
    """Our replay TfBuffer fed with every TF message (strict: none may be ignored as invalid/repeated)."""
    buf = TfBuffer(cache_duration_s=100.0)
    for topic, _, _, msg in msgs:
        if topic in ("/tf", "/tf_static"):
            ignored = buf.add(msg, static=topic == "/tf_static")
            assert ignored == 0 or not strict
    return buf


def image_msgs(info, camera: str, msgs=None):
    topic = info.image_topics[camera]
    return [(log, m) for t, _, log, m in (msgs or messages(info)) if t == topic]


# ----------------------------------------------------------------------------------- layout
def test_topics_types_and_counts(bag):
    msgs = messages(bag)
    cameras = DRIVING_CAMERAS if bag.rig == "driving" else OBJECT_CAMERAS
    assert bag.cameras == cameras
    image_type = "sensor_msgs/msg/CompressedImage" if bag.compressed else "sensor_msgs/msg/Image"
    expected = {"/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage"}
    for c in cameras:
        expected[f"/cameras/{c}/image_raw" + ("/compressed" if bag.compressed else "")] = image_type
        expected[f"/cameras/{c}/camera_info"] = "sensor_msgs/msg/CameraInfo"
    seen = {}
    for topic, typ, _, _ in msgs:
        assert seen.setdefault(topic, typ) == typ
    assert seen == expected
    counts = {t: sum(1 for m in msgs if m[0] == t) for t in expected}
    assert counts == bag.counts
    for t in expected:
        assert counts[t] == {"/tf_static": 1, "/tf": counts["/tf"]}.get(t, FRAMES), t
    # /tf: the 50 Hz grid over the clip plus every image stamp (some may coincide)
    grid = FRAMES * FRAME_NS // (NS // 50)
    stamps = {stamp_ns(m) for t, _, _, m in msgs if t.startswith("/cameras/") and t.endswith("camera_info")}
    assert counts["/tf"] == len(set(STAMP_BASE_NS + np.arange(grid) * (NS // 50)) | stamps)
    # written in log-time order (mcap is read in file order here)
    logs = [log for _, _, log, _ in msgs]
    assert logs == sorted(logs)


def test_metadata_and_qos(bag):
    meta = YAML(typ="safe").load((bag.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == bag.storage
    assert meta["relative_file_paths"] == [bag.storage_file.name]
    assert meta["message_count"] == bag.messages
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    static = topics["/tf_static"]["topic_metadata"]["offered_qos_profiles"]
    assert len(static) == 1 and static[0]["durability"] == "transient_local" and static[0]["reliability"] == "reliable"
    for name in set(topics) - {"/tf_static"}:
        assert topics[name]["topic_metadata"]["offered_qos_profiles"][0]["durability"] == "volatile"
        assert topics[name]["message_count"] == bag.counts[name]
    if bag.storage == "mcap":  # the channel itself carries the profile, as rosbag2's mcap plugin writes it
        from mcap.reader import make_reader

        with open(bag.storage_file, "rb") as f:
            summary = make_reader(f).get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        qos = YAML(typ="safe").load(channels["/tf_static"].metadata["offered_qos_profiles"])
        assert qos[0]["durability"] == "transient_local" and qos[0]["reliability"] == "reliable"
        assert summary.statistics.message_count == bag.messages


def test_stamps_frame_ids_and_jitter(bag):
    msgs = messages(bag)
    by_frame = {}
    for c in bag.cameras:
        imgs = image_msgs(bag, c, msgs)
        infos = [m for t, _, _, m in msgs if t == bag.camera_info_topics[c]]
        stamps = [stamp_ns(m) for _, m in imgs]
        assert all(b > a for a, b in zip(stamps, stamps[1:])), f"{c}: stamps not increasing"
        assert [stamp_ns(m) for m in infos] == stamps
        for f, (log, m) in enumerate(imgs):
            assert m.header.frame_id == f"{c}_optical_frame" == bag.frame_ids[c]
            assert infos[f].header.frame_id == m.header.frame_id
            skew = stamp_ns(m) - (STAMP_BASE_NS + f * FRAME_NS)
            assert 0 <= skew <= 2_000_000, (c, f, skew)  # stamp_jitter_ms = 2
            assert 0 <= log - stamp_ns(m) <= 3_000_000  # transport delay in log time only
            by_frame.setdefault(f, set()).add(stamp_ns(m))
    # cameras are not in sync: per frame the stamps differ (what approximate sync has to handle)
    assert all(len(s) > 1 for s in by_frame.values())


def test_camera_info_matches_rig(bag):
    gt = load_ground_truth(bag.gt_dir)
    msgs = messages(bag)
    for c in bag.cameras:
        K = gt.scene.record(bag.cameras.index(c), 0).K
        for t, _, _, m in msgs:
            if t != bag.camera_info_topics[c]:
                continue
            assert np.array_equal(np.asarray(m.k, dtype=np.float64).reshape(3, 3), K)
            P = np.asarray(m.p, dtype=np.float64).reshape(3, 4)
            assert np.array_equal(P[:, :3], K) and not P[:, 3].any()
            assert np.array_equal(np.asarray(m.r, dtype=np.float64), np.eye(3).ravel())
            assert m.distortion_model == "plumb_bob" and list(np.asarray(m.d)) == [0.0] * 5
            assert (m.width, m.height) == (W, H)


def test_images_match_ground_truth(bag):
    gt = load_ground_truth(bag.gt_dir)

    def truth_of(rec):
        return np.asarray(Image.open(bag.gt_dir / gt.scene.images[rec["gt_index"]].file).convert("RGB")).astype(int)

    errors = []
    for c in bag.cameras:
        for log, m in image_msgs(bag, c):
            rec = gt.image_record(c, stamp_ns(m))
            assert rec["log_time_ns"] == log
            truth = truth_of(rec)
            got = decode_image(m).astype(int)
            assert got.shape == truth.shape == (H, W, 3)
            if bag.compressed:
                errors.append(np.abs(got - truth).mean())
                # and it is closer to its own ground truth than to any other camera's at that frame
                others = [truth_of(r) for r in gt.index["images"] if r["frame"] == rec["frame"] and r["camera"] != c]
                assert errors[-1] < min(np.abs(got - o).mean() for o in others)
            else:
                assert np.array_equal(got, truth), (c, rec["frame"])
    if bag.compressed:  # jpeg q90 with 4:2:0 chroma on 32x24 highly textured images
        assert max(errors) < 15.0 and np.mean(errors) < 10.0, errors


def test_tf_composition_equals_ground_truth(bag):
    """map -> <cam>_optical_frame at every image stamp == the cam_to_world it was rendered with."""
    msgs = messages(bag)
    gt = load_ground_truth(bag.gt_dir)
    ours, buf = IndependentTf(msgs), tf_buffer(msgs)
    # the tree: map -> odom -> base_link -> <cam>_link -> <cam>_optical_frame
    for c in bag.cameras:
        chain, frame = [], f"{c}_optical_frame"
        while frame != "map":
            chain.append(frame)
            frame = ours.static[frame][0] if frame in ours.static else ours.dynamic[frame][0]
        assert chain == [f"{c}_optical_frame", f"{c}_link", "base_link", "odom"]
        # the optical rotation: z forward = link x, x right = -link y, y down = -link z
        _, T, _ = ours.edge(f"{c}_optical_frame", STAMP_BASE_NS)
        assert np.allclose(T[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12) and not T[:3, 3].any()
    moving = set(ours.dynamic)
    assert moving == set(bag.moving_edges)
    assert moving == ({"base_link"} if bag.rig == "driving" else {f"{c}_link" for c in OBJECT_CAMERAS if not c.startswith("canonical")})
    if bag.rig == "driving":
        _, M, _ = ours.edge("odom", STAMP_BASE_NS)
        assert not np.allclose(M, np.eye(4))  # map -> odom is not the identity: the chain must be composed
    for c in bag.cameras:
        for _, m in image_msgs(bag, c, msgs):
            s = stamp_ns(m)
            truth = gt.cam_to_world(c, s)
            T, interpolated = ours.lookup("map", m.header.frame_id, s)
            assert not interpolated  # tf_at_image_stamps: a /tf sample at every image stamp
            np.testing.assert_allclose(T, truth, atol=1e-9)
            np.testing.assert_allclose(buf.lookup("map", m.header.frame_id, s), truth, atol=1e-9)


def test_tf_between_image_stamps_interpolates(root):
    """Without samples at the image stamps, lookups interpolate: close to the truth, not equal."""
    info = write_synthetic_bag(root / "interp", "driving", width=16, height=12, frames=4, seed=7, tf_at_image_stamps=False)
    msgs = messages(info)
    gt = load_ground_truth(info.gt_dir)
    ours, buf = IndependentTf(msgs), tf_buffer(msgs)
    assert len(ours.dynamic["base_link"][1]) == 4 * 5  # 50 Hz only
    worst, n_interp = 0.0, 0
    for c in info.cameras:
        for _, m in image_msgs(info, c, msgs):
            s = stamp_ns(m)
            T, interpolated = ours.lookup("map", m.header.frame_id, s)
            n_interp += interpolated
            np.testing.assert_allclose(buf.lookup("map", m.header.frame_id, s), T, atol=1e-9)
            worst = max(worst, np.abs(T - gt.cam_to_world(c, s)).max())
    assert n_interp > 0
    assert worst < 1e-3  # 20 ms between samples at <= 15 m/s on a gentle curve


def test_object_rig_poses_match_the_rig():
    """The writer poses object cameras at arbitrary times with object_rig itself; at the nominal
    frame times that must reproduce object_rig's own output."""
    nominal = np.arange(5) / 10.0
    for rig in ("object", "driving"):
        model = synth_bag._RigModel(rig, 11, 16, 12, nominal, 0.1, None)
        np.testing.assert_allclose(model.cam_to_world(nominal), model._check, atol=1e-12)
    # between frames: as object_rig poses a clip of the same length sampled twice as often
    from lrm4d_core.data.rigs import object_rig

    model = synth_bag._RigModel("object", 11, 16, 12, nominal, 0.1, None)
    fine = np.arange(10) / 20.0
    ref = object_rig(np.random.default_rng(model.rig_seq), fine, 16, 12).cam_to_world
    np.testing.assert_allclose(model.cam_to_world(fine[1::2]), ref[:, 1::2], atol=1e-12)
    assert np.abs(ref[:, 1::2] - ref[:, ::2]).max() > 0.1  # the moving cameras do move


def test_same_scene_as_lrm4d_synth(root):
    """With no jitter the bag's ground truth is scene 0 of `lrm4d synth --out` (same seed)."""
    from lrm4d_core.data.format import load_scene, read_image
    from lrm4d_core.data.synth import synth_scene

    info = write_synthetic_bag(root / "same", "object", width=16, height=12, frames=2, seed=9, stamp_jitter_ms=0.0,
                               views={"canonical": 1, "moving": 1, "random": 1})
    ref = load_scene(synth_scene(root / "synth", 0, "object", seed=9, width=16, height=12, frames=2, fps=10.0,
                                 views={"canonical": 1, "moving": 1, "random": 1}))
    ours = load_ground_truth(info.gt_dir).scene
    for rec in ref.images:
        mine = ours.record(rec.view, rec.frame)
        assert mine.time == rec.time
        np.testing.assert_allclose(mine.cam_to_world, rec.cam_to_world, atol=1e-12)
        assert np.array_equal(read_image(ours, mine), read_image(ref, rec))


# ----------------------------------------------------------------------------------- gt points
def test_ground_truth_points_lie_on_surfaces(driving_raw_mcap, object_jpeg_mcap):
    for info in (driving_raw_mcap, object_jpeg_mcap):
        gt = load_ground_truth(info.gt_dir)
        pts = gt.points
        n = len(pts["points"])
        assert n > 0 and all(len(v) == n for v in pts.values())
        assert set(np.unique(pts["frame"])) == set(range(FRAMES))
        # every point re-projects into its source image at the depth stored there (own projection code)
        from lrm4d_core.data.format import read_depth

        for v, f in {(int(a), int(b)) for a, b in zip(pts["view"], pts["frame"])}:
            rec = gt.scene.record(v, f)
            sel = (pts["view"] == v) & (pts["frame"] == f)
            assert np.all(pts["stamp_ns"][sel] == gt.image_record(info.cameras[v], int(pts["stamp_ns"][sel][0]))["stamp_ns"])
            world = pts["points"][sel].astype(np.float64)
            cam = (world - rec.cam_to_world[:3, 3]) @ rec.cam_to_world[:3, :3]
            uv = cam @ rec.K.T
            u, w = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
            depth = read_depth(gt.scene, rec)
            np.testing.assert_allclose(cam[:, 2], depth[np.floor(w).astype(int), np.floor(u).astype(int)], rtol=1e-5, atol=1e-4)
            assert np.allclose(u % 1, 0.5, atol=1e-3) and np.allclose(w % 1, 0.5, atol=1e-3)  # pixel centres
        if info.rig == "driving":  # a good part of what the cameras see is the road (the plane z = 0)
            assert np.mean(np.abs(pts["points"][:, 2]) < 1e-3) > 0.2
        else:  # object scenes are fitted into [-1, 1]^3 (half extent 0.9)
            assert np.abs(pts["points"]).max() < 0.95


# ----------------------------------------------------------------------------------- faults
@pytest.fixture(scope="module")
def faulty(root):
    return write_synthetic_bag(root / "faulty", "driving", width=W, height=H, frames=FRAMES, seed=8, faults=FAULTS)


def test_fault_missing_tf(faulty):
    cam = faulty.faults["missing_tf"]
    assert cam == "back_right"
    msgs = messages(faulty)
    buf = tf_buffer(msgs, strict=False)  # the time jump repeats /tf stamps
    static = [m for t, _, _, m in msgs if t == "/tf_static"][0]
    assert f"{cam}_optical_frame" not in {ts.child_frame_id for ts in static.transforms}
    stamp = stamp_ns(image_msgs(faulty, cam, msgs)[0][1])
    with pytest.raises(LinkMissing):
        buf.lookup("map", f"{cam}_optical_frame", stamp)
    other = image_msgs(faulty, "front", msgs)[0][1]
    buf.lookup("map", "front_optical_frame", stamp_ns(other))  # the rest of the tree is intact


def test_fault_bad_encoding(faulty, root):
    cam = faulty.faults["bad_encoding"]
    gt = load_ground_truth(faulty.gt_dir)
    for _, m in image_msgs(faulty, cam):
        assert m.encoding == "yuv422" and m.step == 2 * W
        with pytest.raises(UnsupportedEncoding, match="yuv422"):
            image_to_rgb(m)
        # the content is a real UYVY image of the scene
        rgb = cv2.cvtColor(u8(m.data).reshape(H, W, 2), cv2.COLOR_YUV2RGB_UYVY)
        truth = np.asarray(Image.open(faulty.gt_dir / gt.scene.images[gt.image_record(cam, stamp_ns(m))["gt_index"]].file))
        assert np.abs(rgb.astype(int) - truth.astype(int)).mean() < 8
    for c in set(faulty.cameras) - {cam}:
        assert all(m.encoding == "rgb8" for _, m in image_msgs(faulty, c))
    # compressed: an image format we do not decode
    info = write_synthetic_bag(root / "bad_jpeg", "object", width=16, height=12, frames=2, compressed=True, faults={"bad_encoding"},
                               views={"canonical": 2, "moving": 0, "random": 0})
    (_, m), = image_msgs(info, "canonical_1")[:1]
    assert m.format == "tiff"
    with pytest.raises(UnsupportedEncoding):
        compressed_to_rgb(m)
    assert image_msgs(info, "canonical_0")[0][1].format == "rgb8; jpeg compressed bgr8"


def test_fault_time_jump(faulty):
    msgs = messages(faulty)
    gt = load_ground_truth(faulty.gt_dir)
    half = FRAMES // 2
    logs = [log for _, _, log, _ in msgs]
    assert logs == sorted(logs)  # receive time goes on
    for c in set(faulty.cameras) - {faulty.faults["camera_stops"]}:
        stamps = [stamp_ns(m) for _, m in image_msgs(faulty, c, msgs)]
        steps = np.diff(stamps)
        assert (steps < 0).sum() == 1 and steps[half - 1] < 0, c  # one jump back, at the middle frame
        assert abs(steps[half - 1] + (half - 1) * FRAME_NS) < 3_000_000  # back to the first frame's stamps
    # /tf jumps back too: after the jump, a fresh buffer of the second half's /tf poses the images exactly
    tf_stamps = [(log, stamp_ns(ts)) for t, _, log, m in msgs if t == "/tf" for ts in m.transforms]
    jump_log = next(log for (log, s), (_, s_prev) in zip(tf_stamps[1:], tf_stamps) if s < s_prev)
    second = [x for x in msgs if x[0] == "/tf_static" or (x[0] == "/tf" and x[2] >= jump_log)]
    ours = IndependentTf(second)
    for c in set(faulty.cameras) - {faulty.faults["camera_stops"], faulty.faults["missing_tf"]}:
        for log, m in image_msgs(faulty, c, msgs):
            if log >= jump_log:
                T, _ = ours.lookup("map", m.header.frame_id, stamp_ns(m))
                np.testing.assert_allclose(T, gt.cam_to_world(c, stamp_ns(m)), atol=1e-9)
    assert gt.index["time_jump_ns"] == half * FRAME_NS


def test_fault_camera_stops(faulty):
    cam = faulty.faults["camera_stops"]
    half = FRAMES // 2
    assert faulty.counts[faulty.image_topics[cam]] == faulty.counts[faulty.camera_info_topics[cam]] == half
    assert len(image_msgs(faulty, cam)) == half
    gt = load_ground_truth(faulty.gt_dir)
    assert [r["frame"] for r in gt.index["images"] if r["camera"] == cam] == list(range(half))
    assert not gt.scene.has(faulty.cameras.index(cam), half)


def test_unknown_fault_and_bad_arguments(root):
    with pytest.raises(ValueError, match="unknown faults"):
        write_synthetic_bag(root / "x", faults={"gremlins"})
    with pytest.raises(ValueError, match="encoding"):
        write_synthetic_bag(root / "x", encoding="yuv422")
    with pytest.raises(ValueError, match="frame period"):
        write_synthetic_bag(root / "x", fps=500.0)
    with pytest.raises(ValueError, match="points_per_image"):
        write_synthetic_bag(root / "x", points_per_image=-1)
    assert not (root / "x").exists()


# ----------------------------------------------------------------------------------- truncation
def test_truncated_bags(root, driving_jpeg_sqlite):
    """rosbags (the replay's reader) rejects a truncated bag on open; mcap's streaming reader gives
    the messages of the complete chunks and then raises EndOfFile."""
    from mcap.exceptions import EndOfFile
    from mcap.records import Message
    from mcap.stream_reader import StreamReader
    from rosbags.highlevel import AnyReader, AnyReaderError

    # > 1 MiB of images so that rosbags writes more than one 1 MiB chunk
    big = write_synthetic_bag(root / "big", "object", width=96, height=72, frames=12, encoding="rgba8",
                              views={"canonical": 4, "moving": 0, "random": 0}, stamp_jitter_ms=0.0, points_per_image=10)
    assert big.storage_file.stat().st_size > 2**20
    cut = truncate_bag(big.path, root / "big_cut", 0.8)
    assert (cut / "metadata.yaml").read_text() == (big.path / "metadata.yaml").read_text()
    cut_file = cut / big.storage_file.name
    assert cut_file.stat().st_size == int(big.storage_file.stat().st_size * 0.8)
    with pytest.raises(AnyReaderError):
        with AnyReader([cut]) as reader:
            list(reader.messages())
    n = 0
    with open(cut_file, "rb") as f, pytest.raises(EndOfFile):
        for record in StreamReader(f).records:
            n += isinstance(record, Message)
    assert 0 < n < big.messages
    # a single file can be cut too
    single = truncate_bag(big.storage_file, root / "cut.mcap", 0.5)
    assert single.stat().st_size == big.storage_file.stat().st_size // 2
    # sqlite3
    cut = truncate_bag(driving_jpeg_sqlite.path, root / "sqlite_cut", 0.6)
    with pytest.raises(AnyReaderError, match="malformed|not a database"):
        with AnyReader([cut]) as reader:
            list(reader.messages())
    with pytest.raises(ValueError):
        truncate_bag(big.path, root / "nope", 1.0)


# ----------------------------------------------------------------------------------- CLI
def test_cli(root, capsys):
    parser = synth_bag.add_arguments(argparse.ArgumentParser())
    out = root / "cli"
    args = parser.parse_args(["--bag", str(out), "--rig", "object", "--width", "16", "--height", "12", "--frames", "2",
                              "--compressed", "--storage", "sqlite3", "--fault", "camera_stops", "--seed", "2",
                              "--gt-points", "0"])
    assert synth_bag.main(args) == 0
    err = capsys.readouterr().err
    assert f"wrote {out} (sqlite3" in err and "camera_stops (canonical_2)" in err and "ground truth" in err
    assert (out / "cli.db3").is_file() and (root / "cli_gt" / "scene.json").is_file()
    # --gt-points 0: every pixel that sees a surface is a ground-truth point
    from lrm4d_core.data.format import read_depth

    gt = load_ground_truth(root / "cli_gt")
    for rec in gt.scene.images:
        sel = (gt.points["view"] == rec.view) & (gt.points["frame"] == rec.frame)
        assert sel.sum() == np.isfinite(read_depth(gt.scene, rec)).sum() > 0
    assert synth_bag.main(args) == 2  # exists
    assert "exists" in capsys.readouterr().err
    assert synth_bag.main(parser.parse_args(["--bag", str(root / "cli2"), "--size", "0"])) == 2
    # merged into `lrm4d synth`'s parser: only the bag-specific options are added
    from lrm4d_core.data import synth

    merged = synth.add_arguments(argparse.ArgumentParser(conflict_handler="error"))
    synth_bag.add_arguments(merged, shared=False)
    a = merged.parse_args(["--out", "unused", "--bag", str(root / "cli3"), "--rig", "driving", "--size", "8", "--frames", "1",
                           "--stamp-jitter-ms", "0"])
    assert synth_bag.main(a) == 0
    assert (root / "cli3" / "cli3.mcap").is_file()


def test_bag_player_schedule_reads_raw_cdr_in_order_and_holds_back_tf(driving_raw_mcap, tmp_path):
    """The player's schedule, read back by a different library (mcap-ros2-support's decoder)."""
    from mcap_ros2.decoder import DecoderFactory
    from mcap.reader import make_reader

    from ros2_lrm4d.bag_player import hold_back_tf, read_schedule, topic_qos_kind

    bag = Path(driving_raw_mcap.path)
    schedule = read_schedule(bag)
    with open(next(bag.glob("*.mcap")), "rb") as f:
        expected = [(ch.topic, msg.log_time, msg.data) for _, ch, msg in make_reader(f).iter_messages(log_time_order=True)]
    assert len(schedule) == len(expected) == driving_raw_mcap.messages
    assert [i.offset_ns for i in schedule] == sorted(i.offset_ns for i in schedule) and schedule[0].offset_ns == 0
    assert sorted((i.topic, i.bag_time_ns, i.raw) for i in schedule) == sorted(expected)
    # the raw bytes are the recorded CDR: they decode to the recorded message
    image = next(i for i in schedule if i.msgtype == "sensor_msgs/msg/Image")
    with open(next(bag.glob("*.mcap")), "rb") as f:
        decoded = next(m for _, ch, _, m in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(topics=[image.topic]))
    assert decoded.height == H and decoded.width == W

    only = read_schedule(bag, ["/tf_static"])
    assert only and {i.topic for i in only} == {"/tf_static"}
    with pytest.raises(ValueError, match="no topic"):
        read_schedule(bag, ["/nope"])
    with pytest.raises(ValueError, match="cannot read"):
        read_schedule(tmp_path / "missing_bag")

    delay = 0.25
    held = hold_back_tf(schedule, delay)
    cut = int(delay * 1e9)
    assert all(i.offset_ns >= cut for i in held if i.topic in ("/tf", "/tf_static"))
    assert sum(i.topic == "/tf_static" for i in held) == sum(i.topic == "/tf_static" for i in schedule)
    dropped = sum(i.topic == "/tf" and i.offset_ns < cut for i in schedule)
    assert dropped > 0 and len(held) == len(schedule) - dropped
    assert [i.offset_ns for i in held] == sorted(i.offset_ns for i in held)
    assert topic_qos_kind("/tf_static", "tf2_msgs/msg/TFMessage", "sensor_data") == ("reliable", True)
    assert topic_qos_kind("/cameras/front/image_raw", "sensor_msgs/msg/Image", "sensor_data") == ("sensor_data", False)
    assert topic_qos_kind("/cameras/front/camera_info", "sensor_msgs/msg/CameraInfo", "reliable") == ("reliable", False)
