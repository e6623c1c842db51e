"""ViewMixer (stage 0): cross-view attention per time step before the main transformer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geometry.layers.lowrank import LowRankLinear
from geometry.layers.scalar import load_scalars_saved_0d


class ViewMixer(nn.Module):
    """Gated residual `x + g * attn(norm(x))` over the V*P patch tokens of one time step.

    q/k/v/out are rank-`rank` projections; `g = sigmoid(gate)` starts near 0 (gate = -4) and the
    out projection starts at exactly zero, so the module is the identity at init and loaded
    DINOv2/VGGT features pass through unchanged. Pre-norm (not the seed's post-gate LayerNorm)
    keeps that exactness.
    """

    def __init__(self, dim: int, num_heads: int = 8, rank: int = 16, gate_init: float = -4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.q = LowRankLinear(dim, dim, rank)
        self.k = LowRankLinear(dim, dim, rank)
        self.v = LowRankLinear(dim, dim, rank)
        self.out = LowRankLinear(dim, dim, rank, zero_init=True)
        self.gate = nn.Parameter(torch.full((1,), gate_init))
        load_scalars_saved_0d(self, "gate")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[B, T, V, P, C] -> [B, T, V, P, C]`, attention over the V*P tokens of each (b, t)."""
        B, T, V, P, C = tokens.shape
        x = tokens.reshape(B * T, V * P, C)
        h = self.norm(x)
        q, k, v = (proj(h).reshape(B * T, V * P, self.num_heads, C // self.num_heads).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B * T, V * P, C)
        x = x + torch.sigmoid(self.gate) * self.out(attn)
        return x.reshape(B, T, V, P, C)
