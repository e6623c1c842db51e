"""Attention masks shared by the attention layer, its KV cache and the dynamics mask: masks per
query group, and the soft suppression of keys as an additive bias."""

from __future__ import annotations

import torch

GroupMasks = list[tuple[torch.Tensor, torch.Tensor | None]]
"""Per-query-group masks: (query indices `[n_g]`, mask broadcastable to `[B, heads, n_g, N_kv]` or
None); the groups partition the queries. A streaming cache uses it to bias a few query kinds with
one key row each instead of a dense `[n, N_kv]` bias."""

LOG_EPS = 1e-6


def suppression_bias(strengths: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """`log(1 - s_q * m_k)` (clamped at log 1e-6) for broadcastable query strengths and key masks.

    Example: s_q = 0.5, m_k = 0.5 -> log(0.75); s_q = 1, m_k = 1 -> log(1e-6).
    """
    return torch.log((1.0 - strengths * key_mask).clamp_min(LOG_EPS))
