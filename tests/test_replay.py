"""End to end: synthetic bag -> `lrm4d replay` core -> output bag, decoded by mcap-ros2-support.

Two backends drive the same replay:
- a depth oracle (this file) that puts one Gaussian on every pixel at its ground-truth depth: with
  it, "the Gaussians lie on the ground-truth surfaces" checks every convention between the bag and
  the outputs (TF chain, optical frames, intrinsics, pixel centres, time, normalization, encoding);
- the real tiny model with fixed random weights, for message content, counts and stamps.
"""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
import torch
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from scipy.spatial import cKDTree

from lrm4d_core.cameras import Cameras, SceneNormalization, TimeNormalization, pixel_rays
from lrm4d_core.data.format import read_depth, read_image, read_velocity
from lrm4d_core.gaussians import Gaussians4D
from lrm4d_core.model.api import Reconstruction, load_model
from lrm4d_core.pipeline import LocalBackend
from ros2_lrm4d.params import NodeParams
from ros2_lrm4d.replay import ReplayError, replay
from ros2_lrm4d.synth_bag import load_ground_truth, truncate_bag, write_synthetic_bag

DRIVING = ("front", "front_left", "front_right", "back", "back_left", "back_right")
FIELDS = ["x", "y", "z", "rgb", "opacity", "scale_0", "scale_1", "scale_2",
          "rot_0", "rot_1", "rot_2", "rot_3", "vel_x", "vel_y", "vel_z"]


class DepthOracle:
    """A backend that knows the ground-truth depth of every input image (looked up by its pixels)."""

    model_id = "depth-oracle"

    def __init__(self, gt_dir: Path) -> None:
        gt = load_ground_truth(gt_dir)
        self.depth_by_image = {}
        for rec in gt.scene.images:
            self.depth_by_image[read_image(gt.scene, rec).tobytes()] = read_depth(gt.scene, rec)

    def reconstruct(self, images, cameras: Cameras, times, scene, ground_z=None) -> Reconstruction:
        origins, dirs = pixel_rays(cameras)  # [V, H, W, 3]
        optical_z = cameras.cam_to_world[:, None, None, :3, 2]
        parts = []
        for v, image in enumerate(images):
            z = torch.from_numpy(self.depth_by_image[image.tobytes()]).double()
            ok = torch.isfinite(z)
            dist = z / (dirs[v] * optical_z[v]).sum(-1)  # z-depth -> distance along the unit ray
            pts = (origins[v] + dist[..., None] * dirs[v])[ok]
            n = pts.shape[0]
            parts.append(Gaussians4D(
                means=torch.cat([pts, torch.full((n, 1), float(times[v]), dtype=torch.float64)], -1),
                scales=torch.cat([(dist[ok] * 0.7 / cameras.K[v, 0, 0])[:, None].expand(n, 3),
                                  torch.full((n, 1), 0.02, dtype=torch.float64)], -1),
                q_left=torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(n, 4),
                q_right=torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(n, 4),
                opacities=torch.full((n,), 0.95, dtype=torch.float64),
                colors=torch.from_numpy(image[ok.numpy()]).double() / 255.0,
            ))
        g = Gaussians4D.cat(parts).to(dtype=torch.float32)
        identity = SceneNormalization(torch.zeros(3, dtype=torch.float64), 1.0)
        return Reconstruction(g, identity, TimeNormalization(0.0, 1.0), cameras, torch.as_tensor(times))


class MotionOracle(DepthOracle):
    """The depth oracle whose splats also move at their surface's true velocity (the ground-truth
    velocity maps): a reconstruction with exactly right geometry and motion, for the checks that
    need one (bag_check, the dynamic cloud)."""

    model_id = "motion-oracle"

    def __init__(self, gt_dir: Path) -> None:
        super().__init__(gt_dir)
        gt = load_ground_truth(gt_dir)
        self.velocity_by_image = {read_image(gt.scene, r).tobytes(): read_velocity(gt.scene, r) for r in gt.scene.images}

    def reconstruct(self, images, cameras: Cameras, times, scene, ground_z=None) -> Reconstruction:
        origins, dirs = pixel_rays(cameras)
        optical_z = cameras.cam_to_world[:, None, None, :3, 2]
        parts = []
        for v, image in enumerate(images):
            z = torch.from_numpy(self.depth_by_image[image.tobytes()]).double()
            vel = torch.from_numpy(self.velocity_by_image[image.tobytes()]).double()
            ok = torch.isfinite(z)
            dist = z / (dirs[v] * optical_z[v]).sum(-1)
            pts = (origins[v] + dist[..., None] * dirs[v])[ok]
            n = pts.shape[0]
            parts.append(Gaussians4D.from_motion(
                torch.cat([pts, torch.full((n, 1), float(times[v]), dtype=torch.float64)], -1),
                dist[ok] * 0.7 / cameras.K[v, 0, 0], torch.full((n,), 0.05, dtype=torch.float64), vel[ok],
                torch.full((n,), 0.95, dtype=torch.float64), torch.from_numpy(image[ok.numpy()]).double() / 255.0))
        g = Gaussians4D.cat(parts).to(dtype=torch.float32)
        identity = SceneNormalization(torch.zeros(3, dtype=torch.float64), 1.0)
        return Reconstruction(g, identity, TimeNormalization(0.0, 1.0), cameras, torch.as_tensor(times))


def read_output(bag: Path) -> dict[str, list]:
    """topic -> [(log_time, decoded message)] with mcap-ros2-support's own decoder."""
    out: dict[str, list] = {}
    with open(next(bag.glob("*.mcap")), "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return out


def cloud_array(msg) -> np.ndarray:
    """PointCloud2 -> structured numpy array built from its own field table (independent decoder)."""
    dtype = np.dtype({"names": [f.name for f in msg.fields], "formats": ["<f4"] * len(msg.fields),
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    return np.frombuffer(bytes(msg.data), dtype=dtype, count=msg.width * msg.height)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    made = {}
    for name, faults in [("clean", ()), ("faults", ("missing_tf", "bad_encoding", "camera_stops"))]:
        made[name] = write_synthetic_bag(root / name, "driving", seed=3, width=48, height=32, frames=16,
                                         faults=faults, points_per_image=4000, progress=False)
    made["jump"] = write_synthetic_bag(root / "jump", "driving", seed=3, width=48, height=32, frames=16,
                                       faults=("time_jump",), time_jump_s=10.0, progress=False)
    return root, made


def params(**kw) -> NodeParams:
    base = dict(cameras=DRIVING, window_duration_s=0.6, update_rate_hz=4.0, max_views=6, min_steps=2,
                jump_back_s=5.0, forecast_horizons_s=(0.5,), render_max_side=48)
    base.update(kw)
    return NodeParams(**base)


def test_oracle_replay_puts_gaussians_on_the_ground_truth_surfaces(bags, tmp_path):
    root, made = bags
    info = made["clean"]
    # 'all': every camera of the newest step is in each window, so each input camera is predicted
    # from Gaussians of its own newest image (round-robin windows hold one camera per step)
    summary = replay(info.path, tmp_path / "out", params(view_selection="all"), DepthOracle(Path(info.gt_dir)),
                     progress=False)
    assert summary.windows >= 3 and not summary.drops and summary.frames_in == 6 * 16
    out = read_output(tmp_path / "out")
    gt = load_ground_truth(Path(info.gt_dir))
    clouds = out["/lrm4d/gaussians"]
    assert len(clouds) == summary.windows
    image_stamps = {r["stamp_ns"] for r in gt.index["images"]}
    for _, msg in clouds:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp in image_stamps  # output stamps are source stamps
        assert msg.header.frame_id == "map"
        assert [f.name for f in msg.fields] == FIELDS
        pts = cloud_array(msg)
        xyz = np.stack([pts["x"], pts["y"], pts["z"]], -1)
        assert len(xyz) > 500
        # the newest frame's ground-truth surface points
        rec = next(r for r in gt.index["images"] if r["stamp_ns"] == stamp)
        surface = gt.frame_points(rec["frame"])
        d, _ = cKDTree(surface).query(xyz)
        assert np.median(d) < 0.01 and np.percentile(d, 90) < 0.3, (np.median(d), np.percentile(d, 90))
        # packed rgb is the PCL convention: 0x00RRGGBB in the float's bits
        rgb = pts["rgb"].view(np.uint32)
        assert (rgb >> 24 == 0).all() and len(np.unique(rgb)) > 20
        np.testing.assert_allclose(pts["opacity"].max(), 0.95, atol=0.01)  # p(t) of a 2 ms stamp skew
    # predicted views reproduce the input images they predict (same pose, window end)
    images = out["/lrm4d/predicted/front/image_raw"]
    assert len(images) == summary.windows
    _, last = images[-1]
    pred = np.frombuffer(bytes(last.data), np.uint8).reshape(last.height, last.width, 3).astype(float)
    stamp = last.header.stamp.sec * 10**9 + last.header.stamp.nanosec  # the window end
    front = min((r for r in gt.index["images"] if r["camera"] == "front" and r["stamp_ns"] <= stamp),
                key=lambda r: stamp - r["stamp_ns"])  # the front camera's newest image in the window
    truth = read_image(gt.scene, gt.scene.images[front["gt_index"]]).astype(float)
    surface = np.isfinite(read_depth(gt.scene, gt.scene.images[front["gt_index"]]))  # the oracle has no sky
    psnr = 10 * np.log10(255.0**2 / np.mean((pred - truth)[surface] ** 2))
    assert surface.mean() > 0.3 and psnr > 18, psnr
    _, info_msg = out["/lrm4d/predicted/front/camera_info"][-1]
    front_K = gt.scene.images[front["gt_index"]].K
    assert (info_msg.width, info_msg.height) == (48, 32)  # render_max_side 48: native size
    np.testing.assert_allclose(np.asarray(info_msg.k).reshape(3, 3), front_K, atol=1e-6)


def test_bag_check_scores_surfaces_and_motion_against_the_ground_truth(tmp_path):
    """`bag_check` on a workspace bag replayed with the depth oracle: its splats sit on the true
    surfaces (far above chance), and being static they miss the movers' speed entirely."""
    from ros2_lrm4d.bag_check import check_replay

    info = write_synthetic_bag(tmp_path / "ws", "workspace", seed=1, width=48, height=48, frames=10,
                               points_per_image=3000, progress=False)
    cams = tuple(c["name"] for c in json.loads((Path(info.gt_dir) / "bag.json").read_text())["cameras"])
    replay(info.path, tmp_path / "out", params(cameras=cams, view_selection="all", render_max_side=16),
           DepthOracle(Path(info.gt_dir)), progress=False)
    result = check_replay(tmp_path / "out", info.gt_dir)
    m = result["mean"]
    assert result["clouds"] >= 2 and m["on_surface"] > 0.9 and m["on_surface_chance"] < 0.5 * m["on_surface"]
    assert m["on_surface"] >= m["on_samples"] > 0.5  # the mesh holds the pixel-centre points
    assert m["true_speed"] > 0.2 and m["predicted_speed"] < 1e-3
    assert m["velocity_error"] == pytest.approx(1.0, abs=1e-3) and m["speed_within_30"] == 0.0
    out = read_output(tmp_path / "out")
    assert all(msg.width == 0 for _, msg in out["/lrm4d/gaussians/dynamic"])  # static splats: nothing moves
    # the same with splats that move at the true velocity: bag_check sees it, the moving part is published
    replay(info.path, tmp_path / "moving", params(cameras=cams, view_selection="all", render_max_side=16),
           MotionOracle(Path(info.gt_dir)), progress=False)
    m = check_replay(tmp_path / "moving", info.gt_dir)["mean"]
    assert m["on_surface"] > 0.9 and m["velocity_error"] < 0.1 and m["speed_within_30"] > 0.9
    out = read_output(tmp_path / "moving")
    assert all(msg.width > 0 for _, msg in out["/lrm4d/gaussians/dynamic"])
    arrows = [mk for _, msg in out["/lrm4d/motion_markers"] for mk in msg.markers if mk.action == 0]
    assert arrows and all(mk.type == 0 and len(mk.points) == 2 for mk in arrows)
    objects = check_replay(tmp_path / "moving", info.gt_dir)["objects"]  # exact motion: the objects are found
    assert objects["true_objects"] > 0 and objects["recall"] > 0.8 and objects["median_surface_velocity_error"] < 0.1
    static = check_replay(tmp_path / "out", info.gt_dir)["objects"]  # static splats: none published, none found
    assert static["published_objects"] == 0 and static["recall"] == 0.0


def test_tf_mistake_would_be_caught(bags, tmp_path):
    """Control for the test above: with odom as the fixed frame (off by the map->odom offset),
    the same replay puts the Gaussians metres away from the map-frame ground truth."""
    root, made = bags
    info = made["clean"]
    replay(info.path, tmp_path / "odom", params(fixed_frame="odom"), DepthOracle(Path(info.gt_dir)), progress=False)
    gt = load_ground_truth(Path(info.gt_dir))
    _, msg = read_output(tmp_path / "odom")["/lrm4d/gaussians"][-1]
    pts = cloud_array(msg)
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], -1)
    stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    surface = gt.frame_points(next(r for r in gt.index["images"] if r["stamp_ns"] == stamp)["frame"])
    d, _ = cKDTree(surface).query(xyz)
    assert np.median(d) > 0.1  # the map-frame run above gives < 0.01 (planes slide into themselves)


@pytest.fixture(scope="module")
def tiny_backend():
    torch.manual_seed(0)
    model = load_model(preset="tiny", device="cpu", hidden=64, layers=2, heads=2, image_size=(32, 48))
    with torch.no_grad():  # untrained Gaussians live a quarter window; let them span it (raw scale_t
        model.pixel_head.bias.view(-1, 20)[:, 10] = 2.3  # = channel 10 -> exp(0) = 1) so clouds are not empty
    return LocalBackend(model, model_id="tiny-random")


def test_model_replay_writes_every_output_topic(bags, tiny_backend, tmp_path):
    root, made = bags
    summary = replay(made["clean"].path, tmp_path / "out", params(), tiny_backend, progress=False)
    out = read_output(tmp_path / "out")
    n = summary.windows
    assert n >= 3
    for topic in ("/lrm4d/gaussians", "/lrm4d/gaussians/forecast_500ms", "/lrm4d/gaussians_4d", "/lrm4d/gaussians/dynamic",
                  "/lrm4d/motion_markers"):
        assert len(out[topic]) == n, topic
    assert len(out["/diagnostics"]) == n + 1  # one per window and a final one
    for cam in DRIVING:  # round robin: a camera is predicted in the windows it is part of
        k = len(out[f"/lrm4d/predicted/{cam}/image_raw"])
        assert 1 <= k == len(out[f"/lrm4d/predicted/{cam}/camera_info"]) == len(out[f"/lrm4d/predicted/{cam}/depth"]) <= n
    assert "/tf" in out and "/tf_static" in out  # copied so the output bag plays on its own
    stamp = lambda m: m.sec * 10**9 + m.nanosec  # noqa: E731
    for (_, now), (_, fc), (_, g4) in zip(out["/lrm4d/gaussians"], out["/lrm4d/gaussians/forecast_500ms"], out["/lrm4d/gaussians_4d"]):
        assert stamp(now.header.stamp) == stamp(g4.header.stamp) == stamp(g4.window_end)
        assert stamp(fc.header.stamp) == stamp(now.header.stamp) + 500_000_000  # the time the forecast shows
        assert g4.model_id == "tiny-random" and g4.count > 0 and g4.point_step == 80
        assert [f.name for f in fc.fields] == FIELDS and fc.width > 0  # never silently empty
        for cloud in (cloud_array(now), cloud_array(fc)):
            assert np.isfinite(np.stack([cloud[k] for k in FIELDS if k != "rgb"])).all()
            assert len(cloud) <= 100_000
    diag = out["/diagnostics"][-1][1].status[0]
    values = {kv.key: kv.value for kv in diag.values}
    assert float(values["input_rate_hz/front"]) > 0 and int(values["windows"]) == n


def test_faults_are_counted_and_the_rest_is_processed(bags, tiny_backend, tmp_path):
    root, made = bags
    summary = replay(made["faults"].path, tmp_path / "out", params(), tiny_backend, progress=False)
    assert summary.drops.get("tf_missing", 0) >= 10  # back_right's optical frame is not in the tree
    assert summary.drops.get("unsupported_encoding", 0) >= 10  # front_left publishes yuv422
    assert summary.windows >= 3  # the other cameras still make windows, also after one stops
    out = read_output(tmp_path / "out")
    values = {kv.key: kv.value for kv in out["/diagnostics"][-1][1].status[0].values}
    assert 0 < int(values["dropped/tf_missing"]) <= summary.drops["tf_missing"]  # as of the last window


def test_backwards_time_jump_resets_once_and_continues(bags, tiny_backend, tmp_path):
    root, made = bags
    summary = replay(made["jump"].path, tmp_path / "out", params(), tiny_backend, progress=False)
    assert summary.drops.get("time_jump_resets") == 1
    out = read_output(tmp_path / "out")
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in out["/lrm4d/gaussians"]]
    assert any(b < a for a, b in zip(stamps, stamps[1:]))  # windows from after the jump were made


def test_truncated_and_junk_bags(bags, tiny_backend, tmp_path):
    root, made = bags
    big = write_synthetic_bag(tmp_path / "big", "driving", seed=4, width=96, height=64, frames=16, progress=False)
    cut = truncate_bag(big.path, tmp_path / "cut", 0.8)  # > 1 MiB: the first mcap chunk survives
    summary = replay(cut, tmp_path / "out", params(), tiny_backend, progress=False)
    assert summary.truncated and summary.frames_in > 0
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk.mcap").write_bytes(b"not a bag at all")
    with pytest.raises(ReplayError, match="cannot"):
        replay(junk, tmp_path / "out2", params(), tiny_backend, progress=False)
    with pytest.raises(ReplayError, match="none of the image topics"):
        replay(made["clean"].path, tmp_path / "out3", params(cameras=("nope",)), tiny_backend, progress=False)


def test_diagnostics_input_rates_are_right_from_the_first_second():
    """10 Hz reads 10 Hz after 1 s (not 10 frames / 5 s window), after 20 s, and 0 once silent."""
    from ros2_lrm4d.shell import Diagnostics

    NS = 1_000_000_000
    diag = Diagnostics(rate_window_s=5.0)
    diag.frame_received("b", 0)  # one frame only: no rate yet
    for i in range(11):  # camera a: 0.0 .. 1.0 s at 10 Hz
        diag.frame_received("a", i * NS // 10)
    rates = diag.rates(NS)
    assert rates["a"] == pytest.approx(10.0) and rates["b"] == 0.0
    for i in range(11, 201):  # on to 20 s
        diag.frame_received("a", i * NS // 10)
    assert diag.rates(20 * NS)["a"] == pytest.approx(10.0, rel=0.03)
    assert diag.rates(26 * NS)["a"] == 0.0  # silent for longer than the window


def test_predicted_views_have_their_own_frames_depth_and_the_moving_part(bags, tmp_path):
    """Issue: ROS outputs usable as they are. Every predicted view is stamped with the time it shows,
    in a frame of its own whose pose is on /tf at that stamp (what RViz's Camera display and
    image_geometry need); its depth image (32FC1, metres along the optical axis, NaN where nothing
    renders) matches the ground-truth depth where the reconstruction is right (the depth oracle)."""
    root, made = bags
    info = made["clean"]
    summary = replay(info.path, tmp_path / "out", params(view_selection="all", render_inputs_at_s=(0.0, 0.3)),
                     DepthOracle(Path(info.gt_dir)), progress=False)
    out = read_output(tmp_path / "out")
    gt = load_ground_truth(Path(info.gt_dir))
    ours = {}
    for _, tf in out["/tf"]:
        for t in tf.transforms:
            if t.child_frame_id.startswith("lrm4d/"):
                ours[(t.child_frame_id, t.header.stamp.sec * 10**9 + t.header.stamp.nanosec)] = t
    for (_, image), (_, cinfo), (_, depth) in zip(out["/lrm4d/predicted/front/image_raw"], out["/lrm4d/predicted/front/camera_info"],
                                                  out["/lrm4d/predicted/front/depth"]):
        key = (image.header.frame_id, image.header.stamp.sec * 10**9 + image.header.stamp.nanosec)
        assert key[0] == "lrm4d/front_optical" and key in ours and ours[key].header.frame_id == "map"
        assert cinfo.header.frame_id == depth.header.frame_id == key[0] and depth.encoding == "32FC1"
        assert (depth.header.stamp.sec, depth.header.stamp.nanosec) == (image.header.stamp.sec, image.header.stamp.nanosec)
    future = out["/lrm4d/predicted/front_plus_300ms/image_raw"]
    clouds = out["/lrm4d/gaussians"]
    assert len(future) == len(clouds) == summary.windows
    for (_, f), (_, c) in zip(future, clouds):  # a future view is stamped with the time it shows
        assert (f.header.stamp.sec * 10**9 + f.header.stamp.nanosec) - (c.header.stamp.sec * 10**9 + c.header.stamp.nanosec) == 300_000_000
    # depth where the oracle's Gaussians are (the newest front image, rendered from its own pose)
    _, last = out["/lrm4d/predicted/front/depth"][-1]
    d = np.frombuffer(bytes(last.data), "<f4").reshape(last.height, last.width)
    s = last.header.stamp.sec * 10**9 + last.header.stamp.nanosec
    front = min((r for r in gt.index["images"] if r["camera"] == "front" and r["stamp_ns"] <= s), key=lambda r: s - r["stamp_ns"])
    truth = read_depth(gt.scene, gt.scene.images[front["gt_index"]])
    both = np.isfinite(d) & np.isfinite(truth)
    assert both.mean() > 0.3 and np.isnan(d[~np.isfinite(truth)]).mean() > 0.5  # sky: mostly NaN (splat fringes of far buildings)
    # splats blend with their neighbours, nearer ones first: where depth changes fast from row to row
    # (the road towards the horizon) the expected depth leans towards the nearer ones, ~10% at 48x32
    assert np.median(np.abs(d[both] - truth[both]) / truth[both]) < 0.15
    # the oracle's splats are static: nothing moves, so the dynamic cloud is empty and no arrows go out
    for _, dyn in out["/lrm4d/gaussians/dynamic"]:
        assert dyn.width == 0
    for _, markers in out["/lrm4d/motion_markers"]:
        assert [m.action for m in markers.markers] == [3]  # DELETEALL only
