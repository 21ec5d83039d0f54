"""`lrm4d export` and `lrm4d view`: the 4D reconstruction of an output bag, outside ROS.

    lrm4d export OUT_BAG --time -0.5 --ply gaussians.ply --points points.ply
    lrm4d view OUT_BAG

Both read the full 4D sets (`/lrm4d/gaussians_4d`, GaussianCloud4D) that `lrm4d replay`, the demo
and the live node (when recorded) write. `--time` is seconds relative to the chosen window's end
(its header stamp): negative inside the window, positive forecasts beyond it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from lrm4d_core.gaussians import Gaussians3D, Gaussians4D
from lrm4d_core.io.ply import write_gaussian_ply, write_point_cloud

from .convert import gaussian_cloud4d_to_gaussians, stamp_to_ns
from .msgdefs import GAUSSIAN_CLOUD4D, make_typestore

__all__ = ["read_topic", "read_gaussian_clouds", "gaussians_at", "export_main", "view_main", "add_export_arguments", "add_view_arguments"]

TOPIC = "/lrm4d/gaussians_4d"


def read_topic(bag: str | Path, topic: str, msgtype: str | None = None) -> list[Any]:
    """Every message on `topic` of a rosbag2 (of type `msgtype` if given), decoded, in bag order;
    ValueError naming the topics there are when it has none."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(bag)], default_typestore=make_typestore()) as reader:
        conns = [c for c in reader.connections if c.topic == topic and msgtype in (None, c.msgtype)]
        if not conns:
            raise ValueError(f"{bag} has no {topic}{f' ({msgtype})' if msgtype else ''}; "
                             f"topics: {sorted({c.topic for c in reader.connections})}")
        return [reader.deserialize(raw, conn.msgtype) for conn, _, raw in reader.messages(connections=conns)]


def read_gaussian_clouds(bag: str | Path, topic: str = TOPIC) -> list[tuple[int, Gaussians4D]]:
    """Every (window end stamp ns, Gaussians4D) on `topic` of a rosbag2, in bag order."""
    return [(stamp_to_ns(msg.header.stamp), gaussian_cloud4d_to_gaussians(msg)) for msg in read_topic(bag, topic, GAUSSIAN_CLOUD4D)]


def gaussians_at(g: Gaussians4D, t: float, inference_filter: bool = True) -> Gaussians3D:
    """3D Gaussians at t seconds relative to the window end (forecast beyond it)."""
    return g.forecast(t, 0.0, inference_filter=inference_filter)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="an output rosbag2 of lrm4d replay / demo (holds /lrm4d/gaussians_4d)")
    parser.add_argument("--window", type=int, default=-1, help="which 4D set: index in the bag (default -1: the last)")
    parser.add_argument("--time", type=float, default=0.0, help="seconds relative to that window's end (default 0)")
    parser.add_argument("--ply", default=None, help="write the Gaussians as a 3D Gaussian Splatting PLY")
    parser.add_argument("--points", default=None, help="write the centres as a coloured point cloud (.ply: x y z red green blue)")
    parser.add_argument("--no-filter", action="store_true", help="keep Gaussians with p(t) < 0.05 or weighted opacity < 0.05")


def export_main(args: argparse.Namespace) -> int:
    if not args.ply and not args.points:
        print("lrm4d export: nothing to write: give --ply FILE and/or --points FILE", file=sys.stderr)
        return 2
    try:
        clouds = read_gaussian_clouds(args.bag)
        stamp, g = clouds[args.window]
    except (ValueError, IndexError) as err:
        print(f"lrm4d export: {err}", file=sys.stderr)
        return 2
    cloud = gaussians_at(g, args.time, inference_filter=not args.no_filter)
    if args.ply:
        write_gaussian_ply(args.ply, cloud)
    if args.points:
        write_point_cloud(args.points, cloud)
    print(f"lrm4d export: {len(cloud)} Gaussians at {args.time:+.3f} s from the window ending {stamp / 1e9:.3f} s"
          + "".join(f" -> {p}" for p in (args.ply, args.points) if p))
    return 0


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="an output rosbag2 of lrm4d replay / demo")
    parser.add_argument("--forecast", type=float, default=1.0, help="also play this many seconds beyond each window")


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def view_main(args: argparse.Namespace) -> int:
    """Play every window's reconstruction over time in an open3d window."""
    if not has_display():
        print("lrm4d view: no display (DISPLAY and WAYLAND_DISPLAY are unset), so no window can open. "
              "Run it in a desktop session, or write files with `lrm4d export BAG --ply F --points P`.", file=sys.stderr)
        return 2
    try:
        import open3d as o3d
    except ImportError:
        print("lrm4d view: needs open3d: pip install 'lrm4d[viz]'", file=sys.stderr)
        return 2
    clouds = read_gaussian_clouds(args.bag)
    vis = o3d.visualization.Visualizer()
    vis.create_window("lrm4d: 4D reconstruction")
    pcd = o3d.geometry.PointCloud()
    first = True
    for _, g in clouds:
        times = torch.linspace(float(g.means[:, 3].min()), args.forecast, 30)
        for t in times.tolist():
            cloud = gaussians_at(g, t)
            pcd.points = o3d.utility.Vector3dVector(cloud.means.double().numpy())
            pcd.colors = o3d.utility.Vector3dVector(cloud.colors.double().clamp(0, 1).numpy())
            if first:
                vis.add_geometry(pcd)
                first = False
            else:
                vis.update_geometry(pcd)
            if not vis.poll_events():
                vis.destroy_window()
                return 0
            vis.update_renderer()
    vis.destroy_window()
    return 0

