"""4D Gaussians (SPEC §1): activations of the raw network output, 4D rotation, covariance, slicing
at a time, forecasting beyond the window, and affine changes of units (model box <-> fixed frame).

Shapes use a leading batch `...` and N Gaussians. Quaternions are (w, x, y, z). Everything is
differentiable torch; nothing here allocates on a device other than its inputs'.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Sequence

import torch
from torch import Tensor

from .cameras import SceneNormalization, TimeNormalization

__all__ = [
    "SH_C0",
    "RAW_CHANNELS",
    "MIN_MARGINAL",
    "MIN_OPACITY",
    "CHANNEL_LAYOUT",
    "GaussianActivation",
    "Gaussians3D",
    "Gaussians4D",
    "quaternion_from_matrix",
    "left_isoclinic",
    "right_isoclinic",
    "rotation_4d",
    "factor_rotation_4d",
]

SH_C0 = 0.28209479177387814
"""Degree-0 spherical-harmonic constant: colour = 0.5 + SH_C0 * f_dc."""

RAW_CHANNELS = 20
CHANNEL_LAYOUT: tuple[tuple[str, int], ...] = (
    ("xyz", 3),
    ("t", 1),
    ("rgb", 3),
    ("scale_xyz", 3),
    ("scale_t", 1),
    ("q_left", 4),
    ("q_right", 4),
    ("opacity", 1),
)
"""Split order of the 20 raw channels (SPEC §1), also the order of `Gaussians4D.to_channels()`."""

MIN_MARGINAL = 0.05
MIN_OPACITY = 0.05
"""The inference filter's thresholds (SPEC §1): a sliced Gaussian with p(t) or p(t) * opacity below them is dropped."""

_TT_EPS = 1e-12  # floor for Sigma_tt in divisions; far below any scale the activations produce


def left_isoclinic(q: Tensor) -> Tensor:
    """L(q) of SPEC §1: [..., 4] -> [..., 4, 4], left quaternion multiplication x -> q x."""
    a, b, c, d = q.unbind(-1)
    rows = [
        torch.stack([a, -b, -c, -d], -1),
        torch.stack([b, a, -d, c], -1),
        torch.stack([c, d, a, -b], -1),
        torch.stack([d, -c, b, a], -1),
    ]
    return torch.stack(rows, -2)


def right_isoclinic(q: Tensor) -> Tensor:
    """R(q) of SPEC §1: [..., 4] -> [..., 4, 4], right quaternion multiplication x -> x q."""
    p, q_, r, s = q.unbind(-1)
    rows = [
        torch.stack([p, -q_, -r, -s], -1),
        torch.stack([q_, p, s, -r], -1),
        torch.stack([r, -s, p, q_], -1),
        torch.stack([s, r, -q_, p], -1),
    ]
    return torch.stack(rows, -2)


def rotation_4d(q_left: Tensor, q_right: Tensor) -> Tensor:
    """R4 = L(q_l) @ R(q_r) for unit quaternions: [..., 4], [..., 4] -> [..., 4, 4] in SO(4)."""
    return left_isoclinic(q_left) @ right_isoclinic(q_right)


def _associate_basis(dtype: torch.dtype, device: torch.device) -> Tensor:
    """[16, 16] matrix B with vec(R4) = B vec(q_l q_r^T); its columns are orthogonal with norm 2."""
    eye = torch.eye(4, dtype=dtype, device=device)
    cols = [rotation_4d(eye[k], eye[l]).reshape(16) for k in range(4) for l in range(4)]
    return torch.stack(cols, dim=1)


def factor_rotation_4d(rot: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of `rotation_4d`: SO(4) [..., 4, 4] -> (q_l, q_r), each [..., 4], up to a joint sign.

    R4 is linear in the outer product q_l q_r^T (the "associate matrix"); the map is a scaled
    orthogonal one, so M = B^T vec(R4) / 4 recovers q_l q_r^T, a rank-one matrix from which both
    unit quaternions are read off.
    """
    basis = _associate_basis(rot.dtype, rot.device)
    assoc = (rot.reshape(*rot.shape[:-2], 16) @ basis / 4.0).reshape(*rot.shape[:-2], 4, 4)
    # norms as sums of squares: torch.linalg.norm over a 4-long axis is several times slower on a CPU
    col_norms = (assoc * assoc).sum(-2)  # [..., 4]: (|q_l| * |q_r[l]|)^2 per column
    best = col_norms.argmax(-1)
    col = torch.gather(assoc, -1, best[..., None, None].expand(*assoc.shape[:-1], 1))[..., 0]
    q_left = col * torch.rsqrt((col * col).sum(-1, keepdim=True))
    q_right = (assoc.transpose(-1, -2) @ q_left[..., None])[..., 0]
    q_right = q_right * torch.rsqrt((q_right * q_right).sum(-1, keepdim=True))
    return q_left, q_right


def quaternion_from_matrix(rot: Tensor) -> Tensor:
    """Unit quaternion (w, x, y, z) of SO(3) matrices [..., 3, 3], robust on all branches."""
    m = rot
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        -2,
    )  # [..., 4, 4]: row k is 4 * q * q_k, best conditioned where |q_k| is largest
    diag = torch.stack([1 + trace, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*candidates.shape[:-2], 1, 4))[..., 0, :]
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


_JACOBI_PAIRS_3 = ((0, 1), (0, 2), (1, 2))
_SEPARABLE_TOL = 1e-6
"""Largest space-time entry of a 4D rotation that `Gaussians4D.affine` treats as not mixing space
and time (rounding of a block-diagonal rotation in float32 is about 1e-7; a velocity of 1e-3
model units per model time tilts the time axis by about 1e-3)."""


def symmetric_eigh_3x3(sym: Tensor, max_sweeps: int = 10, tol: float = 1e-14) -> tuple[Tensor, Tensor]:
    """Eigenvalues [..., 3] (unsorted) and eigenvectors (columns, a proper rotation: det +1)
    [..., 3, 3] of symmetric 3x3 matrices [..., 3, 3], by cyclic Jacobi rotations vectorized over
    the batch.

    Why not `torch.linalg.eigh`: on a CPU it calls LAPACK once per 3x3 matrix, and at the tens of
    thousands of Gaussians of a window that per-call overhead is the cost (about 3x this one's:
    `python bench/refactor.py`, docs/bench/refactor_cpu.json). Jacobi keeps small eigenvalues of thin
    Gaussians to relative precision, handles repeated ones (round Gaussians) without special
    cases, and its rotations compose to a proper rotation. Sweeps stop when every off-diagonal
    a_pq is below `tol` sqrt(|a_pp a_qq|) (quadratic convergence: 3-5 sweeps in float64).
    """
    if sym.shape[-2:] != (3, 3):
        raise ValueError(f"need [..., 3, 3] matrices, got {tuple(sym.shape)}")
    batch = sym.shape[:-2]
    flat = sym.reshape(-1, 9)
    a = [[flat[:, 3 * i + j] for j in range(3)] for i in range(3)]  # entries [M]: reassigned, never mutated
    zero, one = torch.zeros_like(flat[:, 0]), torch.ones_like(flat[:, 0])
    v = [[one if i == j else zero for j in range(3)] for i in range(3)]
    tiny = torch.finfo(flat.dtype).tiny
    for _ in range(max_sweeps):
        small = [a[p][q] * a[p][q] <= (tol * tol) * (a[p][p] * a[q][q]).abs() for p, q in _JACOBI_PAIRS_3]
        if bool(torch.stack(small).all()):
            break
        for p, q in _JACOBI_PAIRS_3:
            r = 3 - p - q
            apq, tau = a[p][q], a[q][q] - a[p][p]
            # the smaller rotation (|angle| <= pi/4) that zeroes a_pq: t = tan(angle)
            t = 2 * apq * torch.copysign(one, tau) / (tau.abs() + torch.hypot(tau, 2 * apq)).clamp_min(tiny)
            c = torch.rsqrt(1 + t * t)
            s = t * c
            a[p][p], a[q][q] = a[p][p] - t * apq, a[q][q] + t * apq
            a[p][q] = a[q][p] = zero
            arp, arq = a[r][p], a[r][q]
            a[r][p] = a[p][r] = c * arp - s * arq
            a[r][q] = a[q][r] = s * arp + c * arq
            for k in range(3):
                vp, vq = v[k][p], v[k][q]
                v[k][p], v[k][q] = c * vp - s * vq, s * vp + c * vq
    evals = torch.stack([a[i][i] for i in range(3)], -1).reshape(*batch, 3)
    evecs = torch.stack([torch.stack(row, -1) for row in v], -2).reshape(*batch, 3, 3)
    return evals, evecs


def _refactor(a: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """A covariance factor A [..., 4, K] (Sigma4 = A A^T, float64; K >= 4) -> the SPEC's (scales, q_left,
    q_right) with R4 S S R4^T = Sigma4, in `dtype`. The eigendecomposition of the symmetric
    Sigma4 (U diag(s^2) U^T, float64) gives the same U and s as an SVD of A, faster on a CPU
    (bench/refactor.py), and re-factoring is most of the cost of publishing the 4D set. Squaring costs
    precision only for extreme shapes: a scale s_min of a Gaussian whose largest is s_max comes out
    to about 1e-16 (s_max / s_min)^2 relative error (1e-8 at a ratio of 1e4, far below float32)."""
    evals, u = _batched_eigh(a @ a.transpose(-1, -2))
    return _scales_and_quaternions(u, evals.clamp_min(0.0).sqrt(), dtype)


_EIGH_SPLIT = 4096
"""Batches of at least this many matrices are split across torch's intra-op threads (`_batched_eigh`)."""


def _batched_eigh(sym: Tensor) -> tuple[Tensor, Tensor]:
    """`torch.linalg.eigh` of [M, n, n] symmetric matrices, the batch split over
    `torch.get_num_threads()` Python threads on a CPU. Why: LAPACK solves a batch of small
    matrices one after another on one core (a window's 4D set is tens of thousands of 4x4s, most
    of what publishing it costs); each matrix is solved exactly as in one call, so the results are
    the same."""
    threads = torch.get_num_threads()
    if sym.is_cuda or threads < 2 or sym.shape[0] < _EIGH_SPLIT:
        return torch.linalg.eigh(sym)
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(torch.linalg.eigh, sym.chunk(threads)))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _scales_and_quaternions(u: Tensor, s: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Orthonormal principal axes U [..., 4, 4] (columns) and scales s [..., 4] -> (s, q_left,
    q_right) in `dtype`, one column of U flipped where det U = -1 (U S^2 U^T does not change)."""
    flip = torch.linalg.det(u) < 0
    u = torch.cat([torch.where(flip[..., None, None], -u[..., :1], u[..., :1]), u[..., 1:]], dim=-1)
    q_left, q_right = factor_rotation_4d(u)
    return s.to(dtype), q_left.to(dtype), q_right.to(dtype)


@dataclass(frozen=True)
class GaussianActivation:
    """Constants of the SPEC §1 activations. Object scale by default; scenes set their own near/far.

    All lengths are in model units (the scene box), times in normalized window time [-1, 1].
    """

    near: float = 0.1
    far: float = 4.5
    box_min: float = -1.0
    box_max: float = 1.0
    scale_bias: float = 2.3
    scale_max: float = 0.3
    scale_t_max: float = 1.0
    opacity_bias: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.near < self.far:
            raise ValueError(f"need 0 <= near < far, got near={self.near}, far={self.far}")
        if not self.box_min < self.box_max:
            raise ValueError(f"need box_min < box_max, got {self.box_min}, {self.box_max}")


@dataclass(frozen=True)
class Gaussians3D:
    """3D Gaussians at one time, ready to rasterize.

    Attributes:
        means: [..., N, 3]
        covars: [..., N, 3, 3] symmetric positive semi-definite.
        opacities: [..., N] in [0, 1], already multiplied by the temporal marginal p(t).
        colors: [..., N, 3] linear RGB, >= 0.
        velocities: [..., N, 3] implied velocity Sigma_xyz,t / Sigma_tt (length per time unit).
    """

    means: Tensor
    covars: Tensor
    opacities: Tensor
    colors: Tensor
    velocities: Tensor

    def __len__(self) -> int:
        return self.means.shape[-2]

    def select(self, mask: Tensor) -> Gaussians3D:
        """Keep the Gaussians where `mask` [N] (bool or indices) holds; unbatched clouds only. The
        subset shares this cloud's principal axes (`scales_and_rotations`), computed once."""
        if self.means.ndim != 2:
            raise ValueError("select() needs an unbatched cloud ([N, 3] means)")
        return self._sharing_shape(Gaussians3D(*(getattr(self, f.name)[mask] for f in fields(self))), mask)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussians3D:
        return Gaussians3D(*(getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)))

    def detach(self) -> Gaussians3D:
        return Gaussians3D(*(getattr(self, f.name).detach() for f in fields(self)))

    @staticmethod
    def cat(clouds: Sequence[Gaussians3D]) -> Gaussians3D:
        dim = clouds[0].means.ndim - 2  # the Gaussian axis, counted from the front
        return Gaussians3D(*(torch.cat([getattr(c, f.name) for c in clouds], dim=dim) for f in fields(Gaussians3D)))

    def finite_mask(self) -> Tensor:
        """[..., N] True where every parameter is finite (NaN/inf Gaussians must never render)."""
        return (
            torch.isfinite(self.means).all(-1)
            & torch.isfinite(self.covars).flatten(-2).all(-1)
            & torch.isfinite(self.opacities)
            & torch.isfinite(self.colors).all(-1)
            & torch.isfinite(self.velocities).all(-1)
        )

    def moved(self, dt: float | Tensor) -> Gaussians3D:
        """Constant-velocity extrapolation by dt time units; shape, opacity and colour are held (and
        so are the principal axes: computed once for a cloud and all its forecasts)."""
        return self._sharing_shape(replace(self, means=self.means + self.velocities * dt), None)

    def _sharing_shape(self, other: Gaussians3D, rows: Tensor | None) -> Gaussians3D:
        """`other`, whose covariances are this cloud's (`rows` of them, or all): its
        `scales_and_rotations` are read off this cloud's, whichever of the two is asked first."""
        object.__setattr__(other, "_shape_source", (self, rows))
        return other

    def scales_and_rotations(self) -> tuple[Tensor, Tensor]:
        """Factor covars = R diag(s)^2 R^T: returns scales [..., N, 3] and quaternions (w,x,y,z) [..., N, 4].

        Used to publish 3DGS-style parameters; computed in float64 for tiny scales, once per set of
        covariances (a cloud, its `moved` forecasts and `select`ed subsets share them: publishing a
        window's clouds costs one eigendecomposition, not one per message).
        """
        return self._principal_axes

    @cached_property
    def _principal_axes(self) -> tuple[Tensor, Tensor]:
        source = self.__dict__.get("_shape_source")
        if source is not None:
            parent, rows = source
            scales, quats = parent._principal_axes
            return (scales, quats) if rows is None else (scales[rows], quats[rows])
        evals, evecs = symmetric_eigh_3x3(self.covars.double())  # evecs: a proper rotation
        scales = evals.clamp_min(0).sqrt()
        quats = quaternion_from_matrix(evecs)
        return scales.to(self.covars.dtype), quats.to(self.covars.dtype)


@dataclass(frozen=True)
class Gaussians4D:
    """A batch of 4D Gaussians (SPEC §1), differentiable.

    Attributes:
        means: [..., N, 4] (x, y, z, t) centres.
        scales: [..., N, 4] standard deviations along the 4 principal axes (sx, sy, sz, st).
        q_left, q_right: [..., N, 4] unit quaternions (w, x, y, z); R4 = L(q_left) R(q_right).
        opacities: [..., N] in [0, 1].
        colors: [..., N, 3] linear RGB (degree-0 SH already applied), >= 0.
    """

    means: Tensor
    scales: Tensor
    q_left: Tensor
    q_right: Tensor
    opacities: Tensor
    colors: Tensor

    def __len__(self) -> int:
        return self.means.shape[-2]

    # ---------------------------------------------------------------- constructors
    @staticmethod
    def from_raw(
        raw: Tensor,
        ray_origins: Tensor | None = None,
        ray_directions: Tensor | None = None,
        activation: GaussianActivation = GaussianActivation(),
    ) -> Gaussians4D:
        """Apply the SPEC §1 activations to raw network output.

        Args:
            raw: [..., N, 20] in the order of `CHANNEL_LAYOUT`.
            ray_origins, ray_directions: [..., N, 3] the pixel ray of each pixel-aligned Gaussian
                (unit directions); both None for free Gaussian tokens, whose xyz is decoded directly.
            activation: near/far/box and the scale and opacity constants.
        """
        if raw.shape[-1] != RAW_CHANNELS:
            raise ValueError(f"raw output must have {RAW_CHANNELS} channels, got {raw.shape[-1]}")
        if (ray_origins is None) != (ray_directions is None):
            raise ValueError("give both ray_origins and ray_directions, or neither")
        xyz, t, rgb, scale_xyz, scale_t, q_l, q_r, opacity = raw.split([n for _, n in CHANNEL_LAYOUT], dim=-1)
        if ray_origins is not None:
            w = torch.sigmoid(xyz.mean(-1, keepdim=True))
            depth = (1 - w) * activation.near + w * activation.far
            xyz = ray_origins + depth * ray_directions
        xyz = xyz.clamp(activation.box_min, activation.box_max)
        scales = torch.cat(
            [
                torch.exp(scale_xyz - activation.scale_bias).clamp_max(activation.scale_max),
                torch.exp(scale_t - activation.scale_bias).clamp_max(activation.scale_t_max),
            ],
            dim=-1,
        )
        return Gaussians4D(
            means=torch.cat([xyz, t], dim=-1),
            scales=scales,
            q_left=torch.nn.functional.normalize(q_l, dim=-1),
            q_right=torch.nn.functional.normalize(q_r, dim=-1),
            opacities=torch.sigmoid(opacity[..., 0] - activation.opacity_bias),
            colors=(0.5 + SH_C0 * rgb).clamp_min(0.0),
        )

    @staticmethod
    def from_motion(
        means: Tensor, scale_xyz: Tensor, scale_t: Tensor, velocity: Tensor, opacities: Tensor, colors: Tensor
    ) -> Gaussians4D:
        """Isotropic-in-space Gaussians that move at `velocity`: means [N, 4] (x, y, z, t), spatial
        standard deviation scale_xyz [N], temporal scale_t [N], velocity [N, 3] (space units per
        time unit). Sliced at any t they are round with scale_xyz and centred at
        means[:3] + velocity (t - means[3]). Built as the factor A = [[s I, v s_t], [0, s_t]]
        (Sigma4 = A A^T), re-factored (`_refactor`, float64) into the SPEC's R4 S."""
        n = means.shape[0]
        a = torch.zeros(n, 4, 4, dtype=torch.float64, device=means.device)
        a[:, [0, 1, 2], [0, 1, 2]] = scale_xyz.double()[:, None]
        a[:, :3, 3] = velocity.double() * scale_t.double()[:, None]
        a[:, 3, 3] = scale_t.double()
        scales, q_left, q_right = _refactor(a, means.dtype)
        return Gaussians4D(means, scales, q_left, q_right, opacities, colors)

    @staticmethod
    def from_channels(channels: Tensor) -> Gaussians4D:
        """Inverse of `to_channels()`: [..., N, 20] activated values in `CHANNEL_LAYOUT` order."""
        xyz, t, rgb, s_xyz, s_t, q_l, q_r, opacity = channels.split([n for _, n in CHANNEL_LAYOUT], dim=-1)
        return Gaussians4D(
            means=torch.cat([xyz, t], -1),
            scales=torch.cat([s_xyz, s_t], -1),
            q_left=q_l,
            q_right=q_r,
            opacities=opacity[..., 0],
            colors=rgb,
        )

    def to_channels(self) -> Tensor:
        """[..., N, 20] activated parameters in `CHANNEL_LAYOUT` order (for messages and files)."""
        return torch.cat(
            [self.means[..., :3], self.means[..., 3:], self.colors, self.scales[..., :3], self.scales[..., 3:],
             self.q_left, self.q_right, self.opacities[..., None]],
            dim=-1,
        )

    # ---------------------------------------------------------------- containers
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussians4D:
        return Gaussians4D(*(getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)))

    def detach(self) -> Gaussians4D:
        return Gaussians4D(*(getattr(self, f.name).detach() for f in fields(self)))

    def select(self, mask: Tensor) -> Gaussians4D:
        """Keep the Gaussians where `mask` [N] holds; unbatched sets only."""
        if self.means.ndim != 2:
            raise ValueError("select() needs an unbatched set ([N, 4] means)")
        return Gaussians4D(*(getattr(self, f.name)[mask] for f in fields(self)))

    def __getitem__(self, batch_index: int) -> Gaussians4D:
        """One element of the leading batch dimension."""
        return Gaussians4D(*(getattr(self, f.name)[batch_index] for f in fields(self)))

    @staticmethod
    def cat(sets: Sequence[Gaussians4D]) -> Gaussians4D:
        """Concatenate along the Gaussian dimension (pixel-aligned + free tokens)."""
        dim = sets[0].means.ndim - 2  # the Gaussian axis, counted from the front
        return Gaussians4D(*(torch.cat([getattr(s, f.name) for s in sets], dim=dim) for f in fields(Gaussians4D)))

    # ---------------------------------------------------------------- geometry
    def rotation(self) -> Tensor:
        """[..., N, 4, 4] R4 = L(q_l) R(q_r)."""
        return rotation_4d(self.q_left, self.q_right)

    def factor(self) -> Tensor:
        """[..., N, 4, 4] A = R4 diag(s), so that Sigma4 = A A^T."""
        return self.rotation() * self.scales[..., None, :]

    def covariance(self) -> Tensor:
        """[..., N, 4, 4] Sigma4 = R4 S S^T R4^T (order x, y, z, t)."""
        a = self.factor()
        return a @ a.transpose(-1, -2)

    def marginal_t(self, t: float | Tensor) -> Tensor:
        """[..., N] unnormalized temporal marginal p(t) = exp(-0.5 (t - mu_t)^2 / Sigma_tt) (Sigma_tt
        from what slicing caches: the marginal at many times costs no 4D rotations)."""
        sigma_tt = self._conditional[0]
        return torch.exp(-0.5 * (t - self.means[..., 3]) ** 2 / sigma_tt)

    def implied_motion(self) -> tuple[Tensor, Tensor]:
        """([..., N, 3] velocity Sigma_xt / Sigma_tt, [..., N] temporal standard deviation
        sqrt(Sigma_tt)): how each Gaussian moves and how long it shows (what slicing caches)."""
        sigma_tt, velocity, _ = self._conditional
        return velocity, sigma_tt.sqrt()

    def means_at(self, t: Tensor) -> Tensor:
        """[..., N, 3] each Gaussian's spatial centre conditioned on its own time `t` [..., N]
        (where its slice at t is centred)."""
        velocity = self.implied_motion()[0]
        return self.means[..., :3] + velocity * (t.to(self.means) - self.means[..., 3])[..., None]

    def slice(
        self,
        t: float | Tensor,
        *,
        inference_filter: bool = False,
        min_marginal: float = MIN_MARGINAL,
        min_opacity: float = MIN_OPACITY,
    ) -> Gaussians3D:
        """Condition on time t (same units as means[..., 3]).

        The conditional covariance is computed from the factor A (Sigma4 = A A^T) as
        A_x P A_x^T with P the projector orthogonal to the time row a_t, which is the Schur
        complement Sigma_xx - Sigma_xt Sigma_tx / Sigma_tt but stays positive semi-definite in
        float32 and finite for tiny Sigma_tt.

        Args:
            t: a time (scalar, or a tensor broadcastable to [...]).
            inference_filter: drop Gaussians with p(t) < min_marginal or p(t) * opacity < min_opacity
                (SPEC §1: inference only; it makes dead Gaussians in training). Unbatched only.
        """
        sigma_tt, velocity, covars = self._conditional
        t = torch.as_tensor(t, dtype=self.means.dtype, device=self.means.device)
        if t.ndim > 0:
            t = t[..., None]  # broadcast a per-batch time over the N Gaussians
        dt = t - self.means[..., 3]
        marginal = torch.exp(-0.5 * dt**2 / sigma_tt)
        out = Gaussians3D(
            means=self.means[..., :3] + velocity * dt[..., None],
            covars=covars,
            opacities=self.opacities * marginal,
            colors=self.colors,
            velocities=velocity,
        )
        if inference_filter:
            keep = (marginal >= min_marginal) & (out.opacities >= min_opacity)
            out = out.select(keep)
        return out

    @cached_property
    def _conditional(self) -> tuple[Tensor, Tensor, Tensor]:
        """What slicing needs that does not depend on t, computed once per set (slicing the same
        set at many times, as rendering many target times does, then costs little):
        (Sigma_tt [..., N], velocity Sigma_xt / Sigma_tt [..., N, 3], Sigma_xyz|t [..., N, 3, 3])."""
        a = self.factor()
        a_x, a_t = a[..., :3, :], a[..., 3, :]
        sigma_tt = (a_t * a_t).sum(-1).clamp_min(_TT_EPS)  # [..., N]
        sigma_xt = (a_x @ a_t[..., None])[..., 0]  # [..., N, 3]
        u = a_t / sigma_tt.sqrt()[..., None]
        b = a_x - (a_x @ u[..., None]) * u[..., None, :]  # A_x P, with P = I - u u^T
        return sigma_tt, sigma_xt / sigma_tt[..., None], b @ b.transpose(-1, -2)

    def forecast(self, t: float, t_end: float = 0.0, **slice_options: float | bool) -> Gaussians3D:
        """Gaussians at t; beyond the window end t_end, the cloud sliced at t_end moves along its
        implied velocity with opacity held at its t_end value (DESIGN.md). Continuous at t_end."""
        if t <= t_end:
            return self.slice(t, **slice_options)
        return self.slice(t_end, **slice_options).moved(t - t_end)

    @torch.no_grad()
    def held_still(self, mask: Tensor, t: Tensor) -> Gaussians4D:
        """The same set with the Gaussians where `mask` [..., N] holds made static: each keeps, at
        every time, the position it has at `t` [..., N] and the shape of its slices (Sigma_xyz|t),
        and keeps its temporal marginal (how long it is seen); its velocity becomes zero.

        Why: a velocity that nothing observed (the network's own, for an input view with no
        partner the motion prior could match it against, as on a moving car) is noise that
        publishes as phantom movers and drags forecasts; holding such Gaussians still changes
        nothing at `t`. Inference only (no gradients: the principal axes of Sigma_xyz|t come from an
        eigendecomposition). Cost: one 3x3 eigendecomposition (`symmetric_eigh_3x3`) per masked
        Gaussian. Its rotation leaves the time axis alone, so a change of units (`affine`) needs
        no re-factoring for it.
        """
        if not bool(mask.any()):
            return self
        sigma_tt, velocity, covars = self._conditional
        idx = mask.nonzero(as_tuple=True)
        evals, evecs = symmetric_eigh_3x3(covars[idx].double())  # evecs: a proper rotation
        rot = torch.zeros(*evecs.shape[:-2], 4, 4, dtype=evecs.dtype, device=evecs.device)
        rot[..., :3, :3] = evecs
        rot[..., 3, 3] = 1.0
        q_left, q_right = factor_rotation_4d(rot)
        dtype = self.means.dtype
        scales = torch.cat([evals.clamp_min(0.0).sqrt(), sigma_tt[idx].double().sqrt()[..., None]], -1).to(dtype)
        dt = (t - self.means[..., 3])[idx]
        means = self.means.clone()
        means[idx + (slice(0, 3),)] = self.means[idx][..., :3] + velocity[idx] * dt[..., None]
        new_scales, new_ql, new_qr = self.scales.clone(), self.q_left.clone(), self.q_right.clone()
        new_scales[idx], new_ql[idx], new_qr[idx] = scales, q_left.to(dtype), q_right.to(dtype)
        held = replace(self, means=means, scales=new_scales, q_left=new_ql, q_right=new_qr)
        still = velocity.clone()
        still[idx] = 0.0
        held.__dict__["_conditional"] = (sigma_tt, still, covars)  # known exactly: what slicing would recompute
        return held

    def stretched(self, mask: Tensor, directions: Tensor, spread: Tensor, shift: Tensor) -> Gaussians4D:
        """The same set with the Gaussians where `mask` [..., N] holds stretched in space along
        `directions` [..., N, 3] (unit): Sigma4 gains spread^2 e e^T, e = (direction, 0), and the
        centre moves by shift * direction (`spread`, `shift` [..., N], space units).

        Why: a pixel-aligned Gaussian is a disc on the surface its pixel saw; stretched along its
        own ray it still covers that pixel from its camera, and seen from the side it has depth
        (`model.thickness`). Adding to Sigma_xx leaves Sigma_xt and Sigma_tt alone, so each keeps
        its velocity and how long it is seen. Inference only (no gradients: the new principal axes
        come from a 4x4 eigendecomposition in float64, one per stretched Gaussian). A Gaussian with a
        non-finite parameter, spread or shift is left as it is (the renderer drops it, and a CUDA
        eigendecomposition would fail on it).
        """
        factor = self.factor()
        finite = torch.isfinite(factor).flatten(-2).all(-1) & torch.isfinite(self.means).all(-1)
        mask = mask & finite & torch.isfinite(directions).all(-1) & torch.isfinite(spread) & torch.isfinite(shift)
        if not bool(mask.any()):
            return self
        idx = mask.nonzero(as_tuple=True)
        e = torch.cat([directions[idx], torch.zeros_like(directions[idx][..., :1])], -1).double()
        # [A | spread e] is a 4x5 factor of A A^T + spread^2 e e^T
        stretched = torch.cat([factor[idx].double(), (spread[idx].double()[..., None] * e)[..., None]], -1)
        scales, q_left, q_right = _refactor(stretched, self.means.dtype)
        means = self.means.clone()
        means[idx + (slice(0, 3),)] = self.means[idx][..., :3] + shift[idx][..., None] * directions[idx]
        new_scales, new_ql, new_qr = self.scales.clone(), self.q_left.clone(), self.q_right.clone()
        new_scales[idx], new_ql[idx], new_qr[idx] = scales, q_left, q_right
        return replace(self, means=means, scales=new_scales, q_left=new_ql, q_right=new_qr)

    # ---------------------------------------------------------------- units
    def affine(self, space_scale: float, space_offset: Tensor, time_scale: float, time_offset: float) -> Gaussians4D:
        """Change of units x' = space_scale x + space_offset, t' = time_scale t + time_offset.

        With D = diag(s, s, s, tau), Sigma' = D A A^T D. When s != tau the old rotation does not
        survive, so D A is re-factored (`_refactor`, float64) into R' S' and R' into (q_l, q_r),
        except where R does not mix space and time (its space-time entries within `_SEPARABLE_TOL`:
        float32 rounding of an exact block-diagonal rotation), which commutes with D.
        """
        dtype = self.means.dtype
        offset = torch.cat(
            [torch.as_tensor(space_offset, dtype=dtype, device=self.means.device).reshape(3),
             torch.tensor([time_offset], dtype=dtype, device=self.means.device)]
        )
        gain = torch.tensor([space_scale] * 3 + [time_scale], dtype=dtype, device=self.means.device)
        means = self.means * gain + offset
        if math.isclose(space_scale, time_scale, rel_tol=1e-12):
            return replace(self, means=means, scales=self.scales * abs(space_scale))
        rot = self.rotation()
        a = rot * self.scales[..., None, :]  # the factor R S (`factor`), from the rotation needed here
        # a rotation that leaves the time axis alone (held-still Gaussians, `held_still`) commutes
        # with D: D R S = R (D S), the scales change and the rotation stays; the rest is re-factored
        apart = torch.maximum(rot[..., :3, 3].abs().amax(-1), rot[..., 3, :3].abs().amax(-1)) <= _SEPARABLE_TOL
        scales, q_left, q_right = self.scales * gain.abs(), self.q_left, self.q_right
        mixed = (~apart).nonzero(as_tuple=True)
        if len(mixed[0]):
            s_mixed, ql_mixed, qr_mixed = _refactor(a[mixed].double() * gain.double()[:, None], dtype)
            scales, q_left, q_right = scales.clone(), q_left.clone(), q_right.clone()
            scales[mixed], q_left[mixed], q_right[mixed] = s_mixed, ql_mixed, qr_mixed
        return replace(self, means=means, scales=scales, q_left=q_left, q_right=q_right)

    def to_world(self, scene: SceneNormalization, time: TimeNormalization) -> Gaussians4D:
        """Model box and window time -> fixed frame (metres) and core time (seconds)."""
        return self.affine(scene.scale, scene.center, time.half_span, time.center)

    def to_model(self, scene: SceneNormalization, time: TimeNormalization) -> Gaussians4D:
        """Fixed frame and core time -> model box and window time; inverse of `to_world`."""
        return self.affine(
            1.0 / scene.scale, -scene.center / scene.scale, 1.0 / time.half_span, -time.center / time.half_span
        )
