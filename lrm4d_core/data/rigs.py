"""Camera rigs for the synthetic scenes: per view and frame, K and cam_to_world (OpenCV, world z up).

Object rig (SPEC §3), cameras on spheres around the origin looking at it, FOV 50 deg (both axes
for square images; ``fov_deg`` is the vertical FOV, fx = fy). Views, in this order:

* ``canonical`` (default 4): static, azimuths 0/90/180/270 deg, elevation 0 deg, distance 2.5;
* ``moving`` (default 2): elevated moving trajectories: elevation drawn in [15, 40] deg, one full
  orbit over the clip (constant angular speed, same direction for all), start azimuths evenly
  spaced after a random offset, distance 2.5;
* ``random`` (default 2): random orbits: start azimuth uniform, start elevation in [-15, 60] deg,
  azimuth sweep over the clip in [-180, 180] deg, elevation drift in [-20, 20] deg (clamped to
  [-30, 80]), distance in [2.1, 2.7] drifting by up to +-0.2.

Azimuth a and elevation e put the camera at ``distance * (cos e cos a, cos e sin a, sin e)``.
"Over the clip" means in proportion to ``(t - t_first) / (t_last - t_first + dt)``, dt the frame
spacing, so a full orbit returns to the start one frame after the last.

Workspace rig: 3-6 static cameras around a floor area (`workspace.random_workspace_scene`),
looking inward and down at a point near its centre: azimuths evenly spread with +-20 deg jitter,
horizontal distance 2.5-5 m, height 1.2-4 m (pitch drawn in 15-70 deg below the horizon),
horizontal FOV 55-80 deg, named ``cam0`` .. ``camN``.

Driving rig: 6 surround cameras rigidly mounted on the ego vehicle (ego frame x forward, y left,
z up), 70 deg horizontal FOV each, 1.6 m above the ground, no pitch; yaw: front 0, front_left
+55, front_right -55, back 180, back_left +110, back_right -110 deg (nuScenes-like, overlapping).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "look_at",
    "intrinsics",
    "orbit_pose",
    "RigCameras",
    "object_rig",
    "driving_rig",
    "workspace_rig",
    "SURROUND_CAMERAS",
    "DEFAULT_OBJECT_VIEWS",
]

DEFAULT_OBJECT_VIEWS = {"canonical": 4, "moving": 2, "random": 2}

# name, yaw (deg, left of forward), mount position in the ego frame (m)
SURROUND_CAMERAS = (
    ("front", 0.0, (1.7, 0.0, 1.6)),
    ("front_left", 55.0, (1.5, 0.5, 1.6)),
    ("front_right", -55.0, (1.5, -0.5, 1.6)),
    ("back", 180.0, (-1.0, 0.0, 1.6)),
    ("back_left", 110.0, (0.5, 0.6, 1.6)),
    ("back_right", -110.0, (0.5, -0.6, 1.6)),
)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV cam_to_world at ``eye`` looking at ``target``, image up towards ``up``."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def intrinsics(width: int, height: int, fov_deg: float, axis: str = "y") -> np.ndarray:
    """Pinhole K with square pixels, principal point at the image centre, and ``fov_deg`` across
    the width (axis="x") or the height (axis="y")."""
    extent = width if axis == "x" else height
    f = 0.5 * extent / np.tan(np.deg2rad(fov_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def orbit_pose(azimuth_deg: float, elevation_deg: float, distance: float, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    eye = np.asarray(target, dtype=np.float64) + distance * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    return look_at(eye, target)


@dataclass
class RigCameras:
    """Cameras of a rig: ``K[v, f]``, ``cam_to_world[v, f]`` for view v at frame f (time ``times[f]``)."""

    views: list  # [{"index", "kind", "name", ...parameters}]
    K: np.ndarray  # [V, F, 3, 3]
    cam_to_world: np.ndarray  # [V, F, 4, 4]
    times: np.ndarray  # [F]
    extra: dict = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return self.K.shape[0]

    @property
    def num_frames(self) -> int:
        return self.K.shape[1]


def _progress(times: np.ndarray) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    if len(times) < 2:
        return np.zeros(len(times))
    dt = (times[-1] - times[0]) / (len(times) - 1)
    return (times - times[0]) / (times[-1] - times[0] + dt)


def object_rig(
    rng: np.random.Generator,
    times,
    width: int,
    height: int,
    *,
    canonical: int = 4,
    moving: int = 2,
    random: int = 2,
    fov_deg: float = 50.0,
    distance: float = 2.5,
    canonical_elevation: float = 0.0,
    moving_elevation: tuple = (15.0, 40.0),
    random_elevation: tuple = (-15.0, 60.0),
    random_distance: tuple = (2.1, 2.7),
) -> RigCameras:
    """The object-centric rig (see the module docstring); random parts drawn from ``rng``."""
    times = np.asarray(times, dtype=np.float64)
    u = _progress(times)
    n_frames = len(times)
    K = intrinsics(width, height, fov_deg, "y")
    poses, views = [], []

    def add(kind: str, name: str, az, el, dist, **params):
        az = np.broadcast_to(np.asarray(az, dtype=np.float64), (n_frames,))
        el = np.broadcast_to(np.asarray(el, dtype=np.float64), (n_frames,))
        dist = np.broadcast_to(np.asarray(dist, dtype=np.float64), (n_frames,))
        poses.append(np.stack([orbit_pose(a, e, r) for a, e, r in zip(az, el, dist)]))
        views.append({"index": len(views), "kind": kind, "name": name, **params})

    for k in range(canonical):
        az = 360.0 * k / max(canonical, 1)
        add("canonical", f"canonical_{k}", az, canonical_elevation, distance, azimuth=az, elevation=canonical_elevation, distance=distance)
    if moving:
        offset = rng.uniform(0, 360)
        direction = float(rng.choice([-1.0, 1.0]))
        for k in range(moving):
            el = float(rng.uniform(*moving_elevation))
            az0 = (offset + 360.0 * k / moving) % 360.0
            add("moving", f"moving_{k}", az0 + direction * 360.0 * u, el, distance, start_azimuth=az0, sweep=direction * 360.0, elevation=el, distance=distance)
    for k in range(random):
        az0 = float(rng.uniform(0, 360))
        el0 = float(rng.uniform(*random_elevation))
        sweep = float(rng.uniform(-180, 180))
        drift = float(rng.uniform(-20, 20))
        d0 = float(rng.uniform(*random_distance))
        dd = float(rng.uniform(-0.2, 0.2))
        el = np.clip(el0 + drift * u, -30.0, 80.0)
        dist = np.clip(d0 + dd * u, random_distance[0], random_distance[1])
        add("random", f"random_{k}", az0 + sweep * u, el, dist, start_azimuth=az0, sweep=sweep, start_elevation=el0, elevation_drift=drift, start_distance=d0)
    c2w = np.stack(poses) if poses else np.zeros((0, n_frames, 4, 4))
    Ks = np.broadcast_to(K, (len(views), n_frames, 3, 3)).copy()
    return RigCameras(views, Ks, c2w, times, {"fov_deg": fov_deg})


def mount_pose(yaw_deg: float, position, pitch_deg: float = 0.0) -> np.ndarray:
    """Camera-to-ego transform of a camera looking along ``yaw`` (pitch > 0 looks down)."""
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    z = np.array([np.cos(y) * np.cos(p), np.sin(y) * np.cos(p), -np.sin(p)])
    x = np.array([np.sin(y), -np.cos(y), 0.0])
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, np.cross(z, x), z, position
    return m


def driving_rig(scene, times, width: int, height: int, *, hfov_deg: float = 70.0, cameras=SURROUND_CAMERAS, pitch_deg: float = 0.0) -> RigCameras:
    """Surround cameras on the ego vehicle of a `driving.DrivingScene` (anything with ``ego_pose(t)``)."""
    times = np.asarray(times, dtype=np.float64)
    K = intrinsics(width, height, hfov_deg, "x")
    ego = np.stack([scene.ego_pose(t) for t in times])  # [F, 4, 4]
    views, poses = [], []
    for i, (name, yaw, pos) in enumerate(cameras):
        mount = mount_pose(yaw, pos, pitch_deg)
        poses.append(ego @ mount)
        views.append({"index": i, "kind": "surround", "name": name, "yaw": yaw, "mount": [float(x) for x in pos], "hfov": hfov_deg})
    Ks = np.broadcast_to(K, (len(views), len(times), 3, 3)).copy()
    return RigCameras(views, Ks, np.stack(poses), times, {"hfov_deg": hfov_deg, "ego_poses": ego})


def workspace_rig(rng: np.random.Generator, times, width: int, height: int, *, cameras: int | None = None) -> RigCameras:
    """Static inward-and-down cameras of a workspace scene (see the module docstring)."""
    times = np.asarray(times, dtype=np.float64)
    n = int(rng.integers(3, 7)) if cameras is None else int(cameras)
    offset = rng.uniform(0, 360)
    views, poses, Ks = [], [], []
    for i in range(n):
        az = np.deg2rad(offset + 360.0 * i / n + rng.uniform(-20, 20))
        target = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(0.0, 0.4)])
        dist = rng.uniform(2.5, 5.0)
        pitch = np.deg2rad(rng.uniform(15.0, 70.0))
        h = float(np.clip(target[2] + dist * np.tan(pitch), 1.2, 4.0))
        eye = target + np.array([dist * np.cos(az), dist * np.sin(az), 0.0])
        eye[2] = h
        hfov = float(rng.uniform(55.0, 80.0))
        poses.append(np.broadcast_to(look_at(eye, target), (len(times), 4, 4)))
        Ks.append(np.broadcast_to(intrinsics(width, height, hfov, "x"), (len(times), 3, 3)))
        views.append({"index": i, "kind": "workspace", "name": f"cam{i}", "hfov": hfov, "height": h,
                      "distance": float(dist), "target": [float(x) for x in target]})
    return RigCameras(views, np.stack(Ks).copy(), np.stack(poses).copy(), times, {"cameras": n})
