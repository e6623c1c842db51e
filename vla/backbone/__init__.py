"""FiLM-modulated SigLIP + DINOv2 backbone with aggregation tokens and a language-conditioned router."""

from vla.backbone.backbone import BackboneOutput, FiLMDualBackbone
from vla.backbone.config import PRESETS, BackboneConfig, EncoderConfig, backbone_config
from vla.backbone.encoders import VIT_LORA_TARGETS, FiLMViTEncoder, build_encoder, build_vit
from vla.backbone.language import mean_instruction_embedding
from vla.backbone.pretrained import load_vit_weights, read_state_dict

__all__ = [
    "PRESETS",
    "VIT_LORA_TARGETS",
    "BackboneConfig",
    "BackboneOutput",
    "EncoderConfig",
    "FiLMDualBackbone",
    "FiLMViTEncoder",
    "backbone_config",
    "build_encoder",
    "build_vit",
    "load_vit_weights",
    "mean_instruction_embedding",
    "read_state_dict",
]
