"""The geometry code's faster formulations compute what the plain ones do: the DPT fusion block's
1x1 conv before the upsampling, the position embedding added in the maps' memory layout, and
column-vector camera projections."""

import torch
import torch.nn.functional as F

from geometry.heads.dpt import DPTHead, FeatureFusionBlock, uv_position_embedding
from geometry.losses import project_points, unproject_depth


def test_fusion_block_equals_upsample_then_conv():
    torch.manual_seed(0)
    block = FeatureFusionBlock(8).double()
    x, skip = torch.randn(2, 8, 5, 6, dtype=torch.float64), torch.randn(2, 8, 5, 6, dtype=torch.float64)
    for size in (None, (9, 13)):
        refined = block.resConfUnit2(x + block.resConfUnit1(skip))
        up = F.interpolate(refined, size=size, scale_factor=None if size else 2, mode="bilinear", align_corners=True)
        torch.testing.assert_close(block(x, skip, size=size), block.out_conv(up), rtol=1e-12, atol=1e-12)


def test_position_embedding_is_added_in_the_maps_layout():
    head = DPTHead(dim_in=32, patch_size=4, features=16, out_channels=(8, 16, 16, 16), layers=(0, 1, 2, 3))
    x = torch.randn(2, 8, 5, 7)
    nchw, nhwc = head._add_pos(x, 7 / 5), head._add_pos(x.contiguous(memory_format=torch.channels_last), 7 / 5)
    assert torch.equal(nchw, x + 0.1 * uv_position_embedding(8, 5, 7, 7 / 5))
    assert torch.equal(nhwc, nchw)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)


def test_projections_equal_the_row_vector_formulas():
    torch.manual_seed(0)
    N, H, W = 3, 4, 5
    K = torch.tensor([[40.0, 0.0, 2.5], [0.0, 42.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(N, 3, 3)
    R = torch.linalg.qr(torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(N, 3, 3, dtype=torch.float64))[0]
    E = torch.cat([R, 0.1 * torch.randn(N, 3, 1, dtype=torch.float64)], dim=-1)
    depth = 1 + torch.rand(N, H, W, dtype=torch.float64)

    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pix = torch.stack([u + 0.5, v + 0.5, torch.ones_like(u)], dim=-1).reshape(1, H * W, 3)
    cam = pix @ torch.linalg.inv(K).transpose(1, 2) * depth.reshape(N, H * W, 1)
    world = (cam - E[:, None, :, 3]) @ E[:, :, :3]
    torch.testing.assert_close(unproject_depth(depth, K, E), world.reshape(N, H, W, 3), rtol=1e-12, atol=1e-12)

    points = torch.randn(N, 7, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    cam = points @ E[:, :, :3].transpose(1, 2) + E[:, None, :, 3]
    uvw = cam @ K.transpose(1, 2)
    uv, z = project_points(points, K, E)
    torch.testing.assert_close(z, cam[..., 2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(uv, uvw[..., :2] / cam[..., 2:], rtol=1e-12, atol=1e-12)
