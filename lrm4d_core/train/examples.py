"""Training examples drawn from weighted dataset roots as a pure function of (seed, step, rank, slot).

That purity is what makes resume exact and DDP ranks independent without any sampler state: the
example a process trains on at a step never depends on what ran before.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lrm4d_core.data.dataset import SceneDataset

from .config import DataSource

__all__ = ["ExampleSource"]


class ExampleSource:
    """Mixes several scene roots by weight (e.g. object and driving rigs, SPEC §3's data mix)."""

    def __init__(self, sources: Sequence[DataSource], num_input: int, num_target: int) -> None:
        if not sources:
            raise ValueError("no data sources")
        self.sources = list(sources)
        self.num_input = num_input
        self.num_target = num_target
        weights = np.array([s.weight for s in sources], dtype=np.float64)
        if (weights <= 0).any():
            raise ValueError(f"data weights must be positive, got {weights.tolist()}")
        self.probabilities = weights / weights.sum()
        self._datasets: dict[tuple[int, tuple[int, int]], SceneDataset] = {}

    def dataset(self, source: int, image_size: tuple[int, int]) -> SceneDataset:
        key = (source, tuple(image_size))
        if key not in self._datasets:
            self._datasets[key] = SceneDataset(
                self.sources[source].root, num_input=self.num_input, num_target=self.num_target,
                image_size=tuple(image_size),
            )
        return self._datasets[key]

    def draw(self, seed: int, step: int, rank: int, slot: int, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """One example: a source by weight, a scene uniformly, input and target view-times independently."""
        rng = np.random.default_rng([seed, step, rank, slot])
        source = int(rng.choice(len(self.sources), p=self.probabilities))
        ds = self.dataset(source, image_size)
        ds.seed = seed
        ds.set_epoch(int(rng.integers(0, 2**62)))  # the dataset seeds its own draws from (seed, epoch, index)
        return ds[int(rng.integers(0, len(ds)))]
