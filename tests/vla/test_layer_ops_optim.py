"""``vla.layer_ops`` computes what the HF modules compute (bitwise in float32, bfloat16 within its
rounding), and falls back to the module for LoRA wrappers."""

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb,
)
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from vla.layer_ops import gated_mlp, linear, rms_norm, rotary_tables, rotate

BF16_TOL = dict(atol=2e-2, rtol=2e-2)


def _perturbed(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("norm_cls", [LlamaRMSNorm, Qwen2RMSNorm])
def test_rms_norm_equals_module(norm_cls):
    norm = _perturbed(norm_cls(64, eps=1e-6))
    x = torch.randn(2, 7, 64) * 3
    torch.testing.assert_close(rms_norm(norm, x), norm(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rms_norm(norm, x.bfloat16()), norm(x.bfloat16()), **BF16_TOL)
    layer_norm = nn.LayerNorm(64)
    assert torch.equal(rms_norm(layer_norm, x), layer_norm(x))  # other norms: the module itself


def test_linear_and_mlp_equal_modules():
    config = LlamaConfig(hidden_size=32, intermediate_size=48, hidden_act="silu")
    mlp = _perturbed(LlamaMLP(config))
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(gated_mlp(mlp, x), mlp(x), atol=1e-6, rtol=1e-6)
    proj = _perturbed(nn.Linear(32, 16))
    torch.testing.assert_close(linear(proj, x), proj(x), atol=1e-6, rtol=1e-6)


def test_lora_wrapped_linear_is_called_as_module():
    holder = nn.Module()
    holder.q_proj = nn.Linear(32, 32)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj"]), holder)
    with torch.no_grad():
        holder.q_proj.lora_B["default"].weight.normal_()  # a nonzero adapter
    x = torch.randn(3, 32)
    assert type(holder.q_proj) is not nn.Linear
    torch.testing.assert_close(linear(holder.q_proj, x), holder.q_proj(x))
    assert not torch.allclose(linear(holder.q_proj, x), holder.q_proj.base_layer(x))


def test_rotate_equals_hf_rotary():
    config = LlamaConfig(hidden_size=64, num_attention_heads=2)
    rotary = LlamaRotaryEmbedding(config)
    q, k = torch.randn(2, 2, 9, 32), torch.randn(2, 1, 9, 32)
    positions = torch.arange(9).expand(2, -1) + torch.tensor([[0], [3]])
    cos, sin = rotary(q, positions)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, cos, sin)
    tables = rotary_tables(cos, sin)
    torch.testing.assert_close(rotate(q, tables), hf_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate(k, tables), hf_k, atol=1e-6, rtol=0)
    assert not torch.allclose(rotate(q, tables), q)


def test_backbone_encoder_output_equals_last_hidden_state():
    """The encoder's last block runs FiLM and the MLP on the aggregation tokens only."""
    from vla.backbone.config import backbone_config
    from vla.backbone.encoders import build_encoder

    config = backbone_config("tiny")
    for stream in (config.siglip, config.dinov2):
        encoder = _perturbed(build_encoder(stream, config.image_size, config.llm_dim, config.num_agg_tokens)).eval()
        images, language = torch.rand(3, 3, 64, 64), torch.randn(3, config.llm_dim)
        with torch.no_grad():
            full = encoder.hidden_states(encoder.aggregation.append(encoder.embed(images)), language)[-1]
            expected = encoder.aggregation.take(full)
            torch.testing.assert_close(encoder(images, language), expected, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(encoder(images, language), full[:, : config.num_agg_tokens], atol=1e-3)


def _fusion_and_cache():
    from vla.config import deep_fusion_preset
    from vla.deep_fusion import DeepFusionDecoder, ExpertDecoder
    from vla.masks import prefix_attention_mask, prefix_position_ids, suffix_attention_mask, suffix_position_ids
    from vla.pretrained import build_language_model

    torch.manual_seed(0)
    llm, _, _ = build_language_model(deep_fusion_preset("tiny", llm_type="qwen2"))  # q/k/v with biases
    fusion = _perturbed(DeepFusionDecoder(llm, ExpertDecoder.like(llm, 64, 128)).eval())
    valid = torch.ones(1, 9, dtype=torch.bool)
    valid[0, 7:] = False

    def build():
        return fusion.build_prefix_cache(torch.randn(1, 9, 128), prefix_attention_mask(valid), prefix_position_ids(valid),
                                         suffix_attention_mask(valid, 5), suffix_position_ids(valid, 5))
    return fusion, build


@torch.no_grad()
def test_fused_expert_weights_equal_module_path_and_follow_weight_updates():
    fusion, build = _fusion_and_cache()
    cache = build()
    assert cache.expert_weights is not None and cache.expert_weights[0].qkv_bias is not None
    suffix = torch.randn(1, 5, 64)

    def both(cache):
        fused = fusion.forward_suffix(suffix, cache)
        weights, cache.expert_weights = cache.expert_weights, None
        plain = fusion.forward_suffix(suffix, cache)
        cache.expert_weights = weights
        return fused, plain

    fused, plain = both(cache)
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    # an in-place update (optimiser step, load_state_dict) rebuilds the fused copies
    fusion.expert.layers[0].self_attn.k_proj.weight.add_(1.0)
    fusion.expert.layers[1].mlp.up_proj.weight.mul_(2.0)
    updated, plain_updated = both(build())
    torch.testing.assert_close(updated, plain_updated, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(updated, fused, atol=1e-3)


def test_lora_layers_are_not_fused():
    from vla.fused_weights import fused_layer_weights

    fusion, _ = _fusion_and_cache()
    layer = fusion.expert.layers[0]
    assert fused_layer_weights(layer) is not None
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj"]), layer)
    assert fused_layer_weights(layer) is None
    assert fusion.fused_expert_weights() is None
