"""TrackHead: query points in the first frame -> tracks, visibility and confidence in all frames."""

from __future__ import annotations

import torch
from torch import nn

from geometry.aggregator import AggregatorOutput
from geometry.heads.dpt import DPTHead
from geometry.heads.track_modules import (EfficientUpdateFormer, correlation_pyramid, flow_embedding,
                                          query_position_embedding, sample_correlation, sample_features)
from geometry.layers import Mlp


class Tracker(nn.Module):
    """Iterative track refinement on dense features (VGGT's BaseTrackerPredictor layout).

    Each iteration samples the correlation between every track's feature and a window of each
    frame's feature pyramid around its current position, feeds [flow embedding, correlation, track
    feature] (plus the query's position embedding and the first/other-frame token) through the
    update transformer, and updates positions and features. The first frame's positions stay at
    the queries. As in VGGT, query features are sampled with border padding.
    """

    def __init__(self, latent_dim: int = 128, levels: int = 7, radius: int = 4, hidden: int = 384, depth: int = 6,
                 num_virtual: int = 64, max_scale: float = 518.0, stride: int = 2) -> None:
        super().__init__()
        self.levels, self.radius, self.max_scale, self.stride = levels, radius, max_scale, stride
        self.flows_emb_dim = latent_dim
        transformer_dim = 3 * latent_dim + 4
        self.corr_mlp = Mlp(levels * (2 * radius + 1) ** 2, hidden, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, transformer_dim) * 0.02)
        self.updateformer = EfficientUpdateFormer(transformer_dim, hidden, latent_dim + 2, depth, num_virtual=num_virtual)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iterations: int = 4
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Queries `[B, N, 2]` (pixels, frame 0), features `[B, S, C, h, w]` at 1/stride ->
        per-iteration tracks `[B, S, N, 2]` (pixels), visibility and confidence `[B, S, N]`."""
        B, S, C, h, w = fmaps.shape
        N = query_points.shape[1]
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        queries = query_points / self.stride
        pyramid = correlation_pyramid(fmaps.reshape(B * S, C, h, w), self.levels)
        feats = sample_features(fmaps[:, 0], queries, padding_mode="border")
        feats = feats.unsqueeze(1).expand(B, S, N, C).reshape(B * S, N, C)
        coords = queries.unsqueeze(1).expand(B, S, N, 2)
        first = torch.arange(S, device=fmaps.device).view(1, S, 1, 1) == 0
        ref = torch.cat([self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, S - 1, -1)], dim=1)
        query_pos = query_position_embedding(queries, ref.shape[-1], h, w)  # [B, N, D]
        preds = []
        for _ in range(iterations):
            coords = coords.detach()
            corr = self.corr_mlp(sample_correlation(pyramid, feats, coords.reshape(B * S, N, 2), self.radius))
            flows = coords - coords[:, :1]
            flow_emb = torch.cat([flow_embedding(flows, self.flows_emb_dim), flows / self.max_scale,
                                  flows / self.max_scale], dim=-1)
            x = torch.cat([flow_emb, corr.reshape(B, S, N, -1), feats.reshape(B, S, N, C)], dim=-1)
            x = x + query_pos.unsqueeze(1) + ref.unsqueeze(2)
            delta = self.updateformer(x.transpose(1, 2)).transpose(1, 2)  # [B, S, N, C+2]
            feats = feats + self.ffeat_updater(self.ffeat_norm(delta[..., 2:].reshape(-1, C))).reshape(B * S, N, C)
            coords = torch.where(first, coords, coords + delta[..., :2])
            preds.append(coords * self.stride)
        feats = feats.reshape(B, S, N, C)
        vis = torch.sigmoid(self.vis_predictor(feats)).squeeze(-1)
        conf = torch.sigmoid(self.conf_predictor(feats)).squeeze(-1)
        return preds, vis, conf


class TrackHead(nn.Module):
    """Aggregator output + query points `[B, N, 2]` in frame 0 -> tracks over all S frames."""

    def __init__(self, dim_in: int = 2048, patch_size: int = 14, features: int = 128,
                 out_channels: tuple[int, ...] = (256, 512, 1024, 1024), layers: tuple[int, ...] = (4, 11, 17, 23),
                 levels: int = 7, radius: int = 4, hidden: int = 384, depth: int = 6, num_virtual: int = 64,
                 iterations: int = 4, chunk_size: int = 8) -> None:
        super().__init__()
        self.iterations = iterations
        self.feature_extractor = DPTHead(dim_in, patch_size, features=features, out_channels=out_channels,
                                         layers=layers, feature_only=True, down_ratio=2, chunk_size=chunk_size,
                                         pos_embed=False)
        self.tracker = Tracker(features, levels, radius, hidden, depth, num_virtual, stride=2)

    def forward(self, agg: AggregatorOutput, query_points: torch.Tensor, iterations: int | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        if query_points.dim() != 3 or query_points.shape[-1] != 2:
            raise ValueError(f"query_points must be [B, N, 2], got shape {tuple(query_points.shape)}")
        fmaps = self.feature_extractor(agg)
        return self.tracker(query_points, fmaps, iterations or self.iterations)
