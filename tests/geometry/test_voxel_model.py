"""Two-pass VoxelGaussianModel: ground-truth vs pass-1 geometry, gradients, ids over time, loss."""

import pytest
import torch

from geometry.config import make_config
from geometry.voxel.config import make_voxel_config
from geometry.voxel.model import VoxelGaussianModel
from geometry.voxel.objective import voxel_path_loss

B, T, V, H, W = 1, 2, 2, 16, 16


def scene():
    torch.manual_seed(0)
    K = torch.tensor([[16.0, 0, 8], [0, 16, 8], [0, 0, 1]]).expand(B, T, V, 3, 3).clone()
    E = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(B, T, V, 3, 4).clone()
    E[:, :, 1, 0, 3] = -0.3
    depth = (2.0 + 0.3 * torch.rand(B, 1, V, H, W)).expand(B, T, V, H, W).clone()
    images = torch.rand(B, 1, V, 3, H, W).expand(B, T, V, 3, H, W).clone()
    return images, depth, K, E


def model():
    torch.manual_seed(0)
    return VoxelGaussianModel(make_config("tiny"), make_voxel_config("tiny", target_voxels=80))


def test_ground_truth_path_skips_pass_one_and_trains_pass_two(monkeypatch):
    m = model()
    images, depth, K, E = scene()

    def fail(*args, **kwargs):
        raise AssertionError("pass 1 must not run when depth and cameras are given")

    monkeypatch.setattr(m, "first_pass", fail)
    out = m(images, depth=depth, intrinsics=K, extrinsics=E)
    N = out["voxels"].ids.shape[-1]
    assert out["render"]["images"].shape == (B, T, V, 3, H, W)
    assert out["teacher_render"]["images"].shape == (B, T, V, 3, H, W)
    assert out["render"]["visibility"].shape[:3] == (B, T, V)
    assert out["teacher_params"].shape == (B, T, V, N, 83) and out["student_params"].shape[-1] == 83
    # static scene, same ids at both time steps, every voxel tracked to its neighbour step
    fusion = out["fusion"]
    assert torch.equal(fusion.ids[0, 0], fusion.ids[0, 1])
    assert (out["matches"][0, 0, 2][fusion.valid[0, 0]] >= 0).all()
    terms = voxel_path_loss(out, images)
    assert set(terms) == {"render", "teacher_render", "distill", "temporal", "separation", "total"}
    terms["total"].backward()
    for name in ("voxelizer.feature_mlp.fc1.weight", "voxelizer.xyz_mlp.fc1.weight",
                 "geometry.aggregator.frame_blocks.0.attn.qkv.weight", "geometry.aggregator.global_blocks.5.mlp.fc2.weight",
                 "geometry.aggregator.view_mixer.out.up.weight", "fusion_head.mlp.1.weight", "student_head.out.mlp.fc2.weight",
                 "teacher_head.out.mlp.fc2.weight", "geometry.aggregator.time_register_token"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert m.geometry.depth_head.scratch.output_conv1.weight.grad is None


def test_pass_one_supplies_depth_and_cameras_without_grad():
    m = model()
    images, _, _, _ = scene()
    out = m(images, render=False)
    assert not out["depth"].requires_grad and out["depth"].shape == (B, T, V, H, W)
    assert out["intrinsics"].shape == (B, T, V, 3, 3) and out["extrinsics"].shape == (B, T, V, 3, 4)
    assert torch.equal(out["extrinsics"][:, 0], out["extrinsics"][:, 1])  # static cameras over time
    assert "render" not in out and out["voxels"].valid.any()


def test_bad_input_raises():
    m = model()
    images, depth, K, E = scene()
    with pytest.raises(ValueError, match="multi-view"):
        m(images[:, :, 0])
    with pytest.raises(ValueError, match="depth must have shape"):
        m(images, depth=depth[..., :4], intrinsics=K, extrinsics=E)
