"""Gaussian heads: VoxelGaussianHead (teacher, one prediction per view) and FusedGaussianHead
(student, one prediction per fused voxel). Each outputs 83 raw parameters plus a 3-d mean offset."""

from __future__ import annotations

import torch
from torch import nn

from geometry.gaussians.params import param_dim, rgb_to_sh_dc
from geometry.layers import Mlp

OFFSET_DIM = 3


class GaussianOutput(nn.Module):
    """Features `[..., D]` and voxel colours `[..., 3]` -> raw parameters `[..., 83]`, offsets `[..., 3]`.

    The last layer starts at zero, so at init every Gaussian is the voxel's colour (degree-0
    coefficient from the colour), opacity 0.5, scale half a voxel, identity rotation, centred.
    """

    def __init__(self, dim: int, hidden: int, sh_degree: int = 4) -> None:
        super().__init__()
        self.out_dim = param_dim(sh_degree)
        self.mlp = Mlp(dim, hidden, self.out_dim + OFFSET_DIM)
        nn.init.zeros_(self.mlp.fc2.weight)
        nn.init.zeros_(self.mlp.fc2.bias)

    def forward(self, features: torch.Tensor, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(features)
        raw, offset = out[..., :self.out_dim], out[..., self.out_dim:]
        base = torch.zeros_like(raw)
        base[..., 8:11] = rgb_to_sh_dc(rgb)
        return raw + base, offset


class VoxelGaussianHead(nn.Module):
    """Teacher: aggregator voxel tokens `[B, T, N, D]` + per-view voxel features `[B, T, V, N, C]`
    + voxel colours `[B, T, N, 3]` -> raw `[B, T, V, N, 83]`, offsets `[B, T, V, N, 3]`.

    Each view predicts from the shared token plus a projection of what that view alone saw.
    """

    def __init__(self, dim_in: int, feature_dim: int, hidden: int = 256, sh_degree: int = 4) -> None:
        super().__init__()
        self.view_proj = nn.Linear(feature_dim, dim_in)
        self.norm = nn.LayerNorm(dim_in)
        self.out = GaussianOutput(dim_in, hidden, sh_degree)

    def forward(self, tokens: torch.Tensor, view_features: torch.Tensor, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(tokens.unsqueeze(2) + self.view_proj(view_features))
        return self.out(x, rgb.unsqueeze(2).expand(*x.shape[:-1], 3))


class FusedGaussianHead(nn.Module):
    """Student: fused features `[B, T, N, D]` + voxel colours `[B, T, N, 3]` -> raw `[B, T, N, 83]`,
    offsets `[B, T, N, 3]`."""

    def __init__(self, dim_in: int, hidden: int = 256, sh_degree: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.out = GaussianOutput(dim_in, hidden, sh_degree)

    def forward(self, features: torch.Tensor, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.out(self.norm(features), rgb)
