"""DINOv2-style ViT patch embedding (timm), keeping patch tokens only, with DINOv2's (VGGT's)
run-time resampling of the position embedding."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Stored square table `[1, G*G, C]` -> position embedding `[1, gh*gw, C]` of a `grid` = (gh, gw)
    input, in the table's dtype.

    DINOv2's `interpolate_pos_encoding` as VGGT builds it (`interpolate_offset=0`, so an output size
    rather than a scale factor; `interpolate_antialias=True`): bicubic with antialiasing, computed in
    float32, straight from the stored G x G table; the table itself when `grid` is (G, G). Example:
    VGGT-1B's 37 x 37 table at a 378 x 378 input (27 x 27 patches of 14 px) is resampled to 27 x 27.
    """
    G = math.isqrt(pos_embed.shape[1])
    if G * G != pos_embed.shape[1]:
        raise ValueError(f"pos_embed with {pos_embed.shape[1]} positions is not a square grid")
    gh, gw = grid
    if (gh, gw) == (G, G):
        return pos_embed
    C = pos_embed.shape[-1]
    table = pos_embed.float().reshape(1, G, G, C).permute(0, 3, 1, 2)
    out = F.interpolate(table, size=(gh, gw), mode="bicubic", antialias=True)
    return out.permute(0, 2, 3, 1).reshape(1, gh * gw, C).to(pos_embed.dtype)


class DinoVisionTransformer(VisionTransformer):
    """timm's VisionTransformer whose position embedding is a stored square table resampled to each
    input's patch grid by `interpolate_pos_embed` (needs `dynamic_img_size=True`, `no_embed_class=True`).

    A checkpoint whose table has another size (e.g. a `full` model saved before its table became
    VGGT's 37 x 37) loads as saved: the table takes the checkpoint's size, and run-time resampling
    starts from it, so the model computes what it computed when it was saved.
    """

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens `[N, gh, gw, C]` -> `[N, prefix + gh*gw, C]`: the class and register tokens,
        then the patch tokens plus their position embedding."""
        N, gh, gw, C = x.shape
        x = x.reshape(N, gh * gw, C) + interpolate_pos_embed(self.pos_embed, (gh, gw))
        prefix = [t.expand(N, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        return self.pos_drop(torch.cat(prefix + [x], dim=1))

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        """Resize the table to a saved square table of the same width, then load as usual."""
        saved = state_dict.get(prefix + "pos_embed")
        table = self.pos_embed
        if (saved is not None and saved.dim() == 3 and saved.shape != table.shape
                and saved.shape[-1] == table.shape[-1] and math.isqrt(saved.shape[1]) ** 2 == saved.shape[1]):
            self.pos_embed = nn.Parameter(table.new_empty(saved.shape), requires_grad=table.requires_grad)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class PatchEmbed(nn.Module):
    """Frames `[N, 3, H, W]` (ImageNet-normalised, H and W multiples of `patch_size`) -> patch tokens
    `[N, (H/p)*(W/p), C]`.

    The ViT is timm's VisionTransformer with DINOv2-reg4 settings (4 register tokens, no
    position embedding on the class token, LayerScale); at the `full` sizes it is the
    architecture of timm `vit_large_patch14_reg4_dinov2`. The position embedding is stored as a
    `pos_embed_grid` x `pos_embed_grid` table and resampled to each input's grid as VGGT does
    (`interpolate_pos_embed`).
    """

    def __init__(self, pos_embed_grid: int = 37, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, num_register_tokens: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.vit = DinoVisionTransformer(
            img_size=pos_embed_grid * patch_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, reg_tokens=num_register_tokens, no_embed_class=True,
            init_values=1e-5, num_classes=0, global_pool="", dynamic_img_size=True,
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(frames)[:, self.vit.num_prefix_tokens:]
