"""A timm ViT run block by block with FiLM and aggregation tokens."""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from vla.backbone.aggregation import AggregationTokens
from vla.backbone.config import EncoderConfig
from vla.backbone.film import FiLM, film_block_forward
from vla.backbone.pretrained import load_vit_weights
from vla.cpu_autocast import float32_attention

# peft `target_modules` regex for the attention and MLP linears of both ViTs of a backbone
# (not the patch-embedding conv, the FiLM layers or the projectors).
VIT_LORA_TARGETS = r".*\.vit\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"


def build_vit(config: EncoderConfig, image_size: int) -> VisionTransformer:
    """The complete timm model for one stream, without a classifier, weights loaded if configured.

    Always `pretrained=False`: weights come only from the local file `config.weights`.
    """
    vit = timm.create_model(
        config.timm_name, pretrained=False, num_classes=0, img_size=image_size, **config.timm_kwargs
    )
    if not isinstance(vit, VisionTransformer):
        raise ValueError(
            f"{config.timm_name!r} builds {type(vit).__name__}; the backbone needs a timm VisionTransformer"
        )
    if config.weights is not None:
        load_vit_weights(vit, config.weights)
    return vit


class FiLMViTEncoder(nn.Module):
    """One ViT stream: normalise, embed, append K aggregation tokens, FiLM blocks, keep the K tokens.

    The ViT's last block, final norm and head are pruned (timm's `prune_intermediate_layers`), so
    the output is the aggregation tokens after the second-to-last block without the final norm,
    and every remaining parameter is used.
    """

    def __init__(
        self,
        vit: VisionTransformer,
        lang_dim: int,
        num_agg_tokens: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if depth < 2:
            raise ValueError(f"the ViT needs at least 2 blocks (output is taken after block depth-2), got {depth}")
        odd = [type(b).__name__ for b in vit.blocks if not isinstance(b, Block)]
        if odd:
            raise ValueError(f"FiLM needs timm `Block`s (attention then MLP residual), got {sorted(set(odd))}")
        vit.prune_intermediate_layers(indices=[depth - 2], prune_norm=True, prune_head=True)
        self.vit = vit
        self.dim = vit.embed_dim
        self.gradient_checkpointing = gradient_checkpointing
        self.films = nn.ModuleList(FiLM(lang_dim, self.dim) for _ in vit.blocks)
        self.aggregation = AggregationTokens(num_agg_tokens, self.dim)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[..., 3, H, W] in [0, 1] → this encoder's normalised input."""
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`: [..., 3, H, W] normalised → [0, 1]."""
        return images * self.std.to(images.dtype) + self.mean.to(images.dtype)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images: [N, 3, H, W] in [0, 1] → tokens before the first block [N, prefix + P, D]."""
        x = self.vit.patch_embed(self.normalize(images))
        x = self.vit._pos_embed(x)  # prefix (class / register) tokens and positional embedding
        x = self.vit.patch_drop(x)
        return self.vit.norm_pre(x)

    def hidden_states(self, tokens: torch.Tensor, language: torch.Tensor) -> list[torch.Tensor]:
        """tokens: [N, T, D], language: [N, D_lang] → output of each kept block, each [N, T, D]."""
        states = []
        for block, film in zip(self.vit.blocks, self.films):
            tokens = self._block(block, film, tokens, language)
            states.append(tokens)
        return states

    def forward(self, images: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        """images: [N, 3, H, W] in [0, 1], language: [N, D_lang] → aggregation tokens [N, K, D].

        Equals the last K tokens of `hidden_states(...)[-1]`, but the last block's FiLM and MLP
        run on those K tokens only: the other tokens' outputs would be discarded.
        """
        tokens = self.aggregation.append(self.embed(images))  # [N, prefix + P + K, D]
        pairs = list(zip(self.vit.blocks, self.films))
        for block, film in pairs[:-1]:
            tokens = self._block(block, film, tokens, language)
        return self._block(*pairs[-1], tokens, language, select=self.aggregation.take)

    def _block(self, block: Block, film: FiLM, tokens: torch.Tensor, language: torch.Tensor,
               select: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """One FiLM block (recomputed in backward with gradient checkpointing while training)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # The recomputation runs attention in float32 too under a CPU bfloat16 autocast, as the forward did.
            return checkpoint(film_block_forward, block, film, tokens, language, select, use_reentrant=False,
                              context_fn=lambda: (float32_attention(), float32_attention()))
        return film_block_forward(block, film, tokens, language, select)


def build_encoder(
    config: EncoderConfig, image_size: int, lang_dim: int, num_agg_tokens: int, gradient_checkpointing: bool = False
) -> FiLMViTEncoder:
    """`build_vit` wrapped as a FiLM encoder stream."""
    vit = build_vit(config, image_size)
    return FiLMViTEncoder(vit, lang_dim, num_agg_tokens, config.mean, config.std, gradient_checkpointing)
