"""Load a VGGT checkpoint (its parameter names and shapes) into a GeometryModel.

VGGT's aggregator, camera, depth, point and track heads share their parameter names with the
modules here, except for the patch embed (DINOv2 hub layout vs timm). New modules (ViewMixer,
per-view camera and per-time register tokens, embeddings, dynamics mask, view projections) keep
their identity-at-init values, so a converted model in legacy mode computes what VGGT computes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PATCH_PREFIX = "aggregator.patch_embed."
VIT_PREFIX = "aggregator.patch_embed.vit."
DROPPED = {"aggregator.patch_embed.mask_token"}  # DINOv2's masked-image-modelling token, unused here


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Square position embedding `[1, G*G, C]` -> `[1, gh*gw, C]` by bicubic interpolation."""
    G = math.isqrt(pos_embed.shape[1])
    if G * G != pos_embed.shape[1]:
        raise ValueError(f"pos_embed with {pos_embed.shape[1]} patch positions is not a square grid")
    if (G, G) == tuple(grid):
        return pos_embed
    C = pos_embed.shape[-1]
    x = pos_embed.reshape(1, G, G, C).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=grid, mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], C).to(pos_embed.dtype)


def _patch_embed_entries(key: str, value: torch.Tensor, sd: dict[str, torch.Tensor],
                         grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """DINOv2 hub names -> timm names. The class token's position embedding is folded into the
    class token (timm adds no position to it), the rest is resampled to the model's grid."""
    name = key[len(PATCH_PREFIX):]
    if name == "cls_token":
        return {VIT_PREFIX + "cls_token": value + sd[PATCH_PREFIX + "pos_embed"][:, :1]}
    if name == "pos_embed":
        return {VIT_PREFIX + "pos_embed": resample_pos_embed(value[:, 1:], grid)}
    if name == "register_tokens":
        return {VIT_PREFIX + "reg_token": value}
    return {VIT_PREFIX + name: value}


def _special_token_entries(key: str, value: torch.Tensor, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two-slot token `[1, 2, k, C]` -> itself, plus the multi-view tokens started from it:
    index 0 (first view / first time step) from slot 0, all others from slot 1."""
    multi = {"aggregator.camera_token": "aggregator.view_camera_token",
             "aggregator.register_token": "aggregator.time_register_token"}[key]
    n = target[multi].shape[1]
    expanded = torch.cat([value[:, :1], value[:, 1:2].expand(-1, n - 1, -1, -1)], dim=1)
    return {key: value, multi: expanded}


def convert_vggt_state_dict(vggt: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a VGGT state dict onto `model`'s parameter names; raises ValueError on any key that has
    no counterpart or whose shape differs (naming both shapes)."""
    target = model.state_dict()
    grid = (model.config.img_size // model.config.patch_size,) * 2
    out: dict[str, torch.Tensor] = {}
    for key, value in vggt.items():
        if key in DROPPED:
            continue
        if key.startswith(PATCH_PREFIX):
            entries = _patch_embed_entries(key, value, vggt, grid)
        elif key in ("aggregator.camera_token", "aggregator.register_token"):
            entries = _special_token_entries(key, value, target)
        else:
            entries = {key: value}
        for name, tensor in entries.items():
            if name not in target:
                raise ValueError(f"VGGT key {key!r} has no counterpart {name!r} in the model")
            if tuple(tensor.shape) != tuple(target[name].shape):
                raise ValueError(f"VGGT key {key!r}: shape {tuple(tensor.shape)} does not match "
                                 f"model {name!r} shape {tuple(target[name].shape)}")
            out[name] = tensor
    return out


def load_vggt_weights(model: nn.Module, checkpoint: str | Path | dict[str, torch.Tensor]) -> list[str]:
    """Load a VGGT checkpoint (a `.pt`/`.pth`/`.safetensors` file or a state dict) into `model`.

    Returns the model keys not covered by the checkpoint (the new modules, left at init).
    """
    if isinstance(checkpoint, dict):
        sd = checkpoint
    elif str(checkpoint).endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(str(checkpoint))
    else:
        sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    converted = convert_vggt_state_dict(sd, model)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected:
        raise ValueError(f"unexpected keys after conversion: {unexpected[:5]}")
    return list(missing)
