"""CameraHead: camera tokens -> pose encodings, refined iteratively (VGGT's head, multi-view)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geometry.aggregator import AggregatorOutput
from geometry.causal import time_causal_mask
from geometry.heads.activations import activate_pose
from geometry.layers.kv_cache import KVCache
from geometry.layers import Block, Mlp

POSE_DIM = 9


class ViewProjection(nn.Module):
    """Per-view residual MLP `x + W2_v gelu(W1_v x)` on `[B, T, V, D]` (W2 starts at zero)."""

    def __init__(self, dim: int, hidden: int, max_views: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(max_views, dim, hidden) * dim ** -0.5)
        self.b1 = nn.Parameter(torch.zeros(max_views, hidden))
        self.w2 = nn.Parameter(torch.zeros(max_views, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(max_views, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        V = x.shape[2]
        h = F.gelu(torch.einsum("btvd,vdh->btvh", x, self.w1[:V]) + self.b1[:V])
        return x + torch.einsum("btvh,vhd->btvd", h, self.w2[:V]) + self.b2[:V]


class CameraHead(nn.Module):
    """Last-layer camera tokens `[B, T, V, 2C]` -> pose encodings, one per refinement iteration.

    Tokens go through a view-specific projection, then for `iterations` rounds: adaLN modulation
    by the embedded previous estimate, a trunk attending across cameras, and a pose delta added
    to that estimate; as in VGGT the previous estimate is detached, so each round's output
    back-propagates into its own delta only. `static=True` reads the first time step and returns
    `[B, V, 9]`; `static=False` attends across all T*V cameras and returns `[B, T, V, 9]`; with
    `causal_time` a camera attends only to cameras of its own and earlier time steps. Streaming
    passes one time step with `caches` (one per iteration and trunk block, `new_caches`), which
    hold the earlier steps.
    """

    def __init__(self, dim_in: int = 2048, trunk_depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0,
                 init_values: float = 0.01, iterations: int = 4, max_views: int = 32, view_hidden: int = 512,
                 causal_time: bool = False) -> None:
        super().__init__()
        self.iterations = iterations
        self.causal_time = causal_time
        self.token_norm = nn.LayerNorm(dim_in)
        self.view_proj = ViewProjection(dim_in, view_hidden, max_views)
        self.trunk = nn.Sequential(*(Block(dim_in, num_heads, mlp_ratio, qk_norm=False, init_values=init_values)
                                     for _ in range(trunk_depth)))
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_DIM)

    def new_caches(self, rotated: bool = True) -> list[KVCache]:
        """Empty stream caches, one per (iteration, trunk block), iteration-major."""
        return [KVCache(1, rotated) for _ in range(self.iterations * len(self.trunk))]

    def refine(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None,
               caches: list[KVCache] | None = None) -> list[torch.Tensor]:
        """Camera tokens `[B, L, D]` -> `iterations` activated pose encodings `[B, L, 9]`.

        `attn_mask` `[L, L]` restricts the trunk's attention; `caches` (streaming) hold earlier steps.
        """
        B, L, _ = tokens.shape
        depth = len(self.trunk)
        pose = None
        out = []
        for it in range(self.iterations):
            if pose is not None:  # VGGT: the previous estimate is detached, for the embedding and the sum
                pose = pose.detach()
            prev = self.empty_pose_tokens.expand(B, L, -1) if pose is None else pose
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(prev)).chunk(3, dim=-1)
            x = tokens + gate * (self.adaln_norm(tokens) * (1 + scale) + shift)
            for j, block in enumerate(self.trunk):
                x = block(x, attn_mask=attn_mask, cache=None if caches is None else caches[it * depth + j])
            delta = self.pose_branch(self.trunk_norm(x))
            pose = delta if pose is None else pose + delta
            out.append(activate_pose(pose))
        return out

    def forward(self, agg: AggregatorOutput, static: bool = True, caches: list[KVCache] | None = None) -> list[torch.Tensor]:
        tokens = agg.layers[max(agg.layers)][:, :, 0]
        B, S, D = tokens.shape
        T, V = agg.num_times, agg.num_views
        tokens = self.view_proj(self.token_norm(tokens).reshape(B, T, V, D))
        if static:
            if caches is not None:
                raise ValueError("streamed cameras are per step: call the camera head with static=False")
            return self.refine(tokens[:, 0])
        mask = time_causal_mask(T, V, tokens.device) if self.causal_time and caches is None else None
        return [p.reshape(B, T, V, POSE_DIM) for p in self.refine(tokens.reshape(B, T * V, D), mask, caches)]
