"""Decoded scenes at a training resolution, packed once and memory-mapped (`SceneDataset(cache_dir=...)`).

Why: a training step used to decode PNGs and npz depth maps and resize them for every image it
drew; those are the same few thousand images over and over. A pack holds every image of one scene
at one size, already resized exactly as `SceneDataset` resizes them (bicubic colour, nearest
depth/mask/velocity), as plain .npy files:

    <cache_dir>/<scene_id>-<sha1 of the scene dir>[:10]/<W>x<H>/
        images.npy    uint8  [N, H, W, 3]
        depth.npy     float32 [N, H, W]        (if every image has depth)
        mask.npy      bool   [N, H, W]         (if every image has a mask)
        velocity.npy  float16 [N, H, W, 3]     (if every image has velocity)
        done          written last: a pack without it is rebuilt

Row i is scene.json's images[i]. Arrays are opened with mmap, so several training processes
share one copy in the page cache. A pack is rebuilt when scene.json is newer than it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from .format import SceneMeta, read_depth, read_image, read_mask, read_velocity

__all__ = ["ScenePack", "resize_image", "resize_map"]


def resize_image(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize uint8 RGB (bicubic, anti-aliased) or a bool/float map (nearest) to (W, H) = size."""
    from PIL import Image

    w, h = size
    if img.shape[1] == w and img.shape[0] == h:
        return img
    if nearest:
        return resize_map(img, size)
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def resize_map(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [H, W, ...] (any dtype) to (W, H): the source pixel whose
    centre is nearest each target pixel centre (PIL's NEAREST sampling, for every channel)."""
    w, h = size
    H, W = arr.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return arr[rows][:, cols]


def _pack_dir(cache_dir: Path, meta: SceneMeta, size: tuple[int, int]) -> Path:
    key = hashlib.sha1(str(Path(meta.root).resolve()).encode()).hexdigest()[:10]
    return cache_dir / f"{meta.scene_id}-{key}" / f"{size[0]}x{size[1]}"


class ScenePack:
    """Every image of one scene at (W, H) = size, memory-mapped (module docstring)."""

    def __init__(self, meta: SceneMeta, size: tuple[int, int], cache_dir: str | os.PathLike):
        self.meta = meta
        self.size = (int(size[0]), int(size[1]))
        self.dir = _pack_dir(Path(cache_dir), meta, self.size)
        if not self._fresh():
            self._build()
        self.images = np.load(self.dir / "images.npy", mmap_mode="r")
        self.depth = self._optional("depth")
        self.mask = self._optional("mask")
        self.velocity = self._optional("velocity")

    def _fresh(self) -> bool:
        """A finished pack no older than the scene it was made from."""
        done = self.dir / "done"
        return done.is_file() and done.stat().st_mtime >= self.meta.source.stat().st_mtime

    def _optional(self, name: str) -> np.ndarray | None:
        path = self.dir / f"{name}.npy"
        return np.load(path, mmap_mode="r") if path.is_file() else None

    def _build(self) -> None:
        meta, size = self.meta, self.size
        tmp = self.dir.with_name(self.dir.name + f".tmp{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        recs = meta.images
        np.save(tmp / "images.npy", np.stack([resize_image(read_image(meta, r), size) for r in recs]))
        if all(r.depth for r in recs):
            np.save(tmp / "depth.npy", np.stack([resize_map(read_depth(meta, r), size) for r in recs]).astype(np.float32))
        if all(r.mask for r in recs):
            np.save(tmp / "mask.npy", np.stack([resize_map(read_mask(meta, r), size) for r in recs]))
        if all(r.velocity for r in recs):
            np.save(tmp / "velocity.npy", np.stack([resize_map(read_velocity(meta, r), size) for r in recs]).astype(np.float16))
        (tmp / "done").write_text("ok\n")
        if self._fresh():  # another process finished the same pack first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)  # (its readers may have it open already)
            return
        if self.dir.exists():  # unfinished, or made from an older version of the scene
            shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.replace(tmp, self.dir)
        except OSError:  # the other process won the race between the check and the rename
            shutil.rmtree(tmp, ignore_errors=True)
