"""Write synthetic dynamic scenes to disk in the lrm4d-scene format (`lrm4d synth`).

``lrm4d synth --out DIR --scenes N --rig object|driving|workspace [--size 128] [--frames 24] [--seed 0]``
writes ``DIR/<rig>_<index:05d>/`` for indices ``start .. start+N-1``. Scene ``i`` depends only on
``(seed, rig, i)``, so datasets can be extended (``--start``) or generated in shards on several
machines and merged.

Defaults:

* object rig: 24 frames at 12 fps (2 s), 8 views per frame -- 4 canonical, 2 elevated moving,
  2 random orbits (192 renderings per scene; SPEC §3's 144 = 6 x 24 would leave no held-out
  random orbit for the evaluation targets; ``--views 4,1,1`` gives exactly 144), white
  background (recorded as ``generator.background``), near 0.1, far 4.5, scene box [-1, 1]^3;
* driving rig: 24 frames at 10 fps, the 6 surround cameras, near 0.5, far 100 (metres), scene box
  around the ego path (+-50 m horizontally, -2..20 m up), ground plane z = 0;
* workspace rig: 24 frames at 10 fps, 3-6 static cameras looking inward and down at a floor
  area (`workspace`, `rigs.workspace_rig`), near 0.1, far 40 (metres), scene box inside the walls
  (-0.5..6 m up), ground plane z = 0.

Each image is written with its depth (``depth/*.npz``), mask (``masks/*.png``) and surface velocity
(``velocity/*.npz``, exact scene flow) unless ``--no-depth`` / ``--no-mask`` / ``--no-velocity``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .format import SCENE_FILE, SceneWriter
from .rigs import DEFAULT_OBJECT_VIEWS, driving_rig, object_rig, workspace_rig
from lrm4d_core.argtypes import parse_color
from .scenes import random_driving_scene, random_object_scene
from .workspace import random_workspace_scene

__all__ = ["RIGS", "DEFAULT_FPS", "scene_name", "BuiltScene", "build_scene", "synth_scene", "synth_dataset", "add_arguments", "main"]

RIGS = ("object", "driving", "workspace")
DEFAULT_FPS = {"object": 12.0, "driving": 10.0, "workspace": 10.0}
_RIG_CODE = {"object": 0, "driving": 1, "workspace": 2}


def scene_name(rig: str, index: int) -> str:
    return f"{rig}_{index:05d}"


def _check_rig(rig: str) -> None:
    if rig not in RIGS:
        raise ValueError(f"unknown rig {rig!r}; expected one of {RIGS}")


@dataclass
class BuiltScene:
    """A scene and its rig before rendering (what `synth_scene` writes and the bag writer reuses)."""

    scene: object
    cams: object  # rigs.RigCameras
    times: np.ndarray
    near: float
    far: float
    box: list
    ground_plane: list | None


def build_scene(rig: str, index: int, seed: int = 0, width: int = 128, height: int = 128, frames: int = 24,
                fps: float | None = None, views: dict | None = None, background=(1.0, 1.0, 1.0)) -> BuiltScene:
    """Scene ``index`` of a dataset and its cameras at the frame times, without rendering."""
    _check_rig(rig)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    fps = float(fps or DEFAULT_FPS[rig])
    times = np.arange(frames) / fps
    duration = max(times[-1], 1.0 / fps)
    scene_seq, rig_seq = np.random.SeedSequence([int(seed), _RIG_CODE[rig], int(index)]).spawn(2)
    ground = None
    if rig == "object":
        scene = random_object_scene(scene_seq, duration, background=background)
        counts = dict(DEFAULT_OBJECT_VIEWS if views is None else views)
        cams = object_rig(np.random.default_rng(rig_seq), times, width, height, **counts)
        near, far, box = 0.1, 4.5, [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
    elif rig == "driving":
        scene = random_driving_scene(scene_seq, duration)
        cams = driving_rig(scene, times, width, height)
        ego = cams.extra["ego_poses"][:, :3, 3]
        lo, hi = ego.min(0), ego.max(0)
        box = [[lo[0] - 50, lo[1] - 50, -2.0], [hi[0] + 50, hi[1] + 50, 20.0]]
        near, far, ground = 0.5, 100.0, [0.0, 0.0, 1.0, 0.0]
    else:
        scene = random_workspace_scene(scene_seq, duration)
        cams = workspace_rig(np.random.default_rng(rig_seq), times, width, height)
        w = scene.info["wall"] + 1.0
        near, far, box, ground = 0.1, 40.0, [[-w, -w, -0.5], [w, w, 6.0]], [0.0, 0.0, 1.0, 0.0]
    return BuiltScene(scene, cams, times, near, far, box, ground)


def synth_scene(
    out_dir: str | os.PathLike,
    index: int,
    rig: str = "object",
    seed: int = 0,
    width: int = 128,
    height: int = 128,
    frames: int = 24,
    fps: float | None = None,
    views: dict | None = None,
    supersample: int = 1,
    background=(1.0, 1.0, 1.0),
    write_depth: bool = True,
    write_mask: bool = True,
    write_velocity: bool = True,
    overwrite: bool = False,
    on_image=None,
) -> Path:
    """Render and write scene ``index``; returns its directory. ``on_image()`` is called per image."""
    built = build_scene(rig, index, seed, width, height, frames, fps, views, background)
    scene, cams, times = built.scene, built.cams, built.times
    path = Path(out_dir) / scene_name(rig, index)
    generator = {
        "name": "lrm4d_core.data.synth",
        "seed": int(seed),
        "index": int(index),
        "supersample": int(supersample),
        "scene": scene.info,
        **({"background": [float(c) for c in background]} if rig == "object" else {}),
        "camera": {k: v for k, v in cams.extra.items() if k != "ego_poses"},
    }
    with SceneWriter(
        path,
        width=width,
        height=height,
        rig=rig,
        views=cams.views,
        frames=[{"index": f, "time": float(t)} for f, t in enumerate(times)],
        near=built.near,
        far=built.far,
        scene_box=built.box,
        ground_plane=built.ground_plane,
        fps=float(fps or DEFAULT_FPS[rig]),
        extra={"generator": generator},
        overwrite=overwrite,
    ) as writer:
        for f, t in enumerate(times):
            state = scene.evaluate(float(t))
            for v in range(cams.num_views):
                rgb, depth, mask, velocity = state.render(cams.K[v, f], cams.cam_to_world[v, f], width, height, supersample, with_velocity=True)
                writer.add(
                    v,
                    f,
                    float(t),
                    cams.K[v, f],
                    cams.cam_to_world[v, f],
                    rgb,
                    depth=depth if write_depth else None,
                    mask=mask if write_mask else None,
                    velocity=velocity if write_velocity else None,
                )
                if on_image is not None:
                    on_image()
    return path


def _synth_one(kwargs: dict) -> str:
    return str(synth_scene(**kwargs))


def _view_count(rig: str, seed: int, index: int, views: dict | None) -> int:
    if rig == "object":
        return sum((views or DEFAULT_OBJECT_VIEWS).values())
    if rig == "driving":
        return 6
    return build_scene(rig, index, seed, 8, 8, 2).cams.num_views  # the rig only: cheap


def synth_dataset(
    out_dir: str | os.PathLike,
    scenes: int = 1,
    rig: str = "object",
    seed: int = 0,
    width: int = 128,
    height: int = 128,
    frames: int = 24,
    fps: float | None = None,
    views: dict | None = None,
    supersample: int = 1,
    background=(1.0, 1.0, 1.0),
    write_depth: bool = True,
    write_mask: bool = True,
    write_velocity: bool = True,
    start: int = 0,
    workers: int = 1,
    existing: str = "error",
    progress: bool = True,
) -> list[Path]:
    """Write scenes ``start .. start+scenes-1`` under ``out_dir`` (see the module docstring).

    ``existing``: what to do with a scene whose scene.json already exists: "error", "skip" or
    "overwrite". Shows a tqdm progress bar (per image; per scene with ``workers > 1``) and prints a
    one-line summary. Returns the scene directories.
    """
    _check_rig(rig)
    if existing not in ("error", "skip", "overwrite"):
        raise ValueError(f"existing must be 'error', 'skip' or 'overwrite', got {existing!r}")
    if scenes < 0:
        raise ValueError(f"scenes must be >= 0, got {scenes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = list(range(start, start + scenes))
    paths = [out / scene_name(rig, i) for i in indices]
    todo = []
    for i, p in zip(indices, paths):
        if (p / SCENE_FILE).exists():
            if existing == "error":
                raise FileExistsError(f"{p / SCENE_FILE} exists; choose another --out, --start, or pass --skip-existing / --overwrite")
            if existing == "skip":
                continue
        todo.append(i)
    counts = {i: _view_count(rig, seed, i, views) for i in todo}
    n_img = sum(counts.values()) * frames
    n_views = sorted(set(counts.values()))
    common = dict(
        out_dir=out,
        rig=rig,
        seed=seed,
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        views=views,
        supersample=supersample,
        background=background,
        write_depth=write_depth,
        write_mask=write_mask,
        write_velocity=write_velocity,
        overwrite=existing == "overwrite",
    )
    from tqdm import tqdm

    t0 = time.perf_counter()
    with tqdm(total=n_img, desc=f"synth {rig}", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                synth_scene(index=i, on_image=lambda: bar.update(1), **common)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for i, _ in zip(todo, pool.map(_synth_one, [dict(index=i, **common) for i in todo])):
                    bar.update(counts[i] * frames)
    dt = time.perf_counter() - t0
    if progress:
        skipped = len(indices) - len(todo)
        print(
            f"synth: wrote {len(todo)} {rig} scene(s) ({n_img} images, {'/'.join(map(str, n_views)) or 0} views x {frames} frames, "
            f"{width}x{height}) to {out} in {dt:.1f} s ({dt / max(n_img, 1):.3f} s/image)"
            + (f"; skipped {skipped} existing" if skipped else ""),
            file=sys.stderr,
        )
    return paths


def _parse_views(text: str) -> dict:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected CANONICAL,MOVING,RANDOM counts like 4,2,2, got {text!r}")
    try:
        c, m, r = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers like 4,2,2, got {text!r}") from None
    if min(c, m, r) < 0 or c + m + r == 0:
        raise argparse.ArgumentTypeError(f"view counts must be >= 0 and not all zero, got {text!r}")
    return {"canonical": c, "moving": m, "random": r}




def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``lrm4d synth``."""
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (one sub-directory per scene)")
    parser.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    parser.add_argument("--rig", choices=RIGS, default="object", help="object-centric, driving or workspace (default object)")
    parser.add_argument("--size", type=int, default=128, help="square image size in pixels (default 128)")
    parser.add_argument("--width", type=int, default=None, help="image width (overrides --size)")
    parser.add_argument("--height", type=int, default=None, help="image height (overrides --size)")
    parser.add_argument("--frames", type=int, default=24, help="frames per scene (default 24)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate (default 12 object, 10 driving and workspace)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--start", type=int, default=0, help="index of the first scene (to extend or shard a dataset)")
    parser.add_argument("--views", type=_parse_views, default=None, metavar="C,M,R", help="object rig: canonical, moving, random-orbit view counts (default 4,2,2)")
    parser.add_argument("--supersample", type=int, default=1, help="s x s rays per pixel for anti-aliased colour (default 1)")
    parser.add_argument("--background", type=parse_color, default=(1.0, 1.0, 1.0), help="object rig background: white|black|gray|R,G,B (default white)")
    parser.add_argument("--no-depth", action="store_true", help="do not write depth maps")
    parser.add_argument("--no-mask", action="store_true", help="do not write masks")
    parser.add_argument("--no-velocity", action="store_true", help="do not write surface velocity maps (scene flow)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace existing scenes")
    group.add_argument("--skip-existing", action="store_true", help="keep existing scenes, write the missing ones")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``lrm4d synth`` with parsed arguments; returns the exit status."""
    width = args.width or args.size
    height = args.height or args.size
    for name, value in (("--scenes", args.scenes), ("--frames", args.frames), ("--supersample", args.supersample), ("--workers", args.workers)):
        if value < (0 if name == "--scenes" else 1):
            print(f"lrm4d synth: {name} must be positive, got {value}", file=sys.stderr)
            return 2
    if width < 1 or height < 1:
        print(f"lrm4d synth: image size must be positive, got {width}x{height}", file=sys.stderr)
        return 2
    if args.views is not None and args.rig != "object":
        print("lrm4d synth: --views applies to the object rig only", file=sys.stderr)
        return 2
    try:
        synth_dataset(
            args.out,
            scenes=args.scenes,
            rig=args.rig,
            seed=args.seed,
            width=width,
            height=height,
            frames=args.frames,
            fps=args.fps,
            views=args.views,
            supersample=args.supersample,
            background=args.background,
            write_depth=not args.no_depth,
            write_mask=not args.no_mask,
            write_velocity=not args.no_velocity,
            start=args.start,
            workers=args.workers,
            existing="overwrite" if args.overwrite else "skip" if args.skip_existing else "error",
        )
    except (FileExistsError, ValueError) as e:
        print(f"lrm4d synth: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m lrm4d_core.data.synth
    sys.exit(main(add_arguments(argparse.ArgumentParser(prog="lrm4d synth", description=__doc__.splitlines()[0])).parse_args()))
