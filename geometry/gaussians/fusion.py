"""FusionHead: per-view voxel tokens -> one fused token per voxel id (V -> 1), static/dynamic split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geometry.padding import pad_stack


@dataclass
class FusionOutput:
    """features `[B, T, N', D_out]`, xyz `[B, T, N', 3]`, ids `[B, T, N']` (-1 padding), valid
    `[B, T, N']`, view_weights `[B, T, V, N]` (softmax of confidence over the kept views, before
    de-duplication), static `[B, T, N']` bool, static_logits `[B, T, N']`."""

    features: torch.Tensor
    xyz: torch.Tensor
    ids: torch.Tensor
    valid: torch.Tensor
    view_weights: torch.Tensor
    static: torch.Tensor
    static_logits: torch.Tensor


def view_fusion_weights(confidence: torch.Tensor, visibility: torch.Tensor, visibility_threshold: float = 0.5,
                        confidence_threshold: float = 0.1) -> torch.Tensor:
    """Softmax over views (dim -2 of `[..., V, N]`) of the confidence of the views that pass both
    thresholds; a voxel no view passes gets all-zero weights.

    Example (one voxel, 3 views): confidence `[0.5, 0.5, 0.05]`, visibility `[1, 1, 1]` -> view 2
    fails the confidence threshold -> `[0.5, 0.5, 0]`.
    """
    keep = (visibility >= visibility_threshold) & (confidence >= confidence_threshold)
    scores = confidence.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(scores, dim=-2)
    return torch.nan_to_num(weights, nan=0.0) * keep


def dedup_by_id(ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids, valid `[N]` -> unique valid ids `[n]` and each entry's row `[N]` (-1 when invalid).

    Example: ids `[4, 2, 4, 9]`, valid `[1, 1, 1, 0]` -> `[2, 4]`, rows `[1, 0, 1, -1]`.
    """
    rows = torch.full_like(ids, -1)
    unique, inverse = torch.unique(ids[valid], return_inverse=True)
    rows[valid] = inverse
    return unique, rows


def mean_by_row(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Average `values [N, D]` over entries sharing a row (rows -1 ignored) -> `[n, D]`."""
    keep = rows >= 0
    total = values.new_zeros(n, values.shape[-1]).index_add(0, rows[keep], values[keep])
    count = values.new_zeros(n).index_add(0, rows[keep], values.new_ones(int(keep.sum())))
    return total / count.clamp_min(1)[:, None]


class FusionHead(nn.Module):
    """Per-view tokens `[B, T, V, N, D]` -> `FusionOutput` with features of width `out_dim`.

    Per time step: views below the visibility (0.5) or confidence (0.1) threshold are dropped,
    the rest averaged with softmax-of-confidence weights; entries sharing a voxel id are merged
    (mean of features and xyz); an MLP `D -> out_dim` (C -> C/4 in the seed) gives the fused
    features; a voxel is static when the given static fraction reaches 0.5, or else when the
    predicted static probability does.
    """

    def __init__(self, dim_in: int, out_dim: int, visibility_threshold: float = 0.5,
                 confidence_threshold: float = 0.1) -> None:
        super().__init__()
        self.visibility_threshold, self.confidence_threshold = visibility_threshold, confidence_threshold
        self.mlp = nn.Sequential(nn.LayerNorm(dim_in), nn.Linear(dim_in, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.static_head = nn.Linear(out_dim, 1)

    def forward(self, view_tokens: torch.Tensor, confidence: torch.Tensor, visibility: torch.Tensor, ids: torch.Tensor,
                xyz: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None) -> FusionOutput:
        """confidence, visibility `[B, T, V, N]`; ids, valid, static `[B, T, N]`; xyz `[B, T, N, 3]`."""
        B, T, V, N, D = view_tokens.shape
        for name, value in (("confidence", confidence), ("visibility", visibility)):
            if tuple(value.shape) != (B, T, V, N):
                raise ValueError(f"{name} must have shape {(B, T, V, N)}, got {tuple(value.shape)}")
        weights = view_fusion_weights(confidence, visibility, self.visibility_threshold, self.confidence_threshold)
        fused = (weights.unsqueeze(-1) * view_tokens).sum(2)  # [B, T, N, D]
        seen = valid & (weights.sum(2) > 0)
        extra = [xyz] + ([] if static is None else [static.unsqueeze(-1).to(xyz.dtype)])
        merged = []
        for b in range(B):
            for t in range(T):
                unique, rows = dedup_by_id(ids[b, t], seen[b, t])
                values = torch.cat([fused[b, t]] + [e[b, t] for e in extra], dim=-1)
                merged.append((unique, mean_by_row(values, rows, unique.shape[0])))
        n = max(1, max(u.shape[0] for u, _ in merged))
        ids_out = pad_stack([u for u, _ in merged], n, -1).reshape(B, T, n)
        values = pad_stack([m for _, m in merged], n, 0).reshape(B, T, n, -1)
        features = self.mlp(values[..., :D])
        logits = self.static_head(features)[..., 0]
        is_static = values[..., D + 3] >= 0.5 if static is not None else torch.sigmoid(logits) >= 0.5
        valid_out = ids_out >= 0
        return FusionOutput(features=features * valid_out[..., None], xyz=values[..., D:D + 3], ids=ids_out,
                            valid=valid_out, view_weights=weights, static=is_static & valid_out, static_logits=logits)
