"""Analytic ray casting against unit primitives (vectorised numpy, float64).

Every primitive lives in its own *local* frame as a unit shape:

=========  =====================================================  ==========================
kind       local shape                                            faces (``face`` ids)
=========  =====================================================  ==========================
sphere     ``|p| = 1``                                            0
box        ``[-1, 1]^3`` (half extents 1)                         0..5 = +x -x +y -y +z -z
cylinder   ``x^2 + y^2 <= 1``, ``-1 <= z <= 1``, capped           0 side, 1 top (+z), 2 bottom
plane      ``z = 0`` (infinite), normal ``+z``                    0
=========  =====================================================  ==========================

An object placed in the world with an affine map ``A`` (rotation, translation *and* anisotropic,
time-varying scale) is cast exactly: a world ray ``o + s d`` maps to the local ray
``A^-1 o + s (L^-1 d)`` with the **same** parameter ``s`` (``L`` the linear part of ``A``), because
affine maps preserve the ray parameter. Local directions are therefore not normalised, and the
``t`` returned by the functions below is the distance along the original unit world ray. World
normals are ``L^-T n_local`` (then normalised); the renderer does that.

Texture coordinates ``uv`` (``u`` to the right, ``v`` downwards as image rows, both in [0, 1] for
bounded shapes), chosen so that a photo appears upright (top towards local +z) and not mirrored
when seen from outside:

* sphere: ``u = 0.5 + atan2(y, x) / 2pi`` (longitude), ``v = acos(z) / pi`` (0 at the +z pole);
* box: per face, the two other axes mapped to [0, 1] (side faces: ``v = (1 - z) / 2``);
* cylinder: side ``u`` as the sphere's longitude, ``v = (1 - z) / 2``; caps ``((x+1)/2, (1-y)/2)``;
* plane: ``(x, y)`` unbounded (the material tiles it).

`metric_uv` converts those to metres on the scaled primitive, for textures that should tile at a
fixed physical size (building facades, roads).

Rays that miss get ``t = inf``; their normal/uv/face entries are meaningless (zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SPHERE",
    "BOX",
    "CYLINDER",
    "PLANE",
    "KINDS",
    "Hits",
    "intersect",
    "intersect_sphere",
    "intersect_box",
    "intersect_cylinder",
    "intersect_plane",
    "metric_uv",
    "local_bounds",
]

SPHERE, BOX, CYLINDER, PLANE = "sphere", "box", "cylinder", "plane"
KINDS = (SPHERE, BOX, CYLINDER, PLANE)

_TWO_PI = 2.0 * np.pi


@dataclass
class Hits:
    """Nearest intersection per ray (local frame)."""

    t: np.ndarray  # [N] ray parameter (world distance for a unit world ray); inf where missed
    normal: np.ndarray  # [N, 3] outward unit normal in the local frame
    uv: np.ndarray  # [N, 2] texture coordinates
    face: np.ndarray  # [N] int8 face id

    @property
    def hit(self) -> np.ndarray:
        return np.isfinite(self.t)


def _first_positive(t0: np.ndarray, t1: np.ndarray, t_min: float) -> np.ndarray:
    """Smallest of two candidates that exceeds t_min (inf if none); candidates may be nan/inf."""
    c0 = np.where(t0 > t_min, t0, np.inf)
    c1 = np.where(t1 > t_min, t1, np.inf)
    return np.minimum(c0, c1)


def _quadratic_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real roots of a t^2 + 2 b t + c = 0 (nan where none), numerically stable (no cancellation)."""
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = np.sqrt(disc)  # nan where disc < 0
        q = -(b + np.copysign(sq, b))
        r0 = q / a
        r1 = c / q
    lo = np.fmin(r0, r1)
    hi = np.fmax(r0, r1)
    bad = ~(disc >= 0)
    lo[bad] = np.nan
    hi[bad] = np.nan
    return lo, hi


def _longitude(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 0.5 + np.arctan2(y, x) / _TWO_PI


def intersect_sphere(o: np.ndarray, d: np.ndarray, t_min: float = 0.0) -> Hits:
    """Unit sphere at the origin. o, d: [N, 3] local rays (d need not be unit)."""
    a = np.einsum("ij,ij->i", d, d)
    b = np.einsum("ij,ij->i", o, d)
    c = np.einsum("ij,ij->i", o, o) - 1.0
    lo, hi = _quadratic_roots(a, b, c)
    t = _first_positive(lo, hi, t_min)
    hit = np.isfinite(t)
    n = np.zeros_like(o)
    uv = np.zeros((len(o), 2))
    if hit.any():
        p = o[hit] + t[hit, None] * d[hit]
        p /= np.linalg.norm(p, axis=-1, keepdims=True)
        n[hit] = p
        uv[hit, 0] = _longitude(p[:, 0], p[:, 1])
        uv[hit, 1] = np.arccos(np.clip(p[:, 2], -1.0, 1.0)) / np.pi
    return Hits(t, n, uv, np.zeros(len(o), np.int8))


# box face id -> (normal axis, sign, u axis, u sign, v axis, v sign): u = (1 + us * p[ua]) / 2, v likewise
_BOX_FACES = (
    (0, +1, 1, +1, 2, -1),  # +x: seen from +x, right is +y
    (0, -1, 1, -1, 2, -1),  # -x
    (1, +1, 0, -1, 2, -1),  # +y: seen from +y, right is -x
    (1, -1, 0, +1, 2, -1),  # -y
    (2, +1, 0, +1, 1, -1),  # +z (top)
    (2, -1, 0, +1, 1, +1),  # -z (bottom)
)
_BOX_U_AXIS = np.array([f[2] for f in _BOX_FACES])
_BOX_V_AXIS = np.array([f[4] for f in _BOX_FACES])


def intersect_box(o: np.ndarray, d: np.ndarray, t_min: float = 0.0) -> Hits:
    """Axis-aligned box [-1, 1]^3 by the slab method. Rays starting inside hit the exit face."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-1.0 - o) * inv
        t2 = (1.0 - o) * inv
    t_lo = np.fmin(t1, t2).max(axis=-1)
    t_hi = np.fmax(t1, t2).min(axis=-1)
    ok = (t_lo <= t_hi) & (t_hi > t_min)
    t = np.where(ok, np.where(t_lo > t_min, t_lo, t_hi), np.inf)
    hit = np.isfinite(t)
    n = np.zeros_like(o)
    uv = np.zeros((len(o), 2))
    face = np.zeros(len(o), np.int8)
    if hit.any():
        p = o[hit] + t[hit, None] * d[hit]
        axis = np.argmax(np.abs(p), axis=-1)
        rows = np.arange(len(p))
        sign = np.where(p[rows, axis] >= 0, 1.0, -1.0)
        f = (2 * axis + (sign < 0)).astype(np.int8)
        nn = np.zeros_like(p)
        nn[rows, axis] = sign
        n[hit] = nn
        face[hit] = f
        table = np.array([[fc[3], fc[5]] for fc in _BOX_FACES], dtype=float)
        pu = np.clip(p[rows, _BOX_U_AXIS[f]], -1.0, 1.0)
        pv = np.clip(p[rows, _BOX_V_AXIS[f]], -1.0, 1.0)
        uv[hit, 0] = 0.5 * (1.0 + table[f, 0] * pu)
        uv[hit, 1] = 0.5 * (1.0 + table[f, 1] * pv)
    return Hits(t, n, uv, face)


def intersect_cylinder(o: np.ndarray, d: np.ndarray, t_min: float = 0.0) -> Hits:
    """Capped cylinder of radius 1 around the z axis, z in [-1, 1]."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - 1.0
    lo, hi = _quadratic_roots(a, b, c)
    cands = []
    for r in (lo, hi):
        z = o[:, 2] + r * d[:, 2]
        cands.append(np.where((np.abs(z) <= 1.0) & (r > t_min), r, np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        for zc in (1.0, -1.0):
            r = (zc - o[:, 2]) / d[:, 2]
            x = o[:, 0] + r * d[:, 0]
            y = o[:, 1] + r * d[:, 1]
            cands.append(np.where((x * x + y * y <= 1.0) & (r > t_min), r, np.inf))
    stack = np.stack(cands)  # [4, N]: side, side, top cap, bottom cap
    which = np.argmin(stack, axis=0)
    t = stack[which, np.arange(len(o))]
    hit = np.isfinite(t)
    n = np.zeros_like(o)
    uv = np.zeros((len(o), 2))
    face = np.zeros(len(o), np.int8)
    if hit.any():
        p = o[hit] + t[hit, None] * d[hit]
        w = which[hit]
        side = w < 2
        f = np.where(side, 0, np.where(w == 2, 1, 2)).astype(np.int8)
        nn = np.zeros_like(p)
        rad = np.hypot(p[:, 0], p[:, 1])
        nn[side, 0] = p[side, 0] / rad[side]
        nn[side, 1] = p[side, 1] / rad[side]
        nn[~side, 2] = np.where(f[~side] == 1, 1.0, -1.0)
        u = np.where(side, _longitude(p[:, 0], p[:, 1]), 0.5 * (1.0 + np.clip(p[:, 0], -1, 1)))
        v = np.where(side, 0.5 * (1.0 - np.clip(p[:, 2], -1, 1)), 0.5 * (1.0 - np.clip(p[:, 1], -1, 1)))
        n[hit] = nn
        uv[hit, 0] = u
        uv[hit, 1] = v
        face[hit] = f
    return Hits(t, n, uv, face)


def intersect_plane(o: np.ndarray, d: np.ndarray, t_min: float = 0.0) -> Hits:
    """The plane z = 0, normal +z (the renderer flips normals to face the viewer)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = -o[:, 2] / d[:, 2]
    t = np.where(r > t_min, r, np.inf)
    hit = np.isfinite(t)
    n = np.zeros_like(o)
    n[:, 2] = 1.0
    uv = np.zeros((len(o), 2))
    if hit.any():
        uv[hit] = o[hit, :2] + t[hit, None] * d[hit, :2]
    return Hits(t, n, uv, np.zeros(len(o), np.int8))


_INTERSECT = {
    SPHERE: intersect_sphere,
    BOX: intersect_box,
    CYLINDER: intersect_cylinder,
    PLANE: intersect_plane,
}


def intersect(kind: str, o: np.ndarray, d: np.ndarray, t_min: float = 0.0) -> Hits:
    """Dispatch on the primitive kind (one of `KINDS`)."""
    try:
        fn = _INTERSECT[kind]
    except KeyError:
        raise ValueError(f"unknown primitive kind {kind!r}; expected one of {KINDS}") from None
    return fn(np.asarray(o, dtype=np.float64), np.asarray(d, dtype=np.float64), t_min)


def metric_uv(kind: str, uv: np.ndarray, face: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Texture coordinates in metres on a primitive scaled by ``size`` (its half extents/radii).

    Exact for boxes, cylinder caps/sides and planes; for spheres (longitude, latitude) scaled by
    the equatorial circumference and the meridian length of the largest radius.
    """
    size = np.asarray(size, dtype=np.float64)
    out = np.empty_like(uv)
    if kind == BOX:
        out[:, 0] = uv[:, 0] * 2.0 * size[_BOX_U_AXIS[face]]
        out[:, 1] = uv[:, 1] * 2.0 * size[_BOX_V_AXIS[face]]
    elif kind == CYLINDER:
        r = max(size[0], size[1])
        side = face == 0
        out[:, 0] = np.where(side, uv[:, 0] * _TWO_PI * r, uv[:, 0] * 2.0 * size[0])
        out[:, 1] = np.where(side, uv[:, 1] * 2.0 * size[2], uv[:, 1] * 2.0 * size[1])
    elif kind == SPHERE:
        r = float(size.max())
        out[:, 0] = uv[:, 0] * _TWO_PI * r
        out[:, 1] = uv[:, 1] * np.pi * r
    elif kind == PLANE:
        out[:, 0] = uv[:, 0] * size[0]
        out[:, 1] = uv[:, 1] * size[1]
    else:
        raise ValueError(f"unknown primitive kind {kind!r}")
    return out


def local_bounds(kind: str, linear: np.ndarray) -> tuple[np.ndarray, float]:
    """Half extents of the world AABB and the radius of a bounding sphere (about the local origin)
    of a unit primitive mapped by the 3x3 linear part ``linear``. Planes are unbounded (inf)."""
    if kind == PLANE:
        return np.full(3, np.inf), np.inf
    if kind == SPHERE:
        # an ellipsoid's AABB half extent along axis i is the norm of row i of L
        half = np.linalg.norm(linear, axis=1)
        return half, float(np.linalg.norm(linear, 2))
    # box and cylinder (the cylinder lies inside the box)
    half = np.abs(linear).sum(axis=1)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    radius = float(np.linalg.norm(corners @ linear.T, axis=1).max())
    return half, radius
