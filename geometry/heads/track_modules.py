"""Pieces of the TrackHead's tracker: correlation sampling, sin-cos embeddings, the update
transformer (per-track time attention + point/virtual-track space attention, CoTracker-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geometry.layers import Mlp


def sample_features(fmap: torch.Tensor, points: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear features of `fmap` `[n, C, h, w]` at `points` `[n, M, 2]` (x, y in feature-pixel
    units, pixel centres at integers) -> `[n, M, C]`. Outside the map: zeros, or the nearest
    border value with `padding_mode="border"` (VGGT samples query features and the query's
    position embedding that way, correlations with zeros)."""
    h, w = fmap.shape[-2:]
    grid = torch.stack([2 * points[..., 0] / max(w - 1, 1) - 1, 2 * points[..., 1] / max(h - 1, 1) - 1], dim=-1)
    out = F.grid_sample(fmap, grid.unsqueeze(1), mode="bilinear", align_corners=True, padding_mode=padding_mode)
    return out.squeeze(2).transpose(1, 2)


def correlation_pyramid(fmap: torch.Tensor, levels: int) -> list[tuple[torch.Tensor, float]]:
    """`[n, C, h, w]` -> `levels` pairs (map, coordinate scale): each map average-pooled 2x from
    the previous, scale `1 / 2**level` as in VGGT (also for odd sizes, where pooling floors). A map
    too small to pool is kept with the previous scale (VGGT has no such level)."""
    pyramid = [(fmap, 1.0)]
    for _ in range(levels - 1):
        prev, scale = pyramid[-1]
        pyramid.append((F.avg_pool2d(prev, 2), scale / 2) if min(prev.shape[-2:]) >= 2 else (prev, scale))
    return pyramid


def sample_correlation(pyramid: list[tuple[torch.Tensor, float]], feats: torch.Tensor, coords: torch.Tensor,
                       radius: int) -> torch.Tensor:
    """Correlation of track features `[n, N, C]` with each level's `(2r+1)^2` window around
    `coords` `[n, N, 2]` (level-0 units, times the level's scale) -> `[n, N, levels * (2r+1)^2]`,
    scaled by 1/sqrt(C); zero outside the map.

    Window order is VGGT's: entry `i * (2r+1) + j` lies at offset `(x + i - r, y + j - r)`, i.e.
    x-major. Example: r = 1 at level 0 — entry 4 is the point itself, entry 7 one pixel to the
    right, entry 5 one pixel down.
    """
    n, N, C = feats.shape
    d = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    offsets = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).reshape(1, 1, -1, 2)
    out = []
    for fmap, scale in pyramid:
        pts = (coords * scale).unsqueeze(2) + offsets  # [n, N, K, 2]
        window = sample_features(fmap, pts.reshape(n, -1, 2)).reshape(n, N, -1, C)
        out.append((window * feats.unsqueeze(2)).sum(-1) / C ** 0.5)
    return torch.cat(out, dim=-1)


def flow_embedding(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos embedding of displacements `xy` `[..., 2]` -> `[..., dim]` (dim % 4 == 0), VGGT's
    layout: `dim/4` linear frequencies `f_k = 2k * 1000 / (dim/2)`, sin and cos interleaved,
    `[sin(x f_0), cos(x f_0), sin(x f_1), ..., cos(x f_last), sin(y f_0), ...]`."""
    half = dim // 2
    freqs = torch.arange(0, half, 2, device=xy.device, dtype=xy.dtype) * (1000.0 / half)
    ang = xy.unsqueeze(-1) * freqs  # [..., 2, dim/4]
    return torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-3)


def query_position_embedding(queries: torch.Tensor, dim: int, h: int, w: int) -> torch.Tensor:
    """Position embedding of `queries` `[B, N, 2]` (feature-pixel units) -> `[B, N, dim]`
    (dim % 4 == 0), VGGT's way: a per-pixel table of the `h x w` grid,
    `[sin(x f), cos(x f), sin(y f), cos(y f)]` with `dim/4` geometric frequencies
    `f_k = 1 / 10000^(k / (dim/4))` (computed in float64, cast to the queries' dtype), sampled
    bilinearly at the queries with border padding — not the embedding evaluated at the point."""
    k = dim // 4
    freqs = 1.0 / 10000.0 ** (torch.arange(k, device=queries.device, dtype=torch.float64) / k)
    ys, xs = torch.meshgrid(torch.arange(h, device=queries.device, dtype=torch.float64),
                            torch.arange(w, device=queries.device, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (xs, ys):
        ang = pos.unsqueeze(-1) * freqs  # [h, w, k]
        parts += [ang.sin(), ang.cos()]
    table = torch.cat(parts, dim=-1).permute(2, 0, 1).unsqueeze(0).to(queries.dtype)  # [1, dim, h, w]
    return sample_features(table.expand(queries.shape[0], -1, -1, -1), queries, padding_mode="border")


class AttnBlock(nn.Module):
    """Self-attention block on `[n, L, D]` (nn.MultiheadAttention, VGGT's names). As in VGGT, the
    attention residual is added to the normalised input: `h = norm1(x); h + attn(h)`, then a
    pre-norm MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: `x [n, L, D]` attends to `context [n, M, D]`; as in VGGT, the
    residual is added to the normalised `x`: `h = norm1(x); h + attn(h, norm_context(context))`,
    then a pre-norm MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """`[B, N, S, in_dim]` track tokens -> `[B, N, S, out_dim]` updates.

    Each of `depth` rounds: attention along time per track, then space attention through
    `num_virtual` learned virtual tracks (virtual <- points, virtual <-> virtual, points <- virtual),
    which costs O(N * num_virtual) instead of O(N^2).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int = 6, num_heads: int = 8,
                 num_virtual: int = 64) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(in_dim)
        self.input_transform = nn.Linear(in_dim, hidden)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual, 1, hidden))  # VGGT's spelling
        self.time_blocks = nn.ModuleList(AttnBlock(hidden, num_heads) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(hidden, num_heads) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock(hidden, num_heads) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock(hidden, num_heads) for _ in range(depth))
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, S, _ = x.shape
        tokens = self.input_transform(self.input_norm(x))
        init = tokens
        M = self.virual_tracks.shape[1]
        tokens = torch.cat([tokens, self.virual_tracks.expand(B, -1, S, -1)], dim=1)  # [B, N+M, S, D]
        D = tokens.shape[-1]
        for i in range(len(self.time_blocks)):
            tokens = self.time_blocks[i](tokens.reshape(B * (N + M), S, D)).reshape(B, N + M, S, D)
            space = tokens.transpose(1, 2).reshape(B * S, N + M, D)
            points, virtual = space[:, :N], space[:, N:]
            virtual = self.space_virtual2point_blocks[i](virtual, points)
            virtual = self.space_virtual_blocks[i](virtual)
            points = self.space_point2virtual_blocks[i](points, virtual)
            tokens = torch.cat([points, virtual], dim=1).reshape(B, S, N + M, D).transpose(1, 2)
        return self.flow_head(self.output_norm(tokens[:, :N] + init))
