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
from torch import nn

PATCH_PREFIX = "aggregator.patch_embed."
VIT_PREFIX = "aggregator.patch_embed.vit."
DROPPED = {"aggregator.patch_embed.mask_token"}  # DINOv2's masked-image-modelling token, unused here


def _patch_embed_entries(key: str, value: torch.Tensor, sd: dict[str, torch.Tensor],
                         grid: int) -> dict[str, torch.Tensor]:
    """DINOv2 hub names -> timm names. The class token's position embedding is folded into the
    class token (timm adds no position to it, and DINOv2 never resamples it); the patch positions
    stay VGGT's square table, which the model resamples to each input's grid at run time as VGGT
    does. Raises ValueError when that table is not `grid` x `grid`."""
    name = key[len(PATCH_PREFIX):]
    if name == "cls_token":
        return {VIT_PREFIX + "cls_token": value + sd[PATCH_PREFIX + "pos_embed"][:, :1]}
    if name == "pos_embed":
        table = value[:, 1:]
        if table.shape[1] != grid * grid:
            side = math.isqrt(table.shape[1])
            found = f"{side} x {side}" if side * side == table.shape[1] else f"{table.shape[1]} positions"
            raise ValueError(f"VGGT key {key!r}: the checkpoint's position table is {found}, the model's "
                             f"{grid} x {grid}; build the model with pos_embed_grid={side} (the `full` "
                             "preset has VGGT-1B's 37)")
        return {VIT_PREFIX + "pos_embed": table}
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
    grid = math.isqrt(target[VIT_PREFIX + "pos_embed"].shape[1])
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


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a local `.pt`/`.pth`/`.safetensors` file (tensors only, on the CPU)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_vggt_weights(model: nn.Module, checkpoint: str | Path | dict[str, torch.Tensor],
                      skip_heads: tuple[str, ...] = ()) -> list[str]:
    """Load a VGGT checkpoint (a `.pt`/`.pth`/`.safetensors` file or a state dict) into `model`,
    leaving out the checkpoint's `skip_heads` (e.g. `("point_head", "track_head")` for a model
    built without them).

    Returns the model keys not covered by the checkpoint (the new modules, left at init).
    """
    sd = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    sd = {key: value for key, value in sd.items() if key.split(".", 1)[0] not in skip_heads}
    converted = convert_vggt_state_dict(sd, model)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected:
        raise ValueError(f"unexpected keys after conversion: {unexpected[:5]}")
    return list(missing)
