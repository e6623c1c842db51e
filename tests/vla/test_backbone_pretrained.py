"""Pretrained ViT weights load from local files only, strictly, through timm's checkpoint filter."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from vla.backbone import FiLMDualBackbone, backbone_config, build_vit, load_vit_weights, read_state_dict

CFG = backbone_config("tiny")


def _source_vit(encoder_config, image_size=CFG.image_size, seed=1):
    torch.manual_seed(seed)
    return build_vit(encoder_config, image_size).eval()


def test_backbone_loads_both_streams_from_local_files(tmp_path):
    siglip_source, dinov2_source = _source_vit(CFG.siglip), _source_vit(CFG.dinov2)
    siglip_file, dinov2_file = tmp_path / "siglip.safetensors", tmp_path / "dinov2.pth"
    save_file(siglip_source.state_dict(), str(siglip_file))
    # a training-script checkpoint: nested under "model", DDP "module." prefixes
    torch.save({"model": {f"module.{k}": v for k, v in dinov2_source.state_dict().items()}, "step": 3}, dinov2_file)
    config = backbone_config(
        "tiny",
        siglip=dataclasses.replace(CFG.siglip, weights=str(siglip_file)),
        dinov2=dataclasses.replace(CFG.dinov2, weights=str(dinov2_file)),
    )
    torch.manual_seed(2)
    loaded = FiLMDualBackbone(config).eval()
    torch.manual_seed(2)
    untouched = FiLMDualBackbone(CFG).eval()

    for encoder, source, other in ((loaded.siglip, siglip_source, untouched.siglip), (loaded.dinov2, dinov2_source, untouched.dinov2)):
        source_state = source.state_dict()
        kept = encoder.vit.state_dict()
        assert kept, "nothing loaded"
        for name, value in kept.items():
            assert torch.equal(value, source_state[name]), name
        assert not torch.equal(kept["blocks.0.attn.qkv.weight"], other.vit.state_dict()["blocks.0.attn.qkv.weight"])
        images, language = torch.rand(2, 3, 64, 64), torch.randn(2, CFG.llm_dim)
        with torch.no_grad():
            normalised = encoder.normalize(images)
            reference = source.forward_intermediates(normalised, norm=False, output_fmt="NLC", intermediates_only=True)
            ours = encoder.hidden_states(encoder.embed(images), language)
        prefix = source.num_prefix_tokens
        assert torch.equal(ours[-1][:, prefix:], reference[-2])


def test_checkpoint_at_another_resolution_has_its_position_embedding_resampled(tmp_path):
    source = _source_vit(CFG.dinov2, image_size=96)
    path = tmp_path / "dinov2_96px.safetensors"
    save_file(source.state_dict(), str(path))
    torch.manual_seed(5)
    target = build_vit(CFG.dinov2, CFG.image_size)
    load_vit_weights(target, path)
    assert source.pos_embed.shape[1] == 12 * 12 and target.pos_embed.shape[1] == 8 * 8
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    # DINOv2-reg keeps no position for its prefix tokens, so pos_embed is the bare 12x12 grid
    grid = source.pos_embed.detach().view(1, 12, 12, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", antialias=True)
    torch.testing.assert_close(target.pos_embed.detach(), expected.permute(0, 2, 3, 1).reshape(1, 64, -1))


def test_mismatching_or_missing_weights_raise_value_error(tmp_path):
    target = build_vit(CFG.siglip, CFG.image_size)
    wider = build_vit(dataclasses.replace(CFG.siglip, timm_kwargs=dict(CFG.siglip.timm_kwargs, embed_dim=128)), 64)
    save_file(wider.state_dict(), str(tmp_path / "wider.safetensors"))
    with pytest.raises(ValueError, match="shapes"):
        load_vit_weights(target, tmp_path / "wider.safetensors")

    partial = {k: v for k, v in target.state_dict().items() if not k.startswith("blocks.3.")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['blocks\.3\."):
        load_vit_weights(target, tmp_path / "partial.safetensors")

    with pytest.raises(ValueError, match="does not exist"):
        read_state_dict(tmp_path / "nowhere.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict of tensors"):
        read_state_dict(tmp_path / "list.pth")
