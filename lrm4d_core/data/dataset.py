"""Training/evaluation examples from lrm4d-scene directories: input and target view-times.

`SceneDataset` (a torch Dataset over the scenes under a root) returns, per scene, ``num_input``
input images and ``num_target`` target images, each an image of some (view, frame). With the
default ``"random"`` protocols both sets are drawn uniformly **independently** (each without
replacement, so they may overlap), as in SPEC §3 (12 inputs and 24 targets out of 144
renderings). Draws are a deterministic function of ``(seed, epoch, index)``; call `set_epoch`
for fresh draws each epoch. Inputs and targets are sorted by (time, view): tokens go to the model
in temporal order.

Evaluation protocols (SPEC §4), for object-rig scenes whose ``views`` carry kinds
(`rigs.object_rig`), by `protocol_views` (each list sorted by frame):

* ``alternating``: frame f sees canonical view ``f mod C`` (C canonical views: 4 poses cycling);
* ``interpolation``: canonical views 0 and ``C // 2`` (opposite: 0 and 180 deg) on even frames
  only (12 of 24 timestamps seen, 24 images);
* ``two_rotating``: the two elevated moving cameras, alternating by frame parity (moving view
  ``f mod 2`` at frame f: every timestamp seen, 12 images per camera, 24 in all);
* ``random``: one random-orbit view per frame, drawn with ``rng`` among the random-orbit views
  except the last one, which is held out for the targets (if there is only one, it is used).

`evaluation_targets`: every canonical view at every frame plus the held-out random-orbit view
(the last ``random`` view) at every frame: "4 canonical views + 1 random view per frame".

Batch dictionary (V = number of images; H, W = ``image_size`` or the native size):

=====================  ===============  =====================================================
key                    shape / type     meaning
=====================  ===============  =====================================================
input_images           [V, 3, H, W]     float32 RGB in [0, 1]
input_K                [V, 3, 3]        float32 intrinsics for the (resized) image
input_cam_to_world     [V, 4, 4]        float32 OpenCV camera-to-world
input_times            [V]              float32 seconds since the scene's earliest image
input_views/frames     [V]              int64 view and frame indices
input_masks/depths     [V, H, W]        only with ``with_masks`` / ``with_depth`` (nearest resize)
input_velocities       [V, H, W, 3]     only with ``with_velocity``: world velocity (units/s) of the
                                        surface each pixel sees, NaN where none (nearest resize)
target_*               same             for the targets
scene_id               str
time_offset            float64 scalar   absolute time of ``times == 0``
ground_z               float64 scalar   height of a horizontal ground plane (`SceneMeta.ground_z`), NaN: none
near, far              float32 scalars  from scene.json, else the dataset defaults
=====================  ===============  =====================================================

Resizing rescales K consistently: with pixel centres at +0.5, a resize by (sx, sy) maps
``u + 0.5 -> sx (u + 0.5)``, so row 0 of K is multiplied by ``sx`` and row 1 by ``sy``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import ScenePack, resize_image
from .format import SceneMeta, find_scenes, load_scene, read_depth, read_image, read_mask, read_velocity

__all__ = ["PROTOCOLS", "TRAINING_LAYOUTS", "protocol_views", "evaluation_targets", "random_views", "surround_random_pairs",
           "resize_image", "scale_intrinsics", "SceneDataset"]

PROTOCOLS = ("alternating", "interpolation", "two_rotating", "random")
TRAINING_LAYOUTS = ("random", "surround_random", "random_orbit", *PROTOCOLS[:3])
"""Input layouts `SceneDataset` draws: "random" (uniform draws of num_input view-times, the
training sampler), "surround_random" (one random camera per frame: the evaluation's protocol on
rigs without canonical views), "random_orbit" (SPEC §4 protocol (d), one random-orbit camera at
every frame: the name "random" is the uniform sampler's here), and the object-rig protocols of
`PROTOCOLS`."""


def _need(meta: SceneMeta, kind: str, count: int, protocol: str) -> list[int]:
    views = meta.views_of_kind(kind)
    if len(views) < count:
        raise ValueError(
            f"protocol {protocol!r} needs at least {count} view(s) of kind {kind!r} in {meta.source} "
            f"('views' field), found {len(views)}; it applies to object-rig scenes"
        )
    return views


def _existing(meta: SceneMeta, pairs: list[tuple[int, int]], protocol: str) -> list[tuple[int, int]]:
    for v, f in pairs:
        if not meta.has(v, f):
            raise ValueError(f"protocol {protocol!r}: {meta.source} has no image for view {v}, frame {f}")
    return pairs


def protocol_views(protocol: str, meta: SceneMeta, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
    """(view, frame) input pairs of an evaluation protocol (see the module docstring)."""
    frames = range(meta.num_frames)
    if protocol == "alternating":
        can = _need(meta, "canonical", 1, protocol)
        pairs = [(can[f % len(can)], f) for f in frames]
    elif protocol == "interpolation":
        can = _need(meta, "canonical", 2, protocol)
        pair = (can[0], can[len(can) // 2])
        pairs = [(v, f) for f in frames if f % 2 == 0 for v in pair]
    elif protocol == "two_rotating":
        mov = _need(meta, "moving", 2, protocol)
        pairs = [(mov[f % 2], f) for f in frames]
    elif protocol == "random":
        rnd = _need(meta, "random", 1, protocol)
        pool = rnd[:-1] if len(rnd) > 1 else rnd
        rng = rng if rng is not None else np.random.default_rng(0)
        pairs = [(int(pool[int(rng.integers(len(pool)))]), f) for f in frames]
    else:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    return _existing(meta, pairs, protocol)


def evaluation_targets(meta: SceneMeta, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
    """Target pairs for evaluation: all canonical views + the held-out random-orbit view, per frame."""
    can = _need(meta, "canonical", 1, "evaluation targets")
    held_out = _need(meta, "random", 1, "evaluation targets")[-1]
    pairs = [(v, f) for f in range(meta.num_frames) for v in [*can, held_out]]
    return _existing(meta, pairs, "evaluation targets")


def surround_random_pairs(meta: SceneMeta, rng: np.random.Generator) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Surround variant of protocol (d): one random camera per frame as input, the others as targets."""
    inputs, targets = [], []
    for f in range(meta.num_frames):
        views = [v for v in range(meta.num_views) if meta.has(v, f)]
        if not views:
            continue
        pick = views[int(rng.integers(len(views)))]
        inputs.append((pick, f))
        targets.extend((v, f) for v in views if v != pick)
    if not targets:
        raise ValueError(f"protocol 'random' (surround): {meta.source} has no frame with two or more views")
    return inputs, targets


def random_views(meta: SceneMeta, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` (view, frame) pairs drawn uniformly without replacement (with replacement only if
    the scene has fewer images than ``count``)."""
    pairs = [(r.view, r.frame) for r in meta.images]
    idx = rng.choice(len(pairs), size=count, replace=count > len(pairs))
    return [pairs[i] for i in idx]


def scale_intrinsics(K: np.ndarray, old_size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """K for an image resized from (W, H) = old_size to new_size (whole image, pixel centres +0.5)."""
    sx = new_size[0] / old_size[0]
    sy = new_size[1] / old_size[1]
    return np.diag([sx, sy, 1.0]) @ np.asarray(K, dtype=np.float64)


class SceneDataset(Dataset):
    """Examples of input and target view-times from the scenes under ``root`` (module docstring).

    Args:
        root: a directory of scene directories (or one scene directory), or a list of either.
        num_input, num_target: image counts for the "random" protocols.
        image_size: (H, W) to resize to; None keeps the native size (all images must share it).
        seed: base seed of the draws.
        input_protocol: one of `TRAINING_LAYOUTS` or `PROTOCOLS` (all but the uniform "random" fix
            the count themselves).
        target_protocol: "random" or "evaluation" (`evaluation_targets`).
        with_masks, with_depth, with_velocity: also return masks / depth maps / velocity maps
            (scenes must have them).
        near, far: defaults for scenes whose scene.json has none (object scale, SPEC §1).
        cache_dir: keep decoded, resized scenes there (`data.cache.ScenePack`, memory-mapped) and
            read every image from them; None decodes the files on every access.
    """

    def __init__(
        self,
        root: str | os.PathLike | Sequence[str | os.PathLike],
        num_input: int = 12,
        num_target: int = 24,
        image_size: tuple[int, int] | None = None,
        seed: int = 0,
        input_protocol: str = "random",
        target_protocol: str = "random",
        with_masks: bool = False,
        with_depth: bool = False,
        near: float = 0.1,
        far: float = 4.5,
        with_velocity: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ):
        roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
        self.scene_dirs: list[Path] = [d for r in roots for d in find_scenes(r)]
        if not self.scene_dirs:
            raise FileNotFoundError(f"no scenes found under {', '.join(str(r) for r in roots)} (expected */scene.json)")
        if input_protocol not in TRAINING_LAYOUTS and input_protocol not in PROTOCOLS:
            raise ValueError(f"unknown input_protocol {input_protocol!r}; expected one of {TRAINING_LAYOUTS} or {PROTOCOLS}")
        if target_protocol not in ("random", "evaluation"):
            raise ValueError(f"unknown target_protocol {target_protocol!r}; expected 'random' or 'evaluation'")
        if input_protocol == "random" and num_input < 1:
            raise ValueError(f"num_input must be >= 1, got {num_input}")
        if target_protocol == "random" and num_target < 1:
            raise ValueError(f"num_target must be >= 1, got {num_target}")
        self.num_input = int(num_input)
        self.num_target = int(num_target)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.seed = int(seed)
        self.input_protocol = input_protocol
        self.target_protocol = target_protocol
        self.with_masks = with_masks
        self.with_depth = with_depth
        self.with_velocity = with_velocity
        self.near, self.far = float(near), float(far)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.epoch = 0
        self._metas: dict[int, SceneMeta] = {}
        self._packs: dict[tuple[int, tuple[int, int]], ScenePack] = {}

    def __len__(self) -> int:
        return len(self.scene_dirs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def meta(self, index: int) -> SceneMeta:
        if index not in self._metas:
            self._metas[index] = load_scene(self.scene_dirs[index], check_files=False)
        return self._metas[index]

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def sample(self, index: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The (view, frame) pairs of the inputs and of the targets of example ``index``."""
        meta = self.meta(index)
        rng_in, rng_tgt = self.rng(index).spawn(2)
        if self.input_protocol == "random":
            inputs = random_views(meta, self.num_input, rng_in)
        elif self.input_protocol == "surround_random":
            inputs = surround_random_pairs(meta, rng_in)[0]
        elif self.input_protocol == "random_orbit":
            inputs = protocol_views("random", meta, rng_in)
        else:
            inputs = protocol_views(self.input_protocol, meta, rng_in)
        if self.target_protocol == "random":
            targets = random_views(meta, self.num_target, rng_tgt)
        else:
            targets = evaluation_targets(meta, rng_tgt)

        def order(pairs):
            return sorted(pairs, key=lambda p: (meta.record(*p).time, p[0], p[1]))

        return order(inputs), order(targets)

    def _pack(self, index: int, size: tuple[int, int]) -> ScenePack:
        key = (index, size)
        if key not in self._packs:
            self._packs[key] = ScenePack(self.meta(index), size, self.cache_dir)
        return self._packs[key]

    def _read(self, meta: SceneMeta, index: int, rec, size: tuple[int, int]) -> dict:
        """One image and the maps asked for, at (W, H) = size (from the pack when caching)."""
        wanted = {"mask": self.with_masks, "depth": self.with_depth, "velocity": self.with_velocity}
        if self.cache_dir is not None:
            pack = self._pack(index, size)
            out = {"image": np.asarray(pack.images[rec.index])}
            for name, want in wanted.items():
                if want:
                    arr = getattr(pack, name)
                    if arr is None:
                        raise ValueError(f"{meta.source}: images[{rec.index}] has no {name} (with_{name}=True)")
                    out[name] = np.asarray(arr[rec.index])
            return out
        out = {"image": resize_image(read_image(meta, rec), size)}
        readers = {"mask": read_mask, "depth": read_depth, "velocity": read_velocity}
        for name, want in wanted.items():
            if want:
                arr = readers[name](meta, rec)
                if arr is None:
                    raise ValueError(f"{meta.source}: images[{rec.index}] has no {name} (with_{name}=True)")
                out[name] = resize_image(arr, size, nearest=True)
        return out

    def _load(self, meta: SceneMeta, index: int, pairs: list[tuple[int, int]], prefix: str, t0: float) -> dict:
        size = (self.image_size[1], self.image_size[0]) if self.image_size is not None else (meta.width, meta.height)
        images, Ks, poses, times, masks, depths, velocities = [], [], [], [], [], [], []
        for v, f in pairs:
            rec = meta.record(v, f)
            got = self._read(meta, index, rec, size)
            images.append(got["image"])
            Ks.append(scale_intrinsics(rec.K, (rec.width, rec.height), size))
            poses.append(rec.cam_to_world)
            times.append(rec.time - t0)
            masks.append(got.get("mask"))
            depths.append(got.get("depth"))
            velocities.append(got.get("velocity"))
        out = {
            f"{prefix}_images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0),
            f"{prefix}_K": torch.from_numpy(np.stack(Ks)).float(),
            f"{prefix}_cam_to_world": torch.from_numpy(np.stack(poses)).float(),
            f"{prefix}_times": torch.tensor(times, dtype=torch.float32),
            f"{prefix}_views": torch.tensor([p[0] for p in pairs], dtype=torch.int64),
            f"{prefix}_frames": torch.tensor([p[1] for p in pairs], dtype=torch.int64),
        }
        if self.with_masks:
            out[f"{prefix}_masks"] = torch.from_numpy(np.stack(masks))
        if self.with_depth:
            out[f"{prefix}_depths"] = torch.from_numpy(np.stack(depths).astype(np.float32))
        if self.with_velocity:
            out[f"{prefix}_velocities"] = torch.from_numpy(np.stack(velocities).astype(np.float32))
        return out

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} scenes")
        meta = self.meta(index)
        if self.image_size is None and any((r.width, r.height) != (meta.width, meta.height) for r in meta.images):
            raise ValueError(f"{meta.source}: images of different sizes; pass image_size=(H, W) to resize them")
        inputs, targets = self.sample(index)
        t0 = min(r.time for r in meta.images)
        batch = {"scene_id": meta.scene_id}
        batch.update(self._load(meta, index, inputs, "input", t0))
        batch.update(self._load(meta, index, targets, "target", t0))
        batch["time_offset"] = torch.tensor(t0, dtype=torch.float64)
        batch["ground_z"] = torch.tensor(math.nan if meta.ground_z is None else meta.ground_z, dtype=torch.float64)
        batch["near"] = torch.tensor(meta.near if meta.near is not None else self.near, dtype=torch.float32)
        batch["far"] = torch.tensor(meta.far if meta.far is not None else self.far, dtype=torch.float32)
        return batch
