"""Dataclass configuration of the 4D geometry aggregator and its heads, with the presets.

`tiny` trains on CPU in minutes, `small` fits one GPU, `full` has the seeds' (VGGT-1B) sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

@dataclass
class GeometryConfig:
    """Sizes and switches of the aggregator (seed 000) and its heads.

    The fields a user most often changes are `static_cameras` (False when a camera moves, e.g. a
    wrist camera) and `img_size`.

    Args:
        img_size: square input side the model is sized for (pixels); other multiples of
            patch_size work too.
        patch_size: ViT patch side; H and W must be multiples of it.
        pos_embed_grid: side of the patch-embed ViT's learned square position-embedding table,
            resampled at run time to each input's patch grid as VGGT (DINOv2) does; None:
            img_size // patch_size. `full`: 37, VGGT-1B's table (518 px), which a converted
            checkpoint loads as it is.
        embed_dim: width C of the aggregator (and of the patch-embed ViT).
        depth: number of alternating (frame, global) block pairs.
        num_heads: attention heads of the aggregator blocks.
        mlp_ratio: hidden/width ratio of the block MLPs.
        num_register_tokens: register tokens per frame (patch_start_idx = 1 + this).
        patch_embed_depth / patch_embed_heads: the DINOv2-style ViT (24 / 16 at `full`, i.e.
            timm `vit_large_patch14_reg4_dinov2`).
        max_views / max_time_steps: sizes of the view / time embeddings and of the per-view
            camera and per-time register tokens; inputs above them are rejected.
        rope_frequency: base frequency of the 2D RoPE.
        init_values: LayerScale initial value.
        view_mixer: run the stage-0 ViewMixer in multi-view mode.
        view_mixer_rank / view_mixer_heads: its low-rank width and heads.
        stage_boundaries: (end of stage 1, end of stage 2) as layer indices; None scales
            8/10/6 of 24 with `depth`.
        aa_order: attention kinds in each block; ("frame",) runs frame attention alone.
        dynamics_mask: predict the per-patch dynamic mask after stage 1 and bias global attention.
        camera_param_hidden: hidden width of the camera-parameter embedding, whose input is
            `geometry.inputs.camera_param_features` (view id, intrinsics, extrinsics).
        dpt_layers: aggregator layers the DPT heads read (and the track head).
        dpt_features / dpt_out_channels: DPT fusion width and per-layer projection widths.
        camera_trunk_depth / camera_iterations / camera_view_hidden: CameraHead sizes.
        static_cameras: one pose per view (True, [B,V,9]) or per frame (False, [B,T,V,9]).
        point_head / track_head: build these heads (VGGT's enable_point / enable_track).
        track_*: TrackHead sizes (VGGT: 128 latent, 7 levels, radius 4, 384 hidden, 6 blocks).
        frames_chunk_size: frames processed at once by the DPT heads (memory bound).
        causal_time: block-causal over time (seed 002): global attention, temporal frame
            attention and the camera trunk never let a token see a later time step, so a model
            trained this way streams exactly (`GeometryModel.stream`).
        stream_budget: total KV-cache tokens per sample over the aggregator's cached layers in
            `GeometryModel.stream` (None: unbounded, exact); split per layer by
            `geometry.layers.eviction.split_budget`.
        stream_camera_budget: the same for the camera-head trunk caches; None derives it from
            `stream_budget` (see `geometry.streaming.GeometryStream`).
        stream_rotated_keys: cache keys after q/k norm and RoPE (True, see
            `geometry.layers.kv_cache.KVCache`) or raw keys with positions (False).
    """

    img_size: int = 378
    patch_size: int = 14
    pos_embed_grid: int | None = None
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    patch_embed_depth: int = 24
    patch_embed_heads: int = 16
    max_views: int = 32
    max_time_steps: int = 100
    rope_frequency: float = 100.0
    init_values: float = 0.01
    view_mixer: bool = True
    view_mixer_rank: int = 16
    view_mixer_heads: int = 8
    stage_boundaries: tuple[int, int] | None = None
    aa_order: tuple[str, ...] = ("frame", "global")
    dynamics_mask: bool = True
    camera_param_hidden: int = 256
    dpt_layers: tuple[int, ...] = (4, 11, 17, 23)
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    camera_trunk_depth: int = 4
    camera_iterations: int = 4
    camera_view_hidden: int = 512
    static_cameras: bool = True
    point_head: bool = True
    track_head: bool = True
    track_features: int = 128
    track_levels: int = 7
    track_radius: int = 4
    track_hidden: int = 384
    track_depth: int = 6
    track_virtual: int = 64
    track_iterations: int = 4
    frames_chunk_size: int = 8
    causal_time: bool = False
    stream_budget: int | None = None
    stream_camera_budget: int | None = None
    stream_rotated_keys: bool = True

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")
        if self.pos_embed_grid is not None and self.pos_embed_grid < 1:
            raise ValueError(f"pos_embed_grid={self.pos_embed_grid} must be a positive grid side or None")
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ValueError(
                f"embed_dim={self.embed_dim} must split into num_heads={self.num_heads} heads "
                "whose size is a multiple of 4 (2D RoPE)"
            )
        if self.embed_dim % self.view_mixer_heads:
            raise ValueError(f"embed_dim={self.embed_dim} not divisible by view_mixer_heads={self.view_mixer_heads}")
        if not set(self.aa_order) <= {"frame", "global"} or not self.aa_order:
            raise ValueError(f"aa_order={self.aa_order} must be a non-empty sequence of 'frame'/'global'")
        if len(self.dpt_layers) != 4 or max(self.dpt_layers) >= self.depth:
            raise ValueError(f"dpt_layers={self.dpt_layers} must be 4 layer indices below depth={self.depth}")
        if self.track_features % 4 or self.track_hidden % 8:
            raise ValueError(f"track_features={self.track_features} must be a multiple of 4 and "
                             f"track_hidden={self.track_hidden} a multiple of 8 (attention heads)")
        for name in ("stream_budget", "stream_camera_budget"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive token count or None")
        if self.stage_boundaries is not None:
            s1, s2 = self.stage_boundaries
            if not 0 <= s1 <= s2 <= self.depth:
                raise ValueError(f"stage_boundaries={self.stage_boundaries} must satisfy 0 <= s1 <= s2 <= depth")

    @property
    def position_grid(self) -> int:
        """Side of the stored position-embedding table (`pos_embed_grid`, else img_size // patch_size)."""
        return self.img_size // self.patch_size if self.pos_embed_grid is None else self.pos_embed_grid

    @property
    def patch_start_idx(self) -> int:
        return 1 + self.num_register_tokens

    @property
    def head_layers(self) -> tuple[int, ...]:
        """Layers whose outputs the heads read: the DPT layers and the last one."""
        return tuple(sorted(set(self.dpt_layers) | {self.depth - 1}))


def scaled_layers(depth: int, anchors: tuple[int, ...] = (4, 11, 17, 23), ref_depth: int = 24) -> tuple[int, ...]:
    """DPT layer indices scaled from VGGT's 24 layers to `depth`.

    Example: depth 6 -> (1, 2, 4, 5); depth 12 -> (2, 5, 8, 11); depth 24 -> (4, 11, 17, 23).
    """
    return tuple(round(a * (depth - 1) / (ref_depth - 1)) for a in anchors)


PRESETS: dict[str, GeometryConfig] = {
    "tiny": GeometryConfig(
        img_size=64, patch_size=8, embed_dim=64, depth=6, num_heads=4, patch_embed_depth=2,
        patch_embed_heads=4, dpt_layers=scaled_layers(6), dpt_features=32,
        dpt_out_channels=(32, 64, 96, 96), camera_view_hidden=64, camera_param_hidden=64,
        camera_trunk_depth=2, track_features=32, track_levels=3, track_radius=2,
        track_hidden=64, track_depth=2, track_virtual=8, track_iterations=2,
    ),
    "small": GeometryConfig(
        img_size=224, patch_size=14, embed_dim=384, depth=12, num_heads=6, patch_embed_depth=12,
        patch_embed_heads=6, dpt_layers=scaled_layers(12), dpt_features=128,
        dpt_out_channels=(96, 192, 384, 384), camera_view_hidden=256, track_features=64,
        track_levels=4, track_hidden=192, track_depth=3, track_virtual=32,
    ),
    "full": GeometryConfig(pos_embed_grid=37),
}


def make_config(preset: str = "tiny", **overrides) -> GeometryConfig:
    """Return a copy of a named preset with `overrides` applied (validated again)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown geometry preset {preset!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[preset], **overrides)


__all__ = ["GeometryConfig", "PRESETS", "make_config", "scaled_layers"]
