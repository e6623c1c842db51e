"""Voxel-id routing: examples, equivalence with a dense mask, perturbation reach, padding."""

import torch

from geometry.aggregator import Aggregator
from geometry.config import make_config
from geometry.voxel.aggregate import special_token_ids, voxel_aggregate
from geometry.voxel.routing import (group_attention_mask, group_by_id, id_frame_attention, voxel_layer_routing,
                                    window_mask)

C = 64


def test_docstring_examples():
    assert voxel_layer_routing(6) == ["window", "window", "all", "all", "all", "window"]
    assert voxel_layer_routing(24) == ["window"] * 8 + ["all"] * 13 + ["window"] * 3
    assert window_mask(4, 3).int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    ids = torch.tensor([[[5, 7], [7, 9]]])
    assert group_by_id(ids, torch.ones_like(ids, dtype=torch.bool)).tolist() == [[0, -1], [1, 2], [-1, 3]]
    assert special_token_ids(5, 1, 1, torch.device("cpu")).flatten().tolist() == [-2, -3, -4, -5, -6]


def clip_ids(T=4, N=6, seed=0):
    """Ids `[1, T, N]`: a pool of 9 ids, each time step holding a random sorted subset; last slot padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(9, generator=g)[:N].sort().values for _ in range(T)]).unsqueeze(0)
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[:, :, -1] = False
    return ids.masked_fill(~valid, -1), valid


def dense_reference(block, tokens, ids, valid, window):
    """The same attention with a dense (T*N)^2 mask: same id, within the window (or itself)."""
    B, T, N, _ = tokens.shape
    t = torch.arange(T).repeat_interleave(N)
    flat_ids, flat_valid = ids.reshape(-1), valid.reshape(-1)
    mask = (flat_ids[:, None] == flat_ids[None]) & flat_valid[None] & ((t[:, None] - t[None]).abs() <= window // 2)
    mask |= torch.eye(T * N, dtype=torch.bool)
    return block(tokens.reshape(1, T * N, -1), attn_mask=mask).reshape(tokens.shape)


@torch.no_grad()
def test_grouped_attention_equals_dense_mask():
    torch.manual_seed(0)
    agg = Aggregator(make_config("tiny"))
    ids, valid = clip_ids()
    tokens = torch.randn(1, *ids.shape[1:], C)
    index = group_by_id(ids, valid)
    for mode, window in (("window", 3), ("all", 99)):
        out = id_frame_attention(agg.frame_blocks[0], tokens, index, group_attention_mask(index, mode, 3))
        ref = dense_reference(agg.frame_blocks[0], tokens, ids, valid, window)
        assert torch.allclose(out[valid], ref[valid], atol=1e-5)
        assert torch.equal(out[~valid], tokens[~valid])  # padding passes through


@torch.no_grad()
def test_perturbing_one_voxel_reaches_same_id_within_window_only():
    torch.manual_seed(0)
    cfg = make_config("tiny", aa_order=("frame",))
    agg = Aggregator(cfg).eval()
    T, N = 5, 6
    ids, valid = clip_ids(T, N, seed=3)
    target_t, target_n = 2, 1
    target_id = int(ids[0, target_t, target_n])
    tokens = torch.randn(1, T, N, C)
    perturbed = tokens.clone()
    perturbed[0, target_t, target_n] += torch.randn(C)  # not a constant shift: LayerNorm would erase it
    for layer, reach in ((0, 1), (cfg.depth // 2, T)):  # layer 0: stage 1 (window 3); middle: stage 2 (all)
        a = voxel_aggregate(agg, tokens, ids, valid, num_views=4, output_layers=(layer,)).layers[layer]
        b = voxel_aggregate(agg, perturbed, ids, valid, num_views=4, output_layers=(layer,)).layers[layer]
        changed = (a - b).abs().amax(-1)[0] > 1e-6  # [T, M]
        ps = agg.config.patch_start_idx
        assert not changed[:, :ps].any()  # camera / register tokens form their own groups
        t = torch.arange(T)[:, None].expand(T, N)
        expected = (ids[0] == target_id) & valid[0] & ((t - target_t).abs() <= reach)
        if layer > 0:  # deeper layers: changes spread through earlier same-id layers too, same set
            expected = (ids[0] == target_id) & valid[0]
        assert torch.equal(changed[:, ps:], expected)
        assert int(expected.sum()) >= 2


@torch.no_grad()
def test_global_attention_ignores_padding():
    torch.manual_seed(0)
    agg = Aggregator(make_config("tiny")).eval()
    ids, valid = clip_ids(3, 6)
    tokens = torch.randn(1, 3, 6, C)
    noisy = tokens.clone()
    noisy[~valid] = 100 * torch.randn(int((~valid).sum()), C)
    a = voxel_aggregate(agg, tokens, ids, valid, num_views=2)
    b = voxel_aggregate(agg, noisy, ids, valid, num_views=2)
    last = agg.config.depth - 1
    assert torch.allclose(a.layers[last][a.valid], b.layers[last][b.valid], atol=1e-5)
    assert a.layers[last].shape == (1, 3, agg.config.patch_start_idx + 6, 2 * C)
    # without a routing restriction the perturbation would reach other ids: global attention does
    assert not torch.allclose(a.layers[last][a.valid], voxel_aggregate(agg, tokens + 0.1, ids, valid, 2).layers[last][a.valid])
