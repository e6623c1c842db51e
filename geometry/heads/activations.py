"""Output activations of the heads, kept apart from the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    """`exp` (depth), `inv_log` = sign(x)·expm1(|x|) (points), `expp1` = 1 + exp (confidence),
    `relu`, `linear`."""
    if kind == "exp":
        return torch.exp(x)
    if kind == "inv_log":
        return torch.sign(x) * torch.expm1(x.abs())
    if kind == "expp1":
        return 1.0 + torch.exp(x)
    if kind == "relu":
        return F.relu(x)
    if kind == "linear":
        return x
    raise ValueError(f"unknown activation {kind!r}; expected exp, inv_log, expp1, relu or linear")


def activate_head(out: torch.Tensor, activation: str, conf_activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """DPT output `[N, D+1, H, W]` -> values `[N, H, W, D]` and confidence `[N, H, W]` (last channel)."""
    fmap = out.permute(0, 2, 3, 1)
    return activate(fmap[..., :-1], activation), activate(fmap[..., -1], conf_activation)


def activate_pose(pose_enc: torch.Tensor) -> torch.Tensor:
    """Raw `[..., 9]` -> translation and quaternion linear, FoVs through ReLU (VGGT's choice)."""
    return torch.cat([pose_enc[..., :7], F.relu(pose_enc[..., 7:])], dim=-1)
