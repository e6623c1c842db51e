"""The aggregator's fast paths equal their references: precomputed RoPE tables (tolerance 1e-6),
per-query-group dynamics-mask attention instead of a dense float bias (tolerance 1e-5), and the
LayerNorm written out under ``torch.compile`` (tolerance 1e-6 in a float32 block)."""

import pytest
import torch

from geometry.aggregator import Aggregator
from geometry.causal import time_causal_mask
from geometry.config import make_config
from geometry.dynamics_mask import DynamicsMask
from geometry.history_features import HistoryFeatureCache
from geometry.layers import Attention, Block, LayerNorm, RotaryPositionEmbedding2D, grid_positions

ROPE_TOL = dict(atol=1e-6, rtol=0)
MASK_TOL = dict(atol=1e-5, rtol=1e-5)


def reference_rope(x: torch.Tensor, positions: torch.Tensor, frequency: float = 100.0) -> torch.Tensor:
    """The 2D RoPE as first written: per axis, angles -> cos/sin, `x*cos + rotate_half(x)*sin`."""
    half = x.shape[-1] // 2
    out = []
    for axis, part in enumerate(x.split(half, dim=-1)):
        inv_freq = frequency ** (-(torch.arange(0, half, 2, dtype=torch.float32) / half))
        angles = positions[..., axis].float().unsqueeze(-1) * inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        if angles.dim() == 3:
            angles = angles.unsqueeze(1)
        first, second = part.chunk(2, dim=-1)
        out.append(part * angles.cos() + torch.cat([-second, first], dim=-1) * angles.sin())
    return torch.cat(out, dim=-1)


def test_rope_tables_equal_reference():
    torch.manual_seed(0)
    rope = RotaryPositionEmbedding2D(100.0)
    x = torch.randn(2, 4, 21, 16)
    pos = grid_positions(1, 4, 4, 5).expand(2, -1, -1)  # [2, 21, 2]
    expected = reference_rope(x, pos)
    torch.testing.assert_close(rope(x, pos), expected, **ROPE_TOL)
    torch.testing.assert_close(rope(x, rope.tables(pos, 16, x.dtype)), expected, **ROPE_TOL)
    per_head = torch.randint(0, 9, (2, 4, 21, 2))  # a streaming cache's per-head positions
    torch.testing.assert_close(rope(x, per_head), reference_rope(x, per_head), **ROPE_TOL)
    # a layout of 3 frames is the frame's tables repeated
    tables = rope.tables(pos[:1], 16, x.dtype).repeat_tokens(3)
    x3 = torch.randn(1, 4, 63, 16)
    torch.testing.assert_close(rope(x3, tables), reference_rope(x3, pos[:1].repeat(1, 3, 1)), **ROPE_TOL)
    assert not torch.allclose(rope(x, pos), x)  # the rotation does something


def _dense_mask(dm: DynamicsMask, mask_prob, layer, S, N, ps, causal):
    bias = dm.bias(mask_prob, layer, S, N, ps)
    return bias if causal is None else bias.masked_fill(~causal, float("-inf"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine", ["weight_and_bias", "weight", "none"])
def test_compiled_layer_norm_equals_native(dtype, affine):
    """The written-out norm (traced with aot_eager, the same graph inductor gets) keeps
    ``nn.LayerNorm``'s output: trained-looking weights and biases, bfloat16 with float32 statistics."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    norm = LayerNorm(16, elementwise_affine=affine != "none", bias=affine == "weight_and_bias").to(dtype)
    for parameter in norm.parameters():
        torch.nn.init.normal_(parameter, 0.5, 0.3)
    x = (3 * torch.randn(2, 4, 69, 16) + 100).to(dtype)  # the offset would swamp bfloat16 statistics
    compiled = torch.compile(norm, backend="aot_eager", fullgraph=True)
    reference = torch.nn.functional.layer_norm(x, (16,), norm.weight, norm.bias, norm.eps)
    # float32 holds 100 +- 3 only to 8e-6, so two correct ways of normalising differ by up to 1e-5
    tolerance = dict(atol=1e-5, rtol=0) if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(compiled(x), reference, **tolerance)


def test_compiled_block_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = Block(64, 4, rope=RotaryPositionEmbedding2D(), init_values=0.5)
    for module in block.modules():
        if isinstance(module, LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
    x = 3 * torch.randn(2, 69, 64) + 1
    pos = grid_positions(2, 8, 8, 5)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, pos=pos), block(x, pos=pos), **ROPE_TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_group_masks_equal_dense_bias(causal):
    torch.manual_seed(0)
    S, N, ps, C = 4, 9, 3, 32
    dm = DynamicsMask(C, depth=3)
    with torch.no_grad():
        dm.strength.fill_(1.5)
        dm.gates.copy_(torch.randn(3))
    attn = Attention(C, 4, rope=RotaryPositionEmbedding2D()).eval()
    x = torch.randn(2, S * N, C)
    pos = grid_positions(S, 2, 3, ps).reshape(1, S * N, 2).expand(2, -1, -1)
    mask_prob = torch.rand(2, S * (N - ps))
    rows = time_causal_mask(2, 2 * N) if causal else None  # 2 time steps of 2 views
    groups = dm.group_masks(mask_prob, 1, S, N, ps, rows)
    dense = _dense_mask(dm, mask_prob, 1, S, N, ps, rows)
    torch.testing.assert_close(attn(x, pos, attn_mask=groups), attn(x, pos, attn_mask=dense), **MASK_TOL)
    # the bias matters: without it the special tokens' outputs differ
    assert not torch.allclose(attn(x, pos, attn_mask=rows), attn(x, pos, attn_mask=dense), atol=1e-3)


@pytest.mark.parametrize("causal_time", [False, True])
def test_aggregator_equals_dense_bias_forward(causal_time, monkeypatch):
    torch.manual_seed(0)
    model = Aggregator(make_config("tiny", img_size=32, causal_time=causal_time)).eval()
    with torch.no_grad():
        model.dynamics_mask.strength.fill_(2.0)
        model.dynamics_mask.gates.copy_(torch.randn(model.config.depth))
        for p in model.dynamics_mask.head.parameters():
            p.add_(torch.randn_like(p))
    images = torch.rand(1, 2, 3, 3, 32, 32)
    with torch.no_grad():
        fast = model(images)
        monkeypatch.setattr(model.dynamics_mask, "group_masks", lambda *a: _dense_mask(model.dynamics_mask, *a))
        dense = model(images)
    assert fast.layers.keys() == dense.layers.keys()
    for i in fast.layers:
        torch.testing.assert_close(fast.layers[i], dense.layers[i], **MASK_TOL)


def test_rope_tables_built_in_inference_mode_serve_training():
    model = Aggregator(make_config("tiny", img_size=32, dynamics_mask=False))
    images = torch.rand(1, 2, 2, 3, 32, 32)
    with torch.inference_mode():
        model(images)  # fills the RoPE table cache
    model.train()
    loss = model(images).layers[model.config.depth - 1].square().mean()
    loss.backward()
    assert model.frame_blocks[0].attn.qkv.weight.grad is not None


def _history_setup():
    torch.manual_seed(0)
    model = Aggregator(make_config("tiny", img_size=32)).eval()
    with torch.no_grad():
        model.view_mixer.gate.fill_(1.0)  # a ViewMixer that changes its input
        model.view_mixer.out.up.weight.normal_()
    frames = [torch.rand(1, 1, 3, 3, 32, 32) for _ in range(3)]
    seen: list[int] = []
    model.patch_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return model, frames, seen


def _fresh(model: Aggregator, images: torch.Tensor):
    model._history.clear()
    return model(images)


@torch.no_grad()
def test_sliding_history_reuses_patch_features_and_matches_fresh_forward():
    model, (f0, f1, f2), seen = _history_setup()
    model(torch.cat([f0, f1], dim=1))
    reused = model(torch.cat([f1, f2], dim=1))
    assert seen == [6, 3]  # the second call embedded only its newest time step (3 views)
    fresh = _fresh(model, torch.cat([f1, f2], dim=1))
    for i in fresh.layers:
        torch.testing.assert_close(reused.layers[i], fresh.layers[i], atol=1e-5, rtol=1e-5)
    model(torch.cat([f0, f2], dim=1))  # no overlap with the previous history: everything computed
    assert seen[-1] == 6


@torch.no_grad()
def test_history_reuse_follows_weight_updates_and_never_runs_with_gradients():
    model, (f0, f1, f2), seen = _history_setup()
    model(torch.cat([f0, f1], dim=1))
    model.patch_embed.vit.blocks[0].mlp.fc1.weight.add_(0.5)  # an in-place update (optimiser step)
    updated = model(torch.cat([f1, f2], dim=1))
    assert seen == [6, 6]
    fresh = _fresh(model, torch.cat([f1, f2], dim=1))
    torch.testing.assert_close(updated.layers[5], fresh.layers[5], atol=1e-5, rtol=1e-5)
    with torch.enable_grad():
        model(torch.cat([f2, f0], dim=1))
        model(torch.cat([f0, f1], dim=1))
    assert seen[-2:] == [6, 6]


@torch.no_grad()
def test_history_plan_reuses_only_under_the_same_weights_and_keeps_nothing_stale():
    """``plan`` decides a compiled call's reuse eagerly; under new weights it drops the stored
    features at once, so a call that then fails cannot leave them to be reused under the new key."""
    cache = HistoryFeatureCache()
    frames = [torch.rand(1, 1, 2, 3, 4, 4) for _ in range(3)]
    cache.features(torch.cat(frames[:2], dim=1), lambda x: x.flatten(3), key=("weights", 1))
    cache.plan(torch.cat(frames[1:], dim=1), ("weights", 1))
    assert cache._planned_reuse
    cache.plan(torch.cat(frames[1:], dim=1), ("weights", 2))
    assert not cache._planned_reuse
    assert not cache.reusable(torch.cat(frames[1:], dim=1), ("weights", 2))
