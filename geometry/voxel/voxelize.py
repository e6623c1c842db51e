"""VoxelizationModule (seed 001, stage 0): multi-view pixel features -> sparse voxel tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geometry.layers import Mlp
from geometry.losses import unproject_depth
from geometry.padding import pad_stack
from geometry.voxel.config import VoxelConfig
from geometry.voxel.morton import id_cells
from geometry.voxel.scatter import assign_voxels, clip_voxel_size, segment_softmax, weighted_scatter


@dataclass
class VoxelGrid:
    """Voxels of a clip, padded per (batch, time) to the largest count N with `valid`.

    tokens `[B, T, N, C]` = MLP(feature) + MLP(xyz); features `[B, T, N, C_in]` the
    softmax-of-confidence weighted patch features; xyz `[B, T, N, 3]` the weighted mean point;
    centres `[B, T, N, 3]` the cell centres; rgb `[B, T, N, 3]` the weighted pixel colour (zeros
    without images); ids `[B, T, N]` Morton ids (sorted, -1 on padding); valid `[B, T, N]`;
    voxel_size `[B]` (one per clip); view_features `[B, T, V, N, C_in]` (the same average over
    view v's pixels only); view_weight `[B, T, V, N]` (share of the voxel's weight from view v,
    summing to 1 over views); view_count `[B, T, V, N]` (pixels of view v in the voxel); static
    `[B, T, N]` (mean of the pixel static mask, None without one). `tokens` is None when the
    grid comes from :func:`voxelize_pixels` rather than :class:`VoxelizationModule`.
    """

    tokens: torch.Tensor | None
    features: torch.Tensor
    xyz: torch.Tensor
    centres: torch.Tensor
    rgb: torch.Tensor
    ids: torch.Tensor
    valid: torch.Tensor
    voxel_size: torch.Tensor
    view_features: torch.Tensor
    view_weight: torch.Tensor
    view_count: torch.Tensor
    static: torch.Tensor | None


def pixel_patch_index(H: int, W: int, grid: tuple[int, int], stride: int, device: torch.device) -> torch.Tensor:
    """Flat patch index `[h*w]` of the pixels kept at `stride` (rows, then columns).

    Example: H = W = 4, grid (2, 2), stride 2 -> pixels (0,0), (0,2), (2,0), (2,2) -> `[0, 1, 2, 3]`.
    """
    gh, gw = grid
    rows = torch.arange(0, H, stride, device=device) * gh // H
    cols = torch.arange(0, W, stride, device=device) * gw // W
    return (rows[:, None] * gw + cols[None, :]).reshape(-1)


class VoxelizationModule(nn.Module):
    """Back-project pixels, assign them to voxels of a clip-wide size, scatter, embed.

    Features are per patch (`[B, T, V, P, C_in]` on a `grid`); every kept pixel carries the
    feature of its patch, its world point (depth + intrinsics + OpenCV camera-from-world
    extrinsics, pixel centres at +0.5), its confidence and colour. The xyz MLP sees the voxel's
    point relative to the clip's centre, divided by the clip's largest offset from it.
    """

    def __init__(self, in_dim: int, dim: int, config: VoxelConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_mlp = Mlp(in_dim, dim, dim)
        self.xyz_mlp = Mlp(3, dim, dim)

    def forward(self, features: torch.Tensor, grid: tuple[int, int], depth: torch.Tensor, intrinsics: torch.Tensor,
                extrinsics: torch.Tensor, confidence: torch.Tensor | None = None, pixel_mask: torch.Tensor | None = None,
                images: torch.Tensor | None = None, static_mask: torch.Tensor | None = None) -> VoxelGrid:
        """Arguments as :func:`voxelize_pixels`; the grid comes back with its tokens."""
        voxels = voxelize_pixels(features, grid, depth, intrinsics, extrinsics, self.config, confidence, pixel_mask,
                                 images, static_mask)
        valid = voxels.valid
        centre = (voxels.xyz * valid[..., None]).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)[:, None]
        scale = (voxels.xyz - centre[:, None, None]).abs().amax((1, 2, 3)).clamp_min(1e-6)
        rel_xyz = (voxels.xyz - centre[:, None, None]) / scale[:, None, None, None]
        voxels.tokens = (self.feature_mlp(voxels.features) + self.xyz_mlp(rel_xyz)) * valid[..., None]
        return voxels


def voxelize_pixels(features: torch.Tensor, grid: tuple[int, int], depth: torch.Tensor, intrinsics: torch.Tensor,
                    extrinsics: torch.Tensor, config: VoxelConfig, confidence: torch.Tensor | None = None,
                    pixel_mask: torch.Tensor | None = None, images: torch.Tensor | None = None,
                    static_mask: torch.Tensor | None = None,
                    bounds: tuple[torch.Tensor, torch.Tensor] | None = None, allow_empty: bool = False) -> VoxelGrid:
    """Back-project pixels, assign them to voxels of a clip-wide size and scatter (no tokens yet).

    features `[B, T, V, P, C_in]` on a `grid` of patches; depth, confidence, pixel_mask, static_mask
    `[B, T, V, H, W]`; intrinsics `[B, T, V, 3, 3]`; extrinsics `[B, T, V, 3, 4]`; images
    `[B, T, V, 3, H, W]`; bounds `(low [3], high [3])`: world box outside which points are
    dropped. A sample without any valid pixel raises ValueError, or with `allow_empty` gets no
    voxel (all of its `valid` False; its voxel size is then 1). Returns a :class:`VoxelGrid` whose
    `tokens` is None.
    """
    B, T, V, P, C = features.shape
    H, W = depth.shape[-2:]
    checks = {"depth": (depth, (B, T, V, H, W)), "intrinsics": (intrinsics, (B, T, V, 3, 3)),
              "extrinsics": (extrinsics, (B, T, V, 3, 4)), "confidence": (confidence, (B, T, V, H, W)),
              "pixel_mask": (pixel_mask, (B, T, V, H, W)), "static_mask": (static_mask, (B, T, V, H, W)),
              "images": (images, (B, T, V, 3, H, W))}
    for name, (value, shape) in checks.items():
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if grid[0] * grid[1] != P:
        raise ValueError(f"grid={grid} does not hold the P={P} patches of features")
    s = config.pixel_stride
    points = unproject_depth(depth.reshape(-1, H, W), intrinsics.reshape(-1, 3, 3).to(depth.dtype),
                             extrinsics.reshape(-1, 3, 4).to(depth.dtype))
    points = points[:, ::s, ::s].reshape(B, T, V, -1, 3)
    d = depth[..., ::s, ::s].reshape(B, T, V, -1)
    valid = torch.isfinite(d) & (d > 0) & torch.isfinite(points).all(-1)
    if config.max_depth is not None:
        valid &= d < config.max_depth
    if pixel_mask is not None:
        valid &= pixel_mask[..., ::s, ::s].reshape(B, T, V, -1).bool()
    if bounds is not None:
        valid &= ((points >= bounds[0]) & (points <= bounds[1])).all(-1)
    conf = torch.zeros_like(d) if confidence is None else confidence[..., ::s, ::s].reshape(B, T, V, -1)
    rgb = torch.zeros_like(points) if images is None else images[..., ::s, ::s].flatten(-2).transpose(-1, -2)
    static = None if static_mask is None else static_mask[..., ::s, ::s].reshape(B, T, V, -1).float()
    patch = pixel_patch_index(H, W, grid, s, depth.device)
    sizes = [clip_voxel_size(points[b].flatten(1, 2), valid[b].flatten(1, 2), config.target_voxels,
                             config.voxel_size_mode) if not allow_empty or bool(valid[b].any()) else 1.0
             for b in range(B)]
    per_step = [_scatter_step(features[b, t], patch, points[b, t], valid[b, t], conf[b, t], rgb[b, t],
                              None if static is None else static[b, t], sizes[b])
                for b in range(B) for t in range(T)]
    N = max(1, max(step["ids"].shape[0] for step in per_step))
    grid_out = {k: pad_stack([step[k] for step in per_step], N, -1 if k == "ids" else 0)
                for k in per_step[0] if per_step[0][k] is not None}
    grid_out = {k: v.reshape(B, T, *v.shape[1:]) for k, v in grid_out.items()}
    for k in ("view_features", "view_weight", "view_count"):  # [B, T, N, V, ...] -> [B, T, V, N, ...]
        grid_out[k] = grid_out[k].transpose(2, 3)
    voxel_size = torch.tensor(sizes, dtype=depth.dtype, device=depth.device)
    return VoxelGrid(tokens=None, features=grid_out["features"], xyz=grid_out["xyz"], centres=grid_out["centres"],
                     rgb=grid_out["rgb"], ids=grid_out["ids"], valid=grid_out["ids"] >= 0, voxel_size=voxel_size,
                     view_features=grid_out["view_features"], view_weight=grid_out["view_weight"],
                     view_count=grid_out["view_count"], static=grid_out.get("static"))


def _scatter_step(features: torch.Tensor, patch: torch.Tensor, points: torch.Tensor, valid: torch.Tensor,
                  conf: torch.Tensor, rgb: torch.Tensor, static: torch.Tensor | None, size: float) -> dict:
    """One (batch, time): features `[V, P, C]`, per pixel `[V, M, ...]` -> per-voxel tensors."""
    V, P, C = features.shape
    M = points.shape[1]
    ids, rows = assign_voxels(points.reshape(-1, 3), valid.reshape(-1), size)
    keep = rows >= 0
    n = ids.shape[0]
    rows = rows[keep]
    view = torch.arange(V, device=points.device).repeat_interleave(M)[keep]
    src_patch = (view * P + patch.repeat(V)[keep])
    w = segment_softmax(conf.reshape(-1)[keep], rows, n)
    # Features live per patch: add up pixel weights per (voxel, view, patch) pair first, so the
    # scatter touches each pair once ([pairs, C] instead of [pixels, C]).
    pairs, pair_of_pixel = torch.unique(rows * (V * P) + src_patch, return_inverse=True)
    pair_w = w.new_zeros(pairs.shape[0]).index_add(0, pair_of_pixel, w)
    pair_voxel, pair_patch = pairs // (V * P), pairs % (V * P)
    pair_feat = features.reshape(V * P, C)[pair_patch]
    vv = pair_voxel * V + pair_patch // P
    view_w = w.new_zeros(n * V).index_add(0, rows * V + view, w)
    view_feat = weighted_scatter(pair_feat, pair_w, vv, n * V) / view_w.clamp_min(1e-12)[:, None]
    return {
        "features": weighted_scatter(pair_feat, pair_w, pair_voxel, n),
        "xyz": weighted_scatter(points.reshape(-1, 3)[keep], w, rows, n),
        "rgb": weighted_scatter(rgb.reshape(-1, 3)[keep], w, rows, n),
        "centres": (id_cells(ids).to(points.dtype) + 0.5) * size,
        "ids": ids,
        "view_features": view_feat.reshape(n, V, C),
        "view_weight": view_w.reshape(n, V),
        "view_count": torch.zeros(n * V, device=points.device).index_add(
            0, rows * V + view, torch.ones_like(w)).reshape(n, V),
        "static": None if static is None else weighted_scatter(static.reshape(-1, 1)[keep], w, rows, n)[:, 0],
    }
