"""`lrm4d demo` end to end (small) and `lrm4d export` read back by plyfile (and open3d where it imports)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from PIL import Image
from plyfile import PlyData

from lrm4d_core.cli import main as cli_main
from lrm4d_core.gaussians import SH_C0
from lrm4d_core.io.ply import GAUSSIAN_PLY_FIELDS, write_gaussian_ply
from ros2_lrm4d.export import gaussians_at, read_gaussian_clouds


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    assert cli_main(["demo", "--out", str(out), "--size", "32", "--frames", "14"]) == 0
    return out


def test_demo_writes_every_output_and_they_parse(demo_out):
    metrics = json.loads((demo_out / "metrics.json").read_text())
    assert metrics["held_out"]["count"] > 0 and math.isfinite(metrics["held_out"]["psnr"])
    # the model-free reference over the same targets: finite, and not the model's number
    held = metrics["held_out"]
    assert math.isfinite(held["mean_colour_psnr"]) and held["mean_colour_psnr"] != held["psnr"]
    assert 0 <= held["mean_colour_ssim"] <= 1 and math.isfinite(metrics["forecast"]["mean_colour_psnr"])
    assert metrics["forecast"]["count"] > 0 and metrics["replay"]["windows"] >= 1
    sheet = Image.open(demo_out / "contact_sheet.png")
    assert sheet.size[0] > 400 and sheet.size[1] > 400
    gif = Image.open(demo_out / "flythrough.gif")  # 16 frames of 150 ms (PIL merges identical ones)
    total = 0
    for i in range(gif.n_frames):
        gif.seek(i)
        total += gif.info["duration"]
    assert total == 16 * 150
    ply = PlyData.read(str(demo_out / "gaussians_3dgs.ply"))
    assert [p.name for p in ply["vertex"].properties] == list(GAUSSIAN_PLY_FIELDS)
    points = PlyData.read(str(demo_out / "points.ply"))["vertex"]
    assert points.count == ply["vertex"].count
    assert [p.name for p in points.properties] == ["x", "y", "z", "red", "green", "blue"]
    np.testing.assert_allclose(np.stack([points["x"], points["y"], points["z"]], -1),
                               np.stack([ply["vertex"]["x"], ply["vertex"]["y"], ply["vertex"]["z"]], -1))

    topics = set()
    with open(next((demo_out / "output_bag").glob("*.mcap")), "rb") as f:
        for _, channel, _, _ in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            topics.add(channel.topic)
    assert {"/lrm4d/gaussians", "/lrm4d/gaussians_4d", "/lrm4d/gaussians/forecast_500ms", "/diagnostics"} <= topics


def test_demo_on_the_workspace_rig(tmp_path):
    """`--rig workspace`: the bag's own (static) cameras, every output written, finite numbers
    beside the model-free reference; an unknown rig is refused."""
    out = tmp_path / "ws"
    assert cli_main(["demo", "--rig", "workspace", "--out", str(out), "--size", "32", "--frames", "14"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out"]["count"] > 0 and math.isfinite(metrics["held_out"]["psnr"])
    assert math.isfinite(metrics["held_out"]["mean_colour_psnr"]) and metrics["replay"]["windows"] >= 1
    assert all((out / name).is_file() for name in ("contact_sheet.png", "flythrough.gif", "gaussians_3dgs.ply"))
    from ros2_lrm4d.demo import run_demo

    with pytest.raises(ValueError, match="unknown demo rig"):
        run_demo(tmp_path / "bad", rig="object")


def test_export_ply_follows_the_3dgs_convention(demo_out, tmp_path):
    stamp, g4 = read_gaussian_clouds(demo_out / "output_bag")[-1]
    ply_path, pts_path = tmp_path / "g.ply", tmp_path / "p.ply"
    assert cli_main(["export", str(demo_out / "output_bag"), "--time", "-0.2", "--ply", str(ply_path),
                     "--points", str(pts_path), "--no-filter"]) == 0
    cloud = gaussians_at(g4, -0.2, inference_filter=False)
    v = PlyData.read(str(ply_path))["vertex"]
    assert v.count == len(cloud) > 0
    col = lambda name: np.asarray(v[name], dtype=np.float64)  # noqa: E731
    np.testing.assert_allclose(np.stack([col("x"), col("y"), col("z")], -1), cloud.means.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-col("opacity"))), cloud.opacities.numpy(), atol=1e-4)
    rgb = 0.5 + SH_C0 * np.stack([col(f"f_dc_{i}") for i in range(3)], -1)
    np.testing.assert_allclose(rgb, cloud.colors.numpy(), atol=1e-5)
    # covariance rebuilt from exp(scale) and the (w, x, y, z) quaternion equals the sliced one
    q = np.stack([col(f"rot_{i}") for i in range(4)], -1)
    w, x, y, z = q.T
    R = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    s = np.exp(np.stack([col(f"scale_{i}") for i in range(3)], -1))
    cov = R @ (s[..., None] ** 2 * np.eye(3)) @ R.transpose(0, 2, 1)
    np.testing.assert_allclose(cov, cloud.covars.numpy(), atol=1e-5 * float(cloud.covars.abs().max()) + 1e-9)
    pts = PlyData.read(str(pts_path))["vertex"]  # plyfile: an independent reader
    np.testing.assert_allclose(np.stack([pts["x"], pts["y"], pts["z"]], -1), cloud.means.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.stack([pts["red"], pts["green"], pts["blue"]], -1) / 255.0,
                               cloud.colors.clamp(0, 1).numpy(), atol=0.5 / 255 + 1e-6)


def test_open3d_reads_the_point_cloud(demo_out):
    """Where open3d imports (it needs the system library libusb), it reads our points.ply."""
    try:
        import open3d as o3d
    except ImportError as err:
        pytest.skip(f"open3d cannot import here: {err}")
    pcd = o3d.io.read_point_cloud(str(demo_out / "points.ply"))
    assert len(pcd.points) > 0 and pcd.has_colors()


def test_export_and_view_errors(demo_out, tmp_path, capsys, monkeypatch):
    assert cli_main(["export", str(demo_out / "output_bag")]) == 2  # nothing to write
    assert cli_main(["export", str(demo_out / "input_bag"), "--ply", str(tmp_path / "x.ply")]) == 2
    assert "has no /lrm4d/gaussians_4d" in capsys.readouterr().err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli_main(["view", str(demo_out / "output_bag")]) == 2
    assert "no display" in capsys.readouterr().err


def test_ply_writer_handles_empty_clouds(tmp_path):
    from lrm4d_core.gaussians import Gaussians3D

    empty = Gaussians3D(torch.zeros(0, 3), torch.zeros(0, 3, 3), torch.zeros(0), torch.zeros(0, 3), torch.zeros(0, 3))
    assert PlyData.read(str(write_gaussian_ply(tmp_path / "e.ply", empty)))["vertex"].count == 0
