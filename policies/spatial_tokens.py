"""Spatial tokens for the LLM from the geometry aggregator's last layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geometry.aggregator import AggregatorOutput
from vla.backbone.projector import StreamProjector


class SpatialTokens(nn.Module):
    """Per (time, view) frame: the camera token and the patch tokens average-pooled to a
    ``pool x pool`` grid, projected to the LLM width.

    Output ``[B, S * (1 + pool**2), D_llm]`` with ``S = T * V`` frames in time-major order, and a
    mask ``[B, S * (1 + pool**2)]`` that drops the tokens of missing cameras.
    """

    def __init__(self, aggregator_dim: int, llm_dim: int, pool: int) -> None:
        super().__init__()
        self.pool = pool
        self.projector = StreamProjector(aggregator_dim, llm_dim)

    @property
    def tokens_per_frame(self) -> int:
        return 1 + self.pool**2

    def forward(self, agg: AggregatorOutput, camera_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """camera_mask: ``[B, V]`` bool, False where a camera is missing."""
        last = agg.layers[max(agg.layers)]  # [B, S, N, 2C]
        B, S, _, width = last.shape
        h, w = agg.grid
        camera = last[:, :, :1]  # [B, S, 1, 2C]
        patches = last[:, :, agg.patch_start_idx :].reshape(B * S, h, w, width).permute(0, 3, 1, 2)
        pooled = F.adaptive_avg_pool2d(patches, self.pool).flatten(2).transpose(1, 2)  # [B*S, pool², 2C]
        tokens = torch.cat([camera, pooled.reshape(B, S, -1, width)], dim=2)  # [B, S, 1+pool², 2C]
        frame_mask = camera_mask.repeat(1, agg.num_times)  # [B, T*V], time-major like S
        mask = frame_mask[:, :, None].expand(B, S, self.tokens_per_frame)
        return self.projector(tokens.flatten(1, 2)), mask.flatten(1)
