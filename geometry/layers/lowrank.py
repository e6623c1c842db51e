"""Low-rank linear map `up(down(x))`, used by the ViewMixer's q/k/v/out projections."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """`[..., in] -> [..., out]` through a rank-`rank` bottleneck (in*r + r*out parameters).

    `zero_init=True` zeroes the up projection so the map starts at exactly 0 (LoRA-style: the
    down projection stays random, so the up projection still receives gradient).
    """

    def __init__(self, in_features: int, out_features: int, rank: int = 16, zero_init: bool = False) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=True)
        nn.init.zeros_(self.up.bias)
        if zero_init:
            nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))
