"""Aggregation tokens: K learnable tokens that read a ViT's patches and replace them as output."""

from __future__ import annotations

import torch
from torch import nn


class AggregationTokens(nn.Module):
    """K learnable tokens appended after the positional embedding (so they carry no position).

    They join every self-attention layer with the patch and prefix tokens; only they are kept at
    the output, compressing P patches to K tokens.
    """

    def __init__(self, num_tokens: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.tokens = nn.Parameter(torch.empty(1, num_tokens, dim))
        nn.init.trunc_normal_(self.tokens, std=init_std)

    def append(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] → [B, N + K, D], the K tokens last."""
        return torch.cat([x, self.tokens.expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N + K, D] → [B, K, D], the aggregation tokens only."""
        return x[:, -self.num_tokens :]
