"""Re-factoring 4D covariances (`lrm4d_core.gaussians._refactor`, the cost of publishing the full
4D set in the fixed frame) against the SVD it replaced, and the 3x3 eigendecomposition of
published 3D covariances (`symmetric_eigh_3x3`, vectorized Jacobi) against LAPACK's
`torch.linalg.eigh`, side by side; prints one JSON object.

    python bench/refactor.py [--gaussians 50000] [--repeats 5]

Both paths take the same factors A (Sigma4 = A A^T, float64) of Gaussians shaped like the model's
in world units (spatial scales 2 mm to 0.5 m, temporal 0.05 to 2 s, random SO(4) rotations) and
return (scales, q_left, q_right); the JSON reports the median seconds of each, their ratio, and how
far the eigendecomposition's scales and covariances are from the SVD's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from lrm4d_core.gaussians import _refactor, _scales_and_quaternions, rotation_4d, symmetric_eigh_3x3


def refactor_by_svd(a: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The previous implementation: the principal axes and scales from an SVD of A."""
    u, s, _ = torch.linalg.svd(a)
    return _scales_and_quaternions(u, s, dtype)


def factors(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(2, n, 4, generator=g, dtype=torch.float64), dim=-1)
    spatial = torch.exp(torch.empty(n, 3, dtype=torch.float64).uniform_(-6.2, -0.7, generator=g))  # 2 mm .. 0.5 m
    temporal = torch.exp(torch.empty(n, 1, dtype=torch.float64).uniform_(-3.0, 0.7, generator=g))  # 0.05 .. 2 s
    return rotation_4d(q[0], q[1]) * torch.cat([spatial, temporal], -1)[:, None, :]


def median_seconds(fn, a: torch.Tensor, repeats: int) -> float:
    fn(a, torch.float32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(a, torch.float32)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def covariance(s: torch.Tensor, q_left: torch.Tensor, q_right: torch.Tensor) -> torch.Tensor:
    r = rotation_4d(q_left, q_right)
    return r @ torch.diag_embed(s * s) @ r.transpose(-1, -2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    a = factors(args.gaussians)
    eigh_s = median_seconds(_refactor, a, args.repeats)
    svd_s = median_seconds(refactor_by_svd, a, args.repeats)
    new, old = _refactor(a, torch.float64), refactor_by_svd(a, torch.float64)
    scale_rel = ((torch.sort(new[0], -1).values - torch.sort(old[0], -1).values).abs() / torch.sort(old[0], -1).values).max()
    sigma = a @ a.transpose(-1, -2)
    sym3 = sigma[:, :3, :3].contiguous()  # spatial blocks: 3x3 covariances shaped like the model's
    jacobi_s = median_seconds(lambda m, _: symmetric_eigh_3x3(m), sym3, args.repeats)
    lapack_s = median_seconds(lambda m, _: torch.linalg.eigh(m), sym3, args.repeats)
    ev_j = torch.sort(symmetric_eigh_3x3(sym3)[0], -1).values
    ev_l = torch.linalg.eigvalsh(sym3)
    print(json.dumps({
        "bench": "refactor",
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()},
        "gaussians": args.gaussians,
        "eigh_s": round(eigh_s, 4),
        "svd_s": round(svd_s, 4),
        "svd_over_eigh": round(svd_s / eigh_s, 2),
        "max_scale_rel_diff": float(scale_rel),
        "max_cov_err_eigh": float((covariance(*new) - sigma).abs().max()),
        "max_cov_err_svd": float((covariance(*old) - sigma).abs().max()),
        "eigh_3x3_jacobi_s": round(jacobi_s, 4),
        "eigh_3x3_lapack_s": round(lapack_s, 4),
        "lapack_over_jacobi_3x3": round(lapack_s / jacobi_s, 2),
        "max_eigenvalue_rel_diff_3x3": float(((ev_j - ev_l).abs() / ev_l.abs().clamp_min(1e-300)).max()),
    }, indent=2))


if __name__ == "__main__":
    main()
