"""Direct optimisation of Gaussians initialised from a voxel grid against camera images
(a check that voxels -> Gaussians -> renderer can reproduce what the cameras see)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from geometry.gaussians.losses import render_l1
from geometry.gaussians.params import Gaussians, activate_gaussians, param_dim, rgb_to_sh_dc
from geometry.gaussians.render import GaussianRenderer
from geometry.voxel.voxelize import VoxelGrid


def init_from_voxels(grid: VoxelGrid, sh_degree: int = 4, opacity: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw parameters `[B, T, N, 83]` and offsets `[B, T, N, 3]` of one Gaussian per voxel: the
    voxel's colour, the given opacity, half-voxel scales, mean at the voxel's weighted point."""
    B, T, N = grid.ids.shape
    raw = grid.xyz.new_zeros(B, T, N, param_dim(sh_degree))
    raw[..., 0] = torch.logit(torch.tensor(opacity))
    raw[..., 8:11] = rgb_to_sh_dc(grid.rgb)
    size = grid.voxel_size.view(B, 1, 1, 1)
    offset = torch.atanh(((grid.xyz - grid.centres) / size).clamp(-0.99, 0.99))
    return raw, offset


def gaussians_of(raw: torch.Tensor, offset: torch.Tensor, grid: VoxelGrid) -> Gaussians:
    """Activate raw parameters on the grid's voxel centres and sizes."""
    size = grid.voxel_size.view(-1, 1, 1).expand(grid.ids.shape)
    return activate_gaussians(raw, offset, grid.centres, size, grid.valid)


def fit_gaussians(grid: VoxelGrid, images: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor,
                  steps: int, lr: float = 0.05, renderer: GaussianRenderer | None = None,
                  log: Callable[[int, float], None] | None = None) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Adam on raw parameters and offsets to lower the render L1 against `images [B, T, V, 3, H, W]`.

    Returns the L1 before each step (and after the last), and the fitted raw parameters and offsets.
    """
    renderer = renderer or GaussianRenderer()
    raw, offset = init_from_voxels(grid)
    raw.requires_grad_(True)
    offset.requires_grad_(True)
    optimizer = torch.optim.Adam([raw, offset], lr=lr)
    H, W = images.shape[-2:]
    losses = []
    for step in range(steps + 1):
        out = renderer(gaussians_of(raw, offset, grid), intrinsics, extrinsics, (H, W))
        loss = render_l1(out["images"], images)
        losses.append(float(loss.detach()))
        if log is not None:
            log(step, losses[-1])
        if step == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return losses, raw.detach(), offset.detach()
