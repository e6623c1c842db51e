"""Which tokens frame attention mixes in each layer, and the reshapes that implement it.

Tokens are kept as `[B, T, V, N, C]` (N tokens per frame). Frame attention runs on
`[groups, length, C]` where the grouping depends on the routing mode:

- "frame":     one frame per group          `[B*T*V, N, C]`   (legacy VGGT)
- "multiview": one time step per group      `[B*T, V*N, C]`   (same t, all views)
- "temporal":  one view per group           `[B*V, T*N, C]`   (same v, all times)
"""

from __future__ import annotations

import torch

MODES = ("frame", "multiview", "temporal")


def stage_boundaries(depth: int, boundaries: tuple[int, int] | None = None) -> tuple[int, int]:
    """Ends of stages 1 and 2, scaling VGGT-4D's 8/10/6 split of 24 layers to `depth`.

    Examples: depth 24 -> (8, 18); depth 12 -> (4, 9); depth 6 -> (2, 4).
    """
    if boundaries is not None:
        return boundaries
    return int(depth / 3 + 0.5), int(depth * 3 / 4)


def layer_routing(depth: int, legacy: bool, boundaries: tuple[int, int] | None = None) -> list[str]:
    """Routing mode of each layer's frame attention.

    Stage 1 is multi-view, stage 2 temporal, stage 3 temporal for its first (larger) half and
    multi-view after. Legacy input routes every layer per frame.
    Example: depth 6, multi-view -> ['multiview', 'multiview', 'temporal', 'temporal',
    'temporal', 'multiview']; depth 24 -> 8 x multiview, 10 x temporal, 3 x temporal, 3 x multiview.
    """
    if legacy:
        return ["frame"] * depth
    s1, s2 = stage_boundaries(depth, boundaries)
    stage3 = depth - s2
    temporal3 = stage3 - stage3 // 2
    return ["multiview"] * s1 + ["temporal"] * (s2 - s1 + temporal3) + ["multiview"] * (stage3 // 2)


def route(tokens: torch.Tensor, mode: str) -> torch.Tensor:
    """`[B, T, V, N, C]` -> `[groups, length, C]` for `mode` (see the module docstring).

    Example: B=1, T=2, V=3, N=5 -> "multiview" gives `[2, 15, C]`, row t holding views 0,1,2 of
    time t in order; "temporal" gives `[3, 10, C]`, row v holding times 0,1 of view v.
    """
    B, T, V, N, C = tokens.shape
    if mode == "frame":
        return tokens.reshape(B * T * V, N, C)
    if mode == "multiview":
        return tokens.reshape(B * T, V * N, C)
    if mode == "temporal":
        return tokens.transpose(1, 2).reshape(B * V, T * N, C)
    raise ValueError(f"unknown routing mode {mode!r}; expected one of {MODES}")


def unroute(routed: torch.Tensor, mode: str, B: int, T: int, V: int) -> torch.Tensor:
    """Inverse of `route`: `[groups, length, C]` -> `[B, T, V, N, C]`."""
    C = routed.shape[-1]
    if mode == "temporal":
        return routed.reshape(B, V, T, -1, C).transpose(1, 2)
    if mode in ("frame", "multiview"):
        return routed.reshape(B, T, V, -1, C)
    raise ValueError(f"unknown routing mode {mode!r}; expected one of {MODES}")
