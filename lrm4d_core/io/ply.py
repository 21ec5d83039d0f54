"""PLY export of 3D Gaussians: the 3D Gaussian Splatting file layout, and plain coloured points.

3DGS layout (what common splat viewers load; binary little-endian, one `vertex` element):
    x y z              centre (metres, the fixed frame)
    nx ny nz           zeros (the reference writer keeps them)
    f_dc_0 f_dc_1 f_dc_2   degree-0 SH coefficients: colour = 0.5 + SH_C0 * f_dc
    opacity            logit of the opacity
    scale_0 scale_1 scale_2   log of the standard deviations along the principal axes
    rot_0 rot_1 rot_2 rot_3   unit quaternion (w, x, y, z) of the principal axes
The coloured point cloud is a plain binary PLY (x y z float, red green blue uchar) written with
numpy, so any point-cloud tool reads it and writing it needs no viewer library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lrm4d_core.gaussians import SH_C0, Gaussians3D

__all__ = ["GAUSSIAN_PLY_FIELDS", "gaussian_ply_arrays", "write_gaussian_ply", "write_point_cloud"]

GAUSSIAN_PLY_FIELDS = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)


def gaussian_ply_arrays(g: Gaussians3D) -> np.ndarray:
    """[N, 17] float32 in GAUSSIAN_PLY_FIELDS order (activations inverted as 3DGS stores them)."""
    if g.means.ndim != 2:
        raise ValueError("need an unbatched Gaussians3D")
    scales, quats = g.scales_and_rotations()
    opacity = g.opacities.double().clamp(1e-6, 1 - 1e-6)
    cols = [
        g.means.double(),
        torch.zeros(len(g), 3, dtype=torch.float64),
        (g.colors.double() - 0.5) / SH_C0,
        (torch.log(opacity) - torch.log1p(-opacity))[:, None],
        torch.log(scales.double().clamp_min(1e-10)),
        quats.double(),
    ]
    return torch.cat([c.detach().cpu() for c in cols], dim=1).numpy().astype(np.float32)


def write_gaussian_ply(path: str | Path, g: Gaussians3D) -> Path:
    """Write `g` as a binary 3DGS PLY; returns the path."""
    path = Path(path)
    data = np.ascontiguousarray(gaussian_ply_arrays(g), dtype="<f4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {data.shape[0]}"]
    header += [f"property float {name}" for name in GAUSSIAN_PLY_FIELDS]
    header.append("end_header")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return path


def write_point_cloud(path: str | Path, g: Gaussians3D) -> Path:
    """Write the Gaussian centres with their colours as an ordinary coloured point cloud: binary
    little-endian PLY, `vertex` with float x y z and uchar red green blue (the layout PCL, Open3D,
    CloudCompare and MeshLab read). Written with numpy alone: no system library needed."""
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"coloured point clouds are written as .ply, got {path.name}")
    n = len(g)
    data = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    xyz = g.means.detach().cpu().double().numpy()
    rgb = np.round(g.colors.detach().cpu().double().clamp(0, 1).numpy() * 255).astype(np.uint8)
    for i, name in enumerate("xyz"):
        data[name] = xyz[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        data[name] = rgb[:, i]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}",
              "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return path
