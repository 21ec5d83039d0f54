"""The moving part of a reconstruction: Gaussians above a speed, summarized for RViz and planners.

A sliced cloud (`Gaussians3D`, velocities implied by the 4D covariances, m/s in the fixed frame)
has tens of thousands of Gaussians; a planner or RViz wants a handful of arrows or objects:

* `moving(cloud, threshold)`: the Gaussians whose speed exceeds `threshold` (m/s) and whose
  opacity counts (>= `min_opacity`): what `~/gaussians/dynamic` publishes.
* `voxel_motion(cloud, voxel)`: their opacity-weighted mean position and velocity per occupied
  voxel of side `voxel` (metres), the `max_cells` heaviest: one arrow each on `~/motion_markers`.
* `moving_objects(cloud, voxel)`: those voxels grouped into objects: 26-connected voxels whose mean
  velocities differ by less than `velocity_tolerance` (a fraction of the faster one's speed, or
  0.2 m/s, whichever is larger) are one object; per object its opacity-weighted centre and
  velocity, the size of its voxels' bounding box, and its Gaussian count. Simple on purpose: it
  separates things that touch only if they move differently, and it splits one object whose
  parts move differently (a rolling ball's top and bottom do); docs/default_model.md says how
  well it matches the synthetic ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .gaussians import Gaussians3D

__all__ = ["MovingObject", "moving", "voxel_motion", "moving_objects"]


@dataclass(frozen=True)
class MovingObject:
    """One group of moving Gaussians (fixed frame, metres, m/s)."""

    center: np.ndarray  # [3] opacity-weighted mean position
    size: np.ndarray  # [3] extent of its voxels' axis-aligned bounding box
    velocity: np.ndarray  # [3] opacity-weighted mean velocity
    count: int  # Gaussians in it
    weight: float  # their summed opacity


def moving(cloud: Gaussians3D, threshold: float, min_opacity: float = 0.05) -> Gaussians3D:
    """The Gaussians faster than `threshold` (m/s) with opacity at least `min_opacity`."""
    speed = torch.linalg.norm(cloud.velocities, dim=-1)
    return cloud.select((speed > threshold) & (cloud.opacities >= min_opacity))


def _cells(cloud: Gaussians3D, voxel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Occupied voxels: (integer keys [M, 3], weighted centres [M, 3], weighted velocities [M, 3],
    summed opacity [M], Gaussian counts [M])."""
    xyz = cloud.means.detach().double().cpu().numpy()
    vel = cloud.velocities.detach().double().cpu().numpy()
    w = cloud.opacities.detach().double().cpu().numpy()
    if len(xyz) == 0:
        z = np.zeros((0, 3))
        return z.astype(np.int64), z, z, np.zeros(0), np.zeros(0, np.int64)
    keys = np.floor(xyz / voxel).astype(np.int64)
    uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    weight = np.bincount(inverse, weights=w, minlength=len(uniq))
    safe = np.maximum(weight, 1e-12)[:, None]
    centre = np.stack([np.bincount(inverse, weights=w * xyz[:, k], minlength=len(uniq)) for k in range(3)], -1) / safe
    velocity = np.stack([np.bincount(inverse, weights=w * vel[:, k], minlength=len(uniq)) for k in range(3)], -1) / safe
    return uniq, centre, velocity, weight, counts


def voxel_motion(cloud: Gaussians3D, voxel: float = 0.25, max_cells: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres [M, 3], velocities [M, 3], summed opacity [M]) of the `max_cells` heaviest voxels."""
    _, centre, velocity, weight, _ = _cells(cloud, voxel)
    order = np.argsort(-weight)[:max_cells]
    return centre[order], velocity[order], weight[order]


def moving_objects(cloud: Gaussians3D, voxel: float = 0.3, velocity_tolerance: float = 0.5,
                   min_gaussians: int = 5) -> list[MovingObject]:
    """Group moving Gaussians into objects (module docstring); heaviest first."""
    keys, centre, velocity, weight, counts = _cells(cloud, voxel)
    n = len(keys)
    if n == 0:
        return []
    index = {tuple(k): i for i, k in enumerate(keys)}
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    offsets = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) > (0, 0, 0)]
    speed = np.linalg.norm(velocity, axis=-1)
    for i, k in enumerate(keys):
        for d in offsets:
            j = index.get((k[0] + d[0], k[1] + d[1], k[2] + d[2]))
            if j is None:
                continue
            tol = max(velocity_tolerance * max(speed[i], speed[j]), 0.2)
            if np.linalg.norm(velocity[i] - velocity[j]) <= tol:
                parent[find(i)] = find(j)
    roots = np.array([find(i) for i in range(n)])
    out = []
    for r in np.unique(roots):
        m = roots == r
        if counts[m].sum() < min_gaussians:
            continue
        w = weight[m]
        lo = keys[m].min(0) * voxel
        hi = (keys[m].max(0) + 1) * voxel
        out.append(MovingObject(center=(centre[m] * w[:, None]).sum(0) / w.sum(), size=hi - lo,
                                velocity=(velocity[m] * w[:, None]).sum(0) / w.sum(), count=int(counts[m].sum()),
                                weight=float(w.sum())))
    return sorted(out, key=lambda o: -o.weight)
