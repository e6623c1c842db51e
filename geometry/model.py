"""GeometryModel: the aggregator with its camera, depth, point (and track) heads."""

from __future__ import annotations

import torch
from torch import nn

from geometry.aggregator import Aggregator, AggregatorOutput
from geometry.config import GeometryConfig
from geometry.heads import CameraHead, DPTHead, TrackHead
from geometry.layers.kv_cache import KVCache


class GeometryModel(nn.Module):
    """Images -> cameras, depth, world points (and tracks for given query points).

    Multi-view input `[B, T, V, 3, H, W]` gives `pose_enc` `[B, V, 9]` (static cameras) or
    `[B, T, V, 9]`, `depth`/`depth_conf` `[B, T, V, H, W]`, `world_points` `[B, T, V, H, W, 3]`,
    `world_points_conf` `[B, T, V, H, W]`. Legacy input `[B, S, 3, H, W]` gives VGGT's shapes:
    `pose_enc` `[B, S, 9]`, `depth` `[B, S, H, W]`, points `[B, S, H, W, 3]`.
    """

    def __init__(self, config: GeometryConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        dim_in = c.embed_dim * len(c.aa_order)
        self.aggregator = Aggregator(c)
        self.camera_head = CameraHead(dim_in, c.camera_trunk_depth, c.num_heads, c.mlp_ratio, c.init_values,
                                      c.camera_iterations, c.max_views, c.camera_view_hidden, c.causal_time)
        dpt = dict(dim_in=dim_in, patch_size=c.patch_size, features=c.dpt_features, out_channels=c.dpt_out_channels,
                   layers=c.dpt_layers, chunk_size=c.frames_chunk_size)
        self.depth_head = DPTHead(output_dim=2, activation="exp", **dpt)
        self.point_head = DPTHead(output_dim=4, activation="inv_log", **dpt) if c.point_head else None
        self.track_head = TrackHead(dim_in, c.patch_size, c.track_features, c.dpt_out_channels, c.dpt_layers,
                                    c.track_levels, c.track_radius, c.track_hidden, c.track_depth, c.track_virtual,
                                    c.track_iterations, c.frames_chunk_size) if c.track_head else None

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor | None = None,
                extrinsics: torch.Tensor | None = None, static_cameras: bool | None = None,
                query_points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        agg = self.aggregator(images, intrinsics, extrinsics)
        out = self.heads(agg, static_cameras)
        if query_points is not None:
            if self.track_head is None:
                raise ValueError("query_points given but the model was built with track_head=False")
            tracks, vis, conf = self.track_head(agg, query_points)
            out.update(track=tracks[-1], track_list=tracks, vis=vis, track_conf=conf)
        return out

    def heads(self, agg: AggregatorOutput, static_cameras: bool | None = None,
              camera_caches: list[KVCache] | None = None) -> dict[str, torch.Tensor]:
        """Run the camera and dense heads on an aggregator output (legacy input never uses static
        cameras). Tracks `[B, S, N, 2]` with visibility/confidence `[B, S, N]` come from `forward`
        when `query_points` `[B, N, 2]` (pixels in frame 0) are given. `camera_caches`: streaming
        (per-step cameras, see `CameraHead`)."""
        static = (self.config.static_cameras if static_cameras is None else static_cameras) and not agg.legacy
        static = static and camera_caches is None
        poses = self.predict_cameras(agg, static, camera_caches)
        depth, depth_conf = self.predict_depth(agg)
        frames = depth.shape[:-2]
        out = {
            "pose_enc": poses[-1],
            "pose_enc_list": poses,
            "depth": depth,
            "depth_conf": depth_conf,
            "mask_logits": agg.mask_logits,
        }
        if self.point_head is not None:
            points, points_conf = self.point_head(agg)
            out["world_points"] = points.reshape(*frames, *points.shape[2:])
            out["world_points_conf"] = points_conf.reshape(*frames, *points_conf.shape[2:])
        return out

    def predict_cameras(self, agg: AggregatorOutput, static: bool = False,
                        camera_caches: list[KVCache] | None = None) -> list[torch.Tensor]:
        """The camera head's pose encodings, one per refinement iteration: ``[B, V, 9]`` static,
        ``[B, T, V, 9]`` per frame, ``[B, S, 9]`` for legacy input."""
        poses = self.camera_head(agg, static=static, caches=camera_caches)
        if agg.legacy:
            B = agg.layers[max(agg.layers)].shape[0]
            poses = [p.reshape(B, agg.num_times, -1) for p in poses]
        return poses

    def predict_depth(self, agg: AggregatorOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth and its confidence ``[B, T, V, H, W]`` (legacy input: ``[B, S, H, W]``)."""
        B = agg.layers[max(agg.layers)].shape[0]
        frames = (B, agg.num_times) if agg.legacy else (B, agg.num_times, agg.num_views)
        depth, depth_conf = self.depth_head(agg)
        return depth.reshape(*frames, *depth.shape[2:4]), depth_conf.reshape(*frames, *depth_conf.shape[2:])
