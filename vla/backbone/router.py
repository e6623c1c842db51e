"""The language-conditioned router that mixes the SigLIP and DINOv2 streams."""

from __future__ import annotations

import torch
from torch import nn

from vla.backbone.config import ROUTER_MODES


class StreamRouter(nn.Module):
    """Mixes two projected streams with per-sample weights from the language vector.

    mode "moe": `w = softmax(MLP(D_llm → D_llm → GELU → 2)(language))`, output `w0·s0 + w1·s1`.
    mode "add": output `s0 + s1`, no parameters, no weights.
    """

    def __init__(self, llm_dim: int, mode: str = "moe") -> None:
        super().__init__()
        if mode not in ROUTER_MODES:
            raise ValueError(f"router mode must be one of {ROUTER_MODES}, got {mode!r}")
        self.mode = mode
        self.mlp = (
            nn.Sequential(nn.Linear(llm_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, 2)) if mode == "moe" else None
        )

    def weights(self, language: torch.Tensor) -> torch.Tensor:
        """language: [B, D_llm] → stream weights [B, 2], positive, each row summing to 1 ("moe" only)."""
        if self.mlp is None:
            raise ValueError("router mode 'add' has no weights")
        return torch.softmax(self.mlp(language).float(), dim=-1).to(language.dtype)

    def forward(
        self, streams: tuple[torch.Tensor, torch.Tensor], language: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """streams: two tensors [B, ...] of equal shape, language: [B, D_llm] →
        (mixed [B, ...], weights [B, 2] or None for "add")."""
        first, second = streams
        if first.shape != second.shape:
            raise ValueError(f"router streams must have equal shapes, got {tuple(first.shape)} and {tuple(second.shape)}")
        if self.mlp is None:
            return first + second, None
        weights = self.weights(language)
        w = weights.view(weights.shape[0], 2, *([1] * (first.ndim - 1)))  # [B, 2, 1, ...]
        return w[:, 0] * first + w[:, 1] * second, weights
