"""Masks, position ids and grouped attention: the worked examples of vla/masks.py, checked."""

import torch
import torch.nn.functional as F

from vla.deep_fusion import grouped_attention
from vla.masks import (
    fold_mask_for_groups, joint_attention_mask, prefix_attention_mask, prefix_position_ids,
    suffix_attention_mask, suffix_position_ids,
)


def _bool(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_prefix_mask_causal_example():
    mask = prefix_attention_mask(_bool([[1, 1, 0, 1]]), causal=True)
    expected = _bool([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 1]])
    assert mask.shape == (1, 1, 4, 4)
    assert torch.equal(mask[0, 0], expected)


def test_prefix_mask_bidirectional_sees_later_valid_tokens():
    mask = prefix_attention_mask(_bool([[1, 1, 0, 1]]), causal=False)
    expected = _bool([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1]])
    assert torch.equal(mask[0, 0], expected)


def test_suffix_mask_example():
    mask = suffix_attention_mask(_bool([[1, 0, 1]]), suffix_len=2)
    assert torch.equal(mask[0, 0], _bool([[1, 0, 1, 1, 1], [1, 0, 1, 1, 1]]))


def test_joint_mask_example_and_blocks():
    assert torch.equal(
        joint_attention_mask(_bool([[1, 1]]), 2, causal=True)[0, 0],
        _bool([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]),
    )
    valid = _bool([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]])
    for causal in (True, False):
        joint = joint_attention_mask(valid, 3, causal)
        assert torch.equal(joint[:, :, :5, :5], prefix_attention_mask(valid, causal))
        assert not joint[:, :, :5, 5:].any(), "the prefix must never see the suffix"
        assert torch.equal(joint[:, :, 5:], suffix_attention_mask(valid, 3))


def test_prefix_position_ids_example_and_padding_side_invariance():
    assert prefix_position_ids(_bool([[0, 1, 1, 0, 1]])).tolist() == [[0, 0, 1, 1, 2]]
    right = _bool([[1, 1, 1, 0, 0]])
    left = _bool([[0, 0, 1, 1, 1]])
    assert prefix_position_ids(right)[right].tolist() == prefix_position_ids(left)[left].tolist() == [0, 1, 2]


def test_suffix_position_ids_continue_after_valid_prefix():
    assert suffix_position_ids(_bool([[1, 1, 0]]), 3).tolist() == [[2, 3, 4]]
    assert suffix_position_ids(_bool([[0, 1, 1, 1]]), 2).tolist() == [[3, 4]]


def test_fold_mask_example():
    mask = _bool([[1, 0], [1, 1]])[None, None]
    folded = fold_mask_for_groups(mask, 2)
    assert torch.equal(folded[0, 0], _bool([[1, 0], [1, 1], [1, 0], [1, 1]]))
    assert fold_mask_for_groups(mask, 1) is mask


def test_grouped_attention_equals_repeated_kv_reference():
    torch.manual_seed(0)
    batch, heads, kv_heads, n_query, n_key, dim = 2, 6, 2, 5, 7, 8
    q = torch.randn(batch, heads, n_query, dim)
    k = torch.randn(batch, kv_heads, n_key, dim)
    v = torch.randn(batch, kv_heads, n_key, dim)
    mask = torch.rand(batch, 1, n_query, n_key) > 0.3
    mask[..., 0] = True
    groups = heads // kv_heads
    out = grouped_attention(q, k, v, fold_mask_for_groups(mask, groups), scale=dim**-0.5)
    reference = F.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), attn_mask=mask
    )
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=1e-5)
