"""The FiLM dual-encoder backbone: camera images + language vector → visual tokens for the LLM."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from vla.backbone.config import BackboneConfig
from vla.backbone.encoders import build_encoder
from vla.backbone.inputs import camera_mask_tensor, split_stacked, stack_cameras
from vla.backbone.projector import StreamProjector
from vla.backbone.router import StreamRouter


@dataclass
class BackboneOutput:
    """Visual tokens of all cameras, camera-major (camera v owns tokens v·K .. v·K+K-1).

    Args:
        tokens: [B, V·K, D_llm]; exactly zero for missing cameras.
        token_mask: [B, V·K] bool, False at the tokens of missing cameras (nothing may attend to them).
        router_weights: [B, 2] weights of (SigLIP, DINOv2), or None with router "add".
    """

    tokens: torch.Tensor
    token_mask: torch.Tensor
    router_weights: torch.Tensor | None


class FiLMDualBackbone(nn.Module):
    """Per camera image: SigLIP and DINOv2 ViTs with FiLM in every block and K aggregation tokens,
    each stream projected to D_llm, the two mixed by a language-conditioned router; cameras
    concatenated. All cameras share the encoders and run as one batch."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        encoder_args = dict(
            image_size=config.image_size,
            lang_dim=config.llm_dim,
            num_agg_tokens=config.num_agg_tokens,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        self.siglip = build_encoder(config.siglip, **encoder_args)
        self.dinov2 = build_encoder(config.dinov2, **encoder_args)
        self.siglip_projector = StreamProjector(self.siglip.dim, config.llm_dim)
        self.dinov2_projector = StreamProjector(self.dinov2.dim, config.llm_dim)
        self.router = StreamRouter(config.llm_dim, config.router)

    def forward(
        self,
        images: Mapping[str, torch.Tensor],
        language: torch.Tensor,
        camera_mask: Mapping[str, torch.Tensor] | None = None,
    ) -> BackboneOutput:
        """images: {camera: [B, 3, H, W] in [0, 1]} (V cameras, dict order is token order),
        language: [B, D_llm] (see `mean_instruction_embedding`), camera_mask: optional
        {camera: [B] bool}, False where that camera is missing for a sample."""
        stacked = stack_cameras(images, self.config.image_size)  # [B, V, 3, H, W]
        mask = camera_mask_tensor(camera_mask, list(images), stacked.shape[0], stacked.device)
        return self.forward_streams(stacked, stacked, language, mask)

    def forward_stacked(
        self,
        pixel_values: torch.Tensor,
        language: torch.Tensor,
        camera_mask: torch.Tensor | None = None,
        normalized: bool = False,
    ) -> BackboneOutput:
        """The seed's format: pixel_values [B, 6·V, H, W] (per camera 3 SigLIP then 3 DINOv2
        channels), camera_mask [B, V] bool. With `normalized=True` each triplet already carries its
        encoder's mean/std normalisation (as the seed's image processor writes it) instead of [0, 1]."""
        siglip_images, dinov2_images = split_stacked(pixel_values, self.config.image_size)
        if normalized:
            siglip_images = self.siglip.denormalize(siglip_images)
            dinov2_images = self.dinov2.denormalize(dinov2_images)
        batch, views = siglip_images.shape[:2]
        if camera_mask is None:
            camera_mask = torch.ones(batch, views, dtype=torch.bool, device=pixel_values.device)
        return self.forward_streams(siglip_images, dinov2_images, language, camera_mask)

    def forward_streams(
        self,
        siglip_images: torch.Tensor,
        dinov2_images: torch.Tensor,
        language: torch.Tensor,
        camera_mask: torch.Tensor,
    ) -> BackboneOutput:
        """siglip_images, dinov2_images: [B, V, 3, H, W] in [0, 1], language: [B, D_llm],
        camera_mask: [B, V] bool → BackboneOutput with V·K tokens."""
        if siglip_images.ndim != 5 or siglip_images.shape != dinov2_images.shape:
            raise ValueError(
                "siglip_images and dinov2_images must both be [B, V, 3, H, W], got shapes "
                f"{tuple(siglip_images.shape)} and {tuple(dinov2_images.shape)}"
            )
        batch, views = siglip_images.shape[:2]
        if camera_mask.shape != (batch, views):
            raise ValueError(f"camera_mask must be [B, V] = [{batch}, {views}], got shape {tuple(camera_mask.shape)}")
        camera_mask = camera_mask.bool()
        if language.shape != (batch, self.config.llm_dim):
            raise ValueError(
                f"language must be [B, D_llm] = [{batch}, {self.config.llm_dim}], got shape {tuple(language.shape)}"
            )
        dtype = self.siglip_projector.net[0].weight.dtype
        language = language.to(dtype)
        per_image_language = language.repeat_interleave(views, dim=0)  # [B·V, D_llm], b-major like the images
        # Missing cameras are zeroed before encoding so that whatever their pixels hold (even NaN)
        # reaches neither the tokens nor the gradients.
        present = camera_mask[:, :, None, None, None]
        siglip_images = torch.where(present, siglip_images, 0.0)
        dinov2_images = torch.where(present, dinov2_images, 0.0)
        streams = []
        for encoder, projector, images in (
            (self.siglip, self.siglip_projector, siglip_images),
            (self.dinov2, self.dinov2_projector, dinov2_images),
        ):
            tokens = encoder(images.flatten(0, 1).to(dtype), per_image_language)  # [B·V, K, D_vis]
            streams.append(projector(tokens).unflatten(0, (batch, views)))  # [B, V, K, D_llm]
        mixed, weights = self.router((streams[0], streams[1]), language)  # [B, V, K, D_llm]
        mixed = torch.where(camera_mask[:, :, None, None], mixed, 0.0)
        k = self.config.num_agg_tokens
        return BackboneOutput(
            tokens=mixed.flatten(1, 2),
            token_mask=camera_mask.repeat_interleave(k, dim=1),
            router_weights=weights,
        )
