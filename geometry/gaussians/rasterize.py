"""Differentiable tile-based alpha compositing of projected Gaussians in PyTorch (CPU path).

Same rules as gsplat's classic rasteriser: front-to-back in depth order, per pixel
`alpha_i = min(0.999, o_i exp(-d^T Sigma^-1 d / 2))` (skipped below 1/255), weights
`alpha_i prod_{j<i}(1 - alpha_j)`, and a pixel stops at the Gaussian that would bring its
transmittance to 1e-4 or below. Every Gaussian is only evaluated on the tiles its radius touches
(transient memory: overlaps x tile pixels, without autograd), and only the (Gaussian, pixel)
pairs above the alpha cut-off are kept for the backward pass.
"""

from __future__ import annotations

import math

import torch

from geometry.gaussians.projection import ALPHA_MIN, Splats

ALPHA_MAX = 0.999
T_MIN = 1e-4


def tile_intersections(means2d: torch.Tensor, radii: torch.Tensor, tiles_x: int, tiles_y: int,
                       tile_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For splats `means2d [n, 2]` with box half-widths `radii [n, 2]` (x, y) -> (splat index,
    tile id) of every overlap `[I]`.

    Tile id = row * tiles_x + column. Example: tile 16, 4x4 tiles, a splat at (16, 5) with radii
    (2, 2) touches tiles 0 and 1 -> `([0, 0], [0, 1])`.
    """
    lo = torch.floor((means2d - radii) / tile_size).long()
    hi = torch.floor((means2d + radii) / tile_size).long()
    x0, x1 = lo[:, 0].clamp(0, tiles_x - 1), hi[:, 0].clamp(0, tiles_x - 1)
    y0, y1 = lo[:, 1].clamp(0, tiles_y - 1), hi[:, 1].clamp(0, tiles_y - 1)
    nx = x1 - x0 + 1
    counts = nx * (y1 - y0 + 1)
    splat = torch.repeat_interleave(torch.arange(means2d.shape[0], device=means2d.device), counts)
    local = torch.arange(splat.shape[0], device=means2d.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    tile = (y0[splat] + local // nx[splat]) * tiles_x + x0[splat] + local % nx[splat]
    return splat, tile


def segment_exclusive_cumsum(values: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum along dim 0 restarting at each new value of the sorted `segments [I]`.

    Example: values `[1, 2, 3, 4]` (column), segments `[0, 0, 1, 1]` -> `[0, 1, 0, 3]`.
    """
    exclusive = values.cumsum(0) - values
    _, counts = torch.unique_consecutive(segments, return_counts=True)
    starts = counts.cumsum(0) - counts
    return exclusive - torch.repeat_interleave(exclusive[starts], counts, dim=0)


def gaussian_power(dx: torch.Tensor, dy: torch.Tensor, conics: torch.Tensor) -> torch.Tensor:
    """Exponent `-d^T Sigma^-1 d / 2` for pixel offsets dx, dy `[...]` and conics `[..., 3]` (a, b, c).

    Example: conic (1, 0, 1) (unit variance), offset (1, 1) -> -1.
    """
    a, b, c = conics.unbind(-1)
    return -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy


def rasterize_splats(splats: Splats, colors: torch.Tensor, opacities: torch.Tensor, width: int, height: int,
                     tile_size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Splats of one camera with colours `[N, 3]` and opacities `[N]` -> image `[3, H, W]`,
    accumulated depth `[H, W]` (sum of weight * z) and alpha `[H, W]`; black background.

    A first pass without autograd evaluates every (Gaussian, tile pixel) overlap and keeps the
    pairs whose alpha reaches 1/255; only those are recomputed with gradients, so the memory the
    backward pass holds grows with the pixels the Gaussians actually cover.
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    P = tile_size * tile_size
    idx = torch.nonzero(splats.visible).squeeze(1)
    splat, tile = tile_intersections(splats.means2d[idx].detach(), splats.radii[idx], tiles_x, tiles_y, tile_size)
    g = idx[splat]
    depth_order = torch.argsort(splats.depths[g].detach(), stable=True)
    order = depth_order[torch.argsort(tile[depth_order], stable=True)]
    g, tile = g[order], tile[order]  # sorted by tile, then depth

    def pixel_xy(tiles: torch.Tensor, pix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (tiles % tiles_x) * tile_size + pix % tile_size, (tiles // tiles_x) * tile_size + pix // tile_size

    with torch.no_grad():
        px, py = pixel_xy(tile[:, None], torch.arange(P, device=colors.device)[None])  # [I, P]
        means2d, conics = splats.means2d.detach()[g], splats.conics.detach()[g]
        power = gaussian_power(px + 0.5 - means2d[:, 0:1], py + 0.5 - means2d[:, 1:2], conics[:, None])
        hit = (power <= 0) & (opacities.detach()[g][:, None] * torch.exp(power) >= ALPHA_MIN) & (px < width) & (py < height)
        rows, pix = torch.nonzero(hit).unbind(1)
        slot = tile[rows] * P + pix
        keep = torch.argsort(slot, stable=True)  # by pixel, then depth (rows are depth-ordered per tile)
        rows, pix, slot = rows[keep], pix[keep], slot[keep]
    gi = g[rows]
    px, py = pixel_xy(tile[rows], pix)
    power = gaussian_power(px + 0.5 - splats.means2d[gi, 0], py + 0.5 - splats.means2d[gi, 1], splats.conics[gi])
    alpha = (opacities[gi] * torch.exp(power)).clamp_max(ALPHA_MAX)
    log_keep = torch.log1p(-alpha.double())
    log_t = segment_exclusive_cumsum(log_keep, slot) if slot.numel() else log_keep
    alive = (log_t + log_keep).detach() > math.log(T_MIN)
    weight = alpha * torch.exp(log_t).to(alpha.dtype) * alive
    values = torch.cat([weight[:, None] * colors[gi], (weight * splats.depths[gi])[:, None], weight[:, None]], dim=-1)
    out = colors.new_zeros(tiles_y * tiles_x * P, 5).index_add(0, slot, values)
    out = out.reshape(tiles_y, tiles_x, tile_size, tile_size, 5).permute(4, 0, 2, 1, 3)
    out = out.reshape(5, tiles_y * tile_size, tiles_x * tile_size)[:, :height, :width]
    return out[:3], out[3], out[4]
