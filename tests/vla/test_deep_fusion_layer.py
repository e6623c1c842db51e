"""The joint LLM + expert decoder: exactness against HF, mask behaviour, the prefix cache."""

import pytest
import torch

from vla.config import deep_fusion_preset
from vla.deep_fusion import DeepFusionDecoder, ExpertDecoder, expert_config
from vla.masks import (
    joint_attention_mask, prefix_attention_mask, prefix_position_ids, suffix_attention_mask,
    suffix_position_ids,
)
from vla.pretrained import build_language_model

WIDTH, EXPERT_WIDTH, SUFFIX = 128, 64, 5


def _fusion(family: str = "llama", seed: int = 0) -> DeepFusionDecoder:
    """Tiny fused decoder (GQA: 4 heads, 2 KV heads) with every weight perturbed off its init."""
    torch.manual_seed(seed)
    llm, _, _ = build_language_model(deep_fusion_preset("tiny", llm_type=family))
    fusion = DeepFusionDecoder(llm, ExpertDecoder.like(llm, EXPERT_WIDTH, 128)).eval()
    with torch.no_grad():
        for param in fusion.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return fusion


def _inputs(batch: int = 2, length: int = 9):
    torch.manual_seed(1)
    prefix = torch.randn(batch, length, WIDTH)
    suffix = torch.randn(batch, SUFFIX, EXPERT_WIDTH)
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[1, 6:] = False  # right padding
    valid[0, 2] = False  # a masked token inside the sequence (e.g. a missing camera's token)
    return prefix, suffix, valid


def _joint(fusion, prefix, suffix, valid, causal=True):
    mask = joint_attention_mask(valid, suffix.shape[1], causal)
    positions = torch.cat([prefix_position_ids(valid), suffix_position_ids(valid, suffix.shape[1])], 1)
    return fusion(prefix, suffix, mask, positions)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_prefix_only_equals_hf_decoder(family):
    fusion = _fusion(family)
    prefix, _, _ = _inputs()
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 6:] = False
    positions = prefix_position_ids(valid)
    empty_suffix = prefix.new_zeros(2, 0, EXPERT_WIDTH)
    ours, suffix_out = fusion(prefix, empty_suffix, prefix_attention_mask(valid, True), positions)
    with torch.no_grad():
        reference = fusion.llm(
            inputs_embeds=prefix, attention_mask=valid.long(), position_ids=positions
        ).last_hidden_state
    assert suffix_out.shape == (2, 0, EXPERT_WIDTH)
    torch.testing.assert_close(ours[valid], reference[valid], atol=2e-5, rtol=1e-5)


def test_expert_with_mismatched_heads_is_rejected():
    llm, _, _ = build_language_model(deep_fusion_preset("tiny"))
    for field, value in (("num_attention_heads", 8), ("num_key_value_heads", 4),
                         ("head_dim", 16), ("num_hidden_layers", 3)):
        config = expert_config(llm.config, EXPERT_WIDTH, 128)
        setattr(config, field, value)
        expert = ExpertDecoder(config, type(llm.layers[0]), type(llm.norm))
        with pytest.raises(ValueError, match=field):
            DeepFusionDecoder(llm, expert)


@pytest.mark.parametrize("causal", [True, False])
def test_suffix_never_changes_prefix(causal):
    fusion = _fusion()
    prefix, suffix, valid = _inputs()
    with torch.no_grad():
        prefix_out, suffix_out = _joint(fusion, prefix, suffix, valid, causal)
        other_prefix, other_suffix = _joint(fusion, prefix, suffix + torch.randn_like(suffix), valid, causal)
    torch.testing.assert_close(other_prefix, prefix_out, atol=1e-6, rtol=0)
    assert (other_suffix - suffix_out).abs().max() > 1e-2


@pytest.mark.parametrize("causal", [True, False])
def test_padded_prefix_token_changes_nothing(causal):
    fusion = _fusion()
    prefix, suffix, valid = _inputs()
    changed = prefix.clone()
    changed[~valid] = 100.0 * torch.randn_like(changed[~valid])
    with torch.no_grad():
        prefix_out, suffix_out = _joint(fusion, prefix, suffix, valid, causal)
        other_prefix, other_suffix = _joint(fusion, changed, suffix, valid, causal)
    torch.testing.assert_close(other_prefix[valid], prefix_out[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(other_suffix, suffix_out, atol=1e-5, rtol=0)


def test_causal_prefix_later_token_never_changes_earlier():
    fusion = _fusion()
    prefix, suffix, valid = _inputs()
    changed = prefix.clone()
    changed[:, 4] += torch.randn_like(changed[:, 4])
    with torch.no_grad():
        causal_out, causal_suffix = _joint(fusion, prefix, suffix, valid, True)
        causal_changed, causal_suffix_changed = _joint(fusion, changed, suffix, valid, True)
        bidir_out, _ = _joint(fusion, prefix, suffix, valid, False)
        bidir_changed, _ = _joint(fusion, changed, suffix, valid, False)
    torch.testing.assert_close(causal_changed[:, :4], causal_out[:, :4], atol=1e-6, rtol=0)
    assert (causal_changed[:, 4:] - causal_out[:, 4:]).abs().max() > 1e-2
    assert (causal_suffix_changed - causal_suffix).abs().max() > 1e-3
    assert (bidir_changed[:, :4] - bidir_out[:, :4]).abs().max() > 1e-3, "bidirectional sees later tokens"


def _cache(fusion, prefix, valid, causal=True, suffix_len=SUFFIX):
    return fusion.build_prefix_cache(
        prefix, prefix_attention_mask(valid, causal), prefix_position_ids(valid),
        suffix_attention_mask(valid, suffix_len), suffix_position_ids(valid, suffix_len),
    )


@pytest.mark.parametrize("causal", [True, False])
def test_cached_suffix_pass_equals_joint_pass_and_leaves_cache_untouched(causal):
    fusion = _fusion()
    prefix, suffix, valid = _inputs()
    with torch.no_grad():
        cache = _cache(fusion, prefix, valid, causal)
        length = cache.prefix_len
        snapshot = [(k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in zip(cache.keys, cache.values)]
        pointers = [k.data_ptr() for k in cache.keys]
        for step in range(3):
            step_suffix = suffix + step * torch.randn_like(suffix)
            cached = fusion.forward_suffix(step_suffix, cache)
            _, joint = _joint(fusion, prefix, step_suffix, valid, causal)
            torch.testing.assert_close(cached, joint, atol=1e-5, rtol=1e-5)
    assert [k.data_ptr() for k in cache.keys] == pointers
    for (k, v), (k0, v0) in zip(zip(cache.keys, cache.values), snapshot):
        assert torch.equal(k[:, :, :length], k0) and torch.equal(v[:, :, :length], v0)


def test_cache_rejects_a_suffix_of_another_length():
    fusion = _fusion()
    prefix, suffix, valid = _inputs()
    with torch.no_grad():
        cache = _cache(fusion, prefix, valid)
        with pytest.raises(ValueError, match="suffix has 3 tokens"):
            fusion.forward_suffix(suffix[:, :3], cache)
        with pytest.raises(ValueError, match="suffix_mask must end in"):
            fusion.build_prefix_cache(prefix, prefix_attention_mask(valid), prefix_position_ids(valid),
                                      suffix_attention_mask(valid[:, :4], SUFFIX), suffix_position_ids(valid, SUFFIX))
