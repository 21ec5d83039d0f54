"""Training examples drawn from weighted dataset roots as a pure function of (seed, step, rank, slot).

That purity is what makes resume exact and DDP ranks independent without any sampler state: the
example a process trains on at a step never depends on what ran before.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import torch

from lrm4d_core.data.format import SceneFormatError, load_scene

from lrm4d_core.data.dataset import SceneDataset
from lrm4d_core.eval.protocols import protocol_variant, scene_protocols

from .config import DataSource

__all__ = ["ExampleSource"]

log = logging.getLogger(__name__)
_MAX_REDRAWS = 50


class ExampleSource:
    """Mixes several scene roots by weight (e.g. object and driving rigs, SPEC §3's data mix)."""

    def __init__(
        self,
        sources: Sequence[DataSource],
        num_input: int,
        num_target: int,
        with_depth: bool = False,
        input_protocols: Mapping[str, float] | None = None,
        with_velocity: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        if not sources:
            raise ValueError("no data sources")
        self.sources = list(sources)
        self.num_input = num_input
        self.num_target = num_target
        self.with_depth = with_depth  # input depth maps (depth and opacity losses); scenes must have them
        self.with_velocity = with_velocity  # input velocity maps (velocity loss)
        self.cache_dir = cache_dir
        weights = np.array([s.weight for s in sources], dtype=np.float64)
        if (weights <= 0).any():
            raise ValueError(f"data weights must be positive, got {weights.tolist()}")
        self.probabilities = weights / weights.sum()
        mix = dict(input_protocols or {"random": 1.0})
        self.protocols = list(mix)
        self.protocol_probabilities = np.array([mix[p] for p in self.protocols], dtype=np.float64)
        self.protocol_probabilities /= self.protocol_probabilities.sum()
        self._datasets: dict[tuple, SceneDataset] = {}
        self._applicable: dict[tuple[int, int], tuple[str, ...]] = {}
        self.bad: dict[tuple[int, int], str] = {}  # (source, scene index) -> why it cannot be read
        self._checked: set[tuple[int, int]] = set()
        self.counters: Counter[str] = Counter()

    def dataset(self, source: int, image_size: tuple[int, int], protocol: str = "random",
                num_input: int | None = None, num_target: int | None = None) -> SceneDataset:
        num_input, num_target = num_input or self.num_input, num_target or self.num_target
        key = (source, tuple(image_size), protocol, num_input, num_target)
        if key not in self._datasets:
            self._datasets[key] = SceneDataset(
                self.sources[source].root, num_input=num_input, num_target=num_target,
                image_size=tuple(image_size), with_depth=self.with_depth, input_protocol=protocol,
                with_velocity=self.with_velocity, cache_dir=self.cache_dir,
            )
        return self._datasets[key]

    def _protocols_of(self, source: int, index: int, ds: SceneDataset) -> tuple[str, ...]:
        key = (source, index)
        if key not in self._applicable:
            self._applicable[key] = scene_protocols(ds.meta(index))
        return self._applicable[key]

    def draw(self, seed: int, step: int, rank: int, slot: int, image_size: tuple[int, int],
             num_input: int | None = None, num_target: int | None = None) -> dict[str, torch.Tensor]:
        """One example: a source by weight, a scene uniformly, an input protocol by weight (SPEC §4
        input layouts; on rigs without canonical views their evaluation layout "surround_random"
        instead, elsewhere "random"), inputs and targets
        (`num_input` / `num_target` override the counts of uniform draws: view-count curriculum).

        A scene that cannot be read (a missing or corrupt file, a broken scene.json) is logged once,
        counted in `bad_scenes` / `bad_draws`, never drawn again, and another draw is made from the
        same random stream: one bad file never stops a run, and a resumed run draws the same."""
        rng = np.random.default_rng([seed, step, rank, slot])
        for _ in range(_MAX_REDRAWS):
            source = int(rng.choice(len(self.sources), p=self.probabilities))
            epoch = int(rng.integers(0, 2**62))
            index = int(rng.integers(0, len(self.dataset(source, image_size))))
            protocol = self.protocols[int(rng.choice(len(self.protocols), p=self.protocol_probabilities))]
            if (source, index) in self.bad:
                self.counters["bad_draws"] += 1
                continue
            try:
                if (source, index) not in self._checked:  # every file the scene lists exists (once)
                    load_scene(self.dataset(source, image_size).scene_dirs[index], check_files=True)
                    self._checked.add((source, index))
                return self._example(seed, source, index, epoch, protocol, image_size, num_input, num_target)
            except (SceneFormatError, OSError, ValueError) as err:
                self.bad[(source, index)] = str(err)
                self.counters["bad_scenes"] += 1
                self.counters["bad_draws"] += 1
                log.error("skipping unreadable training scene %s: %s", self.dataset(source, image_size).scene_dirs[index], err)
        raise RuntimeError(f"{_MAX_REDRAWS} draws in a row hit unreadable scenes ({len(self.bad)} known bad): check the data")

    def _example(self, seed: int, source: int, index: int, epoch: int, protocol: str, image_size: tuple[int, int],
                 num_input: int | None, num_target: int | None) -> dict[str, torch.Tensor]:
        uniform = self.dataset(source, image_size)
        meta = uniform.meta(index)
        applicable = self._protocols_of(source, index, uniform)
        if protocol == "random_orbit":  # protocol (d) of object rigs (surround rigs' "random" is another layout)
            usable = protocol_variant(meta) == "object" and "random" in applicable
        else:
            usable = protocol == "random" or protocol in applicable
        if not usable:
            # rigs without canonical views (driving, workspace): their evaluation layout, one random
            # camera per frame; other rigs: uniform draws
            protocol = "surround_random" if protocol_variant(meta) == "surround" else "random"
        ds = self.dataset(source, image_size, protocol, num_input, num_target)
        ds.seed = seed
        ds.set_epoch(epoch)  # the dataset seeds its own draws from (seed, epoch, index)
        return ds[index]
