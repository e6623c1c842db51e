"""Multi-head self-attention with q/k LayerNorm, 2D RoPE, explicit masks and reusable k/v."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from geometry.layers.masks import GroupMasks
from geometry.layers.norm import LayerNorm
from geometry.layers.rope import RotaryPositionEmbedding2D, RotaryTables

if TYPE_CHECKING:
    from geometry.layers.kv_cache import KVCache

KV = tuple[torch.Tensor, torch.Tensor]


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: GroupMasks) -> torch.Tensor:
    """`F.scaled_dot_product_attention` for each query group with its own mask; `[B, H, n, D]`."""
    out = torch.empty_like(q)
    for idx, mask in groups:
        out[:, :, idx] = F.scaled_dot_product_attention(q[:, :, idx], k, v, attn_mask=mask)
    return out


class Attention(nn.Module):
    """`[B, N, C] -> [B, N, C]`; parameter names (qkv, q_norm, k_norm, proj) follow VGGT.

    `attn_mask` is passed to `F.scaled_dot_product_attention`: boolean (True = may attend) or an
    additive float bias, broadcastable to `[B, heads, N, N_kv]`, or `GroupMasks` (one mask per
    query group). `pos` are RoPE positions or precomputed `RotaryTables`. `past_kv` (k, v of earlier tokens,
    `[B, heads, M, D]`, already normalised and rotated) is prepended to this call's keys/values,
    and `return_kv=True` also returns the full (k, v) so a caller can keep a cache. `cache` (a
    `geometry.layers.kv_cache.KVCache`, streaming) instead appends this call's k/v to the cache in place
    and attends over everything cached; the cache supplies the mask (a tensor or `GroupMasks`).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = True,
                 rope: RotaryPositionEmbedding2D | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def prepare_keys(self, k: torch.Tensor, pos: torch.Tensor | RotaryTables | None) -> torch.Tensor:
        """Raw keys `[B, heads, N, D]` -> normalised and rotated (positions `[B, N, 2]` or
        `[B, heads, N, 2]`, or their `RotaryTables`)."""
        k = self.k_norm(k)
        return self.rope(k, pos) if self.rope is not None and pos is not None else k

    def forward(self, x: torch.Tensor, pos: torch.Tensor | RotaryTables | None = None,
                attn_mask: torch.Tensor | GroupMasks | None = None, past_kv: KV | None = None, return_kv: bool = False,
                cache: KVCache | None = None) -> torch.Tensor | tuple[torch.Tensor, KV]:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.q_norm(q)
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos)
        if cache is not None:
            if attn_mask is not None or past_kv is not None:
                raise ValueError("a cached attention call takes its mask from the cache; got attn_mask/past_kv too")
            k, v, attn_mask = cache.update(k, v, pos, self.prepare_keys)
        else:
            k = self.prepare_keys(k, pos)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        if isinstance(attn_mask, list):
            out = grouped_attention(q, k, v, attn_mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.proj(out.transpose(1, 2).reshape(B, N, C))
        return (out, (k, v)) if return_kv else out
