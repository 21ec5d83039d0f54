"""Training examples drawn from weighted dataset roots as a pure function of (seed, step, rank, slot).

That purity is what makes resume exact and DDP ranks independent without any sampler state: the
example a process trains on at a step never depends on what ran before.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from lrm4d_core.data.dataset import SceneDataset
from lrm4d_core.eval.protocols import scene_protocols

from .config import DataSource

__all__ = ["ExampleSource"]


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
        input layouts; "random" where the scene's rig has no such views), inputs and targets
        (`num_input` / `num_target` override the counts of uniform draws: view-count curriculum)."""
        rng = np.random.default_rng([seed, step, rank, slot])
        source = int(rng.choice(len(self.sources), p=self.probabilities))
        epoch = int(rng.integers(0, 2**62))
        index = int(rng.integers(0, len(self.dataset(source, image_size))))
        protocol = self.protocols[int(rng.choice(len(self.protocols), p=self.protocol_probabilities))]
        if protocol != "random" and protocol not in self._protocols_of(source, index, self.dataset(source, image_size)):
            protocol = "random"
        ds = self.dataset(source, image_size, protocol, num_input, num_target)
        ds.seed = seed
        ds.set_epoch(epoch)  # the dataset seeds its own draws from (seed, epoch, index)
        return ds[index]
