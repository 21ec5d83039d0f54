"""Tile binning and front-to-back compositing of 2D splats, with a hand-written backward.

CPU-friendly version of gsplat's tile rasterizer, for one image:

1. Splats are sorted front to back and taken in *slabs* of consecutive depth (the slab size
   doubles from slab to slab). `bin_splats` lists each splat of a slab once per square tile its
   radius box touches, skipping tiles whose pixels have all terminated, and sorts the list by
   tile (stably, so each tile's list stays front to back). Opaque scenes therefore never bin
   most of the splats behind their surfaces: binning is the costliest step for large clouds.
2. `_Composite` composites one slab. Tiles are processed in *rounds*: round r takes, for every
   still-active tile, its next K_r splats (K doubles each round) and evaluates the dense block
   [tiles, K_r, pixels]. The exponent of alpha is a quadratic polynomial in tile-local pixel
   coordinates, so it is one matrix product per block. Transmittance is an exclusive cumsum of
   log(1 - alpha) along K, started from the log-transmittance carried in from earlier rounds
   and slabs. A tile leaves the active set once every pixel in it has terminated (T <= 1e-4).
   Blocks hold at most `max_block` elements, which bounds the memory.
3. The backward pass replays the rounds in reverse, recomputing each block (nothing of size
   [splats x pixels] is stored), and accumulates per-splat gradients with `index_add_`; slabs
   are chained by autograd through their log-transmittance.

Compositing semantics are gsplat's: alpha = min(0.999, o * exp(-sigma)), skipped below 1/255;
a splat whose inclusion would bring T to <= 1e-4 is not composited and ends the pixel.
The per-pixel check `sigma < 0` of gsplat is not needed: conics of visible splats are positive
definite, so sigma < 0 only arises from rounding at the splat's centre, where skipping would be
wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .projection import ALPHA_THRESHOLD

__all__ = ["PARAMS", "TileGrid", "TilePlan", "bin_splats", "composite"]

PARAMS = ("mean_x", "mean_y", "conic_a", "conic_b", "conic_c", "opacity", "red", "green", "blue", "depth",
          "depth_du", "depth_dv")
"""Column order of the per-splat parameter matrix that `composite` consumes. A splat's depth at
pixel p is depth + (depth_du, depth_dv) . (p - mean): its depth plane (`depth_planes.depth_slopes`;
zero slopes give gsplat's one depth per splat). It is also the front-to-back sort key at the centre."""

_MAX_ALPHA = 0.999
_LOG_T_MIN = math.log(1e-4)  # a pixel terminates once its transmittance would drop to <= 1e-4
_LOG_T_OUTSIDE = -1e4  # initial log-transmittance of the pixels of edge tiles outside the image
_N_OUT = 7  # red, green, blue, sum(w z0), sum(w dz/du), sum(w dz/dv), sum(w) per pixel (tile-local planes)
_N_IMAGE = 5  # red, green, blue, sum(w z), sum(w) per pixel: what `composite` returns
_MAX_EXPONENT = 50.0  # exp(-50) is far below 1/255 and far above float32's denormals
_PAD_EXPONENT = 1e4  # exponent of padding slots (alpha = 0)


@dataclass(frozen=True)
class TileGrid:
    """Square tiles covering a width x height image; edge tiles may stick out of it."""

    width: int
    height: int
    tile_size: int

    @property
    def tiles_x(self) -> int:
        return math.ceil(self.width / self.tile_size)

    @property
    def tiles_y(self) -> int:
        return math.ceil(self.height / self.tile_size)

    @property
    def n_tiles(self) -> int:
        return self.tiles_x * self.tiles_y


@dataclass(frozen=True)
class TilePlan:
    """Front-to-back splat lists of the tiles of one image (or of one depth slab).

    Attributes:
        grid: the tiles.
        splat_ids: [M] int32 (int64 if huge) splat indices (rows of the parameter matrix),
            grouped by tile id (row * tiles_x + column), front to back inside a tile.
        tile_start, tile_count: [n_tiles] int64 slice of `splat_ids` of each tile.
    """

    grid: TileGrid
    splat_ids: Tensor
    tile_start: Tensor
    tile_count: Tensor

    @property
    def n_intersections(self) -> int:
        return self.splat_ids.numel()


@torch.no_grad()
def bin_splats(ids: Tensor, means2d: Tensor, radii: Tensor, grid: TileGrid, active: Tensor | None = None) -> TilePlan:
    """List splats in every tile their radius box touches.

    Args:
        ids: [S'] indices of the splats to bin, in front-to-back order.
        means2d: [S, 2] splat centres in pixels; radii: [S, 2] int half extents (> 0 for `ids`).
        grid: the tiles.
        active: [n_tiles] bool or None; tiles where it is False are left out (their pixels have
            all terminated, so no splat behind can change them).
    """
    device = ids.device
    tx, ty = grid.tiles_x, grid.tiles_y
    mean = means2d.index_select(0, ids).to(torch.float64)
    rad = radii.index_select(0, ids).to(torch.float64)
    lo = torch.floor((mean - rad) / grid.tile_size).to(torch.int64)
    hi = torch.ceil((mean + rad) / grid.tile_size).to(torch.int64)
    lo[:, 0].clamp_(0, tx)
    hi[:, 0].clamp_(0, tx)
    lo[:, 1].clamp_(0, ty)
    hi[:, 1].clamp_(0, ty)
    filtering = active is not None and not bool(active.all())
    if filtering:
        # Summed-area table of active tiles: drop splats whose box holds none, before expanding.
        sat = torch.zeros(ty + 1, tx + 1, dtype=torch.int64, device=device)
        sat[1:, 1:] = active.view(ty, tx).to(torch.int64).cumsum(0).cumsum(1)
        n_active = sat[hi[:, 1], hi[:, 0]] - sat[lo[:, 1], hi[:, 0]] - sat[hi[:, 1], lo[:, 0]] + sat[lo[:, 1], lo[:, 0]]
        touching = (n_active > 0).nonzero()[:, 0]
        ids, lo, hi = ids.index_select(0, touching), lo.index_select(0, touching), hi.index_select(0, touching)
    span = hi - lo
    counts = span[:, 0] * span[:, 1]

    n_isect = int(counts.sum())
    # int32 indices where they fit: the per-intersection arrays dominate the memory of this step.
    idx = torch.int32 if max(n_isect, grid.n_tiles, means2d.shape[0]) < 2**31 else torch.int64
    owner = torch.repeat_interleave(torch.arange(ids.numel(), dtype=idx, device=device), counts, output_size=n_isect)
    local = torch.arange(n_isect, dtype=idx, device=device)
    local.sub_((torch.cumsum(counts, 0) - counts).to(idx).index_select(0, owner))  # index inside the box
    span_x = span[:, 0].to(idx).index_select(0, owner)
    row = torch.div(local, span_x, rounding_mode="floor")
    local.sub_(row * span_x)  # now the column inside the box
    del span_x
    key = (lo[:, 1] * tx + lo[:, 0]).to(idx).index_select(0, owner).add_(row.mul_(tx)).add_(local)
    del row, local
    if filtering:
        keep = active.index_select(0, key).nonzero()[:, 0]
        key, owner = key.index_select(0, keep), owner.index_select(0, keep)
        del keep
    # Stable, so the depth order survives inside each tile; int32 keys sort about twice as fast.
    key, perm = torch.sort(key, stable=True)
    splat_ids = ids.to(idx).index_select(0, owner.index_select(0, perm))
    del owner, perm
    tile_count = torch.bincount(key, minlength=grid.n_tiles)
    tile_start = torch.cumsum(tile_count, 0) - tile_count
    return TilePlan(grid, splat_ids, tile_start, tile_count)


class _Geometry:
    """Per-grid constants: pixel basis of the exponent polynomial, tile centres."""

    def __init__(self, grid: TileGrid, dtype: torch.dtype, device: torch.device) -> None:
        t = grid.tile_size
        ij = torch.arange(t * t, device=device)
        ly = torch.div(ij, t, rounding_mode="floor").to(dtype) + 0.5 - 0.5 * t
        lx = (ij % t).to(dtype) + 0.5 - 0.5 * t
        # exponent(p) = coef . [lx^2, lx ly, ly^2, lx, ly, 1], p relative to the tile centre.
        self.basis = torch.stack([lx * lx, lx * ly, ly * ly, lx, ly, torch.ones_like(lx)])  # [6, P]
        g = torch.arange(grid.n_tiles, device=device)
        self.tile_cx = ((g % grid.tiles_x) * t).to(dtype) + 0.5 * t
        self.tile_cy = (torch.div(g, grid.tiles_x, rounding_mode="floor") * t).to(dtype) + 0.5 * t
        # [n_tiles, P] log T before any splat: 0 inside the image, "terminated" outside.
        x = self.tile_cx[:, None] + lx
        y = self.tile_cy[:, None] + ly
        inside = (x < grid.width) & (y < grid.height)
        self.initial_log_t = torch.where(inside, 0.0, _LOG_T_OUTSIDE).to(dtype)


class _Block:
    """One [B, K, P] block: the next K splats of B tiles, evaluated at the tiles' P pixels.

    The exponent of alpha = o exp(-sigma) is evaluated as one matrix product of per-splat
    polynomial coefficients with the fixed [6, P] pixel basis, with log(o) folded into the
    constant term, so alpha costs a single exp per element.
    """

    def __init__(self, params: Tensor, plan: TilePlan, geo: _Geometry, tiles: Tensor, pos: Tensor, size: int) -> None:
        slot = pos[:, None] + torch.arange(size, device=pos.device)
        end = (plan.tile_start[tiles] + plan.tile_count[tiles])[:, None]
        in_range = slot < end
        self.ids = plan.splat_ids.index_select(0, slot.clamp_max(plan.n_intersections - 1).flatten())
        self.p = params.index_select(0, self.ids).view(*slot.shape, params.shape[1])  # [B, K, 10]
        self.mx = self.p[..., 0] - geo.tile_cx[tiles, None]  # splat centre relative to the tile centre
        self.my = self.p[..., 1] - geo.tile_cy[tiles, None]
        a, b, c, o = self.p[..., 2], self.p[..., 3], self.p[..., 4], self.p[..., 5]
        self.opacity = torch.where(in_range, o, torch.ones_like(o))  # padding slots: any positive value
        lin_x = a * self.mx + b * self.my
        lin_y = b * self.mx + c * self.my
        const = 0.5 * (lin_x * self.mx + lin_y * self.my) - torch.log(self.opacity)
        const = torch.where(in_range, const, torch.full_like(const, _PAD_EXPONENT))
        # log(o) - sigma = coef . basis, sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2, dx = lx - mx
        self.neg_coef = torch.stack([-0.5 * a, -b, -0.5 * c, lin_x, lin_y, -const], dim=-1)  # [B, K, 6]
        # Per-splat features summed with the weights: colour, the depth plane at the tile centre
        # (z0 = depth - slope . m, m the centre relative to the tile centre) and its slopes, 1 (for
        # alpha). [B, K, 7]; `composite` evaluates the summed planes at each pixel.
        du, dv = self.p[..., 10], self.p[..., 11]
        z0 = self.p[..., 9] - du * self.mx - dv * self.my
        self.feat = torch.cat([self.p[..., 6:9], z0[..., None], self.p[..., 10:12], torch.ones_like(z0[..., None])], dim=-1)

    def forward(self, basis: Tensor, log_t_in: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(alpha, t_mask, w, log_t_out): alpha composited (0 where skipped, clamped to 0.999);
        t_mask = transmittance before each splat, 0 once the pixel has terminated; w = alpha t_mask;
        log_t_out [B, P] the log-transmittance after the block (including terminated splats,
        which keeps it monotone, so a terminated pixel never composites again)."""
        # Clamping the exponent keeps exp out of the (very slow) denormal range.
        alpha = torch.matmul(self.neg_coef, basis).clamp_min_(-_MAX_EXPONENT).exp_()  # [B, K, P]
        alpha.clamp_max_(_MAX_ALPHA)
        F.threshold_(alpha, ALPHA_THRESHOLD, 0.0)  # skip alpha < 1/255
        log1m = torch.log1p(alpha.neg())
        cum = torch.cumsum(log1m, dim=1).add_(log_t_in[:, None, :])  # log T after each splat
        log_t_out = cum[:, -1, :].clone()
        # Composited iff log T after the splat > log 1e-4; else T := 0 (threshold is much faster
        # than masked_fill/where on CPU, and exp(-inf) = 0 avoids denormals).
        t_mask = F.threshold_(cum, _LOG_T_MIN, -math.inf).sub_(log1m).exp_()
        w = alpha * t_mask
        return alpha, t_mask, w, log_t_out

    def backward_coefficients(self, grad_neg_coef: Tensor, grad_feat: Tensor) -> Tensor:
        """[B, K, 12] gradient wrt the gathered parameters, from those of neg_coef and feat."""
        a, b, c = self.p[..., 2], self.p[..., 3], self.p[..., 4]
        mx, my = self.mx, self.my
        g0, g1, g2, g3, g4, g5 = grad_neg_coef.unbind(-1)
        lin_x = a * mx + b * my
        lin_y = b * mx + c * my
        # neg_coef = [-a/2, -b, -c/2, lin_x, lin_y, -(lin_x mx + lin_y my)/2 + log o]
        out = torch.empty_like(self.p)
        du, dv, g_z0 = self.p[..., 10], self.p[..., 11], grad_feat[..., 3]
        out[..., 0] = a * g3 + b * g4 - lin_x * g5 - du * g_z0  # z0 = depth - du mx - dv my
        out[..., 1] = b * g3 + c * g4 - lin_y * g5 - dv * g_z0
        out[..., 2] = -0.5 * g0 + mx * g3 - 0.5 * mx * mx * g5
        out[..., 3] = -g1 + my * g3 + mx * g4 - mx * my * g5
        out[..., 4] = -0.5 * g2 + my * g4 - 0.5 * my * my * g5
        out[..., 5] = g5 / self.opacity
        out[..., 6:10] = grad_feat[..., :4]
        out[..., 10] = grad_feat[..., 4] - mx * g_z0
        out[..., 11] = grad_feat[..., 5] - my * g_z0
        return out


@dataclass
class _Round:
    tiles: Tensor  # [B] tile ids active in this round
    pos: Tensor  # [B] offset into splat_ids of the first splat of the round
    size: int  # K: splats per tile in this round
    log_t: Tensor  # [B, P] log-transmittance entering the round
    keep: Tensor  # [B] bool: tile still active afterwards


class _Composite(torch.autograd.Function):
    """Composite one plan onto a carried log-transmittance: (out [n_tiles, 7, P], log_t)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, params: Tensor, log_t_in: Tensor, plan: TilePlan, geo: _Geometry, options: tuple[int, int, int],
        stats: dict,
    ):
        first_round, max_round, max_block = options
        p_pix = plan.grid.tile_size**2
        out = torch.zeros(plan.grid.n_tiles, _N_OUT, p_pix, dtype=params.dtype, device=params.device)
        log_t_final = log_t_in.clone()
        rounds: list[_Round] = []
        tiles = (plan.tile_count > 0).nonzero()[:, 0]
        pos = plan.tile_start[tiles]
        log_t = log_t_in[tiles]
        size = first_round
        while tiles.numel() > 0:
            end = plan.tile_start[tiles] + plan.tile_count[tiles]
            size = max(1, min(size, int((end - pos).max())))
            log_t_out = torch.empty_like(log_t)
            for sl in _blocks(tiles.numel(), size * p_pix, max_block):
                block = _Block(params, plan, geo, tiles[sl], pos[sl], size)
                _, _, w, log_t_out[sl] = block.forward(geo.basis, log_t[sl])
                # [B, 7, K] @ [B, K, P]: this orientation is several times faster than w^T @ feat.
                out.index_add_(0, tiles[sl], torch.bmm(block.feat.transpose(1, 2), w))
                stats["n_evaluated"] = stats.get("n_evaluated", 0) + w.numel()
            # A tile stays active while it has splats left and some pixel has not terminated.
            keep = (pos + size < end) & (log_t_out > _LOG_T_MIN).any(1)
            rounds.append(_Round(tiles, pos, size, log_t, keep))
            log_t_final[tiles[~keep]] = log_t_out[~keep]
            tiles, pos, log_t = tiles[keep], pos[keep] + size, log_t_out[keep]
            size = min(2 * size, max_round)
        stats["n_rounds"] = stats.get("n_rounds", 0) + len(rounds)
        ctx.save_for_backward(params)
        ctx.plan, ctx.geo, ctx.rounds, ctx.max_block = plan, geo, rounds, max_block
        return out, log_t_final

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, grad_log_t_final: Tensor):  # type: ignore[override]
        (params,) = ctx.saved_tensors
        plan: TilePlan = ctx.plan
        geo: _Geometry = ctx.geo
        p_pix = plan.grid.tile_size**2
        grad_params = torch.zeros_like(params)
        grad_log_t_in = grad_log_t_final.clone()  # tiles without splats pass log T through
        grad_next: Tensor | None = None  # gradient wrt the log T entering the later round
        for rnd in reversed(ctx.rounds):
            # Gradient wrt the log T leaving this round: from the next round for tiles that
            # continue, from the slab's output for tiles that stop here.
            grad_log_t_out = grad_log_t_final[rnd.tiles]
            if grad_next is not None:
                grad_log_t_out[rnd.keep] = grad_next
            grad_next = torch.empty_like(rnd.log_t)
            for sl in _blocks(rnd.tiles.numel(), rnd.size * p_pix, ctx.max_block):
                tiles = rnd.tiles[sl]
                block = _Block(params, plan, geo, tiles, rnd.pos[sl], rnd.size)
                alpha, t_mask, w, _ = block.forward(geo.basis, rnd.log_t[sl])
                go = grad_out.index_select(0, tiles)  # [B, 7, P]
                grad_w = torch.bmm(block.feat, go)  # [B, K, P]
                grad_feat = torch.bmm(w, go.transpose(1, 2))  # [B, K, 7]
                # log T_i = log T_in + sum_{j<i} log(1 - alpha_j), so
                # d/dlog(1 - alpha_j) = sum_{i>j} grad_w_i w_i (+ the gradient of log T_out).
                s = grad_w.mul(w)
                cum_s = torch.cumsum(s, dim=1)
                total = cum_s[:, -1, :] + grad_log_t_out[sl]
                grad_next[sl] = total
                grad_log1m = cum_s.neg_().add_(total[:, None, :])
                # d/dalpha = grad_w T [composited] - d/dlog(1 - alpha) / (1 - alpha)
                grad_alpha = grad_w.mul_(t_mask).sub_(grad_log1m.div_(alpha.neg().add_(1.0)))
                # alpha = exp(E), E = neg_coef . basis, where composited and not clamped to 0.999;
                # threshold(-alpha) is -alpha there and 0 elsewhere.
                grad_exponent = grad_alpha.mul_(F.threshold_(alpha.neg_(), -_MAX_ALPHA, 0.0))  # -dL/dE
                # [6, P] @ [P, B*K] is faster than [B*K, P] @ [P, 6] for this skinny product.
                grad_neg_coef = torch.mm(geo.basis, grad_exponent.view(-1, p_pix).T).T.neg_().view(*w.shape[:2], 6)
                grad_p = block.backward_coefficients(grad_neg_coef, grad_feat)
                grad_params.index_add_(0, block.ids, grad_p.flatten(0, 1))
        if ctx.rounds:
            grad_log_t_in[ctx.rounds[0].tiles] = grad_next
        return grad_params, grad_log_t_in, None, None, None, None


def _blocks(n_tiles: int, per_tile: int, max_block: int):
    """Slices of consecutive tiles holding at most max_block elements (at least one tile)."""
    step = max(1, max_block // max(per_tile, 1))
    for start in range(0, n_tiles, step):
        yield slice(start, min(start + step, n_tiles))


def composite(
    params: Tensor,
    radii: Tensor,
    grid: TileGrid,
    first_slab: int = 16384,
    first_round: int = 16,
    max_round: int = 256,
    max_block: int = 1 << 20,
) -> tuple[Tensor, dict]:
    """Composite the splats of one image, front to back.

    Args:
        params: [S, 12] per-splat parameters in `PARAMS` order (differentiable).
        radii: [S, 2] int pixel half extents; 0 = culled.
        grid: image size and tile size.
        first_slab: splats in the first depth slab (at least 1/16 of the visible ones); slabs
            double in size. Small slabs bin fewer hidden splats; large ones cost less overhead.
        first_round, max_round: splats per tile in a slab's first compositing round; the round
            size doubles up to max_round. Small first rounds stop early in opaque regions; large
            later rounds cut the Python overhead for tiles with long, transparent lists.
        max_block: elements (tiles x splats x pixels) evaluated at once; bounds the memory.

    Returns:
        accum: [height, width, 5] per pixel (sum w r, sum w g, sum w b, sum w z, sum w), with
            w = alpha T the compositing weights and z each splat's depth plane at the pixel.
        stats: n_intersections (binned), n_slabs, n_rounds, n_evaluated (splat-pixel pairs).
    """
    geo = _Geometry(grid, params.dtype, params.device)
    with torch.no_grad():
        visible = (radii > 0).all(-1).nonzero()[:, 0]
        order = visible.index_select(0, torch.argsort(params[visible, 9], stable=True))  # front to back
    means2d = params[:, :2].detach()
    stats: dict = {"n_intersections": 0, "n_slabs": 0, "n_rounds": 0, "n_evaluated": 0}
    out = torch.zeros(grid.n_tiles, _N_OUT, grid.tile_size**2, dtype=params.dtype, device=params.device)
    log_t = geo.initial_log_t
    active: Tensor | None = None
    start, slab = 0, max(first_slab, order.numel() // 16)
    while start < order.numel():
        plan = bin_splats(order[start : start + slab], means2d, radii, grid, active)
        start, slab = start + slab, 2 * slab
        stats["n_slabs"] += 1
        stats["n_intersections"] += plan.n_intersections
        if plan.n_intersections == 0:
            continue
        out_slab, log_t = _Composite.apply(params, log_t, plan, geo, (first_round, max_round, max_block), stats)
        out = out + out_slab
        active = (log_t.detach() > _LOG_T_MIN).any(1)
        if not bool(active.any()):
            break
    # The summed depth planes at each pixel: sum w z0 + lx sum w du + ly sum w dv (tile-local lx, ly).
    lx, ly = geo.basis[3], geo.basis[4]
    out = torch.cat([out[:, :3], out[:, 3:4] + lx * out[:, 4:5] + ly * out[:, 5:6], out[:, 6:7]], dim=1)
    t = grid.tile_size
    img = out.reshape(grid.tiles_y, grid.tiles_x, _N_IMAGE, t, t).permute(0, 3, 1, 4, 2)
    img = img.reshape(grid.tiles_y * t, grid.tiles_x * t, _N_IMAGE)
    return img[: grid.height, : grid.width], stats
