"""TemporalTracker: associates voxels of the same id across a window of time steps."""

from __future__ import annotations

import torch
from torch import nn


def match_ids(query: torch.Tensor, reference: torch.Tensor, reference_valid: torch.Tensor) -> torch.Tensor:
    """For each query id `[N]`, its position in `reference [M]` among valid entries, else -1.

    Example: query `[7, 3, 5]`, reference `[3, 5, 9]` with 5 invalid -> `[-1, 0, -1]`.
    """
    ref = reference.masked_fill(~reference_valid, -1)
    order = torch.argsort(ref)
    sorted_ref = ref[order]
    pos = torch.searchsorted(sorted_ref, query).clamp_max(max(sorted_ref.numel() - 1, 0))
    if sorted_ref.numel() == 0:
        return torch.full_like(query, -1)
    hit = (sorted_ref[pos] == query) & (query >= 0)
    return torch.where(hit, order[pos], torch.full_like(query, -1))


class TemporalTracker(nn.Module):
    """ids, valid `[B, T, N]` -> matches `[B, T, window, N]`: entry `[b, t, k, n]` is the index at
    time `t + k - window // 2` of the voxel with the same id as `(b, t, n)`, or -1 (absent, padding,
    or outside the clip). The middle slot is the identity for valid voxels."""

    def __init__(self, window: int = 3) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window={window} must be a positive odd number")
        self.window = window

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, T, N = ids.shape
        half = self.window // 2
        out = torch.full((B, T, self.window, N), -1, dtype=torch.long, device=ids.device)
        for b in range(B):
            for t in range(T):
                query = ids[b, t].masked_fill(~valid[b, t], -1)
                for k in range(self.window):
                    s = t + k - half
                    if 0 <= s < T:
                        out[b, t, k] = match_ids(query, ids[b, s], valid[b, s])
        return out
