"""DINOv2-style ViT patch embedding (timm), keeping patch tokens only."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class PatchEmbed(nn.Module):
    """Frames `[N, 3, H, W]` (ImageNet-normalised) -> patch tokens `[N, (H/p)*(W/p), C]`.

    The ViT is timm's VisionTransformer with DINOv2-reg4 settings (4 register tokens, no
    position embedding on the class token, LayerScale); at the `full` sizes it is the
    architecture of timm `vit_large_patch14_reg4_dinov2`. Other image sizes interpolate the
    position embedding (`dynamic_img_size`).
    """

    def __init__(self, img_size: int = 378, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, num_register_tokens: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, reg_tokens=num_register_tokens, no_embed_class=True, init_values=1e-5,
            num_classes=0, global_pool="", dynamic_img_size=True,
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(frames)[:, self.vit.num_prefix_tokens:]
