"""Procedural dynamic scenes, rendered exactly by analytic ray casting.

Ground truth never goes through the model's Gaussian renderer: every pixel is the nearest exact
intersection of its pixel-centre ray with the scene's primitives (see `primitives`).

World convention (both rigs): right-handed, **z up**; lengths in scene units (object scenes: the
model box [-1, 1]^3; driving: metres). Cameras are OpenCV (x right, y down, z forward), poses
4x4 ``cam_to_world``, pixel centres at +0.5 (same as `lrm4d_core.cameras`). Time in seconds.

Scene graph. A `Scene` holds root `Node` s; each node has

* a rigid motion relative to its parent: ``position(t)`` (a curve: `Fixed`, cubic `Bezier`,
  `Lissajous`, or a road path) and ``rotation(t)`` (`FixedRotation`, `Spin`, `Swing`,
  `FaceAlong` a curve's tangent) -- children inherit it, which gives articulated chains (arms,
  legs, wheels): the *bending/articulation* case;
* optionally one primitive with its own non-inherited shape transform ``offset``,
  ``offset_rotation`` and ``size(t)`` (half extents or radii; `Pulse` makes it anisotropic and
  time-varying: squash and stretch, the *non-rigid* case).

A primitive's world map is ``A(t) = root_transform @ M_parent(t) @ T(position) @ R(rotation) @
T(offset) @ R_offset @ diag(size)``, an affine map, so casting it in its local frame is exact
(`primitives` explains why depth along the original ray is preserved).

Shading: Lambert + ambient + a small sky fill, one fixed sun per scene, optional hard shadows by
shadow rays, bilinear textures (photos and procedural patterns, `textures`). Misses show a plain
background colour (object scenes) or a sky gradient (driving). Optional distance haze.

`Scene.render(K, cam_to_world, width, height, t)` returns ``rgb`` uint8 [H, W, 3], ``depth``
float32 [H, W] (z-depth along the optical axis, OpenCV, ``inf`` where nothing is hit) and
``mask`` bool [H, W] (a surface is hit), and with ``with_velocity=True`` also ``velocity`` float32
[H, W, 3]: the world velocity of the surface point each pixel-centre ray hits (exact scene flow,
NaN where nothing is hit). With ``supersample=s`` the colour averages s x s
sub-pixel rays (anti-aliasing), while depth and mask stay those of the pixel-centre ray.

`random_object_scene(seed)` builds 1-3 animated objects (textured primitives on Bezier and
Lissajous paths with spin and squash-stretch, articulated arms, four-legged walkers, orbiting
moons) scaled and centred so that every primitive stays inside [-0.9, 0.9]^3 over the clip.
`random_driving_scene(seed)` lives in `driving`. Both are deterministic functions of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import primitives as P
from .textures import Solid, Texture, random_color, random_texture

__all__ = [
    "rotation_matrix",
    "Fixed",
    "Bezier",
    "Lissajous",
    "FixedRotation",
    "Spin",
    "Swing",
    "FaceAlong",
    "FixedScale",
    "Pulse",
    "Material",
    "Node",
    "Sky",
    "Scene",
    "SceneState",
    "random_object_scene",
    "random_driving_scene",
]

def _vec3(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(3)
    return a


def rotation_matrix(axis, angle: float) -> np.ndarray:
    """Rodrigues: rotation by ``angle`` (radians, right-handed) about ``axis``."""
    k = _vec3(axis)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * (kx @ kx)


# ----------------------------------------------------------------------------------------- motion
@dataclass(frozen=True)
class Fixed:
    """A constant position (or any constant 3-vector)."""

    value: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __call__(self, t: float) -> np.ndarray:
        return _vec3(self.value)


@dataclass(frozen=True)
class Bezier:
    """Cubic Bezier through 4 control points, traversed from t0 to t1 (clamped outside).

    The curve stays inside the convex hull of its control points, which makes bounding easy.
    """

    points: tuple  # 4 x 3
    t0: float = 0.0
    t1: float = 1.0

    def __call__(self, t: float) -> np.ndarray:
        p = np.asarray(self.points, dtype=np.float64)
        s = 0.0 if self.t1 == self.t0 else float(np.clip((t - self.t0) / (self.t1 - self.t0), 0.0, 1.0))
        w = np.array([(1 - s) ** 3, 3 * s * (1 - s) ** 2, 3 * s * s * (1 - s), s**3])
        return w @ p


@dataclass(frozen=True)
class Lissajous:
    """center + amplitude * sin(2 pi freq t + phase), per axis (freq in Hz)."""

    center: tuple = (0.0, 0.0, 0.0)
    amplitude: tuple = (0.0, 0.0, 0.0)
    freq: tuple = (0.0, 0.0, 0.0)
    phase: tuple = (0.0, 0.0, 0.0)

    def __call__(self, t: float) -> np.ndarray:
        return _vec3(self.center) + _vec3(self.amplitude) * np.sin(
            2 * np.pi * _vec3(self.freq) * t + _vec3(self.phase)
        )


@dataclass(frozen=True)
class FixedRotation:
    matrix: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __call__(self, t: float) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64)


@dataclass(frozen=True)
class Spin:
    """Constant angular velocity ``rate`` (rad/s) about ``axis``, after a fixed ``base`` rotation."""

    axis: tuple = (0.0, 0.0, 1.0)
    rate: float = 0.0
    angle0: float = 0.0
    base: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __call__(self, t: float) -> np.ndarray:
        return rotation_matrix(self.axis, self.angle0 + self.rate * t) @ np.asarray(self.base, dtype=np.float64)


@dataclass(frozen=True)
class Swing:
    """Oscillation about ``axis``: angle = offset + amplitude sin(2 pi freq t + phase) (a joint)."""

    axis: tuple = (0.0, 1.0, 0.0)
    amplitude: float = 0.0
    freq: float = 1.0
    phase: float = 0.0
    offset: float = 0.0
    base: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __call__(self, t: float) -> np.ndarray:
        angle = self.offset + self.amplitude * np.sin(2 * np.pi * self.freq * t + self.phase)
        return rotation_matrix(self.axis, angle) @ np.asarray(self.base, dtype=np.float64)


@dataclass(frozen=True)
class FaceAlong:
    """Yaw (about +z) that points local +x along the horizontal tangent of ``curve``."""

    curve: Callable[[float], np.ndarray]
    yaw_offset: float = 0.0
    dt: float = 1e-3

    def __call__(self, t: float) -> np.ndarray:
        v = self.curve(t + self.dt) - self.curve(t - self.dt)
        yaw = np.arctan2(v[1], v[0]) if np.hypot(v[0], v[1]) > 1e-12 else 0.0
        return rotation_matrix((0, 0, 1), yaw + self.yaw_offset)


@dataclass(frozen=True)
class FixedScale:
    size: tuple = (1.0, 1.0, 1.0)

    def __call__(self, t: float) -> np.ndarray:
        return _vec3(self.size)


@dataclass(frozen=True)
class Pulse:
    """Anisotropic, time-varying size: size * (1 + amplitude sin(2 pi freq t + phase)) per axis.

    With ``preserve_volume`` the z axis stretches by k = 1 + amplitude_z sin(...) while x and y
    shrink by 1/sqrt(k) (squash and stretch; the other amplitudes are ignored).
    """

    size: tuple = (1.0, 1.0, 1.0)
    amplitude: tuple = (0.0, 0.0, 0.0)
    freq: float = 1.0
    phase: float = 0.0
    preserve_volume: bool = False

    def __call__(self, t: float) -> np.ndarray:
        s = np.sin(2 * np.pi * self.freq * t + self.phase)
        base = _vec3(self.size)
        if self.preserve_volume:
            k = 1.0 + self.amplitude[2] * s
            return base * np.array([k**-0.5, k**-0.5, k])
        return base * (1.0 + _vec3(self.amplitude) * s)


# -------------------------------------------------------------------------------- scene graph
@dataclass(frozen=True)
class Material:
    """Surface appearance. ``tile`` (scene units per texture repeat) switches to metric uv."""

    texture: Texture = Solid((0.7, 0.7, 0.7))
    tint: tuple = (1.0, 1.0, 1.0)
    uv_scale: tuple = (1.0, 1.0)
    uv_offset: tuple = (0.0, 0.0)
    tile: float | None = None
    face_textures: tuple = ()  # ((face_id, Texture), ...) overrides, e.g. a building's roof

    def albedo(self, kind: str, uv: np.ndarray, face: np.ndarray, size: np.ndarray) -> np.ndarray:
        if self.tile is not None:
            uv = P.metric_uv(kind, uv, face, size) / self.tile
        else:
            uv = uv * np.asarray(self.uv_scale) + np.asarray(self.uv_offset)
        out = self.texture.sample(uv)
        for face_id, tex in self.face_textures:
            sel = face == face_id
            if sel.any():
                out[sel] = tex.sample(uv[sel])
        return out * np.asarray(self.tint, dtype=np.float64)


@dataclass(eq=False)
class Node:
    """One node of the scene graph (see the module docstring)."""

    name: str
    position: Callable[[float], np.ndarray] = Fixed()
    rotation: Callable[[float], np.ndarray] = FixedRotation()
    primitive: str | None = None
    size: Callable[[float], np.ndarray] = FixedScale()
    offset: tuple = (0.0, 0.0, 0.0)
    offset_rotation: tuple | None = None
    material: Material = Material()
    casts_shadow: bool = True
    children: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.primitive is not None and self.primitive not in P.KINDS:
            raise ValueError(f"node {self.name!r}: unknown primitive {self.primitive!r}; expected one of {P.KINDS}")
        if not callable(self.size):
            self.size = FixedScale(tuple(float(x) for x in self.size))
        if not callable(self.position):
            self.position = Fixed(tuple(float(x) for x in self.position))
        if not callable(self.rotation):
            self.rotation = FixedRotation(tuple(tuple(float(x) for x in row) for row in np.asarray(self.rotation)))

    def add(self, child: Node) -> Node:
        self.children.append(child)
        return child

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass(frozen=True)
class Sky:
    """Background gradient by ray elevation: horizon -> zenith above, ``below`` under the horizon."""

    zenith: tuple = (0.35, 0.55, 0.9)
    horizon: tuple = (0.8, 0.87, 0.95)
    below: tuple = (0.55, 0.6, 0.62)

    def color(self, d: np.ndarray) -> np.ndarray:
        z = d[:, 2:3]
        w = np.clip(z, 0.0, 1.0) ** 0.6
        up = (1 - w) * np.asarray(self.horizon) + w * np.asarray(self.zenith)
        return np.where(z >= 0, up, np.asarray(self.below))


@dataclass
class Primitive:
    """A primitive evaluated at one time: its world affine map and bounds."""

    name: str
    kind: str
    A: np.ndarray  # [4, 4] local -> world
    A_inv: np.ndarray  # [4, 4] world -> local
    size: np.ndarray  # [3]
    material: Material
    casts_shadow: bool
    center: np.ndarray  # [3] world
    radius: float  # bounding sphere radius (inf for planes)
    half: np.ndarray  # [3] AABB half extents (inf for planes)


@dataclass
class Group:
    """The primitives of one root node, with a bounding sphere for culling."""

    name: str
    prims: list  # indices into SceneState.prims
    center: np.ndarray
    radius: float


def _affine(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = trans
    return m


def _cull(o: np.ndarray, d: np.ndarray, center: np.ndarray, radius: float, limit: np.ndarray, t_min: float) -> np.ndarray:
    """Indices of unit rays o + s d that can meet the sphere (center, radius) with t_min < s < limit."""
    oc = o - center
    if oc.ndim == 1:
        b = d @ oc
        cc = float(oc @ oc) - radius * radius
    else:
        b = np.einsum("ij,ij->i", oc, d)
        cc = np.einsum("ij,ij->i", oc, oc) - radius * radius
    disc = b * b - cc
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0.0))
    ok &= (-b + sq > t_min) & (-b - sq < limit)
    return np.nonzero(ok)[0]


@dataclass
class TraceResult:
    t: np.ndarray  # [N]
    prim: np.ndarray  # [N] int, -1 for misses
    normal: np.ndarray  # [N, 3] local normals
    uv: np.ndarray  # [N, 2]
    face: np.ndarray  # [N]


class SceneState:
    """A scene frozen at one time: world-space primitives ready for ray casting."""

    def __init__(self, scene: Scene, t: float):
        self.scene = scene
        self.t = float(t)
        self.prims: list[Primitive] = []
        self.groups: list[Group] = []
        for root in scene.objects:
            first = len(self.prims)
            self._collect(root, scene.root_transform)
            idx = list(range(first, len(self.prims)))
            if not idx:
                continue
            finite = [i for i in idx if np.isfinite(self.prims[i].radius)]
            if len(finite) < len(idx):  # contains a plane: no culling
                self.groups.append(Group(root.name, idx, np.zeros(3), np.inf))
                continue
            lo = np.min([self.prims[i].center - self.prims[i].radius for i in idx], axis=0)
            hi = np.max([self.prims[i].center + self.prims[i].radius for i in idx], axis=0)
            c = 0.5 * (lo + hi)
            r = max(np.linalg.norm(self.prims[i].center - c) + self.prims[i].radius for i in idx)
            self.groups.append(Group(root.name, idx, c, float(r)))

    def _collect(self, node: Node, parent: np.ndarray) -> None:
        m = parent @ _affine(node.rotation(self.t), node.position(self.t))
        if node.primitive is not None:
            size = np.asarray(node.size(self.t), dtype=np.float64)
            if np.any(size <= 0):
                raise ValueError(f"node {node.name!r}: size must be positive at t={self.t}, got {size}")
            rot_off = np.eye(3) if node.offset_rotation is None else np.asarray(node.offset_rotation, dtype=np.float64)
            shape = _affine(rot_off, _vec3(node.offset))
            shape[:3, :3] = shape[:3, :3] * size[None, :]
            a = m @ shape
            a_inv = np.linalg.inv(a)
            half, radius = P.local_bounds(node.primitive, a[:3, :3])
            self.prims.append(
                Primitive(node.name, node.primitive, a, a_inv, size, node.material, node.casts_shadow, a[:3, 3].copy(), radius, half)
            )
        for child in node.children:
            self._collect(child, m)

    def group_boxes(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(root node name, AABB min [3], AABB max [3]) of every bounded root object (planes skipped)."""
        out = []
        for g in self.groups:
            bounded = [self.prims[i] for i in g.prims if np.isfinite(self.prims[i].radius)]
            if bounded:
                out.append((g.name, np.min([p.center - p.half for p in bounded], axis=0),
                            np.max([p.center + p.half for p in bounded], axis=0)))
        return out

    def moving_objects(self, min_speed: float = 0.05, step: float = 1e-3) -> list[dict]:
        """Root objects whose box centre moves faster than `min_speed` (scene units/s) at this time:
        name, box centre and size, and the centre's velocity (central difference over +-`step` s)."""
        before = dict((n, 0.5 * (lo + hi)) for n, lo, hi in self.scene.evaluate(self.t - step).group_boxes())
        after = dict((n, 0.5 * (lo + hi)) for n, lo, hi in self.scene.evaluate(self.t + step).group_boxes())
        out = []
        for name, lo, hi in self.group_boxes():
            if name not in before or name not in after:
                continue
            v = (after[name] - before[name]) / (2 * step)
            if np.linalg.norm(v) > min_speed:
                out.append({"name": name, "center": (0.5 * (lo + hi)).tolist(), "size": (hi - lo).tolist(), "velocity": v.tolist()})
        return out

    # ------------------------------------------------------------------------------ casting
    def trace(self, o: np.ndarray, d: np.ndarray, groups: Sequence[Group] | None = None, t_min: float = 0.0) -> TraceResult:
        """Nearest hit of unit rays o + s d (o: [3] shared or [N, 3]; d: [N, 3])."""
        n = len(d)
        best_t = np.full(n, np.inf)
        best_p = np.full(n, -1, dtype=np.int64)
        best_n = np.zeros((n, 3))
        best_uv = np.zeros((n, 2))
        best_f = np.zeros(n, dtype=np.int8)
        shared = o.ndim == 1
        for g in self.groups if groups is None else groups:
            if np.isfinite(g.radius):
                gidx = _cull(o, d, g.center, g.radius, best_t, t_min)
                if gidx.size == 0:
                    continue
            else:
                gidx = None
            for pi in g.prims:
                p = self.prims[pi]
                if gidx is None:
                    sub = np.arange(n)
                elif len(g.prims) == 1:
                    sub = gidx
                else:
                    osub = o if shared else o[gidx]
                    sub = gidx[_cull(osub, d[gidx], p.center, p.radius, best_t[gidx], t_min)]
                    if sub.size == 0:
                        continue
                lin, tr = p.A_inv[:3, :3], p.A_inv[:3, 3]
                if shared:
                    ol = np.broadcast_to(lin @ o + tr, (len(sub), 3))
                else:
                    ol = o[sub] @ lin.T + tr
                dl = d[sub] @ lin.T
                h = P.intersect(p.kind, ol, dl, t_min)
                closer = h.t < best_t[sub]
                if not closer.any():
                    continue
                s = sub[closer]
                best_t[s] = h.t[closer]
                best_p[s] = pi
                best_n[s] = h.normal[closer]
                best_uv[s] = h.uv[closer]
                best_f[s] = h.face[closer]
        return TraceResult(best_t, best_p, best_n, best_uv, best_f)

    def occluded(self, o: np.ndarray, d: np.ndarray, t_min: float = 0.0) -> np.ndarray:
        """Any-hit test for shadow rays (o: [N, 3], d: [3] shared unit direction); planes ignored."""
        n = len(o)
        blocked = np.zeros(n, dtype=bool)
        dd = np.broadcast_to(d, (n, 3))
        limit = np.full(n, np.inf)
        for g in self.groups:
            if not np.isfinite(g.radius):
                cand_prims = [i for i in g.prims if np.isfinite(self.prims[i].radius)]
                gidx = np.nonzero(~blocked)[0]
            else:
                cand_prims = g.prims
                open_ = np.nonzero(~blocked)[0]
                if open_.size == 0:
                    break
                gidx = open_[_cull(o[open_], dd[open_], g.center, g.radius, limit[open_], t_min)]
            if gidx.size == 0:
                continue
            for pi in cand_prims:
                p = self.prims[pi]
                if not p.casts_shadow:
                    continue
                gidx = gidx[~blocked[gidx]]
                if gidx.size == 0:
                    break
                sub = gidx[_cull(o[gidx], dd[gidx], p.center, p.radius, limit[gidx], t_min)]
                if sub.size == 0:
                    continue
                lin, tr = p.A_inv[:3, :3], p.A_inv[:3, 3]
                h = P.intersect(p.kind, o[sub] @ lin.T + tr, np.broadcast_to(lin @ d, (len(sub), 3)), t_min)
                blocked[sub[np.isfinite(h.t)]] = True
        return blocked

    # ------------------------------------------------------------------------------ shading
    def shade(self, o: np.ndarray, d: np.ndarray, tr: TraceResult) -> np.ndarray:
        sc = self.scene
        n = len(d)
        rgb = np.empty((n, 3))
        hit = tr.prim >= 0
        miss = ~hit
        if miss.any():
            rgb[miss] = sc.sky.color(d[miss]) if sc.sky is not None else np.asarray(sc.background, dtype=np.float64)
        if not hit.any():
            return rgb
        idx = np.nonzero(hit)[0]
        normal = np.empty((len(idx), 3))
        albedo = np.empty((len(idx), 3))
        pid = tr.prim[idx]
        for pi in np.unique(pid):
            sel = pid == pi
            rows = idx[sel]
            p = self.prims[pi]
            nw = tr.normal[rows] @ p.A_inv[:3, :3]  # (L^-T n)^T = n^T L^-1
            normal[sel] = nw
            albedo[sel] = p.material.albedo(p.kind, tr.uv[rows], tr.face[rows], p.size)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        dh = d[idx]
        facing = np.einsum("ij,ij->i", normal, dh) > 0
        normal[facing] *= -1
        sun = sc.sun_direction
        lam = np.clip(normal @ sun, 0.0, None)
        if sc.shadows:
            lit_idx = np.nonzero(lam > 0)[0]
            if lit_idx.size:
                th = tr.t[idx[lit_idx]]
                oh = (o if o.ndim == 1 else o[idx[lit_idx]]) + th[:, None] * dh[lit_idx]
                eps = 1e-5 * (1.0 + th) * sc.scale_hint
                oh = oh + normal[lit_idx] * eps[:, None]
                blocked = self.occluded(oh, sun, t_min=0.0)
                lam[lit_idx[blocked]] = 0.0
        light = sc.ambient + sc.sky_fill * (0.5 + 0.5 * normal[:, 2]) + sc.diffuse * lam
        col = albedo * light[:, None]
        if sc.haze_distance is not None:
            w = 1.0 - np.exp(-tr.t[idx] / sc.haze_distance)
            haze = np.asarray(sc.sky.horizon if sc.sky is not None else sc.background, dtype=np.float64)
            col = (1 - w[:, None]) * col + w[:, None] * haze
        rgb[idx] = col
        return rgb

    # ------------------------------------------------------------------------------ rendering
    def visible_groups(self, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> list[Group]:
        """Groups whose bounding sphere meets the camera frustum (conservative; skew disables it)."""
        if abs(K[0, 1]) > 1e-12:
            return list(self.groups)
        x0, x1 = (0 - K[0, 2]) / K[0, 0], (width - K[0, 2]) / K[0, 0]
        y0, y1 = (0 - K[1, 2]) / K[1, 1], (height - K[1, 2]) / K[1, 1]
        planes = np.array([[-1, 0, x0], [1, 0, -x1], [0, -1, y0], [0, 1, -y1], [0, 0, -1]], dtype=np.float64)
        planes /= np.linalg.norm(planes, axis=1, keepdims=True)  # outward normals; inside: n.c <= 0
        rot, pos = c2w[:3, :3], c2w[:3, 3]
        out = []
        for g in self.groups:
            if not np.isfinite(g.radius):
                out.append(g)
                continue
            c = rot.T @ (g.center - pos)
            if np.all(planes @ c <= g.radius):
                out.append(g)
        return out

    def surface_velocity(self, points: np.ndarray, prim: np.ndarray, step: float = 1e-3) -> np.ndarray:
        """World velocity [N, 3] (scene units per second) of surface points [N, 3] lying on the
        primitives ``prim`` [N] (-1: no surface, NaN velocity) at this state's time: each point is
        carried by its primitive's affine map, differentiated centrally over +-``step`` seconds.
        Why: exact scene flow for training and for checking the velocities the model implies."""
        if not hasattr(self, "_neighbours"):
            self._neighbours = (self.scene.evaluate(self.t - step), self.scene.evaluate(self.t + step), step)
        before, after, h = self._neighbours
        out = np.full((len(points), 3), np.nan)
        for pi in np.unique(prim[prim >= 0]):
            sel = prim == pi
            a_inv = self.prims[pi].A_inv
            local = points[sel] @ a_inv[:3, :3].T + a_inv[:3, 3]
            a0, a1 = before.prims[pi].A, after.prims[pi].A
            out[sel] = (local @ (a1[:3, :3] - a0[:3, :3]).T + (a1[:3, 3] - a0[:3, 3])) / (2 * h)
        return out

    def render(self, K, cam_to_world, width: int, height: int, supersample: int = 1, with_velocity: bool = False):
        K = np.asarray(K, dtype=np.float64)
        c2w = np.asarray(cam_to_world, dtype=np.float64)
        if K.shape != (3, 3) or c2w.shape != (4, 4):
            raise ValueError(f"K must be 3x3 and cam_to_world 4x4, got {K.shape} and {c2w.shape}")
        groups = self.visible_groups(K, c2w, width, height)
        o = c2w[:3, 3].copy()
        k_inv = np.linalg.inv(K)

        def rays(du: float, dv: float):
            v, u = np.meshgrid(np.arange(height) + dv, np.arange(width) + du, indexing="ij")
            pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
            d_cam = pix @ k_inv.T
            d = d_cam @ c2w[:3, :3].T
            norm = np.linalg.norm(d, axis=1, keepdims=True)
            return d / norm, d_cam[:, 2] / norm[:, 0]

        d, zf = rays(0.5, 0.5)
        tr = self.trace(o, d, groups)
        depth = (tr.t * zf).reshape(height, width).astype(np.float32)
        mask = (tr.prim >= 0).reshape(height, width)
        if supersample <= 1:
            color = self.shade(o, d, tr)
        else:
            color = np.zeros((width * height, 3))
            offs = (np.arange(supersample) + 0.5) / supersample
            for dv in offs:
                for du in offs:
                    ds, _ = rays(du, dv)
                    color += self.shade(o, ds, self.trace(o, ds, groups))
            color /= supersample * supersample
        rgb = np.round(np.clip(color, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(height, width, 3)
        if not with_velocity:
            return rgb, depth, mask
        points = o + np.where(np.isfinite(tr.t), tr.t, 0.0)[:, None] * d
        velocity = self.surface_velocity(points, tr.prim).reshape(height, width, 3).astype(np.float32)
        return rgb, depth, mask, velocity


class Scene:
    """A dynamic scene: root nodes, lighting, background; render at any time t (seconds)."""

    def __init__(
        self,
        objects: Sequence[Node],
        *,
        background=(1.0, 1.0, 1.0),
        sky: Sky | None = None,
        sun_direction=(0.4, -0.3, 0.85),
        ambient: float = 0.4,
        diffuse: float = 0.6,
        sky_fill: float = 0.1,
        shadows: bool = True,
        haze_distance: float | None = None,
        duration: float = 1.0,
        scale_hint: float = 1.0,
        root_transform: np.ndarray | None = None,
        info: dict | None = None,
    ):
        self.objects = list(objects)
        self.background = tuple(float(x) for x in background)
        self.sky = sky
        s = _vec3(sun_direction)
        self.sun_direction = s / np.linalg.norm(s)
        self.ambient = float(ambient)
        self.diffuse = float(diffuse)
        self.sky_fill = float(sky_fill)
        self.shadows = bool(shadows)
        self.haze_distance = haze_distance
        self.duration = float(duration)
        self.scale_hint = float(scale_hint)
        self.root_transform = np.eye(4) if root_transform is None else np.asarray(root_transform, dtype=np.float64)
        self.info = dict(info or {})

    def evaluate(self, t: float) -> SceneState:
        return SceneState(self, t)

    def render(self, K, cam_to_world, width: int, height: int, t: float, supersample: int = 1, with_velocity: bool = False):
        """(rgb uint8 [H, W, 3], depth float32 [H, W] z-depth with inf background, mask bool [H, W]),
        plus velocity float32 [H, W, 3] (world units/s of the surface seen, NaN where none) with
        ``with_velocity``."""
        return self.evaluate(t).render(K, cam_to_world, width, height, supersample, with_velocity)

    def bounds(self, times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """World AABB (lo, hi) of all bounded primitives over the given times."""
        lo = np.full(3, np.inf)
        hi = np.full(3, -np.inf)
        for t in times:
            for p in self.evaluate(t).prims:
                if np.isfinite(p.radius):
                    lo = np.minimum(lo, p.center - p.half)
                    hi = np.maximum(hi, p.center + p.half)
        return lo, hi

    def fit_to_box(self, times: Sequence[float], half_extent: float = 0.9) -> None:
        """Centre the scene's AABB over ``times`` at the origin and scale it uniformly so that its
        largest half extent is ``half_extent`` (composes with the current root transform)."""
        lo, hi = self.bounds(times)
        center = 0.5 * (lo + hi)
        scale = half_extent / float(np.max(0.5 * (hi - lo)))
        fit = np.eye(4)
        fit[:3, :3] *= scale
        fit[:3, 3] = -scale * center
        self.root_transform = fit @ self.root_transform
        self.info["fit_scale"] = scale


# ------------------------------------------------------------------------------- object scenes
def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _tup(a) -> tuple:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return tuple(float(x) for x in a)
    return tuple(_tup(r) for r in a)


def _dancer(rng: np.random.Generator, home: np.ndarray, duration: float) -> Node:
    """One textured primitive on a Bezier path, spinning, with squash and stretch."""
    kind = str(rng.choice([P.SPHERE, P.BOX, P.CYLINDER]))
    size = rng.uniform(0.2, 0.38) * rng.uniform(0.7, 1.3, size=3)
    amp = rng.uniform(0.05, 0.3, size=3)
    pulse = Pulse(_tup(size), _tup(amp), rng.uniform(0.5, 2.0) / duration, rng.uniform(0, 2 * np.pi), bool(rng.uniform() < 0.5))
    spin = Spin(_tup(_unit(rng)), rng.choice([-1, 1]) * rng.uniform(0.25, 1.0) * 2 * np.pi / duration, rng.uniform(0, 2 * np.pi))
    path = Bezier(_tup(home + rng.uniform(-0.35, 0.35, size=(4, 3))), 0.0, duration)
    return Node("dancer", path, spin, kind, pulse, material=Material(random_texture(rng)))


def _arm(rng: np.random.Generator, home: np.ndarray, duration: float) -> Node:
    """An articulated arm: a base disc and a chain of segments bending at swinging joints."""
    n_seg = int(rng.integers(2, 5))
    lengths = rng.uniform(0.16, 0.28, size=n_seg)
    width = rng.uniform(0.04, 0.07)
    base_mat = Material(random_texture(rng))
    seg_mat = Material(random_texture(rng))
    joint_mat = Material(Solid(random_color(rng)))
    base = Node(
        "arm_base",
        Fixed(_tup(home - np.array([0.0, 0.0, 0.45]))),
        Spin((0, 0, 1), rng.choice([-1, 1]) * rng.uniform(0.2, 0.7) * 2 * np.pi / duration),
        P.CYLINDER,
        (0.2, 0.2, 0.05),
        material=base_mat,
    )
    parent, z = base, 0.05
    for i, length in enumerate(lengths):
        a = rng.uniform(0, 2 * np.pi)
        axis = np.array([np.cos(a), np.sin(a), 0.0])
        joint = parent.add(
            Node(
                f"arm_joint{i}",
                Fixed((0.0, 0.0, z)),
                Swing(_tup(axis), rng.uniform(0.3, 0.9), rng.uniform(0.5, 1.5) / duration, rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)),
                P.SPHERE,
                (width * 1.3,) * 3,
                material=joint_mat,
            )
        )
        kind = str(rng.choice([P.BOX, P.CYLINDER]))
        joint.add(Node(f"arm_segment{i}", primitive=kind, size=(width, width, length / 2), offset=(0.0, 0.0, length / 2), material=seg_mat))
        parent, z = joint, float(length)
    parent.add(Node("arm_hand", Fixed((0.0, 0.0, z)), Spin((0, 0, 1), 3.0 / duration), P.BOX, (0.09, 0.05, 0.05), material=Material(random_texture(rng))))
    return base


def _walker(rng: np.random.Generator, home: np.ndarray, duration: float) -> Node:
    """A four-legged creature walking along a curve, facing its direction of motion."""
    path = Lissajous(
        _tup(home),
        _tup([rng.uniform(0.15, 0.35), rng.uniform(0.15, 0.35), 0.03]),
        _tup(np.array([1.0, 1.0, 2.0]) * rng.uniform(0.4, 0.8) / duration),
        _tup([0.0, np.pi / 2 * rng.choice([-1, 1]), 0.0]),
    )
    skin = Material(random_texture(rng))
    body = Node("walker_body", path, FaceAlong(path), P.SPHERE, (0.24, 0.13, 0.12), material=skin)
    stride = rng.uniform(2.0, 4.0) / duration
    body.add(
        Node(
            "walker_head",
            Fixed((0.25, 0.0, 0.1)),
            Swing((0, 0, 1), 0.4, stride / 2, 0.0),
            P.SPHERE,
            (0.09, 0.08, 0.08),
            material=Material(random_texture(rng)),
        )
    )
    leg_mat = Material(Solid(random_color(rng)))
    for i, (x, y) in enumerate([(0.14, 0.08), (0.14, -0.08), (-0.14, 0.08), (-0.14, -0.08)]):
        phase = 0.0 if (i in (0, 3)) else np.pi
        leg = body.add(Node(f"walker_hip{i}", Fixed((x, y, -0.04)), Swing((0, 1, 0), 0.5, stride, phase)))
        leg.add(Node(f"walker_leg{i}", primitive=P.CYLINDER, size=(0.035, 0.035, 0.1), offset=(0.0, 0.0, -0.1), material=leg_mat))
    body.add(Node("walker_tail", Fixed((-0.24, 0.0, 0.05)), Swing((0, 0, 1), 0.6, stride, 0.0), P.BOX, (0.04, 0.015, 0.015), offset=(-0.04, 0, 0), material=leg_mat))
    return body


def _orbiter(rng: np.random.Generator, home: np.ndarray, duration: float) -> Node:
    """A spinning planet with moons on inclined circular orbits."""
    root = Node("orbiter", Fixed(_tup(home)))
    r = rng.uniform(0.18, 0.3)
    root.add(Node("planet", rotation=Spin((0, 0, 1), rng.uniform(0.3, 1.0) * 2 * np.pi / duration), primitive=P.SPHERE, size=(r, r, r), material=Material(random_texture(rng, photo_prob=0.85))))
    for i in range(int(rng.integers(1, 4))):
        radius = r + rng.uniform(0.12, 0.3)
        f = rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) / duration
        ph = rng.uniform(0, 2 * np.pi)
        orbit = Lissajous((0, 0, 0), (radius, radius, rng.uniform(0, 0.15)), (f, f, f), (ph, ph + np.pi / 2, ph))
        m = rng.uniform(0.05, 0.09)
        kind = str(rng.choice([P.SPHERE, P.BOX]))
        root.add(Node(f"moon{i}", orbit, Spin(_tup(_unit(rng)), 4.0 / duration), kind, (m, m, m), material=Material(random_texture(rng))))
    return root


_OBJECT_BUILDERS = {"dancer": _dancer, "arm": _arm, "walker": _walker, "orbiter": _orbiter}


def random_object_scene(
    seed: int | np.random.SeedSequence,
    duration: float = 2.0,
    *,
    background=(1.0, 1.0, 1.0),
    num_objects: int | None = None,
    kinds: Sequence[str] | None = None,
    shadows: bool = True,
    fit_samples: int = 49,
) -> Scene:
    """A random object-centric dynamic scene inside the model box (deterministic by ``seed``).

    1-3 objects (probabilities 0.5/0.35/0.15; `kinds` from dancer, arm, walker, orbiter) placed
    around the origin; afterwards the scene is centred and uniformly scaled so that its AABB over
    [0, duration] (sampled at ``fit_samples`` times) has half extent 0.9: it stays inside [-1, 1]^3.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])) if num_objects is None else int(num_objects)
    names = list(_OBJECT_BUILDERS) if kinds is None else list(kinds)
    for k in names:
        if k not in _OBJECT_BUILDERS:
            raise ValueError(f"unknown object kind {k!r}; expected some of {list(_OBJECT_BUILDERS)}")
    chosen = [str(rng.choice(names)) for _ in range(n)]
    angle0 = rng.uniform(0, 2 * np.pi)
    objects = []
    for i, kind in enumerate(chosen):
        if n == 1:
            home = np.zeros(3)
        else:
            a = angle0 + 2 * np.pi * i / n
            home = np.array([0.55 * np.cos(a), 0.55 * np.sin(a), rng.uniform(-0.15, 0.15)])
        objects.append(_OBJECT_BUILDERS[kind](rng, home, duration))
    el = np.deg2rad(rng.uniform(30, 70))
    az = rng.uniform(0, 2 * np.pi)
    sun = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
    scene = Scene(
        objects,
        background=background,
        sun_direction=sun,
        shadows=shadows,
        duration=duration,
        info={"kind": "object", "objects": chosen},
    )
    scene.fit_to_box(np.linspace(0.0, duration, fit_samples), 0.9)
    return scene


def random_driving_scene(seed: int | np.random.SeedSequence, duration: float = 2.3, **kwargs):
    """See `lrm4d_core.data.driving.random_driving_scene`."""
    from .driving import random_driving_scene as build

    return build(seed, duration, **kwargs)
