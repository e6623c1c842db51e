"""Freezing presets: which parameter groups train under the seed's stage-1 strategy."""

import pytest
import torch

from geometry.config import make_config
from geometry.freezing import apply_freezing, is_frozen_seed_stage1
from geometry.model import GeometryModel
from geometry.voxel.config import make_voxel_config
from geometry.voxel.model import VoxelGaussianModel


def test_docstring_examples():
    assert is_frozen_seed_stage1("aggregator.frame_blocks.3.attn.qkv.weight", 24)
    assert not is_frozen_seed_stage1("aggregator.global_blocks.12.mlp.fc1.weight", 24)
    assert is_frozen_seed_stage1("aggregator.frame_blocks.20.ls1.gamma", 24)
    assert is_frozen_seed_stage1("camera_head.trunk.0.norm1.weight", 24)
    assert not is_frozen_seed_stage1("depth_head.scratch.output_conv2.0.weight", 24)
    assert is_frozen_seed_stage1("depth_head.scratch.refinenet1.out_conv.weight", 24)
    assert not is_frozen_seed_stage1("aggregator.view_mixer.gate", 24)


def test_seed_stage1_groups_and_optimizer_step():
    torch.manual_seed(0)
    model = GeometryModel(make_config("tiny"))  # depth 6: stage 1 = layers 0-1, stage 2 = 2-3, stage 3 = 4-5
    trainable = set(apply_freezing(model, "seed_stage1"))
    names = {n for n, _ in model.named_parameters()}
    frozen = names - trainable
    for prefix in ("aggregator.patch_embed.", "aggregator.frame_blocks.0.", "aggregator.global_blocks.1.",
                   "aggregator.frame_blocks.4.", "aggregator.global_blocks.5.", "camera_head.trunk.",
                   "depth_head.projects.", "point_head.scratch.refinenet2."):
        assert any(n.startswith(prefix) for n in frozen) and not any(n.startswith(prefix) for n in trainable), prefix
    for prefix in ("aggregator.view_mixer.", "aggregator.frame_blocks.2.", "aggregator.global_blocks.3.",
                   "aggregator.dynamics_mask.gates", "aggregator.dynamics_mask.head.", "aggregator.camera_token",
                   "aggregator.register_token", "aggregator.view_camera_token", "aggregator.time_register_token",
                   "aggregator.time_embed.", "aggregator.view_embed.", "aggregator.camera_param_embed.",
                   "camera_head.view_proj.", "depth_head.scratch.output_conv1."):
        assert any(n.startswith(prefix) for n in trainable), prefix
    assert all(p.requires_grad == (n in trainable) for n, p in model.named_parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(torch.rand(1, 1, 2, 3, 32, 32))
    (out["depth"].mean() + out["pose_enc"].sum()).backward()
    opt.step()
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(before["aggregator.frame_blocks.2.mlp.fc2.weight"], model.aggregator.frame_blocks[2].mlp.fc2.weight)
    assert len(apply_freezing(model, "none")) == len(names)


def test_voxel_model_prefix_and_unknown_preset():
    model = VoxelGaussianModel(make_config("tiny"), make_voxel_config("tiny"))
    trainable = apply_freezing(model, "seed_stage1")
    assert "voxelizer.feature_mlp.fc1.weight" in trainable and "student_head.out.mlp.fc1.weight" in trainable
    assert "geometry.aggregator.frame_blocks.3.attn.qkv.weight" in trainable
    assert "geometry.aggregator.frame_blocks.0.attn.qkv.weight" not in trainable
    with pytest.raises(ValueError, match="unknown freezing preset"):
        apply_freezing(model, "everything")
    with pytest.raises(ValueError, match="no geometry model"):
        apply_freezing(torch.nn.Linear(2, 2))
