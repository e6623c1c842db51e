"""Block-causal attention masks over time (streaming-compatible training, seed 002)."""

from __future__ import annotations

import torch


def time_causal_mask(num_times: int, tokens_per_time: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean `[T*n, T*n]`, True where a query may attend: key time <= query time.

    Tokens are time-major, `tokens_per_time` (n) per step; inside a step attention is full.
    Example (T=2, n=2): rows `[T, T, F, F]`, `[T, T, F, F]`, `[T, T, T, T]`, `[T, T, T, T]`.
    """
    times = torch.arange(num_times, device=device).repeat_interleave(tokens_per_time)
    return times.unsqueeze(0) <= times.unsqueeze(1)


__all__ = ["time_causal_mask"]
