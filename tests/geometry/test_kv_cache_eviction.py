"""Eviction and budgets of the streaming KV cache on hand-built keys (geometry.layers.eviction, kv_cache)."""

import pytest
import torch
import torch.nn.functional as F

from geometry.dynamics_mask import query_groups, query_strengths
from geometry.layers.eviction import compaction_moves, keep_mask, similarity_scores, split_budget
from geometry.layers.kv_cache import CacheGroup, KVCache
from geometry.layers.masks import suppression_bias
from geometry.layers.attention import grouped_attention


def identity_prepare(k, pos):
    return k


def test_similarity_scores_worked_example():
    scores, mean = similarity_scores(torch.tensor([[[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]]))
    torch.testing.assert_close(scores, torch.tensor([[[2 / 3, 2 / 3, 1 / 3]]]))
    torch.testing.assert_close(mean, torch.tensor(5 / 9))
    # scale does not matter (cosine), and the mean score is |mean unit key|^2
    scores2, mean2 = similarity_scores(torch.tensor([[[[5.0, 0.0], [0.1, 0.0], [0.0, 3.0]]]]))
    torch.testing.assert_close(scores2, scores)
    torch.testing.assert_close(mean2, mean)


def test_keep_mask_keeps_anchors_and_lowest_scores():
    keep = keep_mask(torch.tensor([[[0.9, 0.1, 0.5, 0.3]]]), num_anchors=1, keep=2)
    assert keep.tolist() == [[[True, False, True, False, True]]]
    with pytest.raises(ValueError, match="keep=5"):
        keep_mask(torch.zeros(1, 1, 4), 1, 5)


def test_compaction_moves_example_and_random_packing():
    src, dst, valid = compaction_moves(torch.tensor([[[True, False, True, False, True]]]), 3)
    assert src.tolist() == [[[4, 3]]] and dst.tolist() == [[[1, 0]]] and valid.tolist() == [[[True, False]]]
    # random keep masks with the same count per (row, head): after the moves the prefix holds
    # exactly the kept slots
    g = torch.Generator().manual_seed(0)
    L, new_len = 17, 6
    keep = torch.zeros(3, 4, L, dtype=torch.bool)
    for r in range(3):
        for h in range(4):
            keep[r, h, torch.randperm(L, generator=g)[:new_len]] = True
    slots = torch.arange(L).expand(3, 4, L).clone()
    src, dst, valid = compaction_moves(keep, new_len)
    slots.scatter_(2, dst, torch.where(valid, slots.gather(2, src), slots.gather(2, dst)))
    for r in range(3):
        for h in range(4):
            assert sorted(slots[r, h, :new_len].tolist()) == torch.nonzero(keep[r, h]).flatten().tolist()


def test_split_budget_formula_sum_and_floor():
    assert split_budget(torch.tensor([0.0, 0.0]), 10) == [5, 5]
    assert split_budget(torch.tensor([1.0, 0.0]), 100, floor=10) == [20, 80]
    scores = torch.tensor([0.9, 0.2, 0.5, 0.5, 0.0])
    budgets = split_budget(scores, 1001)
    assert sum(budgets) == 1001
    exact = torch.softmax((1 - scores) / 0.5, 0) * 1001
    assert all(abs(b - e) < 1 for b, e in zip(budgets, exact.tolist()))
    assert budgets[4] > budgets[1] > budgets[2] > budgets[0]  # more diverse keys -> more budget
    floored = split_budget(scores, 1001, floor=150)
    assert sum(floored) == 1001 and min(floored) >= 150
    with pytest.raises(ValueError, match="below 5 layers x 300"):
        split_budget(scores, 1001, floor=300)


def test_hand_built_cache_keeps_least_similar_keys_per_head_with_their_values():
    # one row, two heads, D=2. Anchors: 2 tokens. Candidates at angles; head 1 sees them reversed.
    angles = torch.tensor([0.0, 0.1, 0.2, 1.2, 1.5, 3.0])
    cand = torch.stack([angles.cos(), angles.sin()], -1)
    keys = torch.stack([cand, cand.flip(0) * torch.tensor([1.0, -1.0])])[None]  # [1, 2, 6, 2]
    anchors = torch.randn(1, 2, 2, 2)
    ids = torch.arange(8.0)
    cache = KVCache()
    cache.update(anchors, ids[:2].view(1, 1, 2, 1).expand(1, 2, 2, 1), None, identity_prepare)
    k_all, _, _ = cache.update(keys, ids[2:].view(1, 1, 6, 1).expand(1, 2, 6, 1), None, identity_prepare)
    assert cache.anchors == 2 and cache.length == 8
    scores, _ = similarity_scores(k_all[:, :, 2:])
    mean_score = cache.evict(5)
    assert cache.length == 5
    torch.testing.assert_close(mean_score, similarity_scores(keys)[1])
    for h in range(2):
        kept_ids = sorted(int(i) for i in cache.buffers["v"][0, h, :5, 0].tolist())
        lowest = (2 + scores[0, h].argsort()[:3]).tolist()
        assert kept_ids == [0, 1] + sorted(lowest)  # anchors + the 3 least similar to the mean
        # each kept key still sits with its own value
        for slot in range(5):
            i = int(cache.buffers["v"][0, h, slot, 0])
            torch.testing.assert_close(cache.buffers["k"][0, h, slot], torch.cat([anchors, keys], 2)[0, h, i])
    # the two heads keep different tokens: head 0 keeps the far angles 1.5 and 3.0 ...
    assert {6, 7} <= set(cache.buffers["v"][0, 0, :5, 0].long().tolist())
    # ... and the budget cannot drop below the anchors
    cache.update(keys[:, :, :1], torch.zeros(1, 2, 1, 1), None, identity_prepare)
    with pytest.raises(ValueError, match="below the 2 anchors"):
        cache.evict(1)


def test_key_mask_moves_with_keys_and_gives_one_bias_row_per_query_group():
    cache = KVCache(key_mask=True)
    k = F.normalize(torch.randn(1, 1, 6, 4), dim=-1)
    m = torch.linspace(0, 0.5, 6).view(1, 6)
    with pytest.raises(ValueError, match="stage_key_mask"):
        cache.update(k, k, None, identity_prepare)
    cache.stage_key_mask(m[:, :2], [(torch.tensor([0]), 1.0), (torch.tensor([1]), None)])
    cache.update(k[:, :, :2], k[:, :, :2], None, identity_prepare)
    cache.stage_key_mask(m[:, 2:], [(torch.tensor([0, 1]), torch.tensor(0.5)), (torch.tensor([2, 3]), None)])
    _, _, groups = cache.update(k[:, :, 2:], k[:, :, 2:], None, identity_prepare)
    (idx0, bias0), (idx1, bias1) = groups
    assert idx0.tolist() == [0, 1] and idx1.tolist() == [2, 3] and bias1 is None
    assert bias0.shape == (1, 1, 1, 6)
    torch.testing.assert_close(bias0[0, 0, 0], torch.log(1 - 0.5 * m[0]))
    cache.evict(4)
    # the mask value of every kept key is still the one it was appended with
    for slot in range(4):
        i = int(((k[0, 0] - cache.buffers["k"][0, 0, slot]).abs().sum(-1)).argmin())
        assert cache.buffers["m"][0, 0, slot] == m[0, i]


def test_query_groups_and_grouped_attention_equal_the_dense_bias():
    groups = query_groups(2, 4, 2, torch.tensor(0.3))
    assert [g[0].tolist() for g in groups] == [[0, 4], [1, 5], [2, 3, 6, 7]]
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 8, 4), torch.randn(2, 3, 10, 4), torch.randn(2, 3, 10, 4)
    m = torch.rand(2, 10)
    dense = suppression_bias(query_strengths(4, 2, torch.tensor(0.3)).repeat(2)[:, None], m[:, None, None, :])
    rows = [(idx, None if s is None else suppression_bias(s, m[:, None, None, :])) for idx, s in groups]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    torch.testing.assert_close(grouped_attention(q, k, v, rows), expected)
    assert not torch.allclose(F.scaled_dot_product_attention(q, k, v), expected)


def test_cache_group_never_exceeds_budgets_and_keeps_anchors():
    torch.manual_seed(0)
    # layer 0: nearly identical keys (high similarity), layer 1: random keys, layer 2: per-view rows
    caches = [KVCache(), KVCache(), KVCache(rows_per_sample=2)]
    group = CacheGroup(caches, total=200)
    base = torch.randn(1, 2, 1, 8)
    anchor_keys = []
    for step in range(40):
        steps = [base + 0.05 * torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(2, 2, 3, 8)]
        for cache, k in zip(caches, steps):
            cache.update(k, k, None, identity_prepare)
        if step == 0:
            anchor_keys = [k.clone() for k in steps]
        budgets = split_budget(group.scores.clone(), 200, floor=6)
        assert sum(budgets) == 200
        group.enforce()
        for cache, budget, anchors in zip(caches, budgets, anchor_keys):
            assert cache.tokens <= budget
            assert torch.equal(cache.buffers["k"][:, :, : cache.anchors], anchors)
    assert group.scores[0] > group.scores[1]  # similar keys score higher ...
    assert caches[1].tokens > caches[0].tokens  # ... and so get a smaller share
    with pytest.raises(ValueError, match="below 3 layers"):
        CacheGroup(caches, total=10).check(6)


def test_raw_key_cache_matches_rotated_cache():
    """Caching raw keys + positions and preparing them each step evicts and returns the same keys."""
    from geometry.layers import RotaryPositionEmbedding2D

    rope = RotaryPositionEmbedding2D()
    norm = torch.nn.LayerNorm(8)

    def prepare(k, pos):
        return rope(norm(k), pos)

    rotated, raw = KVCache(rotated=True), KVCache(rotated=False)
    torch.manual_seed(1)
    for _ in range(6):
        k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
        pos = torch.randint(0, 4, (2, 5, 2))
        with torch.no_grad():
            out_rot = rotated.update(k, v, pos, prepare)
            out_raw = raw.update(k, v, pos, prepare)
        for a, b in zip(out_rot[:2], out_raw[:2]):
            torch.testing.assert_close(a, b)
        if rotated.length > 12:
            torch.testing.assert_close(rotated.evict(12), raw.evict(12))
    assert rotated.length == raw.length == 12
