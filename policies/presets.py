"""The sub-configurations (geometry, backbone, LLM/expert) that a policy preset is made of."""

from __future__ import annotations

from dataclasses import dataclass, replace

from geometry.config import GeometryConfig, make_config
from policies.configuration_geovla import GeoVLAConfig
from vla.backbone.config import BackboneConfig, EncoderConfig, backbone_config
from vla.config import DeepFusionConfig, LoRASettings, deep_fusion_preset


@dataclass(frozen=True)
class SubConfigs:
    geometry: GeometryConfig | None
    backbone: BackboneConfig
    fusion: DeepFusionConfig


def sub_configs(config: GeoVLAConfig) -> SubConfigs:
    """Geometry, backbone and deep-fusion configs for ``config.preset``, sized by the policy fields.

    The geometry model runs without point and track heads (the policy reads its tokens and, for
    the auxiliary loss, its camera and depth heads) and with per-frame cameras (wrist cameras move).
    """
    fusion = deep_fusion_preset(
        config.preset,
        llm_path=config.llm_path,
        action_horizon=config.chunk_size,
        max_action_dim=config.max_action_dim,
        max_state_dim=config.max_state_dim if config.use_state else None,
        prefix_causal=config.prefix_causal,
        tokenizer=config.tokenizer,
        flow_samples=config.flow_samples,
        num_steps=config.num_flow_steps,
        lora=LoRASettings(rank=config.lora_rank) if config.lora_rank else None,
    )
    backbone = backbone_config(config.preset, image_size=config.image_size, llm_dim=fusion.hidden_size,
                               router=config.router)
    if config.patch_size is not None:
        backbone = replace(backbone, siglip=_with_patch(backbone.siglip, config.patch_size),
                           dinov2=_with_patch(backbone.dinov2, config.patch_size))
    backbone = replace(backbone, siglip=replace(backbone.siglip, weights=config.siglip_weights),
                       dinov2=replace(backbone.dinov2, weights=config.dinov2_weights))
    geometry = None
    if config.runs_aggregator:
        geometry = make_config(
            config.preset,
            img_size=config.image_size,
            max_time_steps=max(config.n_obs_steps, 2),
            max_views=max(len(config.image_features), 1),
            point_head=False,
            track_head=False,
            static_cameras=False,
            **({} if config.patch_size is None else {"patch_size": config.patch_size}),
        )
    return SubConfigs(geometry=geometry, backbone=backbone, fusion=fusion)


def _with_patch(encoder: EncoderConfig, patch_size: int) -> EncoderConfig:
    return replace(encoder, timm_kwargs={**encoder.timm_kwargs, "patch_size": patch_size})
