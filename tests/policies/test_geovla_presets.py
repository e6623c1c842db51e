"""The ``small`` and ``full`` presets compose into a policy on the meta device (no memory, no
weights); parameter counts are printed and checked against the sizes the presets stand for."""

from __future__ import annotations

import pytest
import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy

# (LLM, expert, whole policy) parameter ranges: small ~ a 0.5B LLM with a quarter-width expert;
# full ~ a LLaMA-7B-sized LLM, a 1024-wide expert, ViT-L geometry and DINOv2-L + SigLIP-so400m.
EXPECTED = {
    "small": ((0.4e9, 0.6e9), (10e6, 80e6), (0.6e9, 1.0e9)),
    "full": ((6.0e9, 7.0e9), (0.6e9, 1.2e9), (9.0e9, 11.0e9)),
}


def _meta_policy(preset: str) -> GeoVLAPolicy:
    cameras = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224))
               for c in ("front", "left", "right", "wrist")}
    config = GeoVLAConfig(
        preset=preset, device="cpu", push_to_hub=False,
        input_features={**cameras, "observation.state": PolicyFeature(FeatureType.STATE, (4,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))},
    )
    with torch.device("meta"):
        return GeoVLAPolicy(config)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset", ["small", "full"])
def test_preset_composes_on_meta(preset):
    policy = _meta_policy(preset)
    model = policy.model
    assert all(p.device.type == "meta" for p in policy.parameters())
    assert model.geometry is not None and model.spatial is not None
    counts = {
        "geometry": _count(model.geometry),
        "backbone": _count(model.backbone),
        "llm": _count(model.action_model.fusion.llm),
        "expert": _count(model.action_model.fusion.expert),
        "total": _count(policy),
    }
    print(f"{preset} parameters: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()))
    (llm_low, llm_high), (expert_low, expert_high), (total_low, total_high) = EXPECTED[preset]
    assert llm_low < counts["llm"] < llm_high
    assert expert_low < counts["expert"] < expert_high
    assert total_low < counts["total"] < total_high
    assert counts["total"] > counts["geometry"] + counts["backbone"] + counts["llm"]


def test_patch_size_overrides_every_vit_and_must_divide_the_image():
    from policies.presets import sub_configs

    cameras = {"observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, 32, 32))}
    features = dict(input_features={**cameras, "observation.state": PolicyFeature(FeatureType.STATE, (4,))},
                    output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))})
    config = GeoVLAConfig(device="cpu", push_to_hub=False, image_size=32, patch_size=4, **features)
    subs = sub_configs(config)
    assert subs.geometry.patch_size == 4
    assert subs.backbone.siglip.timm_kwargs["patch_size"] == subs.backbone.dinov2.timm_kwargs["patch_size"] == 4
    policy = GeoVLAPolicy(config)
    assert policy.model.backbone.dinov2.vit.patch_embed.grid_size == (8, 8)
    with pytest.raises(ValueError, match=r"patch_size must divide image_size \(32\), got 5"):
        GeoVLAConfig(device="cpu", push_to_hub=False, image_size=32, patch_size=5, **features)
