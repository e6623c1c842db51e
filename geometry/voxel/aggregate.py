"""Pass 2 of the voxel path: the aggregator's alternating attention over voxel tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geometry.aggregator import Aggregator
from geometry.voxel.routing import group_attention_mask, group_by_id, id_frame_attention, voxel_layer_routing


@dataclass
class VoxelAggregatorOutput:
    """layers: layer index -> `[B, T, M, k*C]` (frame then global output, k = len(aa_order)),
    M = patch_start_idx + N tokens per time step `[camera, registers, voxels]`; valid `[B, T, M]`."""

    layers: dict[int, torch.Tensor]
    patch_start_idx: int
    valid: torch.Tensor


def special_token_ids(num_special: int, B: int, T: int, device: torch.device) -> torch.Tensor:
    """Ids `[B, T, num_special]` of the camera and register slots: -2, -3, ... (voxel ids are >= 0,
    padding is -1), so slot k of every time step forms one routing group. Example: 5 -> -2..-6."""
    return (-2 - torch.arange(num_special, device=device)).expand(B, T, num_special)


def voxel_aggregate(aggregator: Aggregator, voxel_tokens: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor,
                    num_views: int, window: int = 3, output_layers: tuple[int, ...] | None = None) -> VoxelAggregatorOutput:
    """Voxel tokens `[B, T, N, C]` with ids / valid `[B, T, N]` -> `VoxelAggregatorOutput`.

    Per time step: `[camera, registers, voxels]`, with the camera token the mean of the first
    `num_views` per-view camera tokens (the views are fused into the voxels), the time step's
    register tokens, and the time embedding added to the voxels. No RoPE: position is in the
    tokens (MLP of xyz). Frame attention is routed by voxel id (`voxel_layer_routing`); global
    attention sees every valid token of the clip. The weights are the aggregator's own.
    """
    c = aggregator.config
    B, T, N, C = voxel_tokens.shape
    ps = c.patch_start_idx
    wanted = set(c.head_layers if output_layers is None else output_layers)
    if not all(0 <= i < c.depth for i in wanted):
        raise ValueError(f"output_layers={sorted(wanted)} must lie in [0, depth={c.depth})")
    dtype = voxel_tokens.dtype
    camera = aggregator.view_camera_token[:, :num_views].mean(1, keepdim=True).to(dtype).expand(B, T, 1, C)
    register = aggregator.time_register_token[:, :T].to(dtype).expand(B, T, ps - 1, C)
    voxels = voxel_tokens + aggregator.time_embed.weight[:T].to(dtype).view(1, T, 1, C)
    tokens = torch.cat([camera, register, voxels], dim=2)
    all_ids = torch.cat([special_token_ids(ps, B, T, ids.device), ids], dim=2)
    all_valid = torch.cat([torch.ones(B, T, ps, dtype=torch.bool, device=ids.device), valid], dim=2)
    M = ps + N
    index = group_by_id(all_ids, all_valid)
    routing = voxel_layer_routing(c.depth, c.stage_boundaries)
    masks = {mode: group_attention_mask(index, mode, window) for mode in set(routing)}
    key_mask = all_valid.reshape(B, 1, 1, T * M)
    outputs: dict[int, torch.Tensor] = {}
    for i in range(c.depth):
        intermediates = []
        for kind in c.aa_order:
            if kind == "frame":
                tokens = id_frame_attention(aggregator.frame_blocks[i], tokens, index, masks[routing[i]])
            else:
                tokens = aggregator.global_blocks[i](tokens.reshape(B, T * M, C), attn_mask=key_mask).reshape(B, T, M, C)
            intermediates.append(tokens)
        if i in wanted:
            outputs[i] = torch.cat(intermediates, dim=-1)
    return VoxelAggregatorOutput(outputs, ps, all_valid)
