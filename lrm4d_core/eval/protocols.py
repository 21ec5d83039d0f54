"""Evaluation view-time protocols per scene rig, and the dataset that loads them.

Object-rig scenes (their ``views`` carry the kinds ``canonical`` / ``moving`` / ``random``, see
`data.rigs.object_rig`) get the four SPEC §4 protocols exactly as `data.dataset.protocol_views`
defines them, and the targets of `data.dataset.evaluation_targets` (every canonical view plus the
held-out random-orbit view, at every frame).

Scenes without those view kinds (the driving rig: 6 surround cameras) have no canonical views, so
only ``random`` applies, in a surround variant: the input at frame f is one camera drawn uniformly
among those with an image at f, and the targets are every *other* image of every frame (the
cameras not given at that frame: novel view-time synthesis on the same rig).

Note on `SceneDataset(input_protocol="random")`: there "random" is the *training* sampler
(``num_input`` images drawn uniformly over all views and frames, canonical views included), not
SPEC protocol (d). `EvalDataset` below always uses the protocol definitions, with the same random
stream `SceneDataset` would hand to `protocol_views` (``rng(index).spawn(2)[0]``).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from lrm4d_core.data.dataset import PROTOCOLS, SceneDataset, evaluation_targets, protocol_views, surround_random_pairs
from lrm4d_core.data.format import SceneMeta

__all__ = [
    "PROTOCOLS",
    "scene_protocols",
    "protocol_variant",
    "protocol_pairs",
    "surround_random_pairs",
    "nearest_input_frame",
    "EvalDataset",
]


def _has_object_rig(meta: SceneMeta) -> bool:
    """True when the scene has the view kinds the canonical protocols and targets need."""
    try:
        evaluation_targets(meta)
    except ValueError:
        return False
    return True


def protocol_variant(meta: SceneMeta) -> str:
    """"object" (SPEC §4 as written) or "surround" (random views on a rig without canonical views)."""
    return "object" if _has_object_rig(meta) else "surround"


def scene_protocols(meta: SceneMeta) -> tuple[str, ...]:
    """The protocols of `PROTOCOLS` that apply to this scene (module docstring)."""
    if _has_object_rig(meta):
        out = []
        for p in PROTOCOLS:
            try:
                protocol_views(p, meta, np.random.default_rng(0))
            except ValueError:
                continue
            out.append(p)
        return tuple(out)
    frames_with_two = sum(1 for f in range(meta.num_frames) if sum(meta.has(v, f) for v in range(meta.num_views)) >= 2)
    return ("random",) if frames_with_two else ()


def protocol_pairs(
    protocol: str, meta: SceneMeta, rng_input: np.random.Generator, rng_target: np.random.Generator
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(inputs, targets) (view, frame) pairs of `protocol` on this scene; ValueError if it does not apply."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if _has_object_rig(meta):
        return protocol_views(protocol, meta, rng_input), evaluation_targets(meta, rng_target)
    if protocol != "random":
        raise ValueError(
            f"protocol {protocol!r} needs the object rig's canonical/moving views; {meta.source} "
            f"(rig {meta.rig!r}) has none, only 'random' applies"
        )
    return surround_random_pairs(meta, rng_input)


def nearest_input_frame(target_frame: int, input_frames: Sequence[int]) -> int:
    """The frame with inputs nearest to `target_frame` (itself if it has inputs; ties -> earlier)."""
    frames = sorted(set(int(f) for f in input_frames))
    if not frames:
        raise ValueError("no input frames")
    return min(frames, key=lambda f: (abs(f - int(target_frame)), f))


class EvalDataset(SceneDataset):
    """`SceneDataset` whose examples are one protocol's inputs and the evaluation targets.

    Batches are `SceneDataset` batches (see `data.dataset`); ``sample(index)`` gives the pairs.
    Scenes where the protocol does not apply raise ValueError from ``sample``; filter them with
    `scene_protocols(dataset.meta(i))` first.
    """

    def __init__(
        self,
        root: str | os.PathLike | Sequence[str | os.PathLike],
        protocol: str,
        image_size: tuple[int, int] | None = None,
        seed: int = 0,
        near: float = 0.1,
        far: float = 4.5,
        with_depth: bool = False,
        with_masks: bool = False,
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
        super().__init__(
            root, image_size=image_size, seed=seed, input_protocol=protocol, target_protocol="evaluation",
            near=near, far=far, with_depth=with_depth, with_masks=with_masks,
        )
        self.protocol = protocol

    def sample(self, index: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        meta = self.meta(index)
        rng_in, rng_tgt = self.rng(index).spawn(2)
        inputs, targets = protocol_pairs(self.protocol, meta, rng_in, rng_tgt)

        def order(pairs):
            return sorted(pairs, key=lambda p: (meta.record(*p).time, p[0], p[1]))

        return order(inputs), order(targets)
