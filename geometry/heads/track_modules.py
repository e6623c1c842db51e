"""Pieces of the TrackHead's tracker: correlation sampling, sin-cos embeddings, the update
transformer (per-track time attention + point/virtual-track space attention, CoTracker-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geometry.layers import Mlp


def sample_features(fmap: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features of `fmap` `[n, C, h, w]` at `points` `[n, M, 2]` (x, y in feature-pixel
    units, pixel centres at integers; zero outside) -> `[n, M, C]`."""
    h, w = fmap.shape[-2:]
    grid = torch.stack([2 * points[..., 0] / max(w - 1, 1) - 1, 2 * points[..., 1] / max(h - 1, 1) - 1], dim=-1)
    out = F.grid_sample(fmap, grid.unsqueeze(1), mode="bilinear", align_corners=True, padding_mode="zeros")
    return out.squeeze(2).transpose(1, 2)


def correlation_pyramid(fmap: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """`[n, C, h, w]` -> `levels` maps, each average-pooled 2x from the previous (as far as possible)."""
    pyramid = [fmap]
    for _ in range(levels - 1):
        prev = pyramid[-1]
        pyramid.append(F.avg_pool2d(prev, 2) if min(prev.shape[-2:]) >= 2 else prev)
    return pyramid


def sample_correlation(pyramid: list[torch.Tensor], feats: torch.Tensor, coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Correlation of track features `[n, N, C]` with each level's `(2r+1)^2` window around
    `coords` `[n, N, 2]` (level-0 units) -> `[n, N, levels * (2r+1)^2]`, scaled by 1/sqrt(C).

    Window order is row-major over (dy, dx) in [-r, r]. Example: r = 1 at level 0 — entry 4 is the
    correlation at the point itself, entry 5 one pixel to the right.
    """
    n, N, C = feats.shape
    d = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    offsets = torch.stack([dx, dy], dim=-1).reshape(1, 1, -1, 2)
    out = []
    for level, fmap in enumerate(pyramid):
        scale = fmap.shape[-1] / pyramid[0].shape[-1]
        pts = (coords * scale).unsqueeze(2) + offsets  # [n, N, K, 2]
        window = sample_features(fmap, pts.reshape(n, -1, 2)).reshape(n, N, -1, C)
        out.append((window * feats.unsqueeze(2)).sum(-1) / C ** 0.5)
    return torch.cat(out, dim=-1)


def sincos_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sin-cos embedding of the 2 coordinates of `x` `[..., 2]` -> `[..., dim]` (dim % 4 == 0):
    `[sin(x f), cos(x f), sin(y f), cos(y f)]` with dim/4 geometric frequencies."""
    k = dim // 4
    freqs = max_period ** (-torch.arange(k, device=x.device, dtype=x.dtype) / k)
    parts = []
    for axis in range(2):
        ang = x[..., axis:axis + 1] * freqs
        parts += [ang.sin(), ang.cos()]
    return torch.cat(parts, dim=-1)


class AttnBlock(nn.Module):
    """Pre-norm self-attention block on `[n, L, D]` (nn.MultiheadAttention, VGGT's names)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block: `x [n, L, D]` attends to `context [n, M, D]`."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        ctx = self.norm_context(context)
        x = x + self.cross_attn(self.norm1(x), ctx, ctx, need_weights=False)[0]
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
