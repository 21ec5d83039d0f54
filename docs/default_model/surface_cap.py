"""What the 5 cm check can credit: a perfect reconstruction at the model's resolution against the
ground truth of a synthetic bag, measured two ways.

    python docs/default_model/surface_cap.py GT_DIR [--frames 6 20 40]

The perfect reconstruction: for each image of a frame, one point per 2x2 block of the ground
truth's pixels (the block's pixel centre at half the resolution, e.g. 64 px of a 128 px bag), at
the mean of the block's four true points, kept where their depths agree within 2% (on a smooth
surface that mean lies on it). It is measured against the pixel-centre points (`gt_points.npz`,
what bag_check used before session 7) and against `SurfaceMesh` (what it uses now).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.spatial import cKDTree

from lrm4d_core.data.format import read_depth, read_velocity
from lrm4d_core.eval.geometry import SurfaceMesh, pixel_points
from ros2_lrm4d.synth_bag import load_ground_truth


def half_resolution_points(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    H, W = depth.shape
    pts = pixel_points(depth, K, c2w).reshape(H // 2, 2, W // 2, 2, 3)
    z = np.asarray(depth, np.float64).reshape(H // 2, 2, W // 2, 2)
    with np.errstate(invalid="ignore"):
        smooth = np.isfinite(z).all((1, 3)) & (z.max((1, 3)) < 1.02 * z.min((1, 3)))
    return pts.mean((1, 3))[smooth]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt_dir")
    parser.add_argument("--frames", type=int, nargs="+", default=[6, 20, 40])
    args = parser.parse_args()
    gt = load_ground_truth(args.gt_dir)
    for f in args.frames:
        recs = [r for r in gt.scene.images if r.frame == f]
        perfect = np.concatenate([half_resolution_points(read_depth(gt.scene, r), r.K, r.cam_to_world) for r in recs])
        samples = gt.points["points"][gt.points["frame"] == f].astype(np.float64)
        d_samples = cKDTree(samples).query(perfect)[0]
        mesh = SurfaceMesh([read_depth(gt.scene, r) for r in recs], [r.K for r in recs], [r.cam_to_world for r in recs],
                           [read_velocity(gt.scene, r) for r in recs])
        d_mesh = mesh.closest(perfect)[0]
        print(f"frame {f}: {len(perfect)} points of a perfect half-resolution reconstruction; within 5 cm of the "
              f"pixel-centre points {np.mean(d_samples <= 0.05):.4f} (median distance {np.median(d_samples):.3f} m), "
              f"of the mesh {np.mean(d_mesh <= 0.05):.4f} (median {np.median(d_mesh):.4f} m)")


if __name__ == "__main__":
    main()
