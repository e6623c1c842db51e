"""Pre-norm transformer block with LayerScale (VGGT / DINOv2 parameter names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from geometry.layers.attention import KV, Attention
from geometry.layers.masks import GroupMasks
from geometry.layers.mlp import Mlp
from geometry.layers.norm import LayerNorm
from geometry.layers.rope import RotaryPositionEmbedding2D, RotaryTables

if TYPE_CHECKING:
    from geometry.layers.kv_cache import KVCache


class LayerScale(nn.Module):
    """Per-channel scale `gamma * x`, `gamma` initialised to `init_values`."""

    def __init__(self, dim: int, init_values: float = 0.01) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """`x + ls1(attn(norm1(x))) ; x + ls2(mlp(norm2(x)))` on `[B, N, C]` (see `Attention` for the
    mask, past_kv and streaming `cache` arguments)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_norm: bool = True, init_values: float = 0.01, rope: RotaryPositionEmbedding2D | None = None) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | RotaryTables | None = None,
                attn_mask: torch.Tensor | GroupMasks | None = None, past_kv: KV | None = None, return_kv: bool = False,
                cache: KVCache | None = None) -> torch.Tensor | tuple[torch.Tensor, KV]:
        attn = self.attn(self.norm1(x), pos=pos, attn_mask=attn_mask, past_kv=past_kv, return_kv=return_kv, cache=cache)
        if return_kv:
            attn, kv = attn
        x = x + self.ls1(attn)
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return (x, kv) if return_kv else x
