"""Procedural workspace scenes: a floor area watched by static cameras, where robots live.

World: z up, metres, the floor is the plane z = 0 and the area of interest is centred at the
origin. Three variants (drawn per scene):

* ``cell``: an indoor robot cell: concrete floor with 1 m grooves and a yellow/black safety
  boundary, walls with panels and posters, shelves and crates along them, a robot arm that moves
  in place, a dim ceiling-grey "sky";
* ``yard``: gravel and a paved pad, fence panels and buildings beyond, sky;
* ``crossing``: asphalt with a zebra crossing and lane lines, kerbs, buildings, sky.

Movers (1-4 per scene, their paths kept inside |x|, |y| < 2.0 m over the clip):

* ``roll``: a textured ball rolling in a straight line without slipping (spin axis z x v, rate
  |v| / r), 0.5-2.0 m/s;
* ``bounce``: a ball bouncing along a line (height |sin|, 0.8-2 bounces per second);
* ``robot``: a mobile base driving on a circle and turning with it (body, wheels, a spinning
  sensor head), 0.3-1.2 m/s;
* ``walker``: a pedestrian (`driving.pedestrian`) walking a straight or curved path, 0.9-1.6 m/s.

`random_workspace_scene(seed)` is deterministic by ``seed``; `rigs.workspace_rig` places the
cameras. The scene's ``info`` lists the variant and the movers with their nominal speeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import primitives as P
from .driving import Road, RoadPath, pedestrian
from .scenes import FaceAlong, Material, Node, Scene, Sky, Spin, _arm, rotation_matrix
from .textures import Checker, Facade, Solid, Stripes, Texture, photo_texture, random_color, random_texture, PHOTOS

__all__ = ["Linear", "Bounce", "Circle", "FloorTexture", "WORKSPACE_VARIANTS", "MOVER_KINDS", "AREA_HALF", "random_workspace_scene"]

WORKSPACE_VARIANTS = ("cell", "yard", "crossing")
MOVER_KINDS = ("roll", "bounce", "robot", "walker")
AREA_HALF = 2.0
"""Movers stay inside |x|, |y| < AREA_HALF metres over the clip."""


@dataclass(frozen=True)
class Linear:
    """start + velocity * t (a constant-velocity path)."""

    start: tuple
    velocity: tuple

    def __call__(self, t: float) -> np.ndarray:
        return np.asarray(self.start, dtype=np.float64) + np.asarray(self.velocity, dtype=np.float64) * t


@dataclass(frozen=True)
class Bounce:
    """Horizontal constant velocity; height base + height * |sin(pi * freq * t + phase)|."""

    start: tuple
    velocity: tuple  # (vx, vy)
    base: float
    height: float
    freq: float  # bounces per second
    phase: float = 0.0

    def __call__(self, t: float) -> np.ndarray:
        x = self.start[0] + self.velocity[0] * t
        y = self.start[1] + self.velocity[1] * t
        return np.array([x, y, self.base + self.height * abs(np.sin(np.pi * self.freq * t + self.phase))])


@dataclass(frozen=True)
class Circle:
    """centre + radius (cos(rate t + phase), sin(rate t + phase)) at height z (rate in rad/s)."""

    center: tuple
    radius: float
    rate: float
    phase: float
    z: float

    def __call__(self, t: float) -> np.ndarray:
        a = self.rate * t + self.phase
        return np.array([self.center[0] + self.radius * np.cos(a), self.center[1] + self.radius * np.sin(a), self.z])


class FloorTexture(Texture):
    """Floor colour from world xy: a base texture, grooves, and painted markings of the variant."""

    def __init__(self, variant: str, base: Texture, pad: Texture | None, half: float, groove: float, rng: np.random.Generator):
        self.variant, self.base, self.pad, self.half, self.groove = variant, base, pad, half, groove
        self.zebra_axis = int(rng.integers(2))
        self.paint = np.array(random_color(rng, 0.6, 0.95)) if variant == "cell" else np.array([0.92, 0.92, 0.9])

    def sample(self, uv: np.ndarray) -> np.ndarray:
        x, y = uv[:, 0], uv[:, 1]
        out = self.base.sample(uv / 2.0)
        if self.groove > 0:
            grooves = (np.mod(x, self.groove) < 0.03) | (np.mod(y, self.groove) < 0.03)
            out[grooves] *= 0.75
        a, b = np.abs(x), np.abs(y)
        if self.variant == "cell":  # a yellow/black hatched boundary band around the area
            band = (np.maximum(a, b) > self.half) & (np.maximum(a, b) < self.half + 0.25)
            hatch = np.mod(x + y, 0.5) < 0.25
            out[band & hatch] = (0.95, 0.8, 0.1)
            out[band & ~hatch] = (0.08, 0.08, 0.08)
        elif self.variant == "yard" and self.pad is not None:
            pad = np.maximum(a, b) < self.half
            out[pad] = self.pad.sample(uv[pad] / 1.5)
        else:  # crossing: zebra stripes across the road and a dashed centre line
            along, across = (x, y) if self.zebra_axis == 0 else (y, x)
            road = np.abs(across) < 3.5
            out[~road] = out[~road] * 0.6 + 0.35
            zebra = road & (np.abs(along) < 1.5) & (np.mod(across, 0.9) < 0.45)
            out[zebra] = self.paint
            centre = road & (np.abs(across) < 0.06) & (np.mod(along, 3.0) < 1.5) & (np.abs(along) > 1.6)
            out[centre] = self.paint
            kerb = (np.abs(across) >= 3.5) & (np.abs(across) < 3.7)
            out[kerb] = (0.75, 0.75, 0.72)
        return out


def _straight(rng: np.random.Generator, speed: float, duration: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """A start point and a horizontal velocity whose path stays inside the area over the clip."""
    heading = rng.uniform(0, 2 * np.pi)
    v = speed * np.array([np.cos(heading), np.sin(heading)])
    travel = v * duration
    room = AREA_HALF - margin - np.abs(travel) / 2
    centre = np.array([rng.uniform(-max(room[0], 0.0), max(room[0], 0.0)), rng.uniform(-max(room[1], 0.0), max(room[1], 0.0))])
    return centre - travel / 2, v


def _roller(rng: np.random.Generator, name: str, duration: float) -> tuple[Node, float]:
    r = rng.uniform(0.2, 0.45)
    speed = rng.uniform(0.5, 1.8)
    start, v = _straight(rng, speed, duration, r)
    axis = (-v[1] / speed, v[0] / speed, 0.0)  # z x v: rolling without slipping
    path = Linear((float(start[0]), float(start[1]), float(r)), (float(v[0]), float(v[1]), 0.0))
    return Node(name, path, Spin(axis, speed / r, rng.uniform(0, 2 * np.pi)), P.SPHERE, (r, r, r), material=Material(random_texture(rng, photo_prob=0.8))), speed


def _bouncer(rng: np.random.Generator, name: str, duration: float) -> tuple[Node, float]:
    r = rng.uniform(0.18, 0.4)
    speed = rng.uniform(0.3, 1.5)
    start, v = _straight(rng, speed, duration, r)
    path = Bounce((float(start[0]), float(start[1])), (float(v[0]), float(v[1])), float(r), rng.uniform(0.3, 1.0), rng.uniform(0.8, 2.0), rng.uniform(0, np.pi))
    spin = Spin(tuple(float(x) for x in rng.normal(size=3)), rng.uniform(1.0, 4.0), 0.0)
    return Node(name, path, spin, P.SPHERE, (r, r, r), material=Material(random_texture(rng, photo_prob=0.8))), speed


def _robot(rng: np.random.Generator, name: str, duration: float) -> tuple[Node, float]:
    radius = rng.uniform(0.6, 1.5)
    speed = rng.uniform(0.3, 1.2)
    room = AREA_HALF - radius - 0.4
    centre = (rng.uniform(-max(room, 0.0), max(room, 0.0)), rng.uniform(-max(room, 0.0), max(room, 0.0)))
    path = Circle(centre, radius, float(rng.choice([-1, 1]) * speed / radius), rng.uniform(0, 2 * np.pi), 0.0)
    root = Node(name, path, FaceAlong(path))
    paint = random_color(rng, 0.2, 0.9)
    body = Stripes(paint, tuple(0.5 * np.asarray(paint)), 4, 1, 0.3) if rng.uniform() < 0.5 else Solid(paint)
    root.add(Node(f"{name}_body", (0.0, 0.0, 0.3), primitive=P.BOX, size=(0.5, 0.34, 0.18), material=Material(body)))
    root.add(Node(f"{name}_deck", (0.05, 0.0, 0.51), primitive=P.BOX, size=(0.3, 0.28, 0.03), material=Material(Checker((0.15, 0.15, 0.15), (0.85, 0.85, 0.85), (4, 4)))))
    head = root.add(Node(f"{name}_head_mount", (0.2, 0.0, 0.62), Spin((0, 0, 1), 6.0)))
    head.add(Node(f"{name}_head", primitive=P.CYLINDER, size=(0.1, 0.1, 0.08), material=Material(Stripes((0.1, 0.1, 0.1), (0.9, 0.2, 0.1), 2, 1))))
    tyre = Material(Solid((0.07, 0.07, 0.07)), face_textures=((1, Checker((0.1, 0.1, 0.1), (0.8, 0.8, 0.8), (2, 2))), (2, Checker((0.1, 0.1, 0.1), (0.8, 0.8, 0.8), (2, 2)))))
    axle = rotation_matrix((1, 0, 0), -np.pi / 2)
    for i, (x, y) in enumerate([(0.32, 0.39), (0.32, -0.39), (-0.32, 0.39), (-0.32, -0.39)]):
        hub = root.add(Node(f"{name}_axle{i}", (x, y, 0.13), Spin((0, 1, 0), speed / 0.13)))
        hub.add(Node(f"{name}_wheel{i}", primitive=P.CYLINDER, size=(0.13, 0.13, 0.05), offset_rotation=axle, material=tyre))
    return root, speed


def _walker(rng: np.random.Generator, name: str, duration: float) -> tuple[Node, float]:
    speed = rng.uniform(0.9, 1.6)
    start, v = _straight(rng, speed, duration, 0.4)
    heading = float(np.arctan2(v[1], v[0]))
    curvature = 0.0 if rng.uniform() < 0.5 else float(rng.choice([-1, 1]) * rng.uniform(0.1, 0.35))
    road = Road(curvature, origin=(float(start[0]), float(start[1])), heading0=heading, s_ref=0.0)
    return pedestrian(rng, name, RoadPath(road, 0.0, speed, 0.0)), speed


_MOVERS = {"roll": _roller, "bounce": _bouncer, "robot": _robot, "walker": _walker}


def _box(name: str, xy, yaw: float, half, texture: Texture, z0: float = 0.0, **material) -> Node:
    return Node(name, (float(xy[0]), float(xy[1]), z0 + half[2]), rotation_matrix((0, 0, 1), yaw), P.BOX, tuple(float(h) for h in half), material=Material(texture, **material))


def _surroundings(rng: np.random.Generator, variant: str, wall: float) -> list[Node]:
    """Walls or fences and buildings at +-wall metres, plus static clutter between them and the area."""
    out: list[Node] = []
    for side in range(4):
        yaw = side * np.pi / 2
        normal = np.array([np.cos(yaw), np.sin(yaw)])
        tangent = np.array([-normal[1], normal[0]])
        if variant == "cell":
            tex = Facade(photo_texture("brick", tuple(float(x) for x in rng.uniform(0.5, 1.0, 3)))) if rng.uniform() < 0.5 else Stripes(random_color(rng, 0.4, 0.9), random_color(rng, 0.3, 0.8), int(rng.integers(3, 9)), 1)
            height = rng.uniform(2.5, 4.0)
            out.append(_box(f"wall{side}", normal * (wall + 0.2), yaw, (0.2, wall + 0.4, height / 2), tex, tile=2.0))
            if rng.uniform() < 0.6:  # a poster on the inner face
                w = rng.uniform(0.6, 1.4)
                poster = photo_texture(str(rng.choice(PHOTOS[:4])))
                out.append(_box(f"poster{side}", normal * (wall - 0.02) + tangent * rng.uniform(-2, 2), yaw, (0.02, w, 0.7 * w), poster, z0=rng.uniform(0.8, 1.5)))
        else:
            fence = Stripes((0.55, 0.56, 0.58), (0.25, 0.26, 0.28), int(rng.integers(10, 30)), 0)
            out.append(_box(f"fence{side}", normal * wall, yaw, (0.03, wall, rng.uniform(0.5, 0.9)), fence))
            for k in range(int(rng.integers(1, 3))):
                depth, length, height = rng.uniform(4, 8), rng.uniform(4, 9), rng.uniform(5, 14)
                facade = Facade(photo_texture("brick", tuple(float(x) for x in rng.uniform(0.5, 1.0, 3)))) if rng.uniform() < 0.6 else Facade(Solid(random_color(rng, 0.4, 0.9)))
                pos = normal * (wall + 2 + depth / 2) + tangent * rng.uniform(-wall, wall)
                out.append(_box(f"building{side}_{k}", pos, yaw, (depth / 2, length / 2, height / 2), facade, tile=3.0, face_textures=((4, Solid((0.35, 0.35, 0.37))),)))
        for k in range(int(rng.integers(1, 4))):  # crates, pallets, barrels, cones near the wall
            pos = normal * rng.uniform(AREA_HALF + 0.8, wall - 0.6) + tangent * rng.uniform(-wall + 1, wall - 1)
            kind = rng.uniform()
            if kind < 0.5:
                half = rng.uniform(0.2, 0.5, 3)
                tex = random_texture(rng, photo_prob=0.5) if rng.uniform() < 0.6 else photo_texture("gravel", (0.7, 0.55, 0.35), contrast=0.5)
                out.append(_box(f"crate{side}_{k}", pos, rng.uniform(0, np.pi), half, tex))
            elif kind < 0.8:
                r, h = rng.uniform(0.25, 0.35), rng.uniform(0.4, 0.5)
                out.append(Node(f"barrel{side}_{k}", (float(pos[0]), float(pos[1]), h), primitive=P.CYLINDER, size=(r, r, h), material=Material(Stripes(random_color(rng), (0.15, 0.15, 0.15), 3, 1, 0.15))))
            else:
                out.append(Node(f"cone{side}_{k}", (float(pos[0]), float(pos[1]), 0.35), primitive=P.CYLINDER, size=(0.12, 0.12, 0.35), material=Material(Stripes((0.95, 0.45, 0.05), (0.95, 0.95, 0.95), 4, 1))))
    return out


def random_workspace_scene(seed: int | np.random.SeedSequence, duration: float = 2.4, *, variant: str | None = None,
                           movers: int | None = None, shadows: bool = True) -> Scene:
    """A random workspace scene (deterministic by ``seed``); see the module docstring."""
    rng = np.random.default_rng(seed)
    variant = str(rng.choice(WORKSPACE_VARIANTS)) if variant is None else variant
    if variant not in WORKSPACE_VARIANTS:
        raise ValueError(f"unknown workspace variant {variant!r}; expected one of {WORKSPACE_VARIANTS}")
    wall = rng.uniform(6.0, 8.0)
    if variant == "cell":
        base = photo_texture("gravel", tuple(float(x) for x in rng.uniform(0.55, 0.75, 3)), contrast=0.35)
        floor = FloorTexture(variant, base, None, AREA_HALF + 0.2, 1.0, rng)
        sky = Sky(zenith=(0.62, 0.62, 0.64), horizon=(0.78, 0.78, 0.78), below=(0.4, 0.4, 0.4))
    elif variant == "yard":
        base = photo_texture(str(rng.choice(["gravel", "grass"])), tuple(float(x) for x in rng.uniform(0.45, 0.8, 3)), contrast=0.6)
        pad = photo_texture("brick", tuple(float(x) for x in rng.uniform(0.6, 0.9, 3)), contrast=0.6)
        floor = FloorTexture(variant, base, pad, AREA_HALF + 0.3, 0.0, rng)
        sky = Sky()
    else:
        floor = FloorTexture(variant, photo_texture("gravel", (0.4, 0.4, 0.42), contrast=0.45), None, AREA_HALF, 0.0, rng)
        sky = Sky()
    objects: list[Node] = [Node("floor", primitive=P.PLANE, material=Material(floor), casts_shadow=False)]
    objects += _surroundings(rng, variant, wall)
    n = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.3, 0.2])) if movers is None else int(movers)
    kinds = [str(rng.choice(MOVER_KINDS)) for _ in range(n)]
    info_movers = []
    for i, kind in enumerate(kinds):
        node, speed = _MOVERS[kind](rng, f"{kind}{i}", duration)
        objects.append(node)
        info_movers.append({"name": node.name, "kind": kind, "speed": float(speed)})
    if variant == "cell" and rng.uniform() < 0.6:  # a robot arm working in place at the area's edge
        a = rng.uniform(0, 2 * np.pi)
        home = np.array([(AREA_HALF + 0.5) * np.cos(a), (AREA_HALF + 0.5) * np.sin(a), 0.5])
        objects.append(_arm(rng, home, duration))
        info_movers.append({"name": "arm_base", "kind": "arm", "speed": None})
    el = np.deg2rad(rng.uniform(35, 75))
    az = rng.uniform(0, 2 * np.pi)
    sun = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
    return Scene(
        objects,
        sky=sky,
        sun_direction=sun,
        ambient=0.45,
        diffuse=0.6,
        shadows=shadows,
        duration=duration,
        info={"kind": "workspace", "variant": variant, "wall": float(wall), "movers": info_movers},
    )
