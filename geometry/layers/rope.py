"""2D rotary position embedding on (row, column) patch coordinates, VGGT's convention.

The head dimension is split in two halves: the first is rotated by the row coordinate, the second
by the column coordinate; inside each half, channel i and i + d/2 form a rotation pair with
angle `pos / frequency ** (2i / d)`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


def grid_positions(num_frames: int, grid_h: int, grid_w: int, num_special: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer RoPE positions `[num_frames, num_special + grid_h*grid_w, 2]` (row, col).

    Patches sit at grid coordinates + 1, special tokens at 0. Example (grid 2x2, 1 special):
    `[[0, 0], [1, 1], [1, 2], [2, 1], [2, 2]]` for every frame.
    """
    rows = torch.arange(1, grid_h + 1, device=device).repeat_interleave(grid_w)
    cols = torch.arange(1, grid_w + 1, device=device).repeat(grid_h)
    patches = torch.stack([rows, cols], dim=-1)
    special = torch.zeros(num_special, 2, dtype=patches.dtype, device=device)
    return torch.cat([special, patches], dim=0).unsqueeze(0).expand(num_frames, -1, -1)


class RotaryTables(NamedTuple):
    """Precomputed rotation of a token layout: `cos` and signed `sin`, `[B or 1, 1 or heads, N, D]`.

    `rotate(x, tables) = x * cos + pair_swap(x) * sin` where `pair_swap` exchanges channel i and
    i + D/4 inside each half; `sin` carries the sign of the first member of each pair. Build once
    with `RotaryPositionEmbedding2D.tables` and reuse for every layer (and every call) that has
    the same positions.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def repeat_tokens(self, times: int) -> "RotaryTables":
        """The tables of `times` copies of this token layout one after the other `[.., times*N, D]`."""
        return RotaryTables(self.cos.repeat(1, 1, times, 1), self.sin.repeat(1, 1, times, 1))


def _pair_swap(x: torch.Tensor) -> torch.Tensor:
    """`[..., D]`: channels `[a, b | c, d]` (quarters) -> `[b, a | d, c]` (one stack, faster than a flip)."""
    a, b, c, d = x.unflatten(-1, (4, -1)).unbind(-2)
    return torch.stack([b, a, d, c], dim=-2).flatten(-2)


class RotaryPositionEmbedding2D(nn.Module):
    """Rotate q or k `[B, heads, N, D]` by positions `[B, N, 2]`, or per head `[B, heads, N, 2]`
    (a streaming cache whose heads keep different tokens), or by precomputed `RotaryTables`;
    D divisible by 4."""

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = frequency

    def tables(self, positions: torch.Tensor, dim: int, dtype: torch.dtype) -> RotaryTables:
        """Tables for positions `[B, N, 2]` (shared by the heads) or `[B, heads, N, 2]`, head size `dim`."""
        work = torch.promote_types(dtype, torch.float32)  # angles in at least float32
        quarter = dim // 4
        exponents = torch.arange(0, dim // 2, 2, device=positions.device, dtype=work) / (dim // 2)
        inv_freq = self.frequency ** (-exponents)  # [D/4]
        angles = positions.to(work).unsqueeze(-1) * inv_freq  # [..., N, 2 (row, col), D/4]
        angles = angles.unsqueeze(-2).expand(*angles.shape[:-1], 2, quarter)  # [..., N, 2, 2, D/4]
        sign = torch.tensor([-1.0, 1.0], device=positions.device, dtype=work).view(2, 1)
        cos, sin = angles.cos().flatten(-3), (angles.sin() * sign).flatten(-3)
        if positions.dim() == 3:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, N, D]: shared by the heads
        return RotaryTables(cos.to(dtype), sin.to(dtype))

    def forward(self, x: torch.Tensor, positions: torch.Tensor | RotaryTables) -> torch.Tensor:
        if not isinstance(positions, RotaryTables):
            positions = self.tables(positions, x.shape[-1], x.dtype)
        cos, sin = positions
        if cos.dtype != x.dtype:  # tables built for another dtype (e.g. float32 under autocast)
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return x * cos + _pair_swap(x) * sin
