"""Per-stream projector from a ViT's width to the LLM's width."""

from __future__ import annotations

import torch
from torch import nn


class StreamProjector(nn.Module):
    """`Linear(D_vis → D_llm) → GELU → Linear(D_llm → D_llm)`, one per encoder stream."""

    def __init__(self, vis_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(vis_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [..., D_vis] → [..., D_llm]."""
        return self.net(tokens)
