"""Morton (Z-order) codes of integer voxel cells: one int64 id per cell, nearby cells get nearby ids.

Each axis keeps 21 bits (63 bits in all). World cells may be negative, so `cell_ids` shifts
every axis by `CELL_BIAS = 2**20` first: the id of a cell depends on the cell alone, never on
the clip's bounding box, so a static point keeps its id over time.
"""

from __future__ import annotations

import torch

BITS = 21
CELL_BIAS = 1 << (BITS - 1)
_SPREAD = ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
           (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249))
_COMPACT = ((2, 0x10C30C30C30C30C3), (4, 0x100F00F00F00F00F), (8, 0x1F0000FF0000FF),
            (16, 0x1F00000000FFFF), (32, (1 << BITS) - 1))


def _spread_bits(x: torch.Tensor) -> torch.Tensor:
    """Put bit k of a 21-bit integer at bit 3k. Example: 0b11 -> 0b1001."""
    x = x & ((1 << BITS) - 1)
    for shift, mask in _SPREAD:
        x = (x | (x << shift)) & mask
    return x


def _compact_bits(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `_spread_bits`: gather bits 0, 3, 6, ... Example: 0b1001 -> 0b11."""
    x = x & _SPREAD[-1][1]
    for shift, mask in _COMPACT:
        x = (x ^ (x >> shift)) & mask
    return x


def morton_encode(cells: torch.Tensor) -> torch.Tensor:
    """Non-negative integer cells `[..., 3]` (x, y, z), each below 2**21 -> codes `[...]` int64.

    Bit k of x goes to bit 3k, of y to 3k+1, of z to 3k+2. Examples: (1,0,0) -> 1, (0,1,0) -> 2,
    (0,0,1) -> 4, (1,1,1) -> 7, (2,0,0) -> 8; the 2x2x2 block at the origin takes codes 0..7.
    """
    if cells.shape[-1] != 3:
        raise ValueError(f"cells must have shape [..., 3], got {tuple(cells.shape)}")
    cells = cells.long()
    if cells.numel() and (cells.min() < 0 or cells.max() >= 1 << BITS):
        raise ValueError(f"cells must lie in [0, 2**{BITS}); got range [{int(cells.min())}, {int(cells.max())}]")
    x, y, z = cells.unbind(-1)
    return _spread_bits(x) | (_spread_bits(y) << 1) | (_spread_bits(z) << 2)


def morton_decode(codes: torch.Tensor) -> torch.Tensor:
    """Codes `[...]` -> cells `[..., 3]`; `morton_decode(morton_encode(c)) == c`. Example: 7 -> (1, 1, 1)."""
    codes = codes.long()
    return torch.stack([_compact_bits(codes >> axis) for axis in range(3)], dim=-1)


def cell_ids(cells: torch.Tensor) -> torch.Tensor:
    """Signed world cells `[..., 3]` in `[-2**20, 2**20)` -> ids `[...]` (Morton code of cell + 2**20).

    Example: cell (-2**20, -2**20, -2**20) -> 0; cells (0, 0, 0) and (1, 0, 0) differ by 1 in the
    lowest bit. Raises ValueError (naming the range) when a cell is out of range, e.g. when the
    voxel size is far too small for the scene.
    """
    return morton_encode(cells.long() + CELL_BIAS)


def id_cells(ids: torch.Tensor) -> torch.Tensor:
    """Inverse of `cell_ids`: ids `[...]` -> signed cells `[..., 3]`."""
    return morton_decode(ids) - CELL_BIAS
