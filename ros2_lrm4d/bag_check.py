"""Check a replayed synthetic bag against its ground truth: are the published Gaussians on the true
surfaces, and do the moving ones move at the true speed?

    python -m ros2_lrm4d.bag_check OUT_BAG GT_DIR [--json FILE]

`OUT_BAG` is what `lrm4d replay` wrote for a bag from `lrm4d synth --bag` (any rig); `GT_DIR` that
bag's ground truth (`<bag>_gt`: depth and velocity maps of every image, and `gt_points.npz`:
surface points, their colours and exact velocities per image). For every published
`/lrm4d/gaussians` cloud (the Gaussians sliced at the window end, in the fixed frame), the images
captured within half a frame of its stamp are the truth at that instant, and:

* ``on_surface``: the share of the cloud's opacity within `distance` (5 cm) of a true surface, next
  to the same share for uniform random points in the cloud's own bounding box (chance). The true
  surface is the triangle mesh of those images' depth maps (`lrm4d_core.eval.geometry.SurfaceMesh`):
  against the pixel-centre points alone (``on_samples``, reported beside it) a perfect
  reconstruction at the model's 64 px scored 68% within 5 cm on a 128 px workspace bag, the mesh
  99.98%;
* ``velocity``: over Gaussians within `distance` of a surface that moves faster than
  `moving_speed` (0.2 m/s; the surface's velocity interpolated from the velocity maps), the
  opacity-weighted median of |v - v_true| / |v_true| (the implied velocity's error relative to
  the true speed) and of | |v| / |v_true| - 1 | (speed alone), and the share of such Gaussians
  whose speed is within 30% of the true one;
* ``objects`` (`check_objects`): the published /lrm4d/moving_objects against the moving objects of
  the ground truth (objects.json): recall, precision, centre and velocity errors.

Prints one JSON document (means over clouds and per cloud).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["check_replay", "check_objects", "main"]

CLOUD_TOPIC = "/lrm4d/gaussians"
OBJECTS_TOPIC = "/lrm4d/moving_objects"


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _read_clouds(bag: Path, topic: str) -> list[tuple[int, dict[str, np.ndarray]]]:
    from .convert import pointcloud2_to_arrays, stamp_to_ns
    from .export import read_topic

    return [(stamp_to_ns(msg.header.stamp), pointcloud2_to_arrays(msg)) for msg in read_topic(bag, topic)]


def check_replay(out_bag: str | Path, gt_dir: str | Path, distance: float = 0.05, moving_speed: float = 0.2,
                 topic: str = CLOUD_TOPIC, seed: int = 0) -> dict:
    """The checks of the module docstring as a dict (per cloud and means)."""
    from scipy.spatial import cKDTree

    from .synth_bag import load_ground_truth

    gt = load_ground_truth(gt_dir)
    if "velocity" not in gt.points:
        raise ValueError(f"{gt_dir}/gt_points.npz has no velocities (written by an older lrm4d); regenerate the bag")
    half_frame = 0.5 * int(gt.index["frame_ns"])
    rng = np.random.default_rng(seed)
    rows = []
    for stamp, cloud in _read_clouds(Path(out_bag), topic):
        near = np.abs(gt.points["stamp_ns"] - stamp) <= half_frame
        if not near.any() or len(cloud["x"]) == 0:
            continue
        pts = gt.points["points"][near].astype(np.float64)
        xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], -1).astype(np.float64)
        w = cloud["opacity"].astype(np.float64)
        v = np.stack([cloud["vel_x"], cloud["vel_y"], cloud["vel_z"]], -1).astype(np.float64)
        sample_dist, _ = cKDTree(pts).query(xyz)
        mesh = gt.surface_mesh(stamp, half_frame)
        dist, true_v = mesh.closest(xyz)
        on = dist <= distance
        lo, hi = xyz.min(0), xyz.max(0)
        chance_d, _ = mesh.closest(rng.uniform(lo, hi, size=(min(len(xyz), 20000), 3)))
        row = {"stamp_ns": int(stamp), "gaussians": int(len(xyz)), "gt_points": int(len(pts)),
               "on_surface": float(w[on].sum() / w.sum()) if w.sum() > 0 else None,
               "on_surface_chance": float((chance_d <= distance).mean()),
               "on_samples": float(w[sample_dist <= distance].sum() / w.sum()) if w.sum() > 0 else None}
        speed_true = np.linalg.norm(true_v, axis=-1)
        moving = on & (speed_true > moving_speed) & (w > 0)
        row["moving_gaussians"] = int(moving.sum())
        if moving.any():
            rel = np.linalg.norm(v[moving] - true_v[moving], axis=-1) / speed_true[moving]
            speed_rel = np.abs(np.linalg.norm(v[moving], axis=-1) / speed_true[moving] - 1.0)
            row.update(velocity_error=_weighted_median(rel, w[moving]), speed_error=_weighted_median(speed_rel, w[moving]),
                       speed_within_30=float(w[moving][speed_rel <= 0.3].sum() / w[moving].sum()),
                       true_speed=float(np.average(speed_true[moving], weights=w[moving])),
                       predicted_speed=float(np.average(np.linalg.norm(v[moving], axis=-1), weights=w[moving])))
        rows.append(row)
    if not rows:
        raise ValueError(f"no cloud on {topic} of {out_bag} has ground truth within half a frame of its stamp")

    def mean(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    summary = {k: mean(k) for k in ("on_surface", "on_surface_chance", "on_samples", "velocity_error", "speed_error", "speed_within_30",
                                    "true_speed", "predicted_speed")}
    result = {"bag": str(out_bag), "gt": str(gt_dir), "distance_m": distance, "moving_speed_m_s": moving_speed,
              "clouds": len(rows), "mean": summary, "per_cloud": rows}
    objects = check_objects(out_bag, gt, moving_speed)
    if objects is not None:
        result["objects"] = objects
    return result


def _inside(obj: dict, points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    lo = np.asarray(obj["center"]) - 0.5 * np.asarray(obj["size"]) - margin
    hi = np.asarray(obj["center"]) + 0.5 * np.asarray(obj["size"]) + margin
    return np.all((points >= lo) & (points <= hi), axis=1)


def _visible(obj: dict, points: np.ndarray, min_points: int = 20) -> bool:
    return int(_inside(obj, points).sum()) >= min_points


def check_objects(out_bag: str | Path, gt, moving_speed: float = 0.2, topic: str = OBJECTS_TOPIC) -> dict | None:
    """Published moving objects against the ground truth's (objects.json): per window, the true
    objects moving faster than `moving_speed` that the images show (at least 20 surface points in
    their box) are matched greedily, nearest centre first, to published objects within a gate of
    max(0.5 m, half the true box's diagonal). Recall = matched / true, precision = matched /
    published; errors over the matches: centre distance, and velocity relative to the true
    object's (its box centre's) velocity and to the mean velocity of its visible surface (these
    differ for spinning, rolling and limbed movers; the published velocity estimates the second).
    None when the bag or the ground truth has no objects."""
    from .convert import stamp_to_ns
    from .export import read_topic

    path = Path(gt.scene.root) / "objects.json"
    if not path.is_file():
        return None
    truth = json.loads(path.read_text(encoding="utf-8"))
    frame_ns, base = int(truth["frame_ns"]), int(gt.index["stamp_base_ns"])
    try:
        msgs = read_topic(out_bag, topic)
    except ValueError:  # a bag from before moving objects were published
        return None
    true_n = found = published = 0
    centre_err, vel_err, surf_err = [], [], []
    for msg in msgs:
        stamp = stamp_to_ns(msg.header.stamp)
        f = int(round((stamp - base) / frame_ns))
        if not 0 <= f < len(truth["frames"]):
            continue
        in_frame = gt.points["frame"] == f
        pts, pvel = gt.points["points"][in_frame], gt.points["velocity"][in_frame]
        gt_objs = [o for o in truth["frames"][f]["objects"]
                   if np.linalg.norm(o["velocity"]) > moving_speed and _visible(o, pts)]
        centres = np.asarray(msg.center, dtype=np.float64).reshape(-1, 3)
        vels = np.asarray(msg.velocity, dtype=np.float64).reshape(-1, 3)
        true_n += len(gt_objs)
        published += len(centres)
        pairs = sorted(((np.linalg.norm(centres[j] - np.asarray(o["center"])), i, j) for i, o in enumerate(gt_objs)
                        for j in range(len(centres))))
        used_i, used_j = set(), set()
        for d, i, j in pairs:
            gate = max(0.5, 0.5 * float(np.linalg.norm(gt_objs[i]["size"])))
            if d > gate or i in used_i or j in used_j:
                continue
            used_i.add(i)
            used_j.add(j)
            centre_err.append(d)
            v = np.asarray(gt_objs[i]["velocity"])
            vel_err.append(float(np.linalg.norm(vels[j] - v) / np.linalg.norm(v)))
            inside = _inside(gt_objs[i], pts) & (np.linalg.norm(pvel, axis=1) > 0.05)  # not the floor under it
            if inside.any():  # the mean velocity of its visible surface (what a camera can see move)
                vs = pvel[inside].astype(np.float64).mean(0)
                surf_err.append(float(np.linalg.norm(vels[j] - vs) / max(np.linalg.norm(vs), 1e-9)))
        found += len(used_i)
    return {"windows": len(msgs), "true_objects": true_n, "published_objects": published,
            "recall": found / true_n if true_n else None, "precision": found / published if published else None,
            "median_centre_error_m": float(np.median(centre_err)) if centre_err else None,
            "median_velocity_error": float(np.median(vel_err)) if vel_err else None,
            "median_surface_velocity_error": float(np.median(surf_err)) if surf_err else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros2_lrm4d.bag_check", description=__doc__.splitlines()[0])
    parser.add_argument("out_bag")
    parser.add_argument("gt_dir")
    parser.add_argument("--distance", type=float, default=0.05, help="on-surface distance in metres (default 0.05)")
    parser.add_argument("--moving-speed", type=float, default=0.2, help="true speed above which a surface moves (m/s)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    try:
        result = check_replay(args.out_bag, args.gt_dir, args.distance, args.moving_speed)
    except (ValueError, FileNotFoundError) as err:
        print(f"bag_check: {err}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(json.dumps({"clouds": result["clouds"], **result["mean"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
