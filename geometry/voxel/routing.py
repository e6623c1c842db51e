"""Voxel-id routing of frame attention: tokens with the same voxel id attend across time.

Tokens of a clip are `[B, T, M, C]` (M tokens per time step). Instead of a dense `(T*M)^2` mask,
tokens are gathered into groups of one id, `[G, T, C]` (slot t holds the token of that id at time
t, if any), and attention runs inside each group with a `[G, 1, T, T]` boolean mask.
"""

from __future__ import annotations

import torch

from geometry.layers import Block
from geometry.routing import layer_routing

VOXEL_MODES = ("window", "all")


def voxel_layer_routing(depth: int, boundaries: tuple[int, int] | None = None) -> list[str]:
    """Frame-attention mode per layer: stage 1 "window" (same id, times within the window), stage 2
    "all" (same id, all times), stage 3 "all" for its first half then "window" — the patch path's
    multi-view/temporal schedule with multi-view -> window and temporal -> all.
    Example: depth 6 -> ['window', 'window', 'all', 'all', 'all', 'window'].
    """
    return ["window" if mode == "multiview" else "all" for mode in layer_routing(depth, False, boundaries)]


def window_mask(T: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """`[T, T]` bool, True where |t_q - t_k| <= window // 2.

    Example: T=4, window=3 -> rows `[1,1,0,0] [1,1,1,0] [0,1,1,1] [0,0,1,1]`.
    """
    t = torch.arange(T, device=device)
    return (t[:, None] - t[None, :]).abs() <= window // 2


def group_by_id(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """ids, valid `[B, T, M]` -> `[G, T]` flat indices into `B*T*M` (-1 where the id is absent).

    One group per (batch, id) among valid tokens; an id occurs at most once per (batch, time).
    Example: B=1, T=2, M=2, ids `[[5, 7], [7, 9]]` -> groups for 5, 7, 9:
    `[[0, -1], [1, 2], [-1, 3]]`.
    """
    B, T, M = ids.shape
    flat = torch.arange(B * T * M, device=ids.device).reshape(B, T, M)
    time = torch.arange(T, device=ids.device).view(1, T, 1).expand(B, T, M)
    groups = []
    for b in range(B):
        keep = valid[b]
        unique, inverse = torch.unique(ids[b][keep], return_inverse=True)
        index = torch.full((unique.shape[0], T), -1, dtype=torch.long, device=ids.device)
        index[inverse, time[b][keep]] = flat[b][keep]
        groups.append(index)
    return torch.cat(groups, dim=0)


def group_attention_mask(index: torch.Tensor, mode: str, window: int) -> torch.Tensor:
    """Boolean mask `[G, 1, T, T]` for groups `index [G, T]`: a query sees the present slots of its
    group ("all") or those within the window ("window"); every slot sees itself, so no row is empty."""
    if mode not in VOXEL_MODES:
        raise ValueError(f"unknown voxel routing mode {mode!r}; expected one of {VOXEL_MODES}")
    G, T = index.shape
    mask = (index >= 0)[:, None, :].expand(G, T, T)
    if mode == "window":
        mask = mask & window_mask(T, window, index.device)
    return (mask | torch.eye(T, dtype=torch.bool, device=index.device)).unsqueeze(1)


def id_frame_attention(block: Block, tokens: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run `block` inside each id group: tokens `[B, T, M, C]` -> `[B, T, M, C]`.

    Tokens in no group (padding) pass through unchanged.
    """
    shape, C = tokens.shape, tokens.shape[-1]
    flat = tokens.reshape(-1, C)
    out = block(flat[index.clamp_min(0)], attn_mask=mask)  # [G, T, C]
    present = index >= 0
    return flat.index_copy(0, index[present], out[present]).reshape(shape)
