"""The tiny / small / full presets build and run; `full` as a meta-device build on CPU."""

import dataclasses

import pytest
import torch

from vla.backbone import PRESETS, EncoderConfig, FiLMDualBackbone, backbone_config, build_vit
from vla.backbone.config import SIGLIP_MEAN, SIGLIP_STD


def _describe(backbone):
    return {
        name: (encoder.dim, len(encoder.vit.blocks), encoder.vit.num_prefix_tokens, encoder.vit.patch_embed.grid_size)
        for name, encoder in (("siglip", backbone.siglip), ("dinov2", backbone.dinov2))
    }


def test_presets_are_tiny_small_full():
    assert PRESETS == ("tiny", "small", "full")


def test_tiny_runs_in_fp32_and_bf16_with_the_same_tokens():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(backbone_config("tiny")).eval()
    assert _describe(backbone) == {"siglip": (96, 3, 0, (8, 8)), "dinov2": (64, 3, 5, (8, 8))}
    images = {"front": torch.rand(2, 3, 64, 64), "wrist": torch.rand(2, 3, 64, 64)}
    language = torch.randn(2, 128)
    with torch.no_grad():
        fp32 = backbone(images, language)
        bf16 = backbone.to(torch.bfloat16)(images, language.bfloat16())
    assert fp32.tokens.shape == (2, 16, 128) and bf16.tokens.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.tokens.float(), fp32.tokens, rtol=0.1, atol=0.05)


def test_small_builds_vit_s_dinov2_and_runs_at_224_px():
    torch.manual_seed(0)
    config = backbone_config("small")
    backbone = FiLMDualBackbone(config).eval()
    assert _describe(backbone) == {"siglip": (768, 11, 0, (14, 14)), "dinov2": (384, 11, 5, (16, 16))}
    with torch.no_grad():
        out = backbone({"front": torch.rand(1, 3, 224, 224)}, torch.randn(1, config.llm_dim))
    assert out.tokens.shape == (1, 32, 896) and bool(out.token_mask.all())
    assert torch.isfinite(out.tokens).all()
    assert (out.tokens - out.tokens.mean(dim=1, keepdim=True)).abs().max() > 1e-4, "the 32 tokens must differ"


def test_full_builds_on_the_meta_device_with_the_seed_sizes():
    config = backbone_config("full")
    with torch.device("meta"):
        backbone = FiLMDualBackbone(config)
        out = backbone(
            {"primary": torch.rand(2, 3, 224, 224), "wrist": torch.rand(2, 3, 224, 224)},
            torch.randn(2, 4096),
        )
    # SigLIP so400m/14: 1152 wide, 27 blocks; DINOv2 ViT-L/14-reg4: 1024 wide, 24 blocks, cls + 4 registers
    assert _describe(backbone) == {"siglip": (1152, 26, 0, (16, 16)), "dinov2": (1024, 23, 5, (16, 16))}
    assert out.tokens.shape == (2, 2 * 64, 4096) and out.token_mask.shape == (2, 128)
    count = sum(p.numel() for p in backbone.parameters())
    film = sum(p.numel() for n, p in backbone.named_parameters() if ".films." in n)
    assert film == 2 * (4096 + 1) * (1024 * 23 + 1152 * 26)
    print(f"full backbone parameters: {count:,} (FiLM {film:,})")
    assert 1.1e9 < count < 1.3e9


def test_config_validation_names_the_bad_field():
    with pytest.raises(ValueError, match="unknown backbone preset 'huge'"):
        backbone_config("huge")
    with pytest.raises(ValueError, match=r"unknown BackboneConfig fields \['k'\]"):
        backbone_config("tiny", k=4)
    with pytest.raises(ValueError, match="router"):
        backbone_config("tiny", router="mean")
    with pytest.raises(ValueError, match="num_agg_tokens"):
        backbone_config("tiny", num_agg_tokens=0)
    with pytest.raises(ValueError, match=r"may not set \['img_size'\]"):
        EncoderConfig("vit_so400m_patch14_siglip_224", SIGLIP_MEAN, SIGLIP_STD, dict(img_size=64))
    with pytest.raises(ValueError, match="std must be > 0"):
        EncoderConfig("vit_so400m_patch14_siglip_224", SIGLIP_MEAN, (0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="needs a timm VisionTransformer"):
        build_vit(EncoderConfig("eva02_tiny_patch14_224", SIGLIP_MEAN, SIGLIP_STD, dict(depth=2)), 56)
    tiny = backbone_config("tiny")
    one_block = dataclasses.replace(tiny.siglip, timm_kwargs=dict(tiny.siglip.timm_kwargs, depth=1))
    with pytest.raises(ValueError, match="at least 2 blocks"):
        FiLMDualBackbone(dataclasses.replace(tiny, siglip=one_block))
