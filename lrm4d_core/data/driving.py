"""Procedural driving scenes: an ego vehicle on a (possibly curved) road among cars and pedestrians.

World: z up, metres, the ego vehicle at the origin heading +x at t = 0. Right-hand traffic.

* `Road`: a constant-curvature centreline (straight or a circular arc) with road coordinates
  ``(s, lateral)``: arc length along the centreline and signed offset to its left. Lanes of
  `lane_width`; lanes for travel towards +s are on the right (``lateral < 0``). A sidewalk and
  grass beyond. The ground is one infinite plane whose procedural `RoadTexture` (asphalt photo,
  lane markings, curbs, sidewalk tiles, grass photo) is evaluated in road coordinates, so markings
  follow the curve exactly.
* Ego: travels along its lane centre at ``s(t) = speed t + accel t^2 / 2`` (5-15 m/s); its pose
  ``ego_pose(t)`` is 4x4 ego-to-world with ego axes x forward, y left, z up, origin on the ground.
  `rigs.driving_rig` mounts the 6 surround cameras on it. The ego car itself is not drawn.
* Other cars (box body and cabin, cylinder wheels that roll at the right rate, light bars) drive
  in both directions at their own speeds, spaced so that no two vehicles in a lane come within
  7 m of each other over the clip; pedestrians (cylinder torso and limbs, sphere head; legs and
  arms swing at the walking cadence; some stand and wave) walk along the sidewalks; buildings
  (boxes with photo facades, windows, sometimes a photo poster) and trees line the road.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import primitives as P
from .scenes import Material, Node, Scene, Sky, Spin, Swing, rotation_matrix
from .textures import Checker, Facade, Solid, Stripes, Texture, photo_texture, random_color, PHOTOS

__all__ = ["Road", "RoadTexture", "RoadPath", "RoadYaw", "DrivingScene", "random_driving_scene"]


@dataclass(frozen=True)
class Road:
    curvature: float = 0.0  # 1/m, positive turns left
    lane_width: float = 3.5
    lanes_per_direction: int = 1
    sidewalk: float = 3.0
    origin: tuple = (0.0, 0.0)  # centreline point at s = 0
    heading0: float = 0.0
    s_ref: float = 30.0  # road coordinates are unwrapped around this arc length

    @property
    def half_width(self) -> float:
        return self.lane_width * self.lanes_per_direction

    def heading(self, s):
        return self.heading0 + self.curvature * np.asarray(s, dtype=np.float64)

    def point(self, s, lateral=0.0) -> np.ndarray:
        """World xy [..., 2] of road coordinates (s, lateral)."""
        s = np.asarray(s, dtype=np.float64)
        lateral = np.asarray(lateral, dtype=np.float64)
        k, p0, h0 = self.curvature, np.asarray(self.origin, dtype=np.float64), self.heading0
        h = self.heading(s)
        if abs(k) < 1e-12:
            x = p0[0] + s * np.cos(h0)
            y = p0[1] + s * np.sin(h0)
        else:
            x = p0[0] + (np.sin(h) - np.sin(h0)) / k
            y = p0[1] - (np.cos(h) - np.cos(h0)) / k
        return np.stack([x - lateral * np.sin(h), y + lateral * np.cos(h)], axis=-1)

    def to_road(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of `point`: (s, lateral) of world points xy [N, 2]."""
        xy = np.asarray(xy, dtype=np.float64)
        k, p0, h0 = self.curvature, np.asarray(self.origin, dtype=np.float64), self.heading0
        if abs(k) < 1e-12:
            d = xy - p0
            s = d[:, 0] * np.cos(h0) + d[:, 1] * np.sin(h0)
            lat = -d[:, 0] * np.sin(h0) + d[:, 1] * np.cos(h0)
            return s, lat
        center = p0 + np.array([-np.sin(h0), np.cos(h0)]) / k
        w = xy - center
        r = np.hypot(w[:, 0], w[:, 1])
        lat = 1.0 / k - np.sign(k) * r
        n = -np.sign(k) * w / np.maximum(r, 1e-12)[:, None]
        h = np.arctan2(-n[:, 0], n[:, 1])
        h_ref = self.heading0 + k * self.s_ref
        dh = np.mod(h - h_ref + np.pi, 2 * np.pi) - np.pi
        return self.s_ref + dh / k, lat


class RoadTexture(Texture):
    """Ground colour from world xy (the ground plane's uv): road, markings, sidewalk, grass."""

    def __init__(self, road: Road, asphalt: Texture, sidewalk: Texture, grass: Texture, dash: float = 3.0, gap: float = 6.0):
        self.road, self.asphalt, self.sidewalk, self.grass = road, asphalt, sidewalk, grass
        self.dash, self.gap = dash, gap

    def sample(self, uv: np.ndarray) -> np.ndarray:
        r = self.road
        s, lat = r.to_road(uv)
        a = np.abs(lat)
        st = np.stack([s, lat], axis=1)
        out = np.empty((len(uv), 3))
        hw = r.half_width
        on_road = a <= hw
        side = (a > hw) & (a <= hw + r.sidewalk)
        grass = a > hw + r.sidewalk
        if on_road.any():
            out[on_road] = self.asphalt.sample(st[on_road] / 2.0)
        if side.any():
            out[side] = self.sidewalk.sample(st[side] / 2.0)
            grooves = side & ((np.mod(s, 1.5) < 0.04) | (np.mod(a - hw, 1.5) < 0.04))
            out[grooves] *= 0.7
            curb = side & (a - hw < 0.25)
            out[curb] = (0.72, 0.72, 0.7)
        if grass.any():
            out[grass] = self.grass.sample(st[grass] / 3.0)
        white = np.array([0.92, 0.92, 0.9])
        centre = a < 0.1
        out[centre] = (0.93, 0.75, 0.2)
        edge = (a > hw - 0.35) & (a < hw - 0.2)
        out[edge] = white
        for j in range(1, r.lanes_per_direction):
            dashed = (np.abs(a - j * r.lane_width) < 0.07) & (np.mod(s, self.dash + self.gap) < self.dash)
            out[dashed] = white
        return out


@dataclass(frozen=True)
class RoadPath:
    """Position on the road: s = s0 + speed t + accel t^2 / 2 at a fixed lateral offset; z = height."""

    road: Road
    s0: float
    speed: float
    lateral: float
    accel: float = 0.0
    height: float = 0.0

    def s(self, t: float) -> float:
        return self.s0 + self.speed * t + 0.5 * self.accel * t * t

    def __call__(self, t: float) -> np.ndarray:
        xy = self.road.point(self.s(t), self.lateral)
        return np.array([xy[0], xy[1], self.height])


@dataclass(frozen=True)
class RoadYaw:
    """Yaw along the road tangent at the path's s(t), turned around for travel towards -s."""

    path: RoadPath
    backwards: bool = False

    def __call__(self, t: float) -> np.ndarray:
        yaw = float(self.path.road.heading(self.path.s(t))) + (np.pi if self.backwards else 0.0)
        return rotation_matrix((0, 0, 1), yaw)


class DrivingScene(Scene):
    """A `Scene` with a road and an ego trajectory (`ego_pose`)."""

    def __init__(self, objects, road: Road, ego_path: RoadPath, **kwargs):
        super().__init__(objects, **kwargs)
        self.road = road
        self.ego_path = ego_path

    def ego_pose(self, t: float) -> np.ndarray:
        """4x4 ego-to-world (x forward, y left, z up, origin on the ground below the ego centre)."""
        m = np.eye(4)
        m[:3, :3] = RoadYaw(self.ego_path)(t)
        m[:3, 3] = self.ego_path(t)
        return m

    def ego_speed(self, t: float) -> float:
        return self.ego_path.speed + self.ego_path.accel * t


_WHEEL_AXLE = rotation_matrix((1, 0, 0), -np.pi / 2)  # cylinder z axis -> +y (the axle)


def _car(rng: np.random.Generator, name: str, path: RoadPath) -> Node:
    backwards = path.speed < 0
    root = Node(name, path, RoadYaw(path, backwards))
    paint = random_color(rng, 0.1, 0.9)
    length, width = rng.uniform(1.9, 2.4), rng.uniform(0.85, 0.98)
    body_tex = Stripes(paint, tuple(0.8 * np.asarray(paint)), 1, 1, 0.08) if rng.uniform() < 0.3 else Solid(paint)
    root.add(Node(f"{name}_body", (0.0, 0.0, 0.7), primitive=P.BOX, size=(length, width, 0.35), material=Material(body_tex)))
    glass = Solid((0.12, 0.15, 0.2))
    cab = Material(glass, face_textures=((4, Solid(paint)),))
    root.add(Node(f"{name}_cabin", (-0.15 * length, 0.0, 1.33), primitive=P.BOX, size=(0.55 * length, 0.9 * width, 0.28), material=cab))
    radius = 0.34
    rate = abs(path.speed) / radius
    tyre = Material(Solid((0.08, 0.08, 0.08)), face_textures=((1, Checker((0.1, 0.1, 0.1), (0.75, 0.75, 0.75), (2, 2))), (2, Checker((0.1, 0.1, 0.1), (0.75, 0.75, 0.75), (2, 2)))))
    for i, (x, y) in enumerate([(0.65, 1), (0.65, -1), (-0.65, 1), (-0.65, -1)]):
        hub = root.add(Node(f"{name}_axle{i}", (x * length, y * (width - 0.05), radius), Spin((0, 1, 0), rate, float(rng.uniform(0, 6)))))
        hub.add(Node(f"{name}_wheel{i}", primitive=P.CYLINDER, size=(radius, radius, 0.12), offset_rotation=_WHEEL_AXLE, material=tyre))
    root.add(Node(f"{name}_lights_front", (length + 0.01, 0.0, 0.8), primitive=P.BOX, size=(0.02, 0.8 * width, 0.06), material=Material(Solid((0.95, 0.95, 0.8)))))
    root.add(Node(f"{name}_lights_rear", (-length - 0.01, 0.0, 0.85), primitive=P.BOX, size=(0.02, 0.8 * width, 0.06), material=Material(Solid((0.8, 0.05, 0.05)))))
    return root


_SKIN = ((0.96, 0.8, 0.69), (0.87, 0.67, 0.5), (0.65, 0.45, 0.3), (0.45, 0.3, 0.2))


def pedestrian(rng: np.random.Generator, name: str, path: RoadPath) -> Node:
    walking = abs(path.speed) > 0.05
    root = Node(name, path, RoadYaw(path, path.speed < 0))
    skin = Material(Solid(_SKIN[int(rng.integers(len(_SKIN)))]))
    shirt_col = random_color(rng)
    shirt = Material(Stripes(shirt_col, random_color(rng), int(rng.integers(3, 8)), 1) if rng.uniform() < 0.5 else Solid(shirt_col))
    pants = Material(Solid(random_color(rng, 0.05, 0.45)))
    root.add(Node(f"{name}_torso", (0.0, 0.0, 1.13), primitive=P.CYLINDER, size=(0.13, 0.19, 0.27), material=shirt))
    root.add(Node(f"{name}_head", (0.0, 0.0, 1.55), primitive=P.SPHERE, size=(0.1, 0.09, 0.115), material=skin))
    cadence = abs(path.speed) / 1.4 if walking else 0.0  # strides per second
    phase = rng.uniform(0, 2 * np.pi)
    for side, y in ((0, 0.09), (1, -0.09)):
        ph = phase + np.pi * side
        hip = root.add(Node(f"{name}_hip{side}", (0.0, y, 0.86), Swing((0, 1, 0), 0.45 if walking else 0.0, cadence, ph)))
        hip.add(Node(f"{name}_leg{side}", primitive=P.CYLINDER, size=(0.065, 0.065, 0.42), offset=(0.0, 0.0, -0.42), material=pants))
    for side, y in ((0, 0.25), (1, -0.25)):
        if walking:
            swing = Swing((0, 1, 0), 0.4, cadence, phase + np.pi * (1 - side))
        elif side == 0:  # waving: raised arm swinging sideways
            swing = Swing((1, 0, 0), 0.35, 1.2, phase, offset=-2.6)
        else:
            swing = Swing((0, 1, 0), 0.05, 0.3, phase)
        shoulder = root.add(Node(f"{name}_shoulder{side}", (0.0, y, 1.36), swing))
        shoulder.add(Node(f"{name}_arm{side}", primitive=P.CYLINDER, size=(0.045, 0.045, 0.3), offset=(0.0, 0.0, -0.3), material=skin if rng.uniform() < 0.3 else shirt))
    return root


def _building(rng: np.random.Generator, name: str, road: Road, s: float, side: int, length: float, depth: float, setback: float) -> Node:
    height = rng.uniform(6.0, 24.0)
    lateral = side * (road.half_width + road.sidewalk + setback + depth / 2)
    xy = road.point(s, lateral)
    yaw = float(road.heading(s))
    if rng.uniform() < 0.6:
        wall = photo_texture("brick", tuple(round(x, 3) for x in rng.uniform(0.5, 1.0, size=3)))
    else:
        wall = Solid(random_color(rng, 0.4, 0.9))
    mat = Material(Facade(wall), tile=3.0, face_textures=((4, Solid((0.35, 0.35, 0.37))),))
    root = Node(name, (float(xy[0]), float(xy[1]), height / 2), rotation_matrix((0, 0, 1), yaw), P.BOX, (length / 2, depth / 2, height / 2), material=mat)
    if rng.uniform() < 0.35:  # a photo poster on the road-facing wall
        w = min(length / 2 - 0.5, rng.uniform(1.0, 2.5))
        if w > 0.4:
            poster = Material(photo_texture(str(rng.choice(PHOTOS[:4]))))
            y = -side * (depth / 2 + 0.05)
            root.add(Node(f"{name}_poster", (rng.uniform(-0.3, 0.3) * length, y, 2.5 - height / 2 + w * 0.5), primitive=P.BOX, size=(w, 0.04, 0.75 * w), material=poster))
    return root


def _tree(rng: np.random.Generator, name: str, road: Road, s: float, side: int, canopy: Texture) -> Node:
    lateral = side * (road.half_width + road.sidewalk - 0.7)
    xy = road.point(s, lateral)
    h = rng.uniform(1.2, 2.0)
    root = Node(name, (float(xy[0]), float(xy[1]), 0.0))
    root.add(Node(f"{name}_trunk", (0.0, 0.0, h), primitive=P.CYLINDER, size=(0.14, 0.14, h), material=Material(Solid((0.35, 0.25, 0.15)))))
    r = rng.uniform(1.1, 1.8)
    root.add(Node(f"{name}_canopy", (0.0, 0.0, 2 * h + 0.8 * r), primitive=P.SPHERE, size=(r, r, 1.2 * r), material=Material(canopy, uv_scale=(3.0, 2.0))))
    return root


def _min_gap(paths: list[RoadPath], times: np.ndarray) -> float:
    s = np.array([[p.s(t) for t in times] for p in paths])
    gaps = np.abs(s[:, None, :] - s[None, :, :])
    gaps[np.arange(len(paths)), np.arange(len(paths))] = np.inf
    return float(gaps.min()) if len(paths) > 1 else np.inf


def random_driving_scene(
    seed: int | np.random.SeedSequence,
    duration: float = 2.3,
    *,
    num_cars: int | None = None,
    num_pedestrians: int | None = None,
    shadows: bool = True,
) -> DrivingScene:
    """A random driving scene (deterministic by ``seed``); see the module docstring."""
    rng = np.random.default_rng(seed)
    curvature = 0.0 if rng.uniform() < 0.4 else rng.choice([-1, 1]) * rng.uniform(1 / 300, 1 / 70)
    lanes = int(rng.integers(1, 3))
    ego_lane = int(rng.integers(lanes))
    ego_lat = -(ego_lane + 0.5) * 3.5
    road = Road(float(curvature), 3.5, lanes, float(rng.uniform(2.5, 4.0)), origin=(0.0, -ego_lat))
    speed = rng.uniform(5.0, 15.0)
    accel = float(np.clip(rng.uniform(-1.0, 1.0), (5.0 - speed) / duration, (15.0 - speed) / duration))
    ego = RoadPath(road, 0.0, float(speed), ego_lat, accel)
    s_end = ego.s(duration)
    s_lo, s_hi = -45.0, s_end + 90.0

    objects: list[Node] = []
    asphalt = photo_texture("gravel", (0.4, 0.4, 0.42), contrast=0.45)
    side_tex = photo_texture("gravel", (0.85, 0.83, 0.8), contrast=0.3)
    grass = photo_texture("grass", (0.45, 0.7, 0.3))
    objects.append(Node("ground", primitive=P.PLANE, material=Material(RoadTexture(road, asphalt, side_tex, grass)), casts_shadow=False))

    # buildings and trees on both sides
    canopy = photo_texture("grass", (0.35, 0.65, 0.25))
    for side in (1, -1):
        s = s_lo + rng.uniform(0, 10)
        i = 0
        while s < s_hi:
            length = rng.uniform(8.0, 20.0)
            depth = rng.uniform(8.0, 14.0)
            objects.append(_building(rng, f"building_{'l' if side > 0 else 'r'}{i}", road, s + length / 2, side, length, depth, rng.uniform(0.5, 4.0)))
            if rng.uniform() < 0.5:
                objects.append(_tree(rng, f"tree_{'l' if side > 0 else 'r'}{i}", road, s + length + 1.5, side, canopy))
            s += length + rng.uniform(2.0, 8.0)
            i += 1

    # cars: same direction (right, lateral < 0) and oncoming (left, lateral > 0)
    times = np.linspace(0.0, duration, 12)
    n_cars = int(rng.integers(3, 9)) if num_cars is None else int(num_cars)
    lane_paths: dict[float, list[RoadPath]] = {}
    lane_paths[ego_lat] = [ego]
    placed = 0
    for _ in range(n_cars * 20):
        if placed >= n_cars:
            break
        lane = int(rng.integers(lanes))
        oncoming = rng.uniform() < 0.45
        lat = (lane + 0.5) * 3.5 * (1 if oncoming else -1)
        if oncoming:
            path = RoadPath(road, float(rng.uniform(0.0, s_hi)), -float(rng.uniform(6.0, 14.0)), lat)
        else:
            path = RoadPath(road, float(rng.uniform(-30.0, s_end + 60.0)), float(np.clip(speed + rng.uniform(-3, 3), 4, 16)), lat)
        others = lane_paths.get(lat, [])
        if _min_gap(others + [path], times) < 7.0:
            continue
        lane_paths.setdefault(lat, []).append(path)
        objects.append(_car(rng, f"car{placed}", path))
        placed += 1

    # pedestrians on the sidewalks
    n_ped = int(rng.integers(2, 8)) if num_pedestrians is None else int(num_pedestrians)
    for i in range(n_ped):
        side = 1 if rng.uniform() < 0.5 else -1
        lat = side * (road.half_width + rng.uniform(0.7, road.sidewalk - 1.2))
        v = 0.0 if rng.uniform() < 0.2 else rng.choice([-1, 1]) * rng.uniform(0.9, 1.8)
        path = RoadPath(road, float(rng.uniform(-10.0, s_end + 50.0)), float(v), float(lat))
        objects.append(pedestrian(rng, f"pedestrian{i}", path))

    el = np.deg2rad(rng.uniform(25, 65))
    az = rng.uniform(0, 2 * np.pi)
    sun = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
    return DrivingScene(
        objects,
        road,
        ego,
        sky=Sky(),
        sun_direction=sun,
        ambient=0.45,
        diffuse=0.6,
        shadows=shadows,
        haze_distance=300.0,
        duration=duration,
        info={"kind": "driving", "curvature": float(curvature), "lanes_per_direction": lanes, "ego_speed": float(speed), "cars": placed, "pedestrians": n_ped},
    )
