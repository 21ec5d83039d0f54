"""Plausibility checks for what enters lrm4d from outside: camera poses, intrinsics, image sizes.

Every entry point (the live node's and the replay's frame assembly, the inference server) rejects
the same things with the same words, where they enter, so that nothing absurd reaches the model:
a pose with 1e300 in it or an all-zero matrix, a focal length of 1e-300 px, an image header that
claims a billion pixels. Each check raises `ImplausibleInput` (a ValueError) with one line saying
what was wrong.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ImplausibleInput", "MAX_TRANSLATION_M", "FOCAL_RANGE", "check_pose", "check_intrinsics", "check_pixels"]

MAX_TRANSLATION_M = 1e6
"""Camera positions farther than this from the frame's origin (1000 km) are broken poses, not places."""

FOCAL_RANGE = (0.01, 1000.0)
"""Accepted focal lengths, in multiples of the longer image side: fields of view from about 180
down to 0.06 degrees. Anything outside is a broken calibration, not a lens."""


class ImplausibleInput(ValueError):
    """A pose, intrinsics or image size that cannot be right."""


def check_pose(cam_to_world: np.ndarray, what: str = "camera pose") -> None:
    """A 4x4 rigid transform: finite, [0, 0, 0, 1] last row, a rotation (orthonormal, det +1), and
    a translation within MAX_TRANSLATION_M."""
    m = np.asarray(cam_to_world, dtype=np.float64)
    if m.shape != (4, 4):
        raise ImplausibleInput(f"{what}: expected a 4x4 matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ImplausibleInput(f"{what}: non-finite values")
    if np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-6:
        raise ImplausibleInput(f"{what}: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    r = m[:3, :3]
    if np.abs(r @ r.T - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        raise ImplausibleInput(f"{what}: the upper-left 3x3 is not a rotation (orthonormal, determinant +1)")
    if np.abs(m[:3, 3]).max() > MAX_TRANSLATION_M:
        raise ImplausibleInput(f"{what}: translation {m[:3, 3].tolist()} is beyond {MAX_TRANSLATION_M:g} m")


def check_intrinsics(K: np.ndarray, width: int, height: int, what: str = "intrinsics") -> None:
    """Pinhole K for a width x height image: finite, [0, 0, 1] last row, focal lengths within
    FOCAL_RANGE of the longer side, principal point within a band around the image."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ImplausibleInput(f"{what}: K must be a finite 3x3 matrix")
    if np.abs(K[2] - [0.0, 0.0, 1.0]).max() > 1e-6 or abs(K[1, 0]) > 1e-9:
        raise ImplausibleInput(f"{what}: K must be upper triangular with last row [0, 0, 1], got {K.tolist()}")
    side = max(int(width), int(height))
    lo, hi = FOCAL_RANGE[0] * side, FOCAL_RANGE[1] * side
    if not (lo <= K[0, 0] <= hi and lo <= K[1, 1] <= hi):
        raise ImplausibleInput(f"{what}: focal lengths fx={K[0, 0]:.6g}, fy={K[1, 1]:.6g} px are absurd for a "
                               f"{width}x{height} image (accepted: {FOCAL_RANGE[0]:g} to {FOCAL_RANGE[1]:g} x {side} px)")
    if not (-width <= K[0, 2] <= 2 * width and -height <= K[1, 2] <= 2 * height):
        raise ImplausibleInput(f"{what}: principal point ({K[0, 2]:.6g}, {K[1, 2]:.6g}) lies far outside the {width}x{height} image")


def check_pixels(width: int, height: int, max_pixels: int | None, what: str = "image", setting: str = "max_image_pixels") -> None:
    """An image of width x height must be non-empty and within `max_pixels` (None: no limit)."""
    if width <= 0 or height <= 0:
        raise ImplausibleInput(f"{what} is empty ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImplausibleInput(f"{what} is {width}x{height} = {width * height / 1e6:.1f} MP, above the limit of "
                               f"{max_pixels / 1e6:.1f} MP ({setting})")
