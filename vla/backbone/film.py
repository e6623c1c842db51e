"""FiLM: language-conditioned per-channel scale and shift inside a ViT block."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class FiLM(nn.Module):
    """`x * (1 + γ) + β` with `γ, β = Linear(D_lang → D_vis)(language)`, one pair per sample.

    Zero-initialised, so at init the module is the identity and a pretrained ViT is unchanged.
    """

    def __init__(self, lang_dim: int, vis_dim: int) -> None:
        super().__init__()
        self.scale = nn.Linear(lang_dim, vis_dim)
        self.shift = nn.Linear(lang_dim, vis_dim)
        for linear in (self.scale, self.shift):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D_vis], language: [B, D_lang] → [B, N, D_vis]; the same γ, β for all N tokens."""
        gamma = self.scale(language).unsqueeze(1)  # [B, 1, D_vis]
        beta = self.shift(language).unsqueeze(1)
        return x * (1 + gamma) + beta


def film_block_forward(block: nn.Module, film: FiLM, x: torch.Tensor, language: torch.Tensor,
                       select: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """One timm ViT `Block` with FiLM between the attention and the MLP residual branches.

    Uses the block's own submodules (norm1, attn, ls1, drop_path1, norm2, mlp, ls2, drop_path2);
    with a zero FiLM it computes exactly `block(x)`. With `select` (tokens [B, N, D] → [B, n, D])
    only the selected tokens go on after attention: FiLM and the MLP act per token, so the
    output equals `select` of the full block's output.

    x: [B, N, D_vis], language: [B, D_lang] → [B, N, D_vis] (or [B, n, D_vis] with `select`).
    """
    x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    if select is not None:
        x = select(x)
    x = film(x, language)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
