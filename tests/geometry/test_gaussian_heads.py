"""Gaussian parameters, SH colours, teacher/student heads and the FusionHead."""

import math

import pytest
import torch

from geometry.gaussians.fusion import FusionHead, dedup_by_id, mean_by_row, view_fusion_weights
from geometry.gaussians.heads import FusedGaussianHead, VoxelGaussianHead
from geometry.gaussians.params import activate_gaussians, param_dim, rgb_to_sh_dc, sh_basis, sh_to_rgb


def test_param_layout_and_activation_bounds():
    assert param_dim(4) == 83 and param_dim(0) == 11
    torch.manual_seed(0)
    raw = 20 * torch.randn(2, 50, 83)
    offset = 20 * torch.randn(2, 50, 3)
    centres, size = torch.randn(2, 50, 3), torch.full((2, 50), 0.1)
    g = activate_gaussians(raw, offset, centres, size, torch.ones(2, 50, dtype=torch.bool), offset_scale=1.0)
    assert ((g.means - centres).abs() <= 0.1 + 1e-6).all()
    assert (g.scales > 0).all() and (g.scales <= 0.1 + 1e-6).all()
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(2, 50))
    assert ((g.opacities >= 0) & (g.opacities <= 1)).all() and g.sh.shape == (2, 50, 25, 3) and g.sh_degree == 4
    with pytest.raises(ValueError, match="channels"):
        activate_gaussians(torch.zeros(1, 80), torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1), torch.ones(1, dtype=torch.bool))


def test_sh_basis_closed_forms_and_orthonormality():
    torch.manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(100, 3, dtype=torch.float64), dim=-1)
    x, y, z = d.unbind(-1)
    b = sh_basis(d, 4)
    c1, c2 = 0.4886025119029199, 1.0925484305920792
    closed = torch.stack([torch.full_like(x, 0.28209479177387814), -c1 * y, c1 * z, -c1 * x, c2 * x * y, -c2 * y * z,
                          0.31539156525252005 * (2 * z * z - x * x - y * y), -c2 * x * z, 0.5462742152960396 * (x * x - y * y)], -1)
    assert torch.allclose(b[:, :9], closed, atol=1e-12)
    d = torch.nn.functional.normalize(torch.randn(200000, 3, dtype=torch.float64), dim=-1)
    B = sh_basis(d, 4)
    gram = B.T @ B / d.shape[0] * 4 * math.pi
    assert (gram - torch.eye(25, dtype=torch.float64)).abs().max() < 0.02
    sh = torch.zeros(25, 3)
    sh[0] = rgb_to_sh_dc(torch.tensor([0.2, 0.5, 0.9]))
    assert torch.allclose(sh_to_rgb(sh, torch.tensor([0.3, -1.0, 2.0])), torch.tensor([0.2, 0.5, 0.9]), atol=1e-6)


def test_heads_start_at_voxel_colour_and_teacher_is_per_view():
    torch.manual_seed(0)
    B, T, V, N, D, C = 1, 2, 3, 7, 32, 16
    rgb = torch.rand(B, T, N, 3)
    student = FusedGaussianHead(8, 32)
    raw, offset = student(torch.randn(B, T, N, 8), rgb)
    assert raw.shape == (B, T, N, 83) and offset.abs().max() == 0
    g = activate_gaussians(raw, offset, torch.zeros(B, T, N, 3), torch.full((B, T, N), 0.1), torch.ones(B, T, N, dtype=torch.bool))
    assert torch.allclose(sh_to_rgb(g.sh, torch.randn(B, T, N, 3)), rgb, atol=1e-5)
    teacher = VoxelGaussianHead(D, C, 32)
    for p in teacher.parameters():  # leave the zero init so outputs depend on inputs
        torch.nn.init.normal_(p, std=0.1)
    feats = torch.randn(B, T, V, N, C)
    a, _ = teacher(torch.randn(B, T, N, D), feats, rgb)
    assert a.shape == (B, T, V, N, 83)
    feats2 = feats.clone()
    feats2[:, :, 1] += torch.randn(B, T, N, C)
    tokens = torch.randn(B, T, N, D)
    a, _ = teacher(tokens, feats, rgb)
    b, _ = teacher(tokens, feats2, rgb)
    changed = (a - b).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
    assert changed.tolist() == [False, True, False]


def test_fusion_weights_and_dedup_examples():
    w = view_fusion_weights(torch.tensor([[0.5], [0.5], [0.05]]), torch.ones(3, 1))
    assert torch.allclose(w[:, 0], torch.tensor([0.5, 0.5, 0.0]))
    w = view_fusion_weights(torch.tensor([[0.9], [0.3]]), torch.tensor([[0.4], [1.0]]))  # view 0 not visible enough
    assert torch.allclose(w[:, 0], torch.tensor([0.0, 1.0]))
    w = view_fusion_weights(torch.tensor([[math.log(3.0)], [0.0]]).exp(), torch.ones(2, 1))
    assert torch.allclose(w[:, 0], torch.softmax(torch.tensor([3.0, 1.0]), 0))
    assert view_fusion_weights(torch.tensor([[0.01]]), torch.ones(1, 1)).sum() == 0
    unique, rows = dedup_by_id(torch.tensor([4, 2, 4, 9]), torch.tensor([True, True, True, False]))
    assert unique.tolist() == [2, 4] and rows.tolist() == [1, 0, 1, -1]
    assert mean_by_row(torch.tensor([[1.0], [2.0], [5.0], [7.0]]), rows, 2).flatten().tolist() == [2.0, 3.0]


def test_fusion_head_merges_duplicate_ids_and_splits_static():
    torch.manual_seed(0)
    B, T, V, N, D = 1, 1, 2, 4, 16
    head = FusionHead(D, 8)
    tokens = torch.randn(B, T, V, N, D)
    conf = torch.full((B, T, V, N), 0.5)
    vis = torch.ones(B, T, V, N)
    vis[0, 0, 1, 3] = 0.0  # voxel 3 seen by view 0 only
    ids = torch.tensor([[[10, 20, 10, 30]]])
    xyz = torch.tensor([[[[0.0, 0, 0], [1, 1, 1], [2, 0, 0], [3, 3, 3]]]])
    static = torch.tensor([[[1.0, 0.0, 1.0, 0.6]]])
    out = head(tokens, conf, vis, ids, xyz, torch.ones(B, T, N, dtype=torch.bool), static)
    assert out.ids[0, 0].tolist() == [10, 20, 30] and out.valid.all()
    assert torch.allclose(out.xyz[0, 0, 0], torch.tensor([1.0, 0, 0]))  # mean of the two id-10 entries
    assert out.static[0, 0].tolist() == [True, False, True]
    fused3 = tokens[0, 0, 0, 3]  # only view 0 passes for voxel 3
    assert torch.allclose(out.features[0, 0, 2], head.mlp(fused3), atol=1e-5)
    assert out.view_weights[0, 0, :, 3].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="visibility must have shape"):
        head(tokens, conf, vis[..., :2], ids, xyz, torch.ones(B, T, N, dtype=torch.bool))
