"""Named freezing strategies: which parameter groups train.

"seed_stage1" (seed 001, training stage 1): frozen are the patch embed, the stage-1 and stage-3
aggregator blocks and the head trunks (camera-head trunk, DPT bodies up to their output
convolutions, the track head's feature DPT); trained are the ViewMixer, the stage-2 blocks, the
dynamics-mask gates and mask head, the special tokens, the embeddings, and everything else (the
heads' own input/output layers and the voxel / Gaussian modules).
"""

from __future__ import annotations

import re

from torch import nn

from geometry.routing import stage_boundaries

FREEZING_PRESETS = ("none", "seed_stage1")
_HEAD_TRUNKS = re.compile(r"^(camera_head\.trunk\.|(depth_head|point_head|track_head\.feature_extractor)\."
                          r"(?!scratch\.output_conv))")


def _geometry_prefix(model: nn.Module) -> tuple[str, nn.Module]:
    """The name prefix and module of the patch-path GeometryModel inside `model` (itself or a child)."""
    for name, module in model.named_modules():
        if hasattr(module, "aggregator") and hasattr(module, "camera_head"):
            return (name + "." if name else ""), module
    raise ValueError(f"{type(model).__name__} holds no geometry model (aggregator + camera_head) to freeze")


def is_frozen_seed_stage1(name: str, depth: int, boundaries: tuple[int, int] | None = None) -> bool:
    """Whether a GeometryModel parameter name is frozen by "seed_stage1".

    Examples (depth 24, stages end at 8 and 18): `aggregator.frame_blocks.3.attn.qkv.weight` ->
    True (stage 1); `aggregator.global_blocks.12.mlp.fc1.weight` -> False (stage 2);
    `aggregator.frame_blocks.20.ls1.gamma` -> True (stage 3); `camera_head.trunk.0.norm1.weight`
    -> True; `depth_head.scratch.output_conv2.0.weight` -> False; `aggregator.view_mixer.gate` -> False.
    """
    if name.startswith("aggregator.patch_embed."):
        return True
    block = re.match(r"^aggregator\.(frame|global)_blocks\.(\d+)\.", name)
    if block:
        s1, s2 = stage_boundaries(depth, boundaries)
        return not s1 <= int(block.group(2)) < s2
    return bool(_HEAD_TRUNKS.match(name))


def apply_freezing(model: nn.Module, preset: str = "seed_stage1") -> list[str]:
    """Set `requires_grad` by the named preset and return the names of the trainable parameters.

    `model` is a GeometryModel or any module holding one (e.g. VoxelGaussianModel); parameters
    outside the geometry model train. "none" trains everything.
    """
    if preset not in FREEZING_PRESETS:
        raise ValueError(f"unknown freezing preset {preset!r}; choose from {FREEZING_PRESETS}")
    prefix, geometry = _geometry_prefix(model)
    config = geometry.config
    trainable = []
    for name, param in model.named_parameters():
        inner = name[len(prefix):] if name.startswith(prefix) else None
        frozen = (preset == "seed_stage1" and inner is not None
                  and is_frozen_seed_stage1(inner, config.depth, config.stage_boundaries))
        param.requires_grad_(not frozen)
        if not frozen:
            trainable.append(name)
    return trainable
