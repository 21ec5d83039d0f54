"""Synthetic multi-camera rosbag2 files with ground truth beside them (`lrm4d synth --bag OUT`).

``write_synthetic_bag(OUT, rig="driving"|"object"|"workspace", ...)`` renders a scene of `lrm4d_core.data`
(the same generator, seeding and rigs as scene 0 of ``lrm4d synth --out``) and writes what a robot
would record: camera images, CameraInfo and a real TF tree. Written with rosbags (rosbag2 format
version 9, as ROS 2 Jazzy), storage mcap (default) or sqlite3.

Bag ``OUT/`` (``OUT/OUT.mcap`` or ``OUT/OUT.db3`` plus ``metadata.yaml``):

=================================================  ===============================================
``/cameras/<cam>/image_raw``                       sensor_msgs/msg/Image (``encoding``, default rgb8)
``/cameras/<cam>/image_raw/compressed``            sensor_msgs/msg/CompressedImage instead, with
                                                   ``compressed=True`` (format ``"rgb8; jpeg
                                                   compressed bgr8"`` as image_transport writes it)
``/cameras/<cam>/camera_info``                     sensor_msgs/msg/CameraInfo: K, P = [K | 0],
                                                   R = I, plumb_bob with D = 0, width/height
``/tf``                                            tf2_msgs/msg/TFMessage, the moving edges
``/tf_static``                                     tf2_msgs/msg/TFMessage, one message at the start;
                                                   offered QoS reliable + transient_local
=================================================  ===============================================

Cameras: driving rig ``front, front_left, front_right, back, back_left, back_right``; object rig
``canonical_0..3`` (static), ``moving_0..1`` (elevated orbits), ``random_0..1`` (random orbits);
workspace rig ``cam0..camN`` (3-6 static cameras looking down at a floor area, `rigs.workspace_rig`).

TF tree (every image's header.frame_id is its optical frame)::

    map -> odom -> base_link -> <cam>_link -> <cam>_optical_frame

* ``map -> odom``: static. Driving: a fixed offset (2 m, -1 m, 0; yaw 0.05 rad), so that a reader
  composing the chain wrongly (or using odom as the fixed frame) is caught; object: identity.
* ``odom -> base_link``: driving: the ego pose (``DrivingScene.ego_pose``: x forward, y left,
  z up, on the ground) on /tf; object and workspace: the rig centre (the origin), static.
* ``base_link -> <cam>_link``: a body-style camera link (x forward, y left, z up). Static (on
  /tf_static) for cameras fixed on base_link (all driving cameras, the canonical object cameras),
  on /tf for moving ones (moving and random object orbits). Which is which is decided from the
  rig's poses: an edge that is constant over the clip is static.
* ``<cam>_link -> <cam>_optical_frame``: static, the standard optical rotation (z forward,
  x right, y down): optical x = -link y, optical y = -link z, optical z = link x.

/tf carries one TFMessage per sample time with every moving edge (none, and no /tf messages, if
nothing moves): samples every 1/``tf_rate_hz``
(50 Hz) over ``[t0, t0 + frames / fps)`` and, with ``tf_at_image_stamps`` (default), also at every
image stamp. So ``map -> <cam>_optical_frame`` looked up at an image's header stamp equals the
cam_to_world that image was rendered with, up to float64 rounding; without it a reader must
interpolate (linear translation + SLERP) and gets the pose within interpolation error.

Time: stamps start at ``STAMP_BASE_NS`` (1.7e9 s). Frame f is nominally at ``f / fps``; each
camera captures at ``f / fps + skew_cam + jitter_cam,f`` (skew in [0, 0.75 J], jitter in
[0, 0.25 J], J = ``stamp_jitter_ms``), renders the scene at that exact time, and stamps its Image and
CameraInfo with it (cameras are not hardware-synchronized; approximate sync must group them). The
bag's log (receive) time of each image and its CameraInfo is the stamp plus a transport delay in
[0, ``transport_delay_ms``]; /tf and /tf_static are logged at their stamps. Messages are written in
log-time order.

Ground truth ``<OUT>_gt/`` (next to the bag; ``gt_dir`` overrides):

* ``scene.json``, ``images/``, ``depth/``, ``masks/``, ``velocity/``: an lrm4d-scene (`lrm4d_core.data.format`)
  with every published image as rendered (before jpeg or any fault), its depth and mask, K and
  cam_to_world in the map frame, and per-image ``time`` = capture time in seconds since
  ``STAMP_BASE_NS`` (scene time); ``views[i]`` carry ``camera``, ``frame_id`` and ``topic``.
* ``bag.json``: the bag's layout (topics, frames, static/moving edges, faults) and one record per
  published image: camera, view, frame, scene time, ``stamp_ns`` (header stamp), ``log_time_ns``,
  ``gt_index`` (its index in scene.json's images).
* ``objects.json``: the moving objects per frame (root objects of the scene whose bounding-box
  centre moves faster than 0.05 m/s at the frame's nominal time): name, box ``center`` and ``size``
  and the centre's ``velocity`` (m/s), in map.
* ``gt_points.npz``: surface points: per image, up to ``points_per_image`` pixels with finite depth
  (0: every such pixel, for on-surface checks at a few centimetres),
  back-projected through K and cam_to_world (``z * K^-1 [u + 0.5, v + 0.5, 1]``, pixel centres at
  +0.5): ``points`` [N, 3] float32 in map, ``colors`` [N, 3] uint8, ``velocity`` [N, 3] float32
  (m/s in map: the exact velocity of that surface point), ``view`` [N], ``frame`` [N], ``time`` [N]
  float64 (scene seconds), ``stamp_ns`` [N] int64 (header stamp of the source image).
  Select a frame with ``frame == f`` (or a time range with ``time``).

`load_ground_truth(gt_dir)` reads all three.

Faults (``faults={...}``), for the bad-input tests; each names the camera it hits in
``BagInfo.faults`` and bag.json:

* ``missing_tf``: the last camera's ``<cam>_link -> <cam>_optical_frame`` static transform is left
  out, so its optical frame is not connected to the tree (LinkMissing).
* ``bad_encoding``: camera 1 publishes an encoding we do not decode: raw ``yuv422`` (UYVY, BT.601
  limited range; what the image shows is right, only the encoding is unsupported) or, compressed,
  a TIFF with format ``"tiff"``.
* ``time_jump``: the bag loops: from frame ``frames // 2`` on, every header stamp (images,
  CameraInfo and /tf) is moved back by ``time_jump_s`` (default: to start again at the first
  frame's stamps); log times keep increasing. /tf_static is not repeated. Ground truth keeps the
  scene time; bag.json has the stamps as published.
* ``camera_stops``: camera 2 publishes nothing (no Image, no CameraInfo) from frame ``frames // 2``
  on; its ground truth stops too.

`truncate_bag` cuts a copy of a bag's storage file at a byte fraction (a recording that died).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .convert import transform_stamped_msg
from .msgdefs import RosbagsFactory, make_typestore

__all__ = [
    "STAMP_BASE_NS",
    "DEFAULT_FPS",
    "FAULTS",
    "RAW_ENCODINGS",
    "STORAGES",
    "OPTICAL_IN_LINK",
    "BagInfo",
    "GroundTruth",
    "write_synthetic_bag",
    "load_ground_truth",
    "truncate_bag",
    "gt_dir_for",
    "add_arguments",
    "main",
]

NS = 1_000_000_000
STAMP_BASE_NS = 1_700_000_000 * NS
"""Header stamp of scene time 0 (2023-11-14T22:13:20Z)."""
DEFAULT_FPS = 10.0
FAULTS = ("missing_tf", "bad_encoding", "time_jump", "camera_stops")
RAW_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
COMPRESSIONS = ("jpeg", "png")
STORAGES = ("mcap", "sqlite3")
FIXED_FRAME, ODOM_FRAME, BASE_FRAME = "map", "odom", "base_link"
RIGS = ("driving", "object", "workspace")

OPTICAL_IN_LINK = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
"""T_link_optical: columns are the optical x (right), y (down), z (forward) axes in link coordinates."""

_DRIVING_MAP_TO_ODOM = (2.0, -1.0, 0.0, 0.05)  # x, y, z, yaw
_FAULT_CAMERA = {"bad_encoding": 1, "camera_stops": 2, "missing_tf": -1}
_STATIC_TOL = 1e-9
_TF_TYPE = "tf2_msgs/msg/TFMessage"
_IMAGE_TYPE = "sensor_msgs/msg/Image"
_COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


# ------------------------------------------------------------------------------------ results
@dataclass
class BagInfo:
    """What `write_synthetic_bag` wrote."""

    path: Path  # bag directory
    storage_file: Path  # the .mcap / .db3 inside it
    storage: str
    rig: str
    cameras: list[str]
    topics: dict[str, str]  # topic -> message type
    image_topics: dict[str, str]  # camera -> image topic
    camera_info_topics: dict[str, str]  # camera -> camera_info topic
    frame_ids: dict[str, str]  # camera -> optical frame (header.frame_id of its images)
    link_frames: dict[str, str]  # camera -> <cam>_link
    moving_edges: list[str]  # child frames whose parent edge is on /tf
    counts: dict[str, int]  # topic -> messages written
    gt_dir: Path
    gt_points: Path
    faults: dict[str, str]  # fault -> camera it hits ("all" for time_jump)
    frames: int
    fps: float
    width: int
    height: int
    compressed: bool
    encoding: str
    start_ns: int  # first / last log time
    end_ns: int
    seconds: float = 0.0
    fixed_frame: str = FIXED_FRAME
    odom_frame: str = ODOM_FRAME
    base_frame: str = BASE_FRAME

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        """One-line summary."""
        kind = "jpeg" if self.compressed else self.encoding
        size = self.storage_file.stat().st_size / 1e6 if self.storage_file.exists() else float("nan")
        faults = f"; faults: {', '.join(f'{k} ({v})' for k, v in sorted(self.faults.items()))}" if self.faults else ""
        return (
            f"synth --bag: wrote {self.path} ({self.storage}, {size:.1f} MB, {self.messages} messages: "
            f"{len(self.cameras)} {self.rig} cameras x {self.frames} frames at {self.fps:g} Hz, {self.width}x{self.height} {kind}) "
            f"and ground truth {self.gt_dir} in {self.seconds:.1f} s{faults}"
        )


@dataclass
class GroundTruth:
    """`load_ground_truth`: the scene (lrm4d_core.data.format.SceneMeta), bag.json, gt_points.npz."""

    scene: Any
    index: dict
    points: dict[str, np.ndarray]

    def image_record(self, camera: str, stamp_ns: int) -> dict:
        """bag.json record of the image `camera` published with header stamp `stamp_ns` (first match)."""
        for rec in self.index["images"]:
            if rec["camera"] == camera and rec["stamp_ns"] == int(stamp_ns):
                return rec
        raise KeyError(f"no image of camera {camera!r} with stamp {stamp_ns}")

    def cam_to_world(self, camera: str, stamp_ns: int) -> np.ndarray:
        return self.scene.images[self.image_record(camera, stamp_ns)["gt_index"]].cam_to_world

    def frame_points(self, frame: int) -> np.ndarray:
        return self.points["points"][self.points["frame"] == frame]

    def surface_mesh(self, stamp_ns: int, tolerance_ns: int):
        """`lrm4d_core.eval.geometry.SurfaceMesh` of the depth and velocity maps of every image
        stamped within `tolerance_ns` of `stamp_ns` (the true surfaces at that instant)."""
        from lrm4d_core.data.format import read_depth, read_velocity
        from lrm4d_core.eval.geometry import SurfaceMesh

        recs = [self.scene.images[r["gt_index"]] for r in self.index["images"]
                if abs(int(r["stamp_ns"]) - int(stamp_ns)) <= tolerance_ns]
        return SurfaceMesh([read_depth(self.scene, r) for r in recs], [r.K for r in recs], [r.cam_to_world for r in recs],
                           [read_velocity(self.scene, r) for r in recs])


def gt_dir_for(bag: str | Path) -> Path:
    """Default ground-truth directory of a bag: ``<bag>_gt`` next to it."""
    bag = Path(bag)
    return bag.parent / f"{bag.name}_gt"


def load_ground_truth(gt_dir: str | Path) -> GroundTruth:
    """Read a ground-truth directory written by `write_synthetic_bag` (scene.json, bag.json, gt_points.npz)."""
    from lrm4d_core.data.format import load_scene

    gt_dir = Path(gt_dir)
    with np.load(gt_dir / "gt_points.npz") as z:
        points = {k: z[k] for k in z.files}
    return GroundTruth(load_scene(gt_dir), json.loads((gt_dir / "bag.json").read_text(encoding="utf-8")), points)


# ------------------------------------------------------------------------------------ geometry
def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _inv(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms [..., 4, 4]."""
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


# ------------------------------------------------------------------------------------ the rig
class _RigModel:
    """The scene and the rig's poses at arbitrary times, from lrm4d_core.data (nothing re-derived).

    ``cam_to_world(t)`` [V, n, 4, 4] and ``odom_to_base(t)`` [n, 4, 4] for scene times t (s).
    """

    def __init__(self, rig: str, seed: int, width: int, height: int, nominal: np.ndarray, frame_s: float, views: dict | None):
        from lrm4d_core.data.rigs import DEFAULT_OBJECT_VIEWS, driving_rig, object_rig
        from lrm4d_core.data.scenes import random_driving_scene, random_object_scene
        from lrm4d_core.data.synth import _RIG_CODE, build_scene  # same seeding as scene 0 of `lrm4d synth --out`

        self.rig, self.width, self.height, self.nominal = rig, width, height, nominal
        duration = max(float(nominal[-1]), frame_s)  # as lrm4d synth: max(last frame time, 1 / fps)
        scene_seq, self.rig_seq = np.random.SeedSequence([int(seed), _RIG_CODE[rig], 0]).spawn(2)
        self._driving_rig, self._object_rig = driving_rig, object_rig
        if rig == "object":
            self.scene = random_object_scene(scene_seq, duration)
            self.counts = dict(DEFAULT_OBJECT_VIEWS if views is None else views)
            cams = object_rig(np.random.default_rng(self.rig_seq), nominal, width, height, **self.counts)
            self.map_to_odom = np.eye(4)
            self.near, self.far, self.box = 0.1, 4.5, [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
        elif rig == "workspace":
            if views is not None:
                raise ValueError("views applies to the object rig only")
            built = build_scene("workspace", 0, seed, width, height, len(nominal), 1.0 / frame_s)
            self.scene, cams = built.scene, built.cams
            self.map_to_odom = np.eye(4)
            self.near, self.far, self.box = built.near, built.far, built.box
        else:
            if views is not None:
                raise ValueError("views applies to the object rig only")
            self.scene = random_driving_scene(scene_seq, duration)
            cams = driving_rig(self.scene, nominal, width, height)
            x, y, z, yaw = _DRIVING_MAP_TO_ODOM
            self.map_to_odom = np.eye(4)
            self.map_to_odom[:3, :3] = _rot_z(yaw)
            self.map_to_odom[:3, 3] = (x, y, z)
            ego = cams.extra["ego_poses"][:, :3, 3]
            lo, hi = ego.min(0), ego.max(0)
            self.box = [[lo[0] - 50, lo[1] - 50, -2.0], [hi[0] + 50, hi[1] + 50, 20.0]]
            self.near, self.far = 0.5, 100.0
        self.views = cams.views
        self.names = [v["name"] for v in cams.views]
        self.K = cams.K[:, 0].copy()
        self.camera_extra = {k: v for k, v in cams.extra.items() if k != "ego_poses"}
        self._check = cams.cam_to_world  # the rig's own output at the nominal times

    def cam_to_world(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.rig == "driving":
            return self._driving_rig(self.scene, t, self.width, self.height).cam_to_world
        if self.rig == "workspace":  # static cameras
            return np.repeat(self._check[:, :1], len(t), axis=1)
        n = len(self.nominal)
        rng = np.random.default_rng(self.rig_seq)  # the rig's random draws do not depend on the times
        if n == 1:  # a single frame: the rig's orbit progress is 0 at every time
            one = self._object_rig(rng, self.nominal, self.width, self.height, **self.counts).cam_to_world
            return np.repeat(one, len(t), axis=1)
        # object_rig measures orbit progress over its times array: (t - first) / (last - first + spacing).
        # Bracket the query times by the nominal first time and an end time chosen so that this
        # denominator is the nominal clip's, so every query is posed as the rig poses the clip.
        span = (self.nominal[-1] - self.nominal[0]) * n / (n - 1)
        m = len(t) + 2
        arr = np.concatenate([[self.nominal[0]], t, [self.nominal[0] + span * (m - 1) / m]])
        return self._object_rig(rng, arr, self.width, self.height, **self.counts).cam_to_world[:, 1:-1]

    def odom_to_base(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.rig == "driving":
            ego = np.stack([self.scene.ego_pose(float(x)) for x in t])
            return _inv(self.map_to_odom)[None] @ ego
        return np.broadcast_to(np.eye(4), (len(t), 4, 4)).copy()


# ------------------------------------------------------------------------------------ messages
def _qos(transient_local: bool) -> list:
    """Offered QoS as `ros2 bag record` stores a publisher's (history/depth are not discovered)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(9223372036, 854775807)
    durability = QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE
    return [Qos(QosHistory.UNKNOWN, 0, QosReliability.RELIABLE, durability, infinite, infinite, QosLiveliness.AUTOMATIC, infinite, False)]


class _Messages:
    def __init__(self, factory: RosbagsFactory):
        self.f = factory

    def transform(self, parent: str, child: str, stamp_ns: int, T: np.ndarray) -> Any:
        return transform_stamped_msg(self.f, parent, child, stamp_ns, T)

    def tf(self, transforms: list) -> Any:
        return self.f.make(_TF_TYPE, transforms=transforms)

    def camera_info(self, frame_id: str, stamp_ns: int, K: np.ndarray, width: int, height: int) -> Any:
        make = self.f.make
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = make("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return make(
            _INFO_TYPE, header=self.f.header(frame_id, stamp_ns), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.asarray(K, dtype=np.float64).reshape(9).copy(), r=np.eye(3).reshape(9),
            p=P.reshape(12), binning_x=0, binning_y=0, roi=roi,
        )

    def image(self, frame_id: str, stamp_ns: int, rgb: np.ndarray, encoding: str) -> Any:
        data, step = _encode_raw(rgb, encoding)
        h, w = rgb.shape[:2]
        return self.f.make(_IMAGE_TYPE, header=self.f.header(frame_id, stamp_ns), height=h, width=w, encoding=encoding,
                           is_bigendian=0, step=step, data=data)

    def compressed(self, frame_id: str, stamp_ns: int, data: bytes, fmt: str) -> Any:
        return self.f.make(_COMPRESSED_TYPE, header=self.f.header(frame_id, stamp_ns), format=fmt,
                           data=np.frombuffer(data, dtype=np.uint8).copy())


def _encode_raw(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """uint8 [H, W, 3] RGB -> (flat uint8 data, step) in a raw sensor_msgs/Image encoding."""
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        out = rgb
    elif encoding == "bgr8":
        out = rgb[:, :, ::-1]
    elif encoding in ("rgba8", "bgra8"):
        c = rgb if encoding == "rgba8" else rgb[:, :, ::-1]
        out = np.concatenate([c, np.full((h, w, 1), 255, np.uint8)], axis=2)
    elif encoding == "mono8":
        out = np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).clip(0, 255).astype(np.uint8)
    elif encoding == "yuv422":
        out = _uyvy(rgb)
    else:
        raise ValueError(f"encoding {encoding!r} is not one of {RAW_ENCODINGS}")
    out = np.ascontiguousarray(out)
    return out.reshape(-1), out.nbytes // h


def _uyvy(rgb: np.ndarray) -> np.ndarray:
    """RGB -> UYVY (ROS "yuv422"), BT.601 limited range, chroma averaged over pixel pairs; [H, W*2]."""
    if rgb.shape[1] % 2:
        rgb = np.concatenate([rgb, rgb[:, -1:]], axis=1)
    x = rgb.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    u2, v2 = 0.5 * (u[:, 0::2] + u[:, 1::2]), 0.5 * (v[:, 0::2] + v[:, 1::2])
    out = np.stack([u2, y[:, 0::2], v2, y[:, 1::2]], axis=-1).reshape(rgb.shape[0], -1)
    return np.rint(out).clip(0, 255).astype(np.uint8)


def _compress(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if codec == "jpeg":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    elif codec == "png":
        Image.fromarray(rgb).save(buf, format="PNG")
    elif codec == "tiff":
        Image.fromarray(rgb).save(buf, format="TIFF")
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return buf.getvalue()


def _surface_points(depth: np.ndarray, rgb: np.ndarray, velocity: np.ndarray, K: np.ndarray, c2w: np.ndarray, n: int,
                    rng: np.random.Generator):
    """Up to n pixels (0: all) with finite depth, back-projected to world: (points [m, 3], colors [m, 3], velocity [m, 3])."""
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    if 0 < n < len(u):
        keep = np.sort(rng.choice(len(u), size=n, replace=False))
        v, u = v[keep], u[keep]
    z = depth[v, u].astype(np.float64)
    pix = np.stack([u + 0.5, v + 0.5, np.ones(len(u))], axis=1)
    cam = (pix @ np.linalg.inv(K).T) * z[:, None]
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return world, rgb[v, u], velocity[v, u]


# ------------------------------------------------------------------------------------ writer
def write_synthetic_bag(
    out: str | Path,
    rig: str = "driving",
    *,
    seed: int = 0,
    width: int = 128,
    height: int = 128,
    frames: int = 24,
    fps: float = DEFAULT_FPS,
    compressed: bool = False,
    encoding: str = "rgb8",
    compression: str = "jpeg",
    jpeg_quality: int = 90,
    storage: str = "mcap",
    stamp_jitter_ms: float = 2.0,
    transport_delay_ms: float = 3.0,
    tf_rate_hz: float = 50.0,
    tf_at_image_stamps: bool = True,
    views: dict | None = None,
    faults: Iterable[str] = (),
    time_jump_s: float | None = None,
    points_per_image: int = 1000,
    gt_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> BagInfo:
    """Write a synthetic multi-camera rosbag2 and its ground truth (layout: the module docstring).

    Args:
        out: bag directory to create (must not exist unless ``overwrite``).
        rig: "driving" (6 surround cameras on a moving ego car), "object" (cameras around an object) or
            "workspace" (static cameras looking down at a floor area with moving objects).
        compressed: CompressedImage (``compression`` "jpeg" at ``jpeg_quality``, or lossless "png")
            on ``.../image_raw/compressed`` instead of raw Image in ``encoding`` (one of RAW_ENCODINGS;
            mono8 is the BT.601 luma of the rendered RGB).
        storage: "mcap" or "sqlite3".
        stamp_jitter_ms: J, the spread of capture stamps around the nominal frame time (0: in sync).
        transport_delay_ms: log time = stamp + uniform [0, this].
        tf_rate_hz / tf_at_image_stamps: /tf sampling (see the module docstring).
        views: object rig view counts, e.g. {"canonical": 4, "moving": 2, "random": 2} (the default).
        faults: names from FAULTS. time_jump_s: the jump of "time_jump" (default: back to the start).
        points_per_image: surface points per image in gt_points.npz (0: every pixel that sees a surface).
        gt_dir: ground-truth directory (default ``<out>_gt`` next to the bag).
        progress: tqdm bar (per image) and a one-line summary on stderr.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from lrm4d_core.data.format import SceneWriter

    started = time.perf_counter()
    out = Path(out)
    gt = Path(gt_dir) if gt_dir is not None else gt_dir_for(out)
    faults = set(faults)
    # ------------------------------------------------------------------ validation
    if rig not in RIGS:
        raise ValueError(f"rig must be one of {RIGS}, got {rig!r}")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if unknown := faults - set(FAULTS):
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    if width < 1 or height < 1 or frames < 1:
        raise ValueError(f"need width, height, frames >= 1, got {width}x{height}, {frames} frames")
    if points_per_image < 0:
        raise ValueError(f"points_per_image must be >= 0 (0: every pixel), got {points_per_image}")
    if not fps > 0 or not tf_rate_hz > 0:
        raise ValueError(f"need fps > 0 and tf_rate_hz > 0, got {fps}, {tf_rate_hz}")
    if compressed and compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if encoding not in RAW_ENCODINGS:
        raise ValueError(f"encoding must be one of {RAW_ENCODINGS}, got {encoding!r}")
    if views is not None and rig != "object":
        raise ValueError("views applies to the object rig only")
    if stamp_jitter_ms < 0 or transport_delay_ms < 0:
        raise ValueError("stamp_jitter_ms and transport_delay_ms must be >= 0")
    frame_ns = int(round(NS / fps))
    jitter_ns, delay_ns = int(round(stamp_jitter_ms * 1e6)), int(round(transport_delay_ms * 1e6))
    if jitter_ns + delay_ns >= frame_ns:
        raise ValueError(f"stamp_jitter_ms + transport_delay_ms ({(jitter_ns + delay_ns) / 1e6:g} ms) must be below the frame period ({frame_ns / 1e6:g} ms)")
    half = frames // 2
    if faults & {"time_jump", "camera_stops"} and frames < 2:
        raise ValueError("time_jump and camera_stops need frames >= 2")
    jump_ns = half * frame_ns if time_jump_s is None else int(round(time_jump_s * NS))
    if "time_jump" in faults and jump_ns <= 0:
        raise ValueError(f"time_jump_s must be > 0, got {time_jump_s}")
    for path in (out, gt):
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} exists (pass overwrite=True / --overwrite to replace it)")
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    # ------------------------------------------------------------------ scene, rig, times
    nominal = np.arange(frames) * frame_ns / NS
    model = _RigModel(rig, seed, width, height, nominal, frame_ns / NS, views)
    V = len(model.names)
    names = model.names
    fault_cam = {k: names[_FAULT_CAMERA[k] % V] for k in ("bad_encoding", "camera_stops", "missing_tf") if k in faults}
    if "time_jump" in faults:
        fault_cam["time_jump"] = "all"
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5354414D50]))  # stamps, delays, point samples
    skew = rng.uniform(0, 0.75 * jitter_ns, size=V)
    capture_ns = STAMP_BASE_NS + np.arange(frames)[None, :] * frame_ns + np.rint(skew[:, None] + rng.uniform(0, 0.25 * jitter_ns, (V, frames))).astype(np.int64)
    delays = np.rint(rng.uniform(0, delay_ns, (V, frames))).astype(np.int64)
    publishes = np.ones((V, frames), dtype=bool)
    if "camera_stops" in faults:
        publishes[names.index(fault_cam["camera_stops"]), half:] = False
    end_ns = STAMP_BASE_NS + frames * frame_ns
    tf_period = int(round(NS / tf_rate_hz))
    grid = np.arange(STAMP_BASE_NS, end_ns, tf_period, dtype=np.int64)
    tf_ns = np.union1d(grid, capture_ns[publishes]) if tf_at_image_stamps else grid

    def scene_t(ns):
        return (np.asarray(ns, dtype=np.int64) - STAMP_BASE_NS) / NS

    def stamp(ns: int) -> int:  # header stamp of something captured at ns (time_jump fault)
        return int(ns) - jump_ns if "time_jump" in faults and ns >= STAMP_BASE_NS + half * frame_ns else int(ns)

    all_ns = np.union1d(tf_ns, capture_ns.ravel())
    where = {int(x): i for i, x in enumerate(all_ns)}
    C = model.cam_to_world(scene_t(all_ns))  # [V, n, 4, 4] map <- optical
    B = model.odom_to_base(scene_t(all_ns))  # [n, 4, 4] odom <- base
    M = model.map_to_odom
    links = _inv(M @ B)[None] @ C @ _inv(OPTICAL_IN_LINK)  # [V, n] base <- link
    cam_static = [bool(np.abs(links[v] - links[v, :1]).max() < _STATIC_TOL) for v in range(V)]
    base_static = bool(np.abs(B - B[:1]).max() < _STATIC_TOL)
    link_frame = {c: f"{c}_link" for c in names}
    optical = {c: f"{c}_optical_frame" for c in names}
    moving = ([] if base_static else [BASE_FRAME]) + [link_frame[c] for v, c in enumerate(names) if not cam_static[v]]

    # ------------------------------------------------------------------ bag
    typestore = make_typestore()
    msgs = _Messages(RosbagsFactory(typestore))
    suffix = "/compressed" if compressed else ""
    image_topics = {c: f"/cameras/{c}/image_raw{suffix}" for c in names}
    info_topics = {c: f"/cameras/{c}/camera_info" for c in names}
    image_type = _COMPRESSED_TYPE if compressed else _IMAGE_TYPE
    fmt = f"{encoding}; {compression} compressed bgr8"
    topics = {"/tf_static": _TF_TYPE, "/tf": _TF_TYPE}
    for c in names:
        topics[image_topics[c]] = image_type
        topics[info_topics[c]] = _INFO_TYPE
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    counts = {t: 0 for t in topics}
    records: list[dict] = []
    log_range = [None, None]

    static_tfs = [msgs.transform(FIXED_FRAME, ODOM_FRAME, STAMP_BASE_NS, M)]
    if base_static:
        static_tfs.append(msgs.transform(ODOM_FRAME, BASE_FRAME, STAMP_BASE_NS, B[0]))
    for v, c in enumerate(names):
        if cam_static[v]:
            static_tfs.append(msgs.transform(BASE_FRAME, link_frame[c], STAMP_BASE_NS, links[v, 0]))
        if fault_cam.get("missing_tf") != c:
            static_tfs.append(msgs.transform(link_frame[c], optical[c], STAMP_BASE_NS, OPTICAL_IN_LINK))

    def tf_at(ns: int) -> Any:
        i = where[int(ns)]
        s = stamp(ns)
        items = [] if base_static else [msgs.transform(ODOM_FRAME, BASE_FRAME, s, B[i])]
        items += [msgs.transform(BASE_FRAME, link_frame[c], s, links[v, i]) for v, c in enumerate(names) if not cam_static[v]]
        return msgs.tf(items)

    gt.mkdir(parents=True, exist_ok=True)
    gt_views = [{**view, "camera": view["name"], "frame_id": optical[view["name"]], "topic": image_topics[view["name"]]} for view in model.views]
    generator = {
        "name": "ros2_lrm4d.synth_bag", "seed": int(seed), "scene": model.scene.info, "camera": model.camera_extra,
        "stamp_jitter_ms": stamp_jitter_ms, "transport_delay_ms": transport_delay_ms,
    }
    points: dict[str, list] = {k: [] for k in ("points", "colors", "velocity", "view", "frame", "time", "stamp_ns")}
    from tqdm import tqdm

    n_images = int(publishes.sum())
    with Writer(out, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer, \
            SceneWriter(gt, width=width, height=height, rig=rig, views=gt_views,
                        frames=[{"index": f, "time": float(t)} for f, t in enumerate(nominal)],
                        near=model.near, far=model.far, scene_box=model.box, fps=fps,
                        ground_plane=None if rig == "object" else [0.0, 0.0, 1.0, 0.0],
                        extra={"generator": generator, "bag": {"path": str(out), "stamp_base_ns": STAMP_BASE_NS}}) as gt_writer, \
            tqdm(total=n_images, desc=f"synth bag {rig}", unit="img", disable=not progress) as bar:
        conns = {
            topic: writer.add_connection(topic, typ, typestore=typestore, offered_qos_profiles=_qos(topic == "/tf_static"))
            for topic, typ in topics.items()
        }

        def emit(batch: list) -> None:
            for log_ns, topic, msg in sorted(batch, key=lambda x: x[0]):
                writer.write(conns[topic], int(log_ns), typestore.serialize_cdr(msg, topics[topic]))
                counts[topic] += 1
                log_range[0] = log_ns if log_range[0] is None else min(log_range[0], log_ns)
                log_range[1] = log_ns if log_range[1] is None else max(log_range[1], log_ns)

        emit([(STAMP_BASE_NS, "/tf_static", msgs.tf(static_tfs))])
        states: dict[int, Any] = {}
        objects = []  # ground-truth moving objects per frame, at the nominal frame time
        for f in range(frames):
            objects.append({"frame": f, "time": float(nominal[f]),
                            "objects": model.scene.evaluate(float(nominal[f])).moving_objects()})
            lo, hi = STAMP_BASE_NS + f * frame_ns, STAMP_BASE_NS + (f + 1) * frame_ns
            batch = [(int(ns), "/tf", tf_at(ns)) for ns in tf_ns[(tf_ns >= lo) & (tf_ns < hi)]] if moving else []
            for v, c in enumerate(names):
                if not publishes[v, f]:
                    continue
                cap = int(capture_ns[v, f])
                t = float(scene_t(cap))
                c2w = C[v, where[cap]]
                state = states.get(cap)
                if state is None:
                    states = {cap: (state := model.scene.evaluate(t))}  # cameras in sync share one state
                rgb, depth, mask, velocity = state.render(model.K[v], c2w, width, height, with_velocity=True)
                s, log_ns = stamp(cap), cap + int(delays[v, f])
                bad = fault_cam.get("bad_encoding") == c
                if compressed:
                    data = _compress(rgb, "tiff" if bad else compression, jpeg_quality)
                    image = msgs.compressed(optical[c], s, data, "tiff" if bad else fmt)
                else:
                    image = msgs.image(optical[c], s, rgb, "yuv422" if bad else encoding)
                batch.append((log_ns, image_topics[c], image))
                batch.append((log_ns, info_topics[c], msgs.camera_info(optical[c], s, model.K[v], width, height)))
                gt_writer.add(v, f, t, model.K[v], c2w, rgb, depth=depth, mask=mask, velocity=velocity)
                records.append({"camera": c, "view": v, "frame": f, "time": t, "stamp_ns": s, "log_time_ns": log_ns,
                                "topic": image_topics[c], "gt_index": len(gt_writer.images) - 1})
                p, col, vel = _surface_points(depth, rgb, velocity, model.K[v], c2w, points_per_image, rng)
                for key, val in (("points", p.astype(np.float32)), ("colors", col), ("velocity", vel.astype(np.float32)),
                                 ("view", np.full(len(p), v, np.int16)),
                                 ("frame", np.full(len(p), f, np.int32)), ("time", np.full(len(p), t)), ("stamp_ns", np.full(len(p), s, np.int64))):
                    points[key].append(val)
                bar.update(1)
            emit(batch)
    storage_file = next(p for p in out.iterdir() if p.suffix in (".mcap", ".db3"))
    if storage == "mcap":  # chunk CRCs, as `ros2 bag record` writes them
        from .bag_crc import add_chunk_crcs

        add_chunk_crcs(out)

    # ------------------------------------------------------------------ ground truth extras
    def cat(key, dtype, width_=None):
        parts = points[key]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0,) if width_ is None else (0, width_), dtype)

    (gt / "objects.json").write_text(json.dumps({"frame_ns": frame_ns, "frames": objects}) + "\n", encoding="utf-8")
    np.savez_compressed(
        gt / "gt_points.npz", points=cat("points", np.float32, 3), colors=cat("colors", np.uint8, 3),
        velocity=cat("velocity", np.float32, 3), view=cat("view", np.int16),
        frame=cat("frame", np.int32), time=cat("time", np.float64), stamp_ns=cat("stamp_ns", np.int64),
    )
    index = {
        "format": "lrm4d-synth-bag", "version": 1, "bag": str(out), "storage_file": storage_file.name, "storage": storage,
        "rig": rig, "seed": int(seed), "width": width, "height": height, "frames": frames, "fps": fps, "frame_ns": frame_ns,
        "stamp_base_ns": STAMP_BASE_NS, "compressed": compressed, "encoding": encoding, "compression": compression if compressed else None,
        "tf": {"fixed_frame": FIXED_FRAME, "odom_frame": ODOM_FRAME, "base_frame": BASE_FRAME, "moving_edges": moving,
               "rate_hz": tf_rate_hz, "at_image_stamps": tf_at_image_stamps, "map_to_odom": M.tolist()},
        "cameras": [{"name": c, "view": v, "image_topic": image_topics[c], "camera_info_topic": info_topics[c],
                     "link_frame": link_frame[c], "optical_frame": optical[c], "static": cam_static[v], "K": model.K[v].tolist()}
                    for v, c in enumerate(names)],
        "faults": fault_cam, "time_jump_ns": jump_ns if "time_jump" in faults else 0, "fault_frame": half,
        "topics": topics, "counts": counts, "images": records,
    }
    (gt / "bag.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    info = BagInfo(
        path=out, storage_file=storage_file, storage=storage, rig=rig, cameras=list(names), topics=topics,
        image_topics=image_topics, camera_info_topics=info_topics, frame_ids=optical, link_frames=link_frame,
        moving_edges=moving, counts=counts, gt_dir=gt, gt_points=gt / "gt_points.npz", faults=fault_cam, frames=frames,
        fps=fps, width=width, height=height, compressed=compressed, encoding=encoding,
        start_ns=int(log_range[0]), end_ns=int(log_range[1]), seconds=time.perf_counter() - started,
    )
    if progress:
        print(info.line(), file=sys.stderr)
    return info


# ------------------------------------------------------------------------------------ bad files
def truncate_bag(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """Copy a bag, cutting its storage file after ``fraction`` of its bytes (a recording that died).

    ``src`` is a bag directory (metadata.yaml is copied unchanged, so it still promises every
    message) or a single .mcap/.db3 file; ``dst`` is created in the same form and returned. What
    readers make of it (checked in tests/test_synth_bag.py): an mcap cut before its summary has no
    footer; rosbags (AnyReader, the replay's reader) refuses to open it, mcap's own streaming reader
    reads the complete messages and then raises at the cut. A cut sqlite3 file is reported as not a
    database / malformed.
    """
    src, dst = Path(src), Path(dst)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if dst.exists():
        raise FileExistsError(f"{dst} exists")
    if src.is_dir():
        files = [p for p in src.iterdir() if p.suffix in (".mcap", ".db3")]
        if len(files) != 1:
            raise ValueError(f"{src}: expected one .mcap or .db3 file, found {[p.name for p in files]}")
        shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if Path(d) == src and n == files[0].name])
        target, source = dst / files[0].name, files[0]
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        target, source = dst, src
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return dst


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser, shared: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``lrm4d synth --bag``. With ``shared=False`` only the bag-specific ones, for a
    parser that already has the common ``lrm4d synth`` options (--rig --size --width --height
    --frames --fps --seed --views --overwrite) from `lrm4d_core.data.synth.add_arguments`."""
    parser.add_argument("--bag", required=shared, default=None, metavar="OUT", help="write a synthetic rosbag2 to this new directory (ground truth in OUT_gt/)")
    if shared:
        parser.add_argument("--rig", choices=RIGS, default="driving", help="driving (6 surround cameras), object or workspace (default driving)")
        parser.add_argument("--size", type=int, default=128, help="square image size in pixels (default 128)")
        parser.add_argument("--width", type=int, default=None, help="image width (overrides --size)")
        parser.add_argument("--height", type=int, default=None, help="image height (overrides --size)")
        parser.add_argument("--frames", type=int, default=24, help="frames (default 24)")
        parser.add_argument("--fps", type=float, default=None, help=f"frame rate (default {DEFAULT_FPS:g})")
        parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing bag and ground truth")
    parser.add_argument("--compressed", action="store_true", help="sensor_msgs/CompressedImage (jpeg) on .../image_raw/compressed")
    parser.add_argument("--encoding", choices=RAW_ENCODINGS, default="rgb8", help="raw Image encoding (default rgb8)")
    parser.add_argument("--storage", choices=STORAGES, default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--stamp-jitter-ms", type=float, default=2.0, help="spread of camera capture stamps per frame (default 2)")
    parser.add_argument("--fault", action="append", choices=FAULTS, default=None, help="inject a fault (repeatable)")
    parser.add_argument("--gt", default=None, metavar="DIR", help="ground-truth directory (default OUT_gt next to the bag)")
    parser.add_argument("--gt-points", type=int, default=1000, metavar="N",
                        help="surface points per image in the ground truth (default 1000; 0: every pixel that sees a surface)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``lrm4d synth --bag`` with parsed arguments; returns the exit status."""
    size = getattr(args, "size", 128)
    width, height = getattr(args, "width", None) or size, getattr(args, "height", None) or size
    frames = getattr(args, "frames", 24)
    if width < 1 or height < 1 or frames < 1:
        print(f"lrm4d synth: need a positive image size and frame count, got {width}x{height}, {frames} frames", file=sys.stderr)
        return 2
    try:
        write_synthetic_bag(
            args.bag, getattr(args, "rig", "driving"), seed=getattr(args, "seed", 0), width=width, height=height, frames=frames,
            fps=getattr(args, "fps", None) or DEFAULT_FPS, compressed=args.compressed, encoding=args.encoding, storage=args.storage,
            stamp_jitter_ms=args.stamp_jitter_ms, views=getattr(args, "views", None), faults=args.fault or (), gt_dir=args.gt,
            points_per_image=args.gt_points,
            overwrite=getattr(args, "overwrite", False), progress=True,
        )
    except (FileExistsError, ValueError) as e:
        print(f"lrm4d synth: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m ros2_lrm4d.synth_bag
    sys.exit(main(add_arguments(argparse.ArgumentParser(prog="lrm4d synth --bag", description=__doc__.splitlines()[0])).parse_args()))
