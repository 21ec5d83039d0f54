"""Camera batches in the OpenCV convention, rays, Plücker coordinates and scene normalization.

Conventions (DESIGN.md): x right, y down, z forward; `cam_to_world` is a 4x4 rigid transform from
the camera's optical frame to the fixed frame. Pixel (u, v) covers [u, u+1) x [v, v+1); its centre
is at (u + 0.5, v + 0.5), the same as gsplat. Intrinsics `K` map camera coordinates to those pixel
coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Cameras", "SceneNormalization", "TimeNormalization", "pixel_rays", "project_points", "in_image", "plucker"]


@dataclass(frozen=True)
class Cameras:
    """A batch of C pinhole cameras sharing one image size.

    Attributes:
        K: [C, 3, 3] intrinsics in pixels.
        cam_to_world: [C, 4, 4] rigid camera-to-world transforms.
        width, height: image size in pixels.
    """

    K: Tensor
    cam_to_world: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.K.ndim != 3 or self.K.shape[-2:] != (3, 3):
            raise ValueError(f"K must be [C, 3, 3], got {tuple(self.K.shape)}")
        if self.cam_to_world.shape != (self.K.shape[0], 4, 4):
            raise ValueError(
                f"cam_to_world must be [{self.K.shape[0]}, 4, 4], got {tuple(self.cam_to_world.shape)}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.K.shape[0]

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def world_to_cam(self) -> Tensor:
        """[C, 4, 4] view matrices (gsplat's `viewmats`), inverted in closed form for rigid poses."""
        rot = self.cam_to_world[:, :3, :3]
        trans = self.cam_to_world[:, :3, 3:]
        out = torch.zeros_like(self.cam_to_world)
        out[:, :3, :3] = rot.transpose(-1, -2)
        out[:, :3, 3:] = -rot.transpose(-1, -2) @ trans
        out[:, 3, 3] = 1.0
        return out

    @property
    def centers(self) -> Tensor:
        """[C, 3] camera centres in the world frame."""
        return self.cam_to_world[:, :3, 3]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        return Cameras(
            self.K.to(device=device, dtype=dtype),
            self.cam_to_world.to(device=device, dtype=dtype),
            self.width,
            self.height,
        )

    def __getitem__(self, index: int | slice | Tensor) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Cameras(self.K[index], self.cam_to_world[index], self.width, self.height)

    def resized(self, width: int, height: int) -> Cameras:
        """Same cameras for an image resized to width x height (the whole image, no crop).

        With pixel centres at +0.5, a resize by (sx, sy) maps u + 0.5 to sx (u + 0.5), so the
        principal point and focal lengths both scale; no half-pixel correction is needed.
        """
        sx = width / self.width
        sy = height / self.height
        scale = torch.tensor([sx, sy, 1.0], dtype=self.K.dtype, device=self.K.device)
        return Cameras(self.K * scale[:, None], self.cam_to_world, width, height)

    @staticmethod
    def cat(cameras: list[Cameras]) -> Cameras:
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate cameras of different image sizes: {sorted(sizes)}")
        width, height = sizes.pop()
        return Cameras(
            torch.cat([c.K for c in cameras]),
            torch.cat([c.cam_to_world for c in cameras]),
            width,
            height,
        )


def pixel_rays(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """World-space rays through every pixel centre.

    Returns:
        origins: [C, H, W, 3] camera centres broadcast to every pixel.
        directions: [C, H, W, 3] unit directions, row-major pixels (v then u).
    """
    dtype, device = cameras.K.dtype, cameras.K.device
    v, u = torch.meshgrid(
        torch.arange(cameras.height, dtype=dtype, device=device) + 0.5,
        torch.arange(cameras.width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    fx = cameras.K[:, 0, 0, None, None]
    fy = cameras.K[:, 1, 1, None, None]
    cx = cameras.K[:, 0, 2, None, None]
    cy = cameras.K[:, 1, 2, None, None]
    skew = cameras.K[:, 0, 1, None, None]
    y_cam = (v - cy) / fy
    x_cam = (u - cx - skew * y_cam) / fx
    d_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)  # [C, H, W, 3]
    rot = cameras.cam_to_world[:, None, None, :3, :3]
    d_world = (rot @ d_cam[..., None])[..., 0]
    d_world = d_world / torch.linalg.norm(d_world, dim=-1, keepdim=True)
    origins = cameras.centers[:, None, None, :].expand_as(d_world)
    return origins, d_world


def project_points(points: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """The inverse of `pixel_rays`: world points [C, N, 3], row c seen by camera c, -> pixel
    coordinates [C, N, 2] (pixel centres at +0.5) and camera z [C, N] (points behind a camera get
    z <= 0 and meaningless coordinates: callers test z).

    Computed as three rows of K [R | t] (in float64, then the points' dtype) applied coordinate by
    coordinate: a matrix product with an inner dimension of 3 is several times slower on a CPU,
    and the stereo and the carving project every pixel into every partner (bench/pipeline.py)."""
    w2c = cameras.world_to_cam
    rows = torch.cat([cameras.K[:, :2].to(w2c) @ w2c[:, :3], w2c[:, 2:3]], 1).to(points)  # [C, 3, 4]: u w, v w, z
    u, v, z = apply_rows(rows, points)
    return torch.stack([u, v], -1) / z.clamp_min(1e-6)[..., None], z


def apply_rows(rows: Tensor, points: Tensor) -> list[Tensor]:
    """Each row of `rows` [C, R, 3] (linear) or [C, R, 4] (affine: the last column an offset) applied
    to points [C or 1, N, 3] -> R tensors [C, N]. Computed coordinate by coordinate: on a CPU a
    matrix product with an inner dimension of 3, and a [..., 3] result, cost several times as much."""
    x, y, z = points.unbind(-1)
    out = [rows[:, r, 0, None] * x + rows[:, r, 1, None] * y + rows[:, r, 2, None] * z for r in range(rows.shape[1])]
    return out if rows.shape[2] == 3 else [o + rows[:, r, 3, None] for r, o in enumerate(out)]


def in_image(uv: Tensor, z: Tensor, width: int, height: int) -> Tensor:
    """Which points `project_points` returned (pixel coordinates uv [..., 2], camera z [...]) fall
    inside a width x height image and in front of the camera: [...] bool."""
    return (uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0) & (uv[..., 1] < height) & (z > 0)


def plucker(origins: Tensor, directions: Tensor) -> Tensor:
    """SPEC §2 ray embedding: [d, o - <o, d> d] (unit direction, point on the ray nearest the origin).

    Args:
        origins, directions: [..., 3], directions of unit length.
    Returns:
        [..., 6]
    """
    nearest = origins - (origins * directions).sum(-1, keepdim=True) * directions
    return torch.cat([directions, nearest], dim=-1)


@dataclass(frozen=True)
class SceneNormalization:
    """Similarity between the fixed frame (metres) and the model box: x_model = (x_world - center) / scale.

    The model is trained on scenes inside [-1, 1]^3, so the pipeline picks `center` and `scale` per
    window and maps cameras in and Gaussians back out.
    """

    center: Tensor  # [3]
    scale: float

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    def points_to_model(self, points: Tensor) -> Tensor:
        return (points - self.center.to(points)) / self.scale

    def height_to_model(self, z: float) -> float:
        """A world height (z, e.g. the ground's) in the model box: the z of `points_to_model`."""
        return (float(z) - float(self.center[2])) / float(self.scale)

    def points_to_world(self, points: Tensor) -> Tensor:
        return points * self.scale + self.center.to(points)

    def cameras_to_model(self, cameras: Cameras) -> Cameras:
        c2w = cameras.cam_to_world.clone()
        c2w[:, :3, 3] = self.points_to_model(c2w[:, :3, 3])
        return Cameras(cameras.K, c2w, cameras.width, cameras.height)

    def cameras_to_world(self, cameras: Cameras) -> Cameras:
        c2w = cameras.cam_to_world.clone()
        c2w[:, :3, 3] = self.points_to_world(c2w[:, :3, 3])
        return Cameras(cameras.K, c2w, cameras.width, cameras.height)


@dataclass(frozen=True)
class TimeNormalization:
    """Affine map between core time (seconds, relative to the window end) and model time in [-1, 1]:
    t_model = (t - center) / half_span."""

    center: float
    half_span: float

    def __post_init__(self) -> None:
        if not self.half_span > 0:
            raise ValueError(f"half_span must be positive, got {self.half_span}")

    @staticmethod
    def spanning(t_start: float, t_end: float) -> TimeNormalization:
        """The map that sends [t_start, t_end] to [-1, 1]; a zero-length window maps to 0."""
        half = 0.5 * (t_end - t_start)
        return TimeNormalization(0.5 * (t_start + t_end), half if half > 0 else 1.0)

    def to_model(self, t: Tensor | float) -> Tensor | float:
        return (t - self.center) / self.half_span

    def to_world(self, t: Tensor | float) -> Tensor | float:
        return t * self.half_span + self.center
