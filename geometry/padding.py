"""Padding of variable-length per-(batch, time) sets into one tensor."""

from __future__ import annotations

import torch


def pad_stack(items: list[torch.Tensor], length: int, fill: float | int = 0) -> torch.Tensor:
    """Pad each `[n_i, ...]` along dim 0 to `length` with `fill` and stack -> `[len(items), length, ...]`.

    Example: `[tensor([1, 2]), tensor([3])]`, length 3, fill -1 -> `[[1, 2, -1], [3, -1, -1]]`.
    """
    out = items[0].new_full((len(items), length, *items[0].shape[1:]), fill)
    for i, item in enumerate(items):
        out[i, :item.shape[0]] = item
    return out
