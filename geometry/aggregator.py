"""The 4D multi-view aggregator (seed 000, patch path): tokens, embeddings, routed attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geometry.causal import time_causal_mask
from geometry.config import GeometryConfig
from geometry.dynamics_mask import DynamicsMask
from geometry.history_features import HistoryFeatureCache, weights_key
from geometry.inputs import CAMERA_PARAM_DIM, camera_param_features, validate_camera, validate_images
from geometry.layers.kv_cache import KVCache
from geometry.layers import Block, RotaryPositionEmbedding2D, RotaryTables, grid_positions
from geometry.patch_embed import PatchEmbed
from geometry.routing import layer_routing, route, stage_boundaries, unroute
from geometry.view_mixer import ViewMixer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AggregatorOutput:
    """What the heads read.

    layers: layer index -> `[B, S, N, k*C]` (k = len(aa_order), frame then global), S = T*V in
        time-major order (frame s = t*V + v), N = patch_start_idx + P.
    mask_logits: dynamic-patch logits `[B, S*P]` (None when the dynamics mask is off).
    """

    layers: dict[int, torch.Tensor]
    patch_start_idx: int
    num_times: int
    num_views: int
    legacy: bool
    grid: tuple[int, int]
    mask_logits: torch.Tensor | None


def two_slot_tokens(token: torch.Tensor, num_frames: int, first_step: int = 0) -> torch.Tensor:
    """VGGT's two-slot tokens `[1, 2, k, C]` -> `[1, S, k, C]`: slot 0 for frame 0, slot 1 after.

    `first_step` is the stream step of the first frame. Example: S=3 -> `[slot0, slot1, slot1]`;
    S=1 at first_step 4 -> `[slot1]`.
    """
    slots = (torch.arange(first_step, first_step + num_frames, device=token.device) > 0).long()
    return token[:, slots]


def time_indices(first_step: int, num_times: int, max_time_steps: int, device: torch.device | None = None) -> torch.Tensor:
    """Rows of the time embedding / per-time register tokens for steps `first_step + [0, T)`.

    A stream longer than `max_time_steps` clamps: every step from `max_time_steps - 1` on uses the
    last row. Clamping (not wrapping) keeps late steps looking late: a wrapped index would make
    step `max_time_steps` look like step 0, whose tokens are the anchors. Time enters the model
    only here (RoPE is spatial), so nothing else depends on the absolute step.
    Example (max 100): first_step 98, T=3 -> `[98, 99, 99]`.
    """
    return torch.arange(first_step, first_step + num_times, device=device).clamp(max=max_time_steps - 1)


class Aggregator(nn.Module):
    """Images `[B, T, V, 3, H, W]` (or legacy `[B, S, 3, H, W]`) -> `AggregatorOutput`.

    Parameter names follow VGGT's aggregator (patch_embed, camera_token, register_token,
    frame_blocks, global_blocks) so its weights load by name; the new parts (view_mixer, per-view
    camera tokens, per-time register tokens, embeddings, dynamics_mask) start as the identity.
    """

    def __init__(self, config: GeometryConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        C, R = c.embed_dim, c.num_register_tokens
        self.patch_embed = PatchEmbed(c.position_grid, c.patch_size, C, c.patch_embed_depth, c.patch_embed_heads, R, c.mlp_ratio)
        self.view_mixer = ViewMixer(C, c.view_mixer_heads, c.view_mixer_rank) if c.view_mixer else None
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, C) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, R, C) * 1e-6)
        self.view_camera_token = nn.Parameter(torch.randn(1, c.max_views, 1, C) * 1e-6)
        self.time_register_token = nn.Parameter(torch.randn(1, c.max_time_steps, R, C) * 1e-6)
        self.time_embed = nn.Embedding(c.max_time_steps, C)
        self.view_embed = nn.Embedding(c.max_views, C)
        self.camera_param_embed = nn.Sequential(
            nn.Linear(CAMERA_PARAM_DIM, c.camera_param_hidden), nn.GELU(), nn.Linear(c.camera_param_hidden, C)
        )
        for zero in (self.time_embed.weight, self.view_embed.weight, self.camera_param_embed[2].weight,
                     self.camera_param_embed[2].bias):
            nn.init.zeros_(zero)
        self.rope = RotaryPositionEmbedding2D(c.rope_frequency)
        self._rope_tables: dict[tuple, RotaryTables] = {}
        self._history = HistoryFeatureCache()
        self.frame_blocks = nn.ModuleList(self._block() for _ in range(c.depth))
        self.global_blocks = nn.ModuleList(self._block() for _ in range(c.depth))
        self.dynamics_mask = DynamicsMask(C, c.depth) if c.dynamics_mask else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _block(self) -> Block:
        c = self.config
        return Block(c.embed_dim, c.num_heads, c.mlp_ratio, qk_norm=True, init_values=c.init_values, rope=self.rope)

    def special_tokens(self, B: int, T: int, V: int, legacy: bool, first_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera `[B, T, V, 1, C]` and register `[B, T, V, R, C]` tokens.

        Multi-view: camera token per view (shared over time), registers per time step (shared over
        views). Legacy: VGGT's two slots over the S = T frames. `first_step`: stream step of t=0.
        """
        C = self.config.embed_dim
        if legacy:
            camera = two_slot_tokens(self.camera_token, T, first_step).unsqueeze(2)
            register = two_slot_tokens(self.register_token, T, first_step).unsqueeze(2)
        else:
            camera = self.view_camera_token[:, :V].unsqueeze(1)
            times = time_indices(first_step, T, self.config.max_time_steps, self.time_register_token.device)
            register = self.time_register_token[:, times].unsqueeze(2)
        return camera.expand(B, T, V, 1, C), register.expand(B, T, V, -1, C)

    def embed(self, images: torch.Tensor, intrinsics: torch.Tensor | None = None,
              extrinsics: torch.Tensor | None = None, first_step: int = 0) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Validated images -> tokens `[B, T, V, N, C]`, RoPE positions `[B, T, V, N, 2]`, legacy flag.

        `first_step` is the stream step of the first time step (0 for a clip)."""
        c = self.config
        images, legacy = validate_images(images, c.patch_size, c.max_views, c.max_time_steps)
        B, T, V, _, H, W = images.shape
        validate_camera("intrinsics", intrinsics, B, T, V, (3, 3))
        validate_camera("extrinsics", extrinsics, B, T, V, (3, 4))
        key = None if torch.compiler.is_compiling() else self._feature_weights_key()  # data_ptr: not traceable
        patches = self._history.features(images, lambda x: self.patch_features(x, legacy), key)
        C = patches.shape[-1]
        times = time_indices(first_step, T, c.max_time_steps, patches.device)
        patches = patches + self.time_embed(times).view(1, T, 1, 1, C) + self.view_embed.weight[:V].view(1, 1, V, 1, C)
        camera, register = self.special_tokens(B, T, V, legacy, first_step)
        feats = camera_param_features(B, T, V, H, W, intrinsics, extrinsics, images.device, patches.dtype)
        camera = camera.to(patches.dtype) + self.camera_param_embed(feats).unsqueeze(3)
        tokens = torch.cat([camera, register.to(patches.dtype), patches], dim=3)
        gh, gw = H // c.patch_size, W // c.patch_size
        pos = grid_positions(T * V, gh, gw, c.patch_start_idx, images.device)
        pos = pos.reshape(1, T, V, -1, 2).expand(B, -1, -1, -1, -1)
        return tokens, pos, legacy

    def patch_features(self, images: torch.Tensor, legacy: bool) -> torch.Tensor:
        """Images `[B, T, V, 3, H, W]` -> patch features `[B, T, V, P, C]` (patch embed, then the
        ViewMixer in multi-view mode), before the time and view embeddings."""
        B, T, V, _, H, W = images.shape
        frames = (images.reshape(B * T * V, 3, H, W) - self.mean) / self.std
        patches = self.patch_embed(frames)
        patches = patches.reshape(B, T, V, *patches.shape[1:])
        if self.view_mixer is not None and not legacy:
            patches = self.view_mixer(patches)
        return patches

    def prepare_compiled_call(self, images: torch.Tensor) -> None:
        """Eager work before a call inside ``torch.compile`` with `images` (as that call gets them):
        decide whether it reuses the patch features of the time steps its history shares with the
        last call (`HistoryFeatureCache.plan`; without a plan a compiled call computes them all),
        and build this image size's RoPE tables. The graph then only reads these caches: filling
        one inside it would make the next call, which finds it filled, a new graph. It checks no
        values: the graph skips those checks too, so its caller checks its inputs (as
        `GeoVLAModel.sample_actions` does)."""
        c = self.config
        images, _ = validate_images(images, c.patch_size, c.max_views, c.max_time_steps, check_values=False)
        self._history.plan(images, self._feature_weights_key())
        H, W = images.shape[-2:]
        self.frame_rope_tables((H // c.patch_size, W // c.patch_size), self.camera_token.dtype, images.device)

    def finish_graph_call(self) -> None:
        """Eager work after a call inside a CUDA graph: the history it stored is the graph's
        output memory, which the next replay overwrites, so keep copies of it."""
        self._history.own_tensors()

    def _feature_weights_key(self) -> tuple:
        """Changes when a weight of the patch embed or the ViewMixer changes (see `weights_key`)."""
        modules = [self.patch_embed] + ([self.view_mixer] if self.view_mixer is not None else [])
        return weights_key(t for m in modules for t in (*m.parameters(), *m.buffers())) + weights_key(
            [self.mean, self.std])

    def frame_rope_tables(self, grid: tuple[int, int], dtype: torch.dtype, device: torch.device) -> RotaryTables:
        """RoPE tables `[1, 1, N, head_dim]` of one frame's tokens (special tokens at 0, then the
        `grid` of patches), computed once per grid, dtype and device. Every frame has the same
        positions, so a layout of k frames is `repeat_tokens(k)` of these. Built as ordinary
        constants even inside `torch.inference_mode`, so a later training forward can use them."""
        key = (grid, dtype, device)
        if key not in self._rope_tables:
            c = self.config
            with torch.inference_mode(False), torch.no_grad():
                pos = grid_positions(1, *grid, c.patch_start_idx, device)
                self._rope_tables[key] = self.rope.tables(pos, c.embed_dim // c.num_heads, dtype)
        return self._rope_tables[key]

    def new_caches(self, num_views: int, legacy: bool, rotated: bool = True) -> dict[str, KVCache]:
        """Empty stream caches: `global{i}` per global layer, `frame{i}` per temporal frame layer.

        Temporal frame attention (stage 2/3) mixes a view's time steps, so in a stream it needs a
        per-view cache (`rows_per_sample` = V) just like global attention needs one per sample.
        """
        c = self.config
        caches = {}
        mask_start = stage_boundaries(c.depth, c.stage_boundaries)[0]
        for i, mode in enumerate(layer_routing(c.depth, legacy, c.stage_boundaries)):
            if "frame" in c.aa_order and mode == "temporal":
                caches[f"frame{i}"] = KVCache(num_views, rotated)
            if "global" in c.aa_order:
                caches[f"global{i}"] = KVCache(1, rotated, key_mask=self.dynamics_mask is not None and i >= mask_start)
        return caches

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor | None = None,
                extrinsics: torch.Tensor | None = None, output_layers: tuple[int, ...] | None = None,
                caches: dict[str, KVCache] | None = None, first_step: int = 0) -> AggregatorOutput:
        """With `config.causal_time` no token sees a later time step: global and temporal frame
        attention are block-causal over time. With `caches` (from `new_caches`) the input is one
        stream step (T=1) at step `first_step`: its keys/values are appended to the caches and it
        attends to everything cached, which equals the causal clip forward when nothing was evicted.
        """
        c = self.config
        tokens, pos, legacy = self.embed(images, intrinsics, extrinsics, first_step)
        B, T, V, N, C = tokens.shape
        S, ps = T * V, c.patch_start_idx
        H, W = images.shape[-2:]
        wanted = set(c.head_layers if output_layers is None else output_layers)
        if not all(0 <= i < c.depth for i in wanted):
            raise ValueError(f"output_layers={sorted(wanted)} must lie in [0, depth={c.depth})")
        if caches is not None and T != 1:
            raise ValueError(f"a cached (streaming) forward takes one time step, got T={T}")
        routing = layer_routing(c.depth, legacy, c.stage_boundaries)
        mask_start = stage_boundaries(c.depth, c.stage_boundaries)[0]
        causal = c.causal_time and caches is None
        global_causal = time_causal_mask(T, V * N, tokens.device) if causal else None
        temporal_causal = time_causal_mask(T, N, tokens.device) if causal else None
        flat_pos = pos.reshape(B, S * N, 2)
        if caches is None:  # a clip: precomputed RoPE tables per attention layout (a stream caches positions)
            frame_rope = self.frame_rope_tables((H // c.patch_size, W // c.patch_size), tokens.dtype, tokens.device)
            rope = {mode: frame_rope.repeat_tokens(n) for mode, n in
                    (("frame", 1), ("multiview", V), ("temporal", T), ("global", S))}
        outputs: dict[int, torch.Tensor] = {}
        mask_logits = mask_prob = None
        for i in range(c.depth):
            if self.dynamics_mask is not None and i == mask_start:
                mask_logits = self.dynamics_mask.head(tokens[:, :, :, ps:].reshape(B, S, N - ps, C))
                mask_prob = torch.sigmoid(mask_logits)
            intermediates = []
            for kind in c.aa_order:
                cache = None if caches is None else caches.get(f"{kind}{i}")
                if kind == "frame":
                    mode = routing[i]
                    mask = temporal_causal if mode == "temporal" else None
                    frame_pos = route(pos, mode) if caches is not None else rope[mode]
                    out = self.frame_blocks[i](route(tokens, mode), pos=frame_pos, attn_mask=mask, cache=cache)
                    tokens = unroute(out, mode, B, T, V)
                else:
                    x = tokens.reshape(B, S * N, C)
                    if cache is not None:
                        if mask_prob is not None:
                            key_mask = self.dynamics_mask.key_mask(mask_prob, S, N, ps)
                            cache.stage_key_mask(key_mask, self.dynamics_mask.layer_query_groups(i, S, N, ps))
                        out = self.global_blocks[i](x, pos=flat_pos, cache=cache)
                    else:
                        masks = global_causal if mask_prob is None else self.dynamics_mask.group_masks(
                            mask_prob, i, S, N, ps, global_causal)
                        out = self.global_blocks[i](x, pos=rope["global"], attn_mask=masks)
                    tokens = out.reshape(B, T, V, N, C)
                intermediates.append(tokens)
            if i in wanted:
                outputs[i] = torch.cat(intermediates, dim=-1).reshape(B, S, N, -1)
        grid = (H // c.patch_size, W // c.patch_size)
        return AggregatorOutput(outputs, ps, T, V, legacy, grid, mask_logits)
