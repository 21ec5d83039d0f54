"""Rasterizer tests: projection against gsplat's pure-torch reference, compositing against a
brute-force per-pixel loop, gradients (gradcheck and a dense autograd reference), bad input, and
torch-vs-gsplat parity on a GPU."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras
from lrm4d_core.gaussians import Gaussians3D
from lrm4d_core.render import RenderOutput, rasterize
from lrm4d_core.render.depth_planes import depth_slopes
from lrm4d_core.render.projection import project

F64 = torch.float64
EYE4 = torch.eye(4, dtype=F64)
ALPHA_MIN = 1.0 / 255.0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These scenes are tiny: one intra-op thread avoids OpenMP barrier stalls on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- scenes
def make_cameras(n: int, width: int, height: int, dtype: torch.dtype = F64, focal: float = 0.9) -> Cameras:
    """n cameras ~3 units behind the origin looking along +z, rotated about y, with principal
    points off the image centre (so the Jacobian clamp is asymmetric)."""
    Ks, poses = [], []
    for c in range(n):
        f = focal * width
        cx, cy = 0.5 * width + 3.0 * c - 1.7, 0.5 * height - 2.3 * c + 0.8
        Ks.append(torch.tensor([[f, 0, cx], [0, 1.07 * f, cy], [0, 0, 1]]))
        ang = 0.2 * c - 0.1
        pose = torch.eye(4)
        pose[:3, :3] = torch.tensor([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
        pose[:3, 3] = torch.tensor([0.4 * c - 0.2, -0.15 * c, -3.0])
        poses.append(pose)
    return Cameras(torch.stack(Ks).to(dtype), torch.stack(poses).to(dtype), width, height)


def make_gaussians(
    n: int,
    seed: int,
    dtype: torch.dtype = F64,
    spread: float = 1.0,
    scale: tuple[float, float] = (0.03, 0.3),
    opacity: tuple[float, float] = (0.05, 0.95),
) -> Gaussians3D:
    """Random anisotropic Gaussians in a box around the origin."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=F64) * 2 - 1) * spread
    rot, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=F64))
    s = torch.empty(n, 3, dtype=F64).uniform_(math.log(scale[0]), math.log(scale[1]), generator=g).exp()
    covars = rot @ torch.diag_embed(s**2) @ rot.transpose(-1, -2)
    opacities = torch.empty(n, dtype=F64).uniform_(*opacity, generator=g)
    colors = torch.rand(n, 3, generator=g, dtype=F64)
    cloud = Gaussians3D(means, covars, opacities, colors, torch.zeros(n, 3, dtype=F64))
    return cloud.to(dtype=dtype)


# ----------------------------------------------------------------------------- references
def brute_force(gaussians: Gaussians3D, cameras: Cameras, background=None, near_plane: float = 0.01,
                slopes: torch.Tensor | None = None):
    """Float64 per-pixel compositing with explicit loops (gsplat's kernel, transcribed).

    Projection comes from gsplat's own pure-torch reference (ours where gsplat is not installed;
    the two are compared in test_projection_matches_gsplat_reference). With `slopes` [C, N, 2]
    (depth per pixel, `reference_slopes`) a splat's depth at a pixel is its depth plane there.
    Returns color, alpha, depth as [C, H, W, k] tensors and the number of pixels that terminated
    early.
    """
    g = gaussians.to(dtype=F64)
    covars = 0.5 * (g.covars + g.covars.transpose(-1, -2))
    args = (g.means, covars, cameras.world_to_cam.to(F64), cameras.K.to(F64), cameras.width, cameras.height)
    try:
        from gsplat.cuda._torch_impl import _fully_fused_projection

        _, means2d, depths, conics, _ = _fully_fused_projection(*args, near_plane=near_plane)
    except ImportError:
        proj = project(*args, near_plane=near_plane)
        means2d, depths, conics = proj.means2d, proj.depths, proj.conics
    n_cams, width, height = len(cameras), cameras.width, cameras.height
    color = torch.zeros(n_cams, height, width, 3, dtype=F64)
    alpha = torch.zeros(n_cams, height, width, 1, dtype=F64)
    depth = torch.zeros(n_cams, height, width, 1, dtype=F64)
    bg = [0.0, 0.0, 0.0] if background is None else background.tolist()
    opac, cols = g.opacities.tolist(), g.colors.tolist()
    terminated = 0
    for c in range(n_cams):
        z = depths[c].tolist()
        order = sorted((i for i in range(len(z)) if z[i] > near_plane), key=lambda i: z[i])
        m2d, con = means2d[c].tolist(), conics[c].tolist()
        slope = [[0.0, 0.0]] * len(z) if slopes is None else slopes[c].tolist()
        for v in range(height):
            for u in range(width):
                px, py = u + 0.5, v + 0.5
                t, rgb, wz = 1.0, [0.0, 0.0, 0.0], 0.0
                for i in order:
                    dx, dy = px - m2d[i][0], py - m2d[i][1]
                    a, b, cc = con[i]
                    sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                    if sigma < 0:
                        continue
                    al = min(0.999, opac[i] * math.exp(-sigma))
                    if al < ALPHA_MIN:
                        continue
                    next_t = t * (1 - al)
                    if next_t <= 1e-4:
                        terminated += 1
                        break
                    w = al * t
                    rgb = [rgb[k] + w * cols[i][k] for k in range(3)]
                    wz += w * (z[i] + slope[i][0] * dx + slope[i][1] * dy)
                    t = next_t
                color[c, v, u] = torch.tensor([rgb[k] + bg[k] * t for k in range(3)])
                alpha[c, v, u, 0] = 1 - t
                depth[c, v, u, 0] = wz / max(1 - t, 1e-10)
    return color, alpha, depth, terminated


def _pixel_centres(width: int, height: int, dtype: torch.dtype) -> torch.Tensor:
    """[H*W, 2] (u, v) of every pixel centre, row-major."""
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype) + 0.5, torch.arange(width, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([u.flatten(), v.flatten()], -1)


def _dense_weights(proj, c: int, keep: torch.Tensor, opacities: torch.Tensor, pix: torch.Tensor):
    """(order, w [P, N], d [P, N, 2]) of camera c: the kept splats front to back, their compositing
    weights alpha T at every pixel (0.999 clamp, 1/255 skip, termination at T <= 1e-4) and each
    pixel's offset from their centres. Differentiable except through the termination test."""
    order = torch.argsort(proj.depths[c].detach().masked_fill(~keep, float("inf")))[: int(keep.sum())]
    m, con = proj.means2d[c, order], proj.conics[c, order]
    d = pix[:, None, :] - m[None]  # [P, N, 2]
    sigma = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
    al = torch.clamp_max(opacities[order] * torch.exp(-sigma), 0.999)
    al = torch.where(al >= ALPHA_MIN, al, torch.zeros_like(al))
    trans = torch.cumprod(torch.cat([torch.ones_like(al[:, :1]), 1 - al[:, :-1]], 1), 1)
    return order, al * trans * (trans * (1 - al) > 1e-4).detach(), d


def dense_autograd(gaussians: Gaussians3D, cameras: Cameras, depth_mode: str = "center"):
    """Vectorized every-splat-every-pixel compositor, differentiated by torch autograd.

    Same math as the renderer (including the 0.999 clamp, the 1/255 skip and termination), used
    to check the hand-written backward where gradcheck's finite differences cannot (thresholds).
    """
    covars = 0.5 * (gaussians.covars + gaussians.covars.transpose(-1, -2))
    dtype = gaussians.means.dtype
    width, height = cameras.width, cameras.height
    proj = project(gaussians.means, covars, cameras.world_to_cam.to(dtype), cameras.K.to(dtype), width, height)
    slopes = torch.zeros_like(proj.means2d)
    if depth_mode == "plane":
        slopes = depth_slopes(gaussians.means, covars, cameras.world_to_cam.to(dtype), cameras.K.to(dtype), proj.covars2d)
    pix = _pixel_centres(width, height, dtype)
    colors, alphas, depths = [], [], []
    for c in range(len(cameras)):
        order, w, d = _dense_weights(proj, c, proj.depths[c] > 0.01, gaussians.opacities, pix)
        z = proj.depths[c, order]
        colors.append(w @ gaussians.colors[order])
        alphas.append(w.sum(1, keepdim=True))
        z_pix = z[None] + (d * slopes[c, order][None]).sum(-1)  # [P, N] each splat's depth plane
        depths.append((w * z_pix).sum(1, keepdim=True))
    shape = (len(cameras), cameras.height, cameras.width)
    alpha = torch.stack(alphas).reshape(*shape, 1)
    depth = torch.stack(depths).reshape(*shape, 1) / alpha.clamp_min(1e-10)
    return torch.stack(colors).reshape(*shape, 3), alpha, depth


def ray_peak_depth(mean_cam: np.ndarray, cov_cam: np.ndarray, ray: np.ndarray) -> float:
    """Depth z of the densest point z * ray (ray_z = 1) of a camera-space Gaussian: the minimum of
    the quadratic (z r - mu)^T A (z r - mu), A = cov^-1 (checked against sampling below)."""
    a = np.linalg.inv(cov_cam)
    return float(ray @ a @ mean_cam / (ray @ a @ ray))


def reference_slopes(g: Gaussians3D, cameras: Cameras, limit: float = 1.0, h: float = 1e-3) -> torch.Tensor:
    """[C, N, 2] depth planes by central differences of `ray_peak_depth` over pixel offsets +-h at
    each splat's centre pixel, scaled down where they change the depth by more than `limit` times
    the centre depth over +-3 sigma of the image footprint (the inverse of gsplat's conic)."""
    covars = 0.5 * (g.covars + g.covars.transpose(-1, -2))
    proj = project(g.means, covars, cameras.world_to_cam.to(F64), cameras.K.to(F64), cameras.width, cameras.height)
    out = np.zeros((len(cameras), len(g), 2))
    for c in range(len(cameras)):
        w2c, k = cameras.world_to_cam[c].numpy(), cameras.K[c].numpy()
        for i in range(len(g)):
            mu = w2c[:3, :3] @ g.means[i].numpy() + w2c[:3, 3]
            cov = w2c[:3, :3] @ covars[i].numpy() @ w2c[:3, :3].T
            u, v = k[0, 0] * mu[0] / mu[2] + k[0, 2], k[1, 1] * mu[1] / mu[2] + k[1, 2]

            def peak(du: float, dv: float) -> float:
                ray = np.array([(u + du - k[0, 2]) / k[0, 0], (v + dv - k[1, 2]) / k[1, 1], 1.0])
                return ray_peak_depth(mu, cov, ray)

            slope = np.array([peak(h, 0) - peak(-h, 0), peak(0, h) - peak(0, -h)]) / (2 * h)
            a, b, cc = proj.conics[c, i].tolist()
            cov2d = np.linalg.inv(np.array([[a, b], [b, cc]]))
            change = float(np.abs(slope) @ (3 * np.sqrt(np.diag(cov2d))))
            out[c, i] = slope * min(1.0, limit * mu[2] / change) if change > 0 else slope
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------- 1. projection
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_projection_matches_gsplat_reference(dtype):
    _fully_fused_projection = pytest.importorskip("gsplat.cuda._torch_impl")._fully_fused_projection

    cams = make_cameras(3, 40, 30, dtype, focal=0.7)
    # spread 3: many Gaussians project near the image border or far outside the FOV.
    g = make_gaussians(400, seed=1, dtype=dtype, spread=3.0, scale=(0.02, 0.6))
    covars = 0.5 * (g.covars + g.covars.transpose(-1, -2))
    viewmats, Ks = cams.world_to_cam.to(dtype), cams.K.to(dtype)
    ref_radii, ref_means2d, ref_depths, ref_conics, _ = _fully_fused_projection(g.means, covars, viewmats, Ks, 40, 30)
    proj = project(g.means, covars, viewmats, Ks, 40, 30)  # no opacities: gsplat's 3.33 extent

    ref_valid = (ref_radii > 0).all(-1)
    assert torch.equal(proj.visible, ref_valid)
    assert 50 < int(ref_valid.sum()) < ref_valid.numel()  # some culled, many kept
    assert torch.equal(proj.radii, ref_radii)
    in_front = ref_depths > 0.01
    tol = dict(rtol=1e-4, atol=1e-4 if dtype == torch.float32 else 1e-10)
    torch.testing.assert_close(proj.depths, ref_depths, **tol)
    torch.testing.assert_close(proj.means2d[in_front], ref_means2d[in_front], **tol)
    torch.testing.assert_close(proj.conics[in_front], ref_conics[in_front], **tol)
    # The clamp matters: Gaussians outside the FOV get a different conic than without it.
    m_cam = (viewmats[:, None, :3, :3] @ g.means[None, :, :, None])[..., 0] + viewmats[:, None, :3, 3]
    outside = in_front & ((m_cam[..., 0] / m_cam[..., 2]).abs() > 0.9)
    assert int(outside.sum()) > 10


def test_opacity_radius_bounds_every_composited_pixel():
    """With opacity-aware radii, no pixel outside the box has alpha >= 1/255 (so binning by
    the box loses nothing, whatever the tile size)."""
    cams = make_cameras(1, 64, 48, F64)
    g = make_gaussians(200, seed=2, dtype=F64, opacity=(0.0, 1.0))
    covars = 0.5 * (g.covars + g.covars.transpose(-1, -2))
    proj = project(g.means, covars, cams.world_to_cam, cams.K, 64, 48, opacities=g.opacities)
    v, u = torch.meshgrid(torch.arange(48, dtype=F64) + 0.5, torch.arange(64, dtype=F64) + 0.5, indexing="ij")
    d = torch.stack([u, v], -1).reshape(-1, 1, 2) - proj.means2d[0][None]
    con = proj.conics[0]
    sigma = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
    drawn = (g.opacities * torch.exp(-sigma) >= ALPHA_MIN) & (proj.depths[0] > 0.01)
    inside = (d.abs() <= proj.radii[0][None].to(F64)).all(-1)
    assert int(drawn.sum()) > 1000
    assert not (drawn & ~inside).any()
    assert (proj.radii[0][g.opacities < ALPHA_MIN] == 0).all()


# ----------------------------------------------------------------------------- 2. analytic
def test_single_gaussian_analytic_pixels():
    """An isotropic Gaussian seen head-on: pixel values from the closed form."""
    f, cx, cy, width, height = 50.0, 16.0, 12.0, 32, 24
    cams = Cameras(torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]]], dtype=F64), EYE4[None], width, height)
    mu = torch.tensor([0.05, -0.03, 2.0], dtype=F64)
    s2, o, col = 0.1**2, 0.8, torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    covars = s2 * torch.eye(3, dtype=F64)[None]
    g = Gaussians3D(mu[None], covars, torch.tensor([o], dtype=F64), col[None], torch.zeros(1, 3, dtype=F64))
    out = rasterize(g, cams, background=torch.tensor([0.1, 0.1, 0.1], dtype=F64))

    x, y, z = mu.tolist()
    jac = torch.tensor([[f / z, 0, -f * x / z**2], [0, f / z, -f * y / z**2]], dtype=F64)
    cov2d = jac @ (s2 * torch.eye(3, dtype=F64)) @ jac.T + 0.3 * torch.eye(2, dtype=F64)
    centre = torch.tensor([f * x / z + cx, f * y / z + cy], dtype=F64)
    for u, v in [(17, 11), (16, 10), (20, 14), (13, 9), (17, 18), (30, 2)]:
        d = torch.tensor([u + 0.5, v + 0.5], dtype=F64) - centre
        a = min(0.999, o * math.exp(-0.5 * float(d @ torch.linalg.solve(cov2d, d))))
        a = a if a >= ALPHA_MIN else 0.0
        torch.testing.assert_close(out.alpha[0, v, u, 0], torch.tensor(a, dtype=F64), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out.color[0, v, u], col * a + 0.1 * (1 - a), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out.depth[0, v, u, 0], torch.tensor(z if a > 0 else 0.0, dtype=F64))
    assert out.alpha[0, 11, 17, 0] > 0.5 and out.alpha[0, 2, 30, 0] == 0


# ----------------------------------------------------------------------------- 3. brute force
SMALL_OPTIONS = [
    {},  # defaults
    {"tile_size": 16},
    # many depth slabs (skipping terminated tiles), rounds and blocks
    {"tile_size": 4, "first_slab": 3, "first_round": 1, "max_round": 2, "max_block": 64},
]


@pytest.mark.parametrize("options", SMALL_OPTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_scene_matches_brute_force(seed, options):
    cams = make_cameras(2, 24, 20)  # 24 x 20: not a multiple of the tile size
    g = make_gaussians(30 + 30 * seed, seed=seed, scale=(0.05, 0.5))
    bg = torch.tensor([0.3, 0.6, 0.1], dtype=F64)
    out = rasterize(g, cams, bg, backend="torch", **options)
    color, alpha, depth, _ = brute_force(g, cams, bg)
    assert out.color.shape == (2, 20, 24, 3) and out.alpha.shape == out.depth.shape == (2, 20, 24, 1)
    assert float(alpha.mean()) > 0.3
    torch.testing.assert_close(out.color, color, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.alpha, alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.depth, depth, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", SMALL_OPTIONS)
def test_early_termination_matches_brute_force(options):
    """Many large, nearly opaque Gaussians: most pixels stop before their last splat."""
    cams = make_cameras(2, 24, 20)
    g = make_gaussians(40, seed=3, spread=0.5, scale=(0.3, 0.8), opacity=(0.9, 1.0))
    out = rasterize(g, cams, backend="torch", **options)
    color, alpha, depth, terminated = brute_force(g, cams)
    assert terminated > 300  # of 960 pixels
    if "first_slab" in options:  # later depth slabs skip the tiles that have terminated
        one_slab = rasterize(g, cams, backend="torch", tile_size=options["tile_size"])
        assert out.stats["n_slabs"] > 2 and out.stats["n_intersections"] < one_slab.stats["n_intersections"]
    torch.testing.assert_close(out.color, color, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.alpha, alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.depth, depth, atol=1e-5, rtol=0)


def test_float32_close_to_float64():
    cams = make_cameras(2, 48, 40)
    g = make_gaussians(300, seed=4)
    ref = rasterize(g, cams)
    out = rasterize(g.to(dtype=torch.float32), cams.to(dtype=torch.float32))
    assert out.color.dtype == torch.float32
    torch.testing.assert_close(out.color, ref.color.float(), atol=2e-4, rtol=0)
    torch.testing.assert_close(out.alpha, ref.alpha.float(), atol=2e-4, rtol=0)


# ----------------------------------------------------------------------------- 3b. depth planes
def test_ray_peak_depth_is_the_sampled_density_maximum():
    """The closed form of the reference against dense sampling along a few rays."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cov = rot @ np.diag(rng.uniform(0.01, 0.5, 3) ** 2) @ rot.T
        mu = np.array([0.2, -0.1, 3.0]) + rng.normal(size=3) * 0.1
        ray = np.array([*(mu[:2] / mu[2] + rng.normal(size=2) * 0.05), 1.0])
        z = np.linspace(1.0, 5.0, 400001)
        diff = z[:, None] * ray - mu
        density = -0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        assert abs(ray_peak_depth(mu, cov, ray) - z[np.argmax(density)]) < 2e-5


def test_depth_slopes_match_finite_differences_of_the_rays_densest_point():
    cams = make_cameras(2, 40, 32)
    g = make_gaussians(25, seed=11, scale=(0.02, 0.6))
    covars = 0.5 * (g.covars + g.covars.transpose(-1, -2))
    proj = project(g.means, covars, cams.world_to_cam, cams.K, cams.width, cams.height)
    ours = depth_slopes(g.means, covars, cams.world_to_cam, cams.K, proj.covars2d, limit=float("inf"))
    ref = reference_slopes(g, cams, limit=float("inf"))
    assert float(ref.abs().max()) > 0.01  # anisotropic splats: their planes are tilted
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    limited = depth_slopes(g.means, covars, cams.world_to_cam, cams.K, proj.covars2d, limit=0.05)
    shrunk = limited.norm(dim=-1) < ours.norm(dim=-1) - 1e-9
    assert 0 < int(shrunk.sum()) < shrunk.numel()  # the limit acts on some, not all
    torch.testing.assert_close(limited, reference_slopes(g, cams, limit=0.05), atol=1e-6, rtol=1e-5)


def _tilted_disc(tilt_deg: float, radius: float = 0.15, depth: float = 2.0) -> Gaussians3D:
    """A thin disc (thickness 1% of its radius) at `depth` on the optical axis, its normal tilted
    by `tilt_deg` from the viewing direction about the x axis."""
    t = math.radians(tilt_deg)
    rot = torch.tensor([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]], dtype=F64)
    cov = rot @ torch.diag(torch.tensor([radius, radius, 0.01 * radius], dtype=F64) ** 2) @ rot.T
    return Gaussians3D(torch.tensor([[0.0, 0.0, depth]], dtype=F64), cov[None], torch.tensor([0.95], dtype=F64),
                       torch.ones(1, 3, dtype=F64), torch.zeros(1, 3, dtype=F64))


def test_plane_depth_of_a_tilted_disc_is_where_the_rays_meet_it():
    """Rendered depth across a disc seen obliquely: the ray-plane intersection, within the
    linearisation, where every pixel has the centre's depth in "center" mode."""
    f, size = 80.0, 64
    cams = Cameras(torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]], dtype=F64), EYE4[None], size, size)
    disc = _tilted_disc(60.0, radius=0.3)
    normal = torch.linalg.eigh(disc.covars[0]).eigenvectors[:, 0]  # the thin axis
    pix = _pixel_centres(size, size, F64).reshape(size, size, 2)
    rays = torch.cat([(pix - size / 2) / f, torch.ones(size, size, 1, dtype=F64)], -1)
    truth = float(normal @ disc.means[0]) / (rays @ normal)  # depth where each ray meets the plane
    plane = rasterize(disc, cams, depth_mode="plane")
    centre = rasterize(disc, cams)
    torch.testing.assert_close(plane.color, centre.color)
    torch.testing.assert_close(plane.alpha, centre.alpha)
    seen = plane.alpha[0, ..., 0] > 0.5
    assert int(seen.sum()) > 100
    plane_err = (plane.depth[0, ..., 0][seen] / truth[seen] - 1).abs()
    centre_err = (centre.depth[0, ..., 0][seen] / truth[seen] - 1).abs()
    assert float(centre_err.max()) > 0.1 and float(plane_err.max()) < 0.03  # 0.14 and 0.02


@pytest.mark.parametrize("options", SMALL_OPTIONS)
def test_plane_depth_matches_brute_force(options):
    cams = make_cameras(2, 24, 20)
    g = make_gaussians(50, seed=12, scale=(0.05, 0.5))
    out = rasterize(g, cams, backend="torch", depth_mode="plane", **options)
    color, alpha, depth, _ = brute_force(g, cams, slopes=reference_slopes(g, cams))
    centre = rasterize(g, cams, backend="torch", **options)
    torch.testing.assert_close(out.color, color, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.alpha, alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.depth, depth, atol=1e-5, rtol=0)
    assert float((out.depth - centre.depth).abs().max()) > 0.05  # the planes change the depth


# ----------------------------------------------------------------------------- 4. gradients
def _tiny_scene_fn(cams, options, base):
    def fn(means, chol, opacities, colors):
        covars = chol @ chol.transpose(-1, -2)
        g = Gaussians3D(means, covars, opacities, colors, torch.zeros_like(means))
        out = rasterize(g, cams, backend="torch", **options)
        return out.color, out.alpha, out.depth

    return fn


@pytest.mark.parametrize("options", [{}, {"tile_size": 4, "first_slab": 1, "first_round": 1, "max_round": 1},
                                     {"depth_mode": "plane"}])
def test_gradcheck_tiny_scene(options):
    cams = make_cameras(1, 10, 8, focal=2.0)
    g = make_gaussians(4, seed=5, spread=0.4, scale=(0.2, 0.5), opacity=(0.3, 0.7))
    chol = torch.linalg.cholesky(g.covars)
    inputs = tuple(t.clone().requires_grad_(True) for t in (g.means, chol, g.opacities, g.colors))
    fn = _tiny_scene_fn(cams, options, g)
    assert float(fn(*inputs)[1].detach().mean()) > 0.2
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("depth_mode", ["center", "plane"])
def test_gradients_match_dense_autograd_with_termination(depth_mode):
    """Clamped alphas, skipped alphas and terminated pixels: backward equals autograd on the dense
    reference (gradcheck cannot cross these thresholds). With depth planes both take the slopes
    from `depth_slopes`; what is compared is the compositor's backward through them."""
    cams = make_cameras(2, 20, 16)
    g = make_gaussians(40, seed=6, spread=0.5, scale=(0.15, 0.6), opacity=(0.5, 1.0))
    g.opacities[:6] = 1.0  # alpha clamped to 0.999 near their centres
    leaves = [t.clone().requires_grad_(True) for t in (g.means, g.covars, g.opacities, g.colors)]
    weights = [torch.randn(2, 16, 20, k, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in (3, 1, 1)]

    def grads(render):
        g2 = Gaussians3D(*leaves, torch.zeros_like(leaves[0]))
        outs = render(g2)
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        return torch.autograd.grad(loss, leaves), outs

    def ours_fn(x: Gaussians3D):
        r = rasterize(x, cams, backend="torch", depth_mode=depth_mode, tile_size=4, first_slab=5, first_round=2,
                      max_round=4)
        return r.color, r.alpha, r.depth

    ours, outs = grads(ours_fn)
    ref, ref_outs = grads(lambda x: dense_autograd(x, cams, depth_mode))
    for a, b in zip(outs, ref_outs):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    assert brute_force(g, cams)[3] > 50  # pixels that terminate early, of 640
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-7)


def test_gradients_flow_across_depth_slabs():
    """A tile that a middle depth slab does not touch still passes the transmittance gradient
    from the slab behind it to the slab in front of it."""
    cams = Cameras(torch.tensor([[[32.0, 0, 16], [0, 32, 16], [0, 0, 1]]], dtype=F64), EYE4[None], 32, 32)
    # Depth slabs of 1, 2 and 4 splats: front top-left, then bottom-right only, then both.
    means = torch.tensor(
        [[-0.3, -0.3, 2.0], [0.3, 0.3, 2.5], [0.35, 0.3, 2.6],
         [-0.3, -0.3, 3.0], [-0.26, -0.3, 3.2], [0.3, 0.3, 3.5], [-0.3, -0.26, 3.6]],
        dtype=F64,
    )
    n = means.shape[0]
    covars = (0.06 * means[:, 2, None, None]) ** 2 * torch.eye(3, dtype=F64)  # ~2 px standard deviation
    colors = torch.rand(n, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    leaves = [t.requires_grad_(True) for t in (means, covars, torch.full((n,), 0.6, dtype=F64), colors)]
    g = Gaussians3D(*leaves, torch.zeros(n, 3, dtype=F64))
    out = rasterize(g, cams, backend="torch", tile_size=4, first_slab=1)
    assert out.stats["n_slabs"] == 3
    ref = dense_autograd(g, cams)
    ours = torch.autograd.grad(out.color.sum() + out.depth.sum(), leaves)
    theirs = torch.autograd.grad(ref[0].sum() + ref[2].sum(), leaves)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


# ----------------------------------------------------------------------------- 5. bad input
def _poison(g: Gaussians3D) -> Gaussians3D:
    means, covars, opac, colors = (t.clone() for t in (g.means, g.covars, g.opacities, g.colors))
    means[0, 1] = float("nan")
    covars[3, 2, 2] = float("inf")
    opac[5] = float("nan")
    colors[7, 0] = float("-inf")
    return Gaussians3D(means, covars, opac, colors, g.velocities)


def test_nonfinite_gaussians_dropped_and_counted():
    cams = make_cameras(2, 24, 20)
    g = make_gaussians(40, seed=7)
    bad = _poison(g)
    keep = bad.finite_mask()
    clean_out = rasterize(g.select(keep), cams)
    leaves = [t.clone().requires_grad_(True) for t in (bad.means, bad.covars, bad.opacities, bad.colors)]
    out = rasterize(Gaussians3D(*leaves, bad.velocities), cams)
    assert out.stats["dropped_nonfinite"] == 4 and clean_out.stats["dropped_nonfinite"] == 0
    assert torch.equal(out.color, clean_out.color) and torch.equal(out.depth, clean_out.depth)
    (out.color.sum() + out.depth.sum() + out.alpha.sum()).backward()
    for leaf in leaves:
        assert torch.isfinite(leaf.grad).all()
        assert leaf.grad[keep].abs().sum() > 0
        assert (leaf.grad[~keep] == 0).all()


def test_empty_and_all_nonfinite_render_background():
    cams = make_cameras(2, 12, 10)
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=F64)
    empty = make_gaussians(0, seed=0)
    out = rasterize(empty, cams, bg)
    assert out.color.shape == (2, 10, 12, 3)
    assert torch.equal(out.color, bg.expand(2, 10, 12, 3)) and (out.alpha == 0).all() and (out.depth == 0).all()
    means = torch.full((3, 3), float("nan"), dtype=F64, requires_grad=True)
    g = make_gaussians(3, seed=0)
    out = rasterize(Gaussians3D(means, g.covars, g.opacities, g.colors, g.velocities), cams, bg)
    assert out.stats["dropped_nonfinite"] == 3 and (out.alpha == 0).all()
    out.color.sum().backward()  # still connected to the inputs
    assert (means.grad == 0).all()


def test_behind_camera_and_near_plane_culled():
    cams = Cameras(torch.tensor([[[20.0, 0, 8], [0, 20, 8], [0, 0, 1]]], dtype=F64), EYE4[None], 16, 16)
    covars = 0.05 * torch.eye(3, dtype=F64).expand(3, 3, 3)
    means = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.005], [0.0, 0.0, 0.0]], dtype=F64)
    opacities, ones = torch.full((3,), 0.9, dtype=F64), torch.ones(3, 3, dtype=F64)
    g = Gaussians3D(means, covars, opacities, ones, torch.zeros(3, 3, dtype=F64))
    out = rasterize(g, cams)
    assert out.stats["n_visible"] == 0 and (out.alpha == 0).all() and torch.isfinite(out.color).all()
    means2 = means.clone()
    means2[0, 2] = 1.0
    out = rasterize(Gaussians3D(means2, covars, g.opacities, g.colors, g.velocities), cams)
    assert out.stats["n_visible"] == 1 and out.alpha.max() > 0.5
    out = rasterize(Gaussians3D(means2, covars, g.opacities, g.colors, g.velocities), cams, near_plane=1.5)
    assert out.stats["n_visible"] == 0


def test_gaussians_no_camera_can_see_change_nothing():
    """The rasterizer drops, before projecting them, Gaussians that every camera has behind it or
    beyond the far plane, and those below 1/255 opacity. Gaussians a few tenths in front of a camera
    and Gaussians only one of the cameras sees still render as the brute-force reference says, and
    adding Gaussians no camera can see leaves renders, visible count and the others' gradients
    exactly as they were and gives them zero gradients; for all cameras at once and one at a time."""
    front = make_cameras(2, 24, 20)  # at z ~ -3 looking along +z
    back_pose = torch.tensor([[-1.0, 0, 0, 0.1], [0, 1, 0, 0], [0, 0, -1, 3.0], [0, 0, 0, 1]], dtype=F64)
    cams = Cameras.cat([front, Cameras(front.K[:1], back_pose[None], 24, 20)])  # at z = 3 looking along -z
    g = make_gaussians(40, seed=9)
    g.means[:4] = torch.tensor([[0.0, 0.0, -2.6], [0.05, 0.02, -2.55], [0.0, 0.1, -3.5], [-0.1, 0.0, -3.6]], dtype=F64)
    g.covars[:4] = 0.01**2 * torch.eye(3, dtype=F64)  # two 0.4 in front of cameras 0 and 1,
    g.opacities[:4] = 0.9  # two behind them, which camera 2 alone sees
    extra = make_gaussians(30, seed=10, scale=(0.5, 2.0), opacity=(0.5, 0.9))
    extra.means[:10, 2] += 100.0  # behind camera 2, beyond the far plane for cameras 0 and 1
    extra.means[10:20, 2] -= 100.0  # behind cameras 0 and 1, beyond the far plane for camera 2
    extra.opacities[20:] = 0.5 * ALPHA_MIN  # in view and large, but too faint to composite
    leaves = [torch.cat([getattr(g, k), getattr(extra, k)]).requires_grad_(True)
              for k in ("means", "covars", "opacities", "colors")]
    for views in (cams, cams[0], cams[1], cams[2]):
        ref = rasterize(g, views, backend="torch", far_plane=50.0)
        color, alpha, _, _ = brute_force(g, views)
        torch.testing.assert_close(ref.color, color, atol=1e-5, rtol=0)
        torch.testing.assert_close(ref.alpha, alpha, atol=1e-5, rtol=0)
        for depth_mode in ("center", "plane"):
            ref = rasterize(g, views, backend="torch", depth_mode=depth_mode, far_plane=50.0)
            out = rasterize(Gaussians3D(*leaves, torch.zeros(70, 3, dtype=F64)), views, backend="torch",
                            depth_mode=depth_mode, far_plane=50.0)
            assert torch.equal(out.color, ref.color) and torch.equal(out.depth, ref.depth)
            assert torch.equal(out.alpha, ref.alpha) and out.stats["n_visible"] == ref.stats["n_visible"] > 0
            grads = torch.autograd.grad(out.color.sum() + out.depth.sum(), leaves)
            assert all(bool((gr[40:] == 0).all()) and float(gr[:40].abs().sum()) > 0 for gr in grads)


def test_background_compositing():
    cams = make_cameras(1, 24, 20)
    g = make_gaussians(30, seed=8)
    bg = torch.tensor([0.9, 0.1, 0.5], dtype=F64)
    black = rasterize(g, cams)
    out = rasterize(g, cams, bg)
    torch.testing.assert_close(out.color, black.color + bg * (1 - black.alpha))
    assert torch.equal(out.alpha, black.alpha)
    assert (black.alpha < 1e-3).any() and (black.alpha > 0.5).any()


# ----------------------------------------------------------------------------- 6. gsplat parity
def _close_but_for_rare_flips(ours: torch.Tensor, ref: torch.Tensor, atol: float) -> None:
    """Both renderers run in float32: a splat whose alpha is within rounding of 1/255, or a pixel
    whose transmittance is within rounding of 1e-4, can flip between them and move that pixel by
    up to ~1/255. Such flips are rare; everything else must agree to atol."""
    diff = (ours - ref).detach().abs()
    assert float((diff > atol).double().mean()) < 1e-3, float(diff.max())
    assert float(diff.max()) < 5e-3


def _stand_in_gsplat_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                                   far_plane, eps2d, packed, tile_size, backgrounds, render_mode, rasterize_mode, covars):
    """gsplat.rasterization's contract for what rasterize_gsplat asks of it, in dense torch on the
    CPU: colors [N, D] or [C, N, D] composited front to back, "RGB+ED" appending the expected
    depth (sum w z / alpha), backgrounds [C, D] over the D channels; meta with radii and
    flatten_ids. Lets the glue (channel layout, depth planes, background) be tested without CUDA."""
    assert quats is None and scales is None and render_mode == "RGB+ED" and rasterize_mode == "classic"
    proj = project(means, covars, viewmats, Ks, width, height, opacities=opacities, eps2d=eps2d,
                   near_plane=near_plane, far_plane=far_plane)
    feats = colors.expand(len(viewmats), *colors.shape[-2:])
    pix = _pixel_centres(width, height, means.dtype)
    renders, alphas = [], []
    for c in range(len(viewmats)):
        order, w, _ = _dense_weights(proj, c, proj.visible[c], opacities, pix)
        alpha = w.sum(1, keepdim=True)
        out = w @ feats[c, order]
        if backgrounds is not None:
            out = out + backgrounds[c] * (1 - alpha)
        depth = (w @ proj.depths[c, order][:, None]) / alpha.clamp_min(1e-10)
        renders.append(torch.cat([out, depth], -1).reshape(height, width, -1))
        alphas.append(alpha.reshape(height, width, 1))
    meta = {"radii": proj.radii, "flatten_ids": torch.zeros(0, dtype=torch.long)}
    return torch.stack(renders), torch.stack(alphas), meta


@pytest.mark.parametrize("depth_mode", ["center", "plane"])
def test_gsplat_backend_glue_against_a_stand_in_gsplat(monkeypatch, depth_mode):
    """rasterize(backend="gsplat") with gsplat replaced by a CPU stand-in of its contract equals
    the torch backend: the channels it asks gsplat to composite (depth planes among them) and how
    it puts the image together. The CUDA test below checks the real gsplat."""
    import types

    monkeypatch.setitem(sys.modules, "gsplat", types.SimpleNamespace(rasterization=_stand_in_gsplat_rasterization))
    cams = make_cameras(2, 24, 20, torch.float32)
    g = make_gaussians(60, seed=13, scale=(0.05, 0.5), dtype=torch.float32)
    bg = torch.tensor([0.3, 0.6, 0.1])
    ours = rasterize(g, cams, bg, backend="torch", depth_mode=depth_mode)
    glue = rasterize(g, cams, bg, backend="gsplat", depth_mode=depth_mode)
    assert float(ours.alpha.mean()) > 0.3
    torch.testing.assert_close(glue.color, ours.color, atol=1e-4, rtol=0)
    torch.testing.assert_close(glue.alpha, ours.alpha, atol=1e-4, rtol=0)
    torch.testing.assert_close(glue.depth, ours.depth, atol=2e-3, rtol=0)


@pytest.mark.cuda  # skipped without a GPU (tests/conftest.py)
@pytest.mark.parametrize("depth_mode", ["center", "plane"])
@pytest.mark.parametrize("packed", [False, True])
def test_torch_backend_matches_gsplat(packed, depth_mode):
    cams = make_cameras(3, 96, 72, torch.float32).to(device="cuda")
    g = make_gaussians(3000, seed=9, dtype=torch.float32, spread=1.5).to(device="cuda")
    bg = torch.tensor([0.2, 0.3, 0.4], device="cuda")
    outs, grads = [], []
    for backend, options in (("torch", {}), ("gsplat", {"packed": packed})):
        leaves = [t.clone().requires_grad_(True) for t in (g.means, g.covars, g.opacities, g.colors)]
        out = rasterize(Gaussians3D(*leaves, g.velocities), cams, bg, backend=backend, depth_mode=depth_mode, **options)
        (out.color.square().sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
        outs.append(out)
        grads.append([leaf.grad for leaf in leaves])
    ours, ref = outs
    assert isinstance(ref, RenderOutput) and ref.color.shape == ours.color.shape
    assert float(ref.alpha.detach().mean()) > 0.3
    _close_but_for_rare_flips(ours.color, ref.color, 1e-3)
    _close_but_for_rare_flips(ours.alpha, ref.alpha, 1e-3)
    visible = ref.alpha > 0.05
    _close_but_for_rare_flips(ours.depth[visible] / 10, ref.depth[visible] / 10, 1e-3)  # depths ~3-5
    # Radii are ceil()ed in float32 with fast-math logs on the GPU: allow a few boundary flips.
    assert abs(ours.stats["n_visible"] - ref.stats["n_visible"]) <= 6
    for a, b in zip(*grads):  # same gradients, up to float32 noise and the rare flips above
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_model_resolution_blur_makes_a_2x_render_the_model_resolution_render_scaled():
    """A tiny Gaussian rendered at the model's resolution and at twice it with
    `model_resolution_blur`: the footprint (second moments of the alpha image, low opacity so
    nothing clamps) is exactly twice as wide in pixels, i.e. the same image at a finer sampling;
    with the plain 0.3 px^2 blur it would be narrower (dots at 2x)."""
    from types import SimpleNamespace

    from lrm4d_core.model.api import model_resolution_blur

    def cams(size: int) -> Cameras:
        K = torch.tensor([[[size * 1.0, 0, size / 2], [0, size * 1.0, size / 2], [0, 0, 1]]], dtype=F64)
        pose = torch.eye(4, dtype=F64)[None].clone()
        pose[0, 2, 3] = -4.0
        return Cameras(K, pose, size, size)

    # std 0.075 units at depth 4: 0.6 px at size 32 before the blur (wide enough to sample)
    g = Gaussians3D(means=torch.zeros(1, 3, dtype=F64), covars=(0.0056 * torch.eye(3, dtype=F64))[None],
                    opacities=torch.tensor([0.2], dtype=F64), colors=torch.ones(1, 3, dtype=F64),
                    velocities=torch.zeros(1, 3, dtype=F64))
    rec = SimpleNamespace(model_cameras=cams(32))

    def spread(size: int, eps2d: float) -> float:
        alpha = rasterize(g, cams(size), eps2d=eps2d, backend="torch").alpha[0, ..., 0]
        v, u = torch.meshgrid(torch.arange(size, dtype=F64) + 0.5, torch.arange(size, dtype=F64) + 0.5, indexing="ij")
        w = -torch.log1p(-alpha)  # opacity * exp(-sigma) -> the Gaussian itself, up to the opacity
        mean_u = (w * u).sum() / w.sum()
        return float(((w * (u - mean_u) ** 2).sum() / w.sum()).sqrt())

    assert model_resolution_blur(rec, cams(32)) == pytest.approx(0.3)
    assert model_resolution_blur(rec, cams(16)) == pytest.approx(0.3)  # never sharper than eps2d
    assert model_resolution_blur(rec, cams(64)) == pytest.approx(1.2)
    base = spread(32, 0.3)
    assert spread(64, model_resolution_blur(rec, cams(64))) == pytest.approx(2 * base, rel=0.02)
    assert spread(64, 0.3) < 1.8 * base
