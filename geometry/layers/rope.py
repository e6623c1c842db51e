"""2D rotary position embedding on (row, column) patch coordinates, VGGT's convention.

The head dimension is split in two halves: the first is rotated by the row coordinate, the second
by the column coordinate; inside each half, channel i and i + d/2 form a rotation pair with
angle `pos / frequency ** (2i / d)`.
"""

from __future__ import annotations

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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class RotaryPositionEmbedding2D(nn.Module):
    """Rotate q or k `[B, heads, N, D]` by positions `[B, N, 2]`, or per head `[B, heads, N, 2]`
    (a streaming cache whose heads keep different tokens); D divisible by 4."""

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = frequency

    def _cos_sin(self, positions: torch.Tensor, dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        work = torch.promote_types(dtype, torch.float32)  # angles in at least float32
        exponents = torch.arange(0, dim, 2, device=positions.device, dtype=work) / dim
        inv_freq = self.frequency ** (-exponents)
        angles = positions.to(work).unsqueeze(-1) * inv_freq  # [B, N, dim/2] or [B, heads, N, dim/2]
        angles = torch.cat([angles, angles], dim=-1)
        if angles.dim() == 3:
            angles = angles.unsqueeze(1)  # [B, 1, N, dim]: shared by the heads
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        out = []
        for axis, part in enumerate(x.split(half, dim=-1)):
            cos, sin = self._cos_sin(positions[..., axis], half, x.dtype)
            out.append(part * cos + _rotate_half(part) * sin)
        return torch.cat(out, dim=-1)
