"""Attention building blocks: 2D RoPE, masks, reusable k/v, positions."""

import torch

from geometry.layers import Attention, Block, RotaryPositionEmbedding2D, grid_positions


def test_grid_positions_example():
    pos = grid_positions(2, 2, 2, num_special=1)
    assert pos.shape == (2, 5, 2)
    assert pos[0].tolist() == [[0, 0], [1, 1], [1, 2], [2, 1], [2, 2]]


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryPositionEmbedding2D(100.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        rq = rope(q, torch.tensor([[pq]]))
        rk = rope(k, torch.tensor([[pk]]))
        return (rq * rk).sum()

    torch.testing.assert_close(score((3, 5), (1, 2)), score((7, 9), (5, 6)))
    assert not torch.allclose(score((3, 5), (1, 2)), score((3, 5), (2, 2)))
    # position (0, 0) leaves vectors unchanged; rotation preserves norms
    assert torch.equal(rope(q, torch.zeros(1, 1, 2, dtype=torch.long)), q)
    torch.testing.assert_close(rope(q, torch.tensor([[[4, 9]]])).norm(), q.norm())


def test_boolean_mask_and_past_kv():
    torch.manual_seed(0)
    attn = Attention(32, 4, rope=RotaryPositionEmbedding2D()).eval()
    x = torch.randn(2, 6, 32)
    pos = torch.randint(0, 4, (2, 6, 2))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    full = attn(x, pos, attn_mask=causal)
    # the first 4 tokens' k/v as a cache, then the last 2 tokens attend to cache + themselves
    _, kv = attn(x[:, :4], pos[:, :4], attn_mask=causal[:4, :4], return_kv=True)
    tail = attn(x[:, 4:], pos[:, 4:], attn_mask=causal[4:], past_kv=kv)
    torch.testing.assert_close(tail, full[:, 4:])
    # masking really changes the result
    assert not torch.allclose(attn(x, pos)[:, :4], full[:, :4])


def test_block_layerscale_starts_small():
    torch.manual_seed(0)
    block = Block(32, 4, init_values=0.01)
    x = torch.randn(1, 5, 32)
    delta = (block(x) - x).abs().mean()
    assert 0 < delta < 0.05 * x.abs().mean()
