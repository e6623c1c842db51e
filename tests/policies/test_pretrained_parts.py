"""Pretrained parts from local files: ``siglip_weights`` / ``dinov2_weights`` (timm checkpoints
of the two ViTs) and ``vggt_weights`` (a VGGT-named checkpoint of the geometry model) land in
the policy's modules; the modules VGGT lacks keep their initial values; a saved policy loads
without the files."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch

from geometry.model import GeometryModel
from geovla_helpers import make_config, make_policy
from policies.modeling_geovla import GeoVLAPolicy
from policies.presets import sub_configs
from vla.backbone.encoders import build_vit

VGGT_PARTS = re.compile(r"aggregator\.(camera_token|register_token|patch_embed\.|frame_blocks\.|global_blocks\.)"
                        r"|(camera_head|depth_head|point_head)\.")


def vggt_named(geometry: GeometryModel) -> dict[str, torch.Tensor]:
    """What VGGT's own checkpoint of ``geometry``'s sizes holds, in VGGT's names: DINOv2's hub
    patch embed (a class-token slot in the position table), no modules of this project."""
    out = {"aggregator.patch_embed.mask_token": torch.zeros(1, geometry.config.embed_dim)}
    for key, value in geometry.state_dict().items():
        if key.startswith("aggregator.patch_embed.vit."):
            name = key.removeprefix("aggregator.patch_embed.vit.")
            if name == "pos_embed":
                value = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)
            out["aggregator.patch_embed." + {"reg_token": "register_tokens"}.get(name, name)] = value
        elif VGGT_PARTS.match(key) and not key.startswith("camera_head.view_proj"):
            out[key] = value
    return out


def _random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return module


def test_vit_and_vggt_weights_load_into_the_policy(dataset_meta, tmp_path):
    config = make_config(dataset_meta, spatial_tokens="patch")
    subs = sub_configs(config)
    files = {}
    for name in ("siglip", "dinov2"):
        vit = _random(build_vit(getattr(subs.backbone, name), config.image_size), seed=len(name))
        files[f"{name}_weights"] = tmp_path / f"{name}.pth"
        torch.save(vit.state_dict(), files[f"{name}_weights"])
    vggt = vggt_named(_random(GeometryModel(replace(subs.geometry, point_head=True)), seed=3))
    files["vggt_weights"] = tmp_path / "vggt.pt"
    torch.save(vggt, files["vggt_weights"])

    loaded = make_policy(dataset_meta, spatial_tokens="patch", **{k: str(v) for k, v in files.items()})
    fresh = make_policy(dataset_meta, spatial_tokens="patch")
    model, at_init = loaded.model, fresh.model
    for name in ("siglip", "dinov2"):
        saved = torch.load(files[f"{name}_weights"])
        vit = dict(getattr(model.backbone, name).vit.named_parameters())
        for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.bias"):
            torch.testing.assert_close(vit[key], saved[key], rtol=0, atol=0)
    geometry = model.geometry.state_dict()
    for key in ("aggregator.global_blocks.0.attn.qkv.weight", "aggregator.frame_blocks.1.mlp.fc1.weight",
                "camera_head.trunk.0.attn.proj.weight", "depth_head.scratch.output_conv2.2.weight"):
        torch.testing.assert_close(geometry[key], vggt[key], rtol=0, atol=0)
    torch.testing.assert_close(geometry["aggregator.patch_embed.vit.patch_embed.proj.weight"],
                               vggt["aggregator.patch_embed.patch_embed.proj.weight"], rtol=0, atol=0)
    torch.testing.assert_close(geometry["aggregator.patch_embed.vit.pos_embed"],
                               vggt["aggregator.patch_embed.pos_embed"][:, 1:], rtol=0, atol=0)
    initial = at_init.geometry.state_dict()
    for key in ("aggregator.view_mixer.gate", "aggregator.view_embed.weight", "aggregator.dynamics_mask.gates",
                "camera_head.view_proj.w1"):
        torch.testing.assert_close(geometry[key], initial[key], rtol=0, atol=0)
    assert not torch.equal(geometry["aggregator.global_blocks.0.attn.qkv.weight"],
                           initial["aggregator.global_blocks.0.attn.qkv.weight"])

    loaded.save_pretrained(tmp_path / "policy")
    saved_config = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert [saved_config[name] for name in files] == [None, None, None]
    for path in files.values():
        path.unlink()
    again = GeoVLAPolicy.from_pretrained(tmp_path / "policy")
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, rtol=0, atol=0)


def test_weight_files_are_checked_before_anything_is_built(dataset_meta, tmp_path):
    with pytest.raises(FileNotFoundError, match="dinov2_weights: no file"):
        make_policy(dataset_meta, dinov2_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="builds no geometry model"):
        make_config(dataset_meta, use_geometry=False, vggt_weights=str(tmp_path / "vggt.pt"))
