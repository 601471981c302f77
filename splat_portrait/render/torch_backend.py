"""Tile-binned alpha compositing in plain torch, with gsplat 1.5.3's per-pixel rules.

Per pixel, splats are composited front to back in order of camera-space depth (ties keep input
order, like gsplat's stable radix sort):

* ``alpha = min(0.999, opacity * exp(-0.5 d^T conic d))`` with ``d`` measured from the pixel centre;
* a splat with ``alpha < 1/255`` is skipped (it does not change the transmittance);
* with ``T`` the transmittance in front of a splat, if ``T * (1 - alpha) <= 1e-4`` the pixel is
  finished and neither that splat nor any behind it is drawn;
* the weight of a drawn splat is ``alpha * T`` and the pixel's alpha is ``1 - T`` after the last one.

How it is computed (vectorised; nothing loops over splats or pixels):

1. every splat is binned into the small square tiles its alpha >= 1/255 ellipse can reach; the
   (splat, tile) pairs are generated in depth order and stable-sorted by tile, which leaves each
   tile's splats front to back;
2. tiles are grouped by how many splats they hold into chunks; in a chunk every tile is a dense
   (K slots x P pixels) block, padded with a dummy splat of opacity 0, so the transmittance is a
   plain cumulative product along K and the weighted sums are batched matrix products. Chunks are
   sized to stay in the CPU cache, and they, not the image, bound the working memory;
3. everything per slot rather than per (slot, pixel) -- gathering splat values, the quadratic
   form's coefficients, the chain rule back to splat parameters, the scatter into splats -- is done
   for groups of chunks at a time, because on CPU thousands of tiny per-chunk ops cost more in
   dispatch than in arithmetic, while whole-image buffers cost more in page faults;
4. the backward pass is written by hand (the standard back-to-front 3DGS gradient, as a reverse
   cumulative sum) and recomputes each chunk's alphas instead of storing per-pixel tensors.

Inside the chunk loop the code sticks to float arithmetic (``threshold``/``sign`` rather than
boolean masks and ``where``), which is several times faster on CPU. The quadratic form is a
6-term polynomial in the pixel's offset from its tile centre, so a whole chunk's exponents are one
small matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from splat_portrait.render.projection import ALPHA_THRESHOLD

TILE_SIZE = 4
# Work sizes: (slot, pixel) evaluations per chunk, and slots per group of chunks (see Group).
# On CPU a chunk is big enough to amortise per-op overhead and use every core, small enough that
# its dozen temporaries stay in cache; groups keep per-slot buffers well under 1 MB a column, so
# the allocator recycles them instead of page-faulting in fresh memory, which costs more than the
# arithmetic on a small VM. On a GPU only launch overhead matters, so both are much bigger.
CPU_WORK_SIZES = (1 << 17, 1 << 15)
GPU_WORK_SIZES = (1 << 23, 1 << 21)
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
# Pixel boxes are widened by this much so rounding never drops a pixel the alpha test would keep;
# the few extra pixels fail the alpha test.
BOX_MARGIN = 0.01
# Splat table columns: mean2d (2), conic (3), opacity (1), then the features.
_MEAN, _CONIC, _OPACITY, _FEATURES = slice(0, 2), slice(2, 5), 5, 6


@dataclass
class Chunk:
    offset: int  # first slot of the chunk in Bins.slot_splats
    tiles: int  # nt
    depth: int  # K: slots per tile (the fullest tile's splat count)
    pixels: Tensor  # (nt, P) flat pixel of each tile pixel; pixels outside the image -> dummy pixel


@dataclass
class Group:
    """Consecutive chunks whose per-slot work (gathers, coefficients, chain rule, scatter) is done
    in one go: few enough ops to keep dispatch overhead low, small enough buffers to stay cheap."""

    start: int  # first slot
    stop: int
    chunks: list[Chunk]


@dataclass
class Bins:
    """Which splats touch which tiles, front to back, grouped into chunks of equally full tiles."""

    width: int
    height: int
    num_images: int
    slot_splats: Tensor  # (S,) splat of every slot, chunk after chunk, (tile, k) row-major; padding -> dummy
    slot_centres: Tensor  # (S, 2) int32 pixel coordinates of each slot's tile centre
    groups: list[Group]


def _pixel_offsets(device: torch.device) -> tuple[Tensor, Tensor]:
    """Column and row of each pixel in a tile, row-major: (P,) each."""
    i = torch.arange(TILE_SIZE, device=device)
    dy, dx = torch.meshgrid(i, i, indexing="ij")
    return dx.reshape(-1), dy.reshape(-1)


def _tile_basis(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The basis [1, u, v, u^2, uv, v^2] (6, P) at a tile's pixel centres.

    u, v are measured from the tile centre so the polynomial's terms stay small (less rounding).
    """
    dx, dy = _pixel_offsets(device)
    u = (dx + 0.5 - TILE_SIZE / 2).to(dtype)
    v = (dy + 0.5 - TILE_SIZE / 2).to(dtype)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v])


@torch.no_grad()
def bin_splats(means2d: Tensor, depths: Tensor, extents: Tensor, visible: Tensor, width: int, height: int) -> Bins:
    """Bin B images' splats into tiles; splat ``n`` of image ``b`` is index ``b * N + n`` (``B * N``: dummy)."""
    B, N = depths.shape
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    pair_tiles, pair_splats = _pairs(means2d, depths, extents, visible, width, height, tiles_x, tiles_y)
    # Stable: pairs were generated front to back, so each tile's splats stay in depth order.
    pair_tiles, perm = torch.sort(pair_tiles, stable=True)
    pair_splats = pair_splats.index_select(0, perm)
    pair_splats = torch.cat([pair_splats, pair_splats.new_tensor([B * N])])  # padding slots read the dummy
    tile_counts = torch.bincount(pair_tiles, minlength=B * tiles_x * tiles_y)
    return _plan(tile_counts, pair_splats, width, height, B, tiles_x, tiles_y)


def _pairs(means2d, depths, extents, visible, width, height, tiles_x, tiles_y) -> tuple[Tensor, Tensor]:
    """(tile, splat) for every tile each visible splat's pixel box touches, splats front to back.

    Tiles are numbered image after image, row-major; pair values are int32 (half the memory
    traffic of int64 on these long arrays).
    """
    B, N = depths.shape
    device = means2d.device
    mx, my = means2d.reshape(-1, 2).unbind(-1)
    ex, ey = extents.reshape(-1, 2).unbind(-1)
    # Pixel j is needed when its centre j + 0.5 is within the extent of the splat's mean.
    x0 = torch.ceil(mx - ex - 0.5 - BOX_MARGIN).clamp_min(0)
    x1 = torch.floor(mx + ex - 0.5 + BOX_MARGIN).clamp_max(width - 1)
    y0 = torch.ceil(my - ey - 0.5 - BOX_MARGIN).clamp_min(0)
    y1 = torch.floor(my + ey - 0.5 + BOX_MARGIN).clamp_max(height - 1)
    ids = (visible.reshape(-1) & (x1 >= x0) & (y1 >= y0)).nonzero()[:, 0]

    # Front to back within each image (stable, so ties keep input order like gsplat's radix sort).
    order = ids.index_select(0, torch.sort(depths.reshape(-1).index_select(0, ids), stable=True).indices)
    if B > 1:
        order = order.index_select(0, torch.sort(order // N, stable=True).indices)

    def tile_of(t: Tensor) -> Tensor:
        return torch.div(t.index_select(0, order), TILE_SIZE, rounding_mode="floor").int()

    tx0, ty0 = tile_of(x0), tile_of(y0)
    ntx, nty = tile_of(x1) - tx0 + 1, tile_of(y1) - ty0 + 1
    counts = ntx * nty
    first_tile = (order // N).int() * (tiles_x * tiles_y) + ty0 * tiles_x + tx0
    # The k-th pair of a splat covers tile (k // ntx, k % ntx) of its tile rectangle.
    owner = torch.repeat_interleave(torch.arange(order.numel(), device=device), counts)
    k = torch.arange(owner.numel(), device=device, dtype=torch.int32)
    k -= (torch.cumsum(counts, 0, dtype=torch.int32) - counts).index_select(0, owner)
    ntx_o = ntx.index_select(0, owner)
    row = torch.div(k, ntx_o, rounding_mode="floor")
    tiles = first_tile.index_select(0, owner) + row * (tiles_x - ntx_o) + k
    return tiles, order.index_select(0, owner)


def _plan(tile_counts: Tensor, pair_splats: Tensor, width: int, height: int, B: int, tiles_x: int, tiles_y: int) -> Bins:
    """Group non-empty tiles, fullest first, into chunks of equally deep tiles, and chunks into groups."""
    device = pair_splats.device
    chunk_elements, group_slots = CPU_WORK_SIZES if device.type == "cpu" else GPU_WORK_SIZES
    tile_starts = torch.cumsum(tile_counts, 0) - tile_counts
    sorted_counts, tiles = torch.sort(tile_counts, descending=True)
    tiles = tiles[: int((sorted_counts > 0).sum())]
    counts = sorted_counts[: tiles.numel()].tolist()

    tiles_per_image = tiles_x * tiles_y
    image, rest = tiles // tiles_per_image, tiles % tiles_per_image
    tx, ty = rest % tiles_x, rest // tiles_x
    dx, dy = _pixel_offsets(device)
    px, py = tx[:, None] * TILE_SIZE + dx, ty[:, None] * TILE_SIZE + dy
    # Pixels of edge tiles that fall outside the image read and write a dummy pixel row.
    pixels = torch.where((px < width) & (py < height), (image[:, None] * height + py) * width + px, B * height * width)
    centres = (torch.stack([tx, ty], -1) * TILE_SIZE + TILE_SIZE // 2).to(torch.int32)

    chunks, slots, slot_tiles = [], [], []
    i = offset = 0
    while i < tiles.numel():
        k = counts[i]
        nt = min(max(1, chunk_elements // (k * TILE_SIZE * TILE_SIZE)), tiles.numel() - i)
        rank = torch.arange(k, device=device)
        t = tiles[i : i + nt]
        slot = tile_starts.index_select(0, t)[:, None] + rank
        # Slots past a tile's own splats read the dummy at the end of pair_splats.
        slots.append(torch.where(rank < tile_counts.index_select(0, t)[:, None], slot, pair_splats.numel() - 1))
        slot_tiles.append(torch.arange(i, i + nt, device=device).repeat_interleave(k))
        chunks.append(Chunk(offset, nt, k, pixels[i : i + nt]))
        offset += nt * k
        i += nt

    groups: list[Group] = []
    for chunk in chunks:
        if not groups or groups[-1].stop - groups[-1].start >= group_slots:
            groups.append(Group(chunk.offset, chunk.offset, []))
        groups[-1].chunks.append(chunk)
        groups[-1].stop = chunk.offset + chunk.tiles * chunk.depth
    if not chunks:
        slot_splats = pair_splats[:0]
        slot_centres = centres
    else:
        slot_splats = pair_splats.index_select(0, torch.cat([s.reshape(-1) for s in slots]))
        slot_centres = centres.index_select(0, torch.cat(slot_tiles))
    return Bins(width, height, B, slot_splats, slot_centres, groups)


def _float_thresholds(dtype: torch.dtype) -> tuple[float, float]:
    """``x > t`` tests (torch.threshold's) meaning ``alpha >= 1/255`` and ``alpha <= 0.999`` in ``dtype``."""
    below_min = torch.nextafter(torch.tensor(ALPHA_THRESHOLD, dtype=dtype), torch.tensor(0.0, dtype=dtype))
    above_max = torch.nextafter(torch.tensor(MAX_ALPHA, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    return below_min.item(), above_max.item()


@dataclass
class _Slots:
    """Per-slot splat values for all slots (S, ...).

    ``A`` holds the exponent of ``raw = opacity * exp(-sigma)`` as a polynomial in the pixel's
    offset (u, v) from the tile centre: ``log raw = A . [1, u, v, u^2, uv, v^2]``. Folding the sign
    and log(opacity) into the constant term saves two full-size ops per chunk.
    """

    A: Tensor  # (6, S): transposed, which makes the skinny matmuls several times faster on CPU
    e: Tensor  # mean minus tile centre, x and y
    f: Tensor
    a: Tensor  # conic
    b: Tensor
    c: Tensor
    ae_bf: Tensor
    be_cf: Tensor
    opacity: Tensor
    features: Tensor  # (S, C + 1)

    @staticmethod
    def gather(table: Tensor, bins: Bins, group: Group) -> _Slots:
        rows = table.index_select(0, bins.slot_splats[group.start : group.stop])
        centres = bins.slot_centres[group.start : group.stop].to(table.dtype)
        e = rows[:, 0] - centres[:, 0]
        f = rows[:, 1] - centres[:, 1]
        a, b, c = rows[:, 2], rows[:, 3], rows[:, 4]
        opacity = rows[:, _OPACITY].contiguous()
        ae_bf = a * e + b * f
        be_cf = b * e + c * f
        # The dummy splat's opacity 0 gives log 0 = -inf, hence raw = 0 on every pixel.
        A0 = torch.log(opacity) - 0.5 * (e * ae_bf + f * be_cf)
        A = torch.stack([A0, ae_bf, be_cf, -0.5 * a, -b, -0.5 * c])
        return _Slots(A, e, f, a, b, c, ae_bf, be_cf, opacity, rows[:, _FEATURES:].contiguous())


def _composite(A: Tensor, nt: int, k: int, basis: Tensor, alpha_floor: float) -> tuple[Tensor, ...]:
    """Alphas, transmittances and weights of one chunk, all (nt, K, P), front to back along K."""
    raw = torch.exp(A.t() @ basis).view(nt, k, -1)
    # threshold(x, t, 0) keeps x > t; t is the largest value below 1/255, so it keeps alpha >= 1/255.
    kept = torch.threshold(raw, alpha_floor, 0.0)
    alpha = kept.clamp_max(MAX_ALPHA)
    one_minus = torch.rsub(alpha, 1.0)
    t_after = torch.cumprod(one_minus, 1)
    # Zero once T * (1 - alpha) <= 1e-4: the pixel stops before the first splat that fails, and
    # since T only falls, every later slot is zeroed too.
    t_before = torch.threshold(t_after, MIN_TRANSMITTANCE, 0.0).div_(one_minus)
    weights = alpha * t_before
    return kept, one_minus, t_before, weights


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, bins: Bins) -> Tensor:
        B, N, C = features.shape
        table = _splat_table(means2d, conics, opacities, features)
        basis = _tile_basis(table.dtype, table.device)
        alpha_floor, _ = _float_thresholds(table.dtype)
        num_pixels = B * bins.height * bins.width
        # The table's last feature is 1, which composites to sum(w) = 1 - T_final: the pixel's alpha.
        out = torch.zeros(num_pixels + 1, C + 1, dtype=table.dtype, device=table.device)
        for group in bins.groups:
            slots = _Slots.gather(table, bins, group)
            for chunk in group.chunks:
                nt, k = chunk.tiles, chunk.depth
                span = slice(chunk.offset - group.start, chunk.offset - group.start + nt * k)
                weights = _composite(slots.A[:, span], nt, k, basis, alpha_floor)[-1]
                # (C+1, K) @ (K, P) per tile: CPU BLAS is several times faster this way round
                # than weights^T @ features.
                result = torch.bmm(slots.features[span].view(nt, k, C + 1).transpose(1, 2), weights)
                out.index_copy_(0, chunk.pixels.reshape(-1), result.transpose(1, 2).reshape(-1, C + 1))
        ctx.bins = bins
        ctx.save_for_backward(table)
        return out[:num_pixels].reshape(B, bins.height, bins.width, C + 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (table,) = ctx.saved_tensors
        bins: Bins = ctx.bins
        B, C1 = grad_out.shape[0], grad_out.shape[-1]
        basis = _tile_basis(table.dtype, table.device)
        alpha_floor, above_max = _float_thresholds(table.dtype)
        grad_pix = torch.cat([grad_out.reshape(-1, C1), grad_out.new_zeros(1, C1)])
        # Rows = gradient kinds, columns = splats (+ the dummy): index_add_ along dim 1 is the
        # fastest CPU scatter layout.
        grads = table.new_zeros(6 + C1, table.shape[0])
        for group in bins.groups:
            slots = _Slots.gather(table, bins, group)
            # Per slot: R = sum over its tile's pixels of r * basis with r = -raw * dL/d(raw), and
            # dL/d features, stored transposed (C + 1, slots) as the scatter below wants it.
            R = table.new_empty(6, group.stop - group.start)
            d_features = table.new_empty(C1, group.stop - group.start)
            for chunk in group.chunks:
                nt, k = chunk.tiles, chunk.depth
                span = slice(chunk.offset - group.start, chunk.offset - group.start + nt * k)
                kept, one_minus, t_before, weights = _composite(slots.A[:, span], nt, k, basis, alpha_floor)
                G = grad_pix.index_select(0, chunk.pixels.reshape(-1)).view(nt, -1, C1)  # (nt, P, C + 1)
                g = torch.bmm(slots.features[span].view(nt, k, C1), G.transpose(1, 2))  # dL/d(weight)
                # (C+1, P) @ (P, K) per tile: much faster on CPU than weights @ G.
                d_feats = torch.bmm(G.transpose(1, 2), weights.transpose(1, 2))  # (nt, C + 1, K)
                d_features[:, span].view(C1, nt, k).copy_(d_feats.transpose(0, 1))
                behind = torch.cumsum(weights * g, 1)
                behind = behind[:, -1:] - behind  # what the splats behind each one add to the pixel
                # Exactly 0 after the pixel stopped: t_before is 0 there and nothing behind is drawn.
                d_alpha = t_before * g - behind / one_minus
                # Only alphas that passed the 1/255 test and were not clamped at 0.999 have a
                # gradient: the gate is -raw where 1/255 <= raw <= 0.999, else 0.
                gate = torch.threshold(kept.neg_(), -above_max, 0.0)
                R[:, span] = basis @ (d_alpha * gate).view(nt * k, -1).t()
            index = bins.slot_splats[group.start : group.stop]
            grads[:6].index_add_(1, index, _chain_rule(slots, R))
            grads[6:].index_add_(1, index, d_features)

        grads = grads[:, :-1]
        N = grads.shape[1] // B
        return (
            grads[_MEAN].t().reshape(B, N, 2),
            grads[_CONIC].t().reshape(B, N, 3),
            grads[_OPACITY].reshape(B, N),
            grads[_FEATURES:-1].t().reshape(B, N, C1 - 1),
            None,
        )


def _chain_rule(slots: _Slots, R: Tensor) -> Tensor:
    """Per-slot gradients (6, S) of mean2d, conic and opacity from R = -dL/dA (6, S) (see _Slots).

    A = [log(opacity), 0, ...] - A_sigma with A_sigma = [(e(ae+bf) + f(be+cf))/2, -(ae+bf),
    -(be+cf), a/2, b, c/2] the coefficients of sigma, so R = dL/dA_sigma.
    """
    d_opacity = R[0] / (-slots.opacity.clamp_min(torch.finfo(R.dtype).tiny))
    dA0, dA1, dA2, dA3, dA4, dA5 = R
    e, f, a, b, c = slots.e, slots.f, slots.a, slots.b, slots.c
    return torch.stack(
        [
            dA0 * slots.ae_bf - dA1 * a - dA2 * b,
            dA0 * slots.be_cf - dA1 * b - dA2 * c,
            0.5 * (dA0 * e * e + dA3) - dA1 * e,
            dA0 * e * f - dA1 * f - dA2 * e + dA4,
            0.5 * (dA0 * f * f + dA5) - dA2 * f,
            d_opacity,
        ]
    )


def _splat_table(means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor) -> Tensor:
    """One row per splat [mean2d, conic, opacity, features, 1], plus an all-zero dummy row at the end."""
    B, N, C = features.shape
    ones = torch.ones_like(opacities)[..., None]
    rows = torch.cat([means2d, conics, opacities[..., None], features, ones], -1).reshape(B * N, 7 + C)
    return torch.cat([rows, rows.new_zeros(1, 7 + C)])


def rasterize(
    means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, depths: Tensor, extents: Tensor,
    visible: Tensor, width: int, height: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Composite B images of N projected splats; returns features (B, H, W, C) and alpha (B, H, W, 1).

    ``features`` (B, N, C) are composited as weighted sums (colours, depth, ...); ``depths`` only
    orders the splats; ``visible`` (B, N) says which splats take part.
    """
    bins = bin_splats(means2d.detach(), depths.detach(), extents, visible, width, height)
    out = _Rasterize.apply(means2d, conics, opacities, features, bins)
    return out[..., :-1], out[..., -1:]
