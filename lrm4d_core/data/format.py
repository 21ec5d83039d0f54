"""On-disk format of posed multi-view video ("lrm4d-scene", version 1); see docs/data_format.md.

One directory per scene::

    <scene_dir>/scene.json
    <scene_dir>/images/v00_f000.png      RGB (8-bit PNG; JPEG also read)
    <scene_dir>/depth/v00_f000.npz       optional: float32 [H, W] z-depth, inf = background
                                         (.npz with array "depth", or a plain .npy)
    <scene_dir>/masks/v00_f000.png       optional: 8-bit, nonzero = foreground
    <scene_dir>/velocity/v00_f000.npz    optional: float32 [H, W, 3] world velocity (units/s) of the
                                         surface each pixel sees, NaN = no surface (array "velocity")

``scene.json`` holds the format name and version, the image size, and one record per image with
its view index, frame index, time (seconds), OpenCV intrinsics ``K`` (3x3, pixel centres at +0.5)
and ``cam_to_world`` (4x4, OpenCV axes: x right, y down, z forward). Optional: ``views`` (kind
and name per view index, used by the evaluation protocols), ``frames`` (nominal time per frame),
``near``/``far``, ``scene_box``, ``fps``, ``ground_plane`` ([a, b, c, d]: the ground a x + b y + c z
+ d = 0 with (a, b, c) the unit up normal, for rigs with a floor or road), ``generator``; unknown keys
are kept and ignored.

`load_scene` validates everything and raises `SceneFormatError` naming the file and the field
(e.g. ``.../scene.json: images[3].cam_to_world: rotation part is not orthonormal``).
`SceneWriter` writes a scene image by image and validates it with the same code before the JSON
is written (atomically, last), so a scene directory with a ``scene.json`` is always complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "SCENE_FILE",
    "SceneFormatError",
    "ImageRecord",
    "SceneMeta",
    "parse_scene",
    "load_scene",
    "find_scenes",
    "read_image",
    "read_depth",
    "read_mask",
    "read_velocity",
    "SceneWriter",
]

FORMAT = "lrm4d-scene"
VERSION = 1
SCENE_FILE = "scene.json"


class SceneFormatError(ValueError):
    """A scene directory or its scene.json does not follow the format."""


@dataclass(frozen=True)
class ImageRecord:
    index: int  # position in scene.json's "images"
    file: str
    view: int
    frame: int
    time: float
    K: np.ndarray  # [3, 3] float64
    cam_to_world: np.ndarray  # [4, 4] float64
    width: int
    height: int
    depth: str | None = None
    mask: str | None = None
    velocity: str | None = None


@dataclass
class SceneMeta:
    root: Path
    scene_id: str
    rig: str
    width: int
    height: int
    images: list[ImageRecord]
    frames: list[dict]
    views: list[dict]
    near: float | None = None
    far: float | None = None
    scene_box: np.ndarray | None = None
    fps: float | None = None
    ground_plane: np.ndarray | None = None  # [4] (a, b, c, d), unit up normal (a, b, c)
    raw: dict = field(default_factory=dict, repr=False)
    _lookup: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lookup = {(r.view, r.frame): r for r in self.images}

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def ground_z(self) -> float | None:
        """Height of the ground plane when it is horizontal (unit normal +z: z + d = 0 gives
        z = -d), the form a robot's fixed frame gives it; None otherwise."""
        plane = self.ground_plane
        if plane is None or abs(float(plane[2])) < 1 - 1e-6:
            return None
        return -float(plane[3]) / float(plane[2])

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def has(self, view: int, frame: int) -> bool:
        return (view, frame) in self._lookup

    def record(self, view: int, frame: int) -> ImageRecord:
        try:
            return self._lookup[(view, frame)]
        except KeyError:
            raise KeyError(f"scene {self.scene_id!r} has no image for view {view}, frame {frame}") from None

    def views_of_kind(self, kind: str) -> list[int]:
        return [v["index"] for v in self.views if v.get("kind") == kind]

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def source(self) -> Path:
        return self.root / SCENE_FILE


# ------------------------------------------------------------------------------------- checks
def _fail(source: str, where: str, message: str) -> SceneFormatError:
    return SceneFormatError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _int(value: Any, source: str, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or float(value) != int(value):
        raise _fail(source, where, f"expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise _fail(source, where, f"must be >= {minimum}, got {value}")
    return value


def _float(value: Any, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(source, where, f"expected a finite number, got {value!r}")
    return float(value)


def _matrix(value: Any, shape: tuple[int, int], source: str, where: str) -> np.ndarray:
    try:
        ok = isinstance(value, list) and len(value) == shape[0] and all(
            isinstance(row, list) and len(row) == shape[1] for row in value
        )
        arr = np.array(value, dtype=np.float64) if ok else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or any(isinstance(x, bool) for row in value for x in row):
        raise _fail(source, where, f"expected a {shape[0]}x{shape[1]} list of numbers, got {_short(value)}")
    if not np.all(np.isfinite(arr)):
        raise _fail(source, where, "contains non-finite numbers")
    return arr


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, np.ndarray) else repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def _relpath(value: Any, source: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(source, where, f"expected a relative file path, got {value!r}")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or "\\" in value:
        raise _fail(source, where, f"must be a relative path inside the scene directory (with '/'), got {value!r}")
    return value


def _check_K(K: np.ndarray, source: str, where: str) -> None:
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or abs(K[1, 0]) > 1e-9:
        raise _fail(source, where, f"not an upper-triangular intrinsic matrix with last row [0, 0, 1]: {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise _fail(source, where, f"focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")


def _check_pose(m: np.ndarray, source: str, where: str) -> None:
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise _fail(source, where, f"last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    r = m[:3, :3]
    if np.abs(r.T @ r - np.eye(3)).max() > 1e-4:
        raise _fail(source, where, "rotation part is not orthonormal (cam_to_world must be a rigid transform)")
    if np.linalg.det(r) < 0:
        raise _fail(source, where, "rotation part has determinant -1 (a reflection); use OpenCV axes x right, y down, z forward")


def parse_scene(data: Any, root: str | os.PathLike, source: str | None = None, check_files: bool = True) -> SceneMeta:
    """Validate a decoded scene.json and return its `SceneMeta` (errors name ``source`` and the field)."""
    root = Path(root)
    source = str(source or root / SCENE_FILE)
    if not isinstance(data, dict):
        raise _fail(source, "", f"top level must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise _fail(source, "format", f"expected {FORMAT!r}, got {data.get('format')!r}")
    version = _int(data.get("version"), source, "version")
    if version != VERSION:
        raise _fail(source, "version", f"unsupported version {version} (this reader knows {VERSION})")
    width = _int(data.get("width"), source, "width", 1)
    height = _int(data.get("height"), source, "height", 1)
    rig = data.get("rig", "custom")
    if not isinstance(rig, str):
        raise _fail(source, "rig", f"expected a string, got {rig!r}")
    scene_id = data.get("scene_id", root.name)
    if not isinstance(scene_id, str) or not scene_id:
        raise _fail(source, "scene_id", f"expected a non-empty string, got {scene_id!r}")

    near = far = None
    if data.get("near") is not None or data.get("far") is not None:
        near = _float(data.get("near"), source, "near")
        far = _float(data.get("far"), source, "far")
        if not 0 < near < far:
            raise _fail(source, "near/far", f"need 0 < near < far, got near={near}, far={far}")
    box = None
    if data.get("scene_box") is not None:
        box = _matrix(data["scene_box"], (2, 3), source, "scene_box")
        if not np.all(box[0] < box[1]):
            raise _fail(source, "scene_box", f"expected [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max, got {box.tolist()}")
    fps = None
    if data.get("fps") is not None:
        fps = _float(data["fps"], source, "fps")
        if fps <= 0:
            raise _fail(source, "fps", f"must be positive, got {fps}")

    ground = None
    if data.get("ground_plane") is not None:
        ground = _matrix([data["ground_plane"]], (1, 4), source, "ground_plane")[0]
        if abs(np.linalg.norm(ground[:3]) - 1.0) > 1e-6:
            raise _fail(source, "ground_plane", f"(a, b, c) must be a unit normal, got {ground[:3].tolist()}")

    images_raw = data.get("images")
    if not isinstance(images_raw, list) or not images_raw:
        raise _fail(source, "images", "expected a non-empty list of image records")
    images: list[ImageRecord] = []
    seen: dict[tuple[int, int], int] = {}
    for i, rec in enumerate(images_raw):
        w = f"images[{i}]"
        if not isinstance(rec, dict):
            raise _fail(source, w, f"expected an object, got {_short(rec)}")
        for key in ("file", "view", "frame", "time", "K", "cam_to_world"):
            if key not in rec:
                raise _fail(source, f"{w}.{key}", "missing")
        file = _relpath(rec["file"], source, f"{w}.file")
        view = _int(rec["view"], source, f"{w}.view", 0)
        frame = _int(rec["frame"], source, f"{w}.frame", 0)
        time = _float(rec["time"], source, f"{w}.time")
        K = _matrix(rec["K"], (3, 3), source, f"{w}.K")
        _check_K(K, source, f"{w}.K")
        c2w = _matrix(rec["cam_to_world"], (4, 4), source, f"{w}.cam_to_world")
        _check_pose(c2w, source, f"{w}.cam_to_world")
        iw = _int(rec.get("width", width), source, f"{w}.width", 1)
        ih = _int(rec.get("height", height), source, f"{w}.height", 1)
        depth = _relpath(rec["depth"], source, f"{w}.depth") if rec.get("depth") is not None else None
        mask = _relpath(rec["mask"], source, f"{w}.mask") if rec.get("mask") is not None else None
        velocity = _relpath(rec["velocity"], source, f"{w}.velocity") if rec.get("velocity") is not None else None
        if (view, frame) in seen:
            raise _fail(source, w, f"duplicate (view {view}, frame {frame}), also images[{seen[(view, frame)]}]")
        seen[(view, frame)] = i
        if check_files:
            for key, rel in (("file", file), ("depth", depth), ("mask", mask), ("velocity", velocity)):
                if rel is not None and not (root / rel).is_file():
                    raise _fail(source, f"{w}.{key}", f"file not found: {root / rel}")
        images.append(ImageRecord(i, file, view, frame, time, K, c2w, iw, ih, depth, mask, velocity))

    views = _parse_views(data.get("views"), images, source)
    frames = _parse_frames(data.get("frames"), images, source)
    return SceneMeta(root, scene_id, rig, width, height, images, frames, views, near, far, box, fps, ground, data)


def _parse_views(raw: Any, images: list[ImageRecord], source: str) -> list[dict]:
    used = sorted({r.view for r in images})
    if raw is None:
        return [{"index": v, "kind": "unknown", "name": f"view_{v}"} for v in range(max(used) + 1)]
    if not isinstance(raw, list):
        raise _fail(source, "views", "expected a list")
    out = []
    for j, v in enumerate(raw):
        if not isinstance(v, dict):
            raise _fail(source, f"views[{j}]", f"expected an object, got {_short(v)}")
        idx = _int(v.get("index", j), source, f"views[{j}].index", 0)
        if idx != j:
            raise _fail(source, f"views[{j}].index", f"views must be listed in index order, got {idx}")
        kind = v.get("kind", "unknown")
        if not isinstance(kind, str):
            raise _fail(source, f"views[{j}].kind", f"expected a string, got {kind!r}")
        out.append({**v, "index": idx, "kind": kind, "name": str(v.get("name", f"view_{idx}"))})
    missing = [v for v in used if v >= len(out)]
    if missing:
        raise _fail(source, "views", f"images use view {missing[0]} but only {len(out)} views are listed")
    return out


def _parse_frames(raw: Any, images: list[ImageRecord], source: str) -> list[dict]:
    used = sorted({r.frame for r in images})
    if raw is None:
        times: dict[int, list[float]] = {}
        for r in images:
            times.setdefault(r.frame, []).append(r.time)
        n = max(used) + 1
        return [{"index": f, "time": float(np.mean(times[f])) if f in times else None} for f in range(n)]
    if not isinstance(raw, list):
        raise _fail(source, "frames", "expected a list")
    out = []
    for j, f in enumerate(raw):
        if not isinstance(f, dict):
            raise _fail(source, f"frames[{j}]", f"expected an object, got {_short(f)}")
        idx = _int(f.get("index", j), source, f"frames[{j}].index", 0)
        if idx != j:
            raise _fail(source, f"frames[{j}].index", f"frames must be listed in index order, got {idx}")
        out.append({**f, "index": idx, "time": _float(f.get("time"), source, f"frames[{j}].time")})
    missing = [f for f in used if f >= len(out)]
    if missing:
        raise _fail(source, "frames", f"images use frame {missing[0]} but only {len(out)} frames are listed")
    return out


def load_scene(scene_dir: str | os.PathLike, check_files: bool = True) -> SceneMeta:
    """Read and validate ``scene_dir/scene.json``."""
    scene_dir = Path(scene_dir)
    path = scene_dir / SCENE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: not found (a scene directory must contain {SCENE_FILE})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SceneFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return parse_scene(data, scene_dir, str(path), check_files)


def find_scenes(root: str | os.PathLike) -> list[Path]:
    """Scene directories under ``root`` (``root`` itself if it holds a scene.json), sorted."""
    root = Path(root)
    if (root / SCENE_FILE).is_file():
        return [root]
    return sorted(p.parent for p in root.glob(f"*/{SCENE_FILE}"))


# ------------------------------------------------------------------------------------- images
def read_image(meta: SceneMeta, rec: ImageRecord) -> np.ndarray:
    """uint8 [H, W, 3] (grey and RGBA converted to RGB); checks the size against the record."""
    from PIL import Image

    path = meta.path(rec.file)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].file: file not found: {path}") from None
    except OSError as e:
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].file: cannot read {path}: {e}") from None
    if arr.shape[:2] != (rec.height, rec.width):
        raise SceneFormatError(
            f"{meta.source}: images[{rec.index}]: {path} is {arr.shape[1]}x{arr.shape[0]}, the record says {rec.width}x{rec.height}"
        )
    return arr


def read_depth(meta: SceneMeta, rec: ImageRecord) -> np.ndarray | None:
    if rec.depth is None:
        return None
    path = meta.path(rec.depth)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arr = loaded
        else:  # .npz
            with loaded:
                arr = loaded["depth"] if "depth" in loaded.files else loaded[loaded.files[0]]
    except (OSError, ValueError, IndexError) as e:
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].depth: cannot read {path}: {e}") from None
    if arr.shape != (rec.height, rec.width):
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].depth: {path} has shape {arr.shape}, expected {(rec.height, rec.width)}")
    return arr.astype(np.float32, copy=False)


def read_velocity(meta: SceneMeta, rec: ImageRecord) -> np.ndarray | None:
    """float32 [H, W, 3] world velocity of the surface each pixel sees (NaN: none), or None."""
    if rec.velocity is None:
        return None
    path = meta.path(rec.velocity)
    try:
        with np.load(path, allow_pickle=False) as loaded:
            arr = loaded["velocity"] if "velocity" in loaded.files else loaded[loaded.files[0]]
    except (OSError, ValueError, IndexError, KeyError) as e:
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].velocity: cannot read {path}: {e}") from None
    if arr.shape != (rec.height, rec.width, 3):
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].velocity: {path} has shape {arr.shape}, expected {(rec.height, rec.width, 3)}")
    return arr.astype(np.float32, copy=False)


def read_mask(meta: SceneMeta, rec: ImageRecord) -> np.ndarray | None:
    if rec.mask is None:
        return None
    from PIL import Image

    path = meta.path(rec.mask)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L")) > 0
    except OSError as e:
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].mask: cannot read {path}: {e}") from None
    if arr.shape != (rec.height, rec.width):
        raise SceneFormatError(f"{meta.source}: images[{rec.index}].mask: {path} has shape {arr.shape}, expected {(rec.height, rec.width)}")
    return arr


# ------------------------------------------------------------------------------------- writer
def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _dumps(data: dict) -> str:
    """JSON with one line per top-level key and per record of the lists (readable and diffable)."""
    lines = []
    for key, value in data.items():
        if key in ("images", "views", "frames") and isinstance(value, list) and value:
            inner = ",\n".join("  " + json.dumps(x) for x in value)
            lines.append(f" {json.dumps(key)}: [\n{inner}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


class SceneWriter:
    """Write one scene: ``add`` images one by one, then ``close`` (or use it as a context manager).

    ``add`` takes the RGB image as uint8 [H, W, 3] (written as PNG), or ``source_file`` to copy an
    existing PNG/JPEG. ``close`` validates with `parse_scene` and writes scene.json last.
    """

    def __init__(
        self,
        scene_dir: str | os.PathLike,
        *,
        width: int,
        height: int,
        rig: str = "custom",
        scene_id: str | None = None,
        views: list[dict] | None = None,
        frames: list[dict] | None = None,
        near: float | None = None,
        far: float | None = None,
        scene_box=None,
        fps: float | None = None,
        ground_plane=None,
        extra: dict | None = None,
        overwrite: bool = False,
    ):
        self.root = Path(scene_dir)
        if (self.root / SCENE_FILE).exists():
            if not overwrite:
                raise FileExistsError(f"{self.root / SCENE_FILE} exists (pass overwrite=True to replace the scene)")
            # replace only what this format owns
            (self.root / SCENE_FILE).unlink()
            for sub in ("images", "depth", "masks", "velocity"):
                if (self.root / sub).is_dir():
                    shutil.rmtree(self.root / sub)
        self.root.mkdir(parents=True, exist_ok=True)
        self.header: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "scene_id": scene_id or self.root.name,
            "rig": rig,
            "width": int(width),
            "height": int(height),
        }
        for key, value in (("fps", fps), ("near", near), ("far", far), ("scene_box", scene_box), ("ground_plane", ground_plane),
                           ("views", views), ("frames", frames)):
            if value is not None:
                self.header[key] = _jsonable(value)
        if extra:
            self.header.update(_jsonable(extra))
        self.images: list[dict] = []
        self.closed = False

    def add(
        self,
        view: int,
        frame: int,
        time: float,
        K,
        cam_to_world,
        rgb: np.ndarray | None = None,
        *,
        depth: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        velocity: np.ndarray | None = None,
        source_file: str | os.PathLike | None = None,
    ) -> dict:
        from PIL import Image

        if (rgb is None) == (source_file is None):
            raise ValueError("pass exactly one of rgb and source_file")
        stem = f"v{int(view):02d}_f{int(frame):03d}"
        rec: dict[str, Any] = {"view": int(view), "frame": int(frame), "time": float(time)}
        if rgb is not None:
            rgb = np.asarray(rgb)
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(f"rgb must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
            rel = f"images/{stem}.png"
            (self.root / "images").mkdir(exist_ok=True)
            Image.fromarray(rgb).save(self.root / rel)
            h, w = rgb.shape[:2]
        else:
            src = Path(source_file)
            rel = f"images/{stem}{src.suffix.lower()}"
            (self.root / "images").mkdir(exist_ok=True)
            shutil.copyfile(src, self.root / rel)
            with Image.open(src) as im:
                w, h = im.size
        rec["file"] = rel
        if (w, h) != (self.header["width"], self.header["height"]):
            rec["width"], rec["height"] = int(w), int(h)
        rec["K"] = _jsonable(np.asarray(K, dtype=np.float64))
        rec["cam_to_world"] = _jsonable(np.asarray(cam_to_world, dtype=np.float64))
        if depth is not None:
            (self.root / "depth").mkdir(exist_ok=True)
            rec["depth"] = f"depth/{stem}.npz"
            np.savez_compressed(self.root / rec["depth"], depth=np.asarray(depth, dtype=np.float32))
        if mask is not None:
            (self.root / "masks").mkdir(exist_ok=True)
            rec["mask"] = f"masks/{stem}.png"
            Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(self.root / rec["mask"])
        if velocity is not None:
            (self.root / "velocity").mkdir(exist_ok=True)
            rec["velocity"] = f"velocity/{stem}.npz"
            np.savez_compressed(self.root / rec["velocity"], velocity=np.asarray(velocity, dtype=np.float32))
        self.images.append(rec)
        return rec

    def close(self) -> SceneMeta:
        data = dict(self.header)
        data["images"] = self.images
        meta = parse_scene(data, self.root, str(self.root / SCENE_FILE), check_files=True)
        tmp = self.root / (SCENE_FILE + ".tmp")
        tmp.write_text(_dumps(data), encoding="utf-8")
        os.replace(tmp, self.root / SCENE_FILE)
        self.closed = True
        return meta

    def __enter__(self) -> SceneWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.closed:
            self.close()
