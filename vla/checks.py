"""Input checks that read tensor values.

Each needs a host read, which would split a ``torch.compile`` graph, so inside one they are
skipped; a compiled caller checks its inputs before the graph (``GeoVLAModel.compile_sampling``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def values_checked() -> bool:
    """Whether checks that read tensor values run: everywhere but inside ``torch.compile``."""
    return not torch.compiler.is_compiling()


def check_finite(name: str, tensor: Tensor | None) -> None:
    """ValueError naming ``name`` when a floating ``tensor`` holds NaN or Inf."""
    if tensor is None or not tensor.is_floating_point() or not tensor.numel() or not values_checked():
        return
    # min and max carry any NaN and are infinite when any entry is: one reduction, where
    # isfinite(tensor).all() builds three masks (7x slower on a 3-camera history)
    if not bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_token_ids(name: str, ids: Tensor, vocab_size: int) -> None:
    """ValueError naming ``name`` when an id lies outside ``[0, vocab_size)``."""
    if not ids.numel() or not values_checked():
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got [{low}, {high}]")


def check_instruction_mask(name: str, mask: Tensor) -> None:
    """ValueError naming ``name`` and the batch rows of an instruction ``mask [B, L]`` that hold no
    valid token."""
    if not values_checked():
        return
    empty = (~mask.bool().any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{name} has no valid instruction token in batch rows {empty}")
