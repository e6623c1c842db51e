"""DeepFusionConfig validation and presets."""

import pytest

from vla.config import PRESETS, LoRASettings, deep_fusion_preset


def test_presets_have_the_specified_shapes():
    tiny, small, full = (PRESETS[name] for name in ("tiny", "small", "full"))
    assert (tiny.num_layers, tiny.hidden_size, tiny.expert_width) == (4, 128, 64)
    assert small.llm_type == "qwen2" and small.hidden_size == 896 and small.expert_width == small.hidden_size // 4
    assert (full.hidden_size, full.num_layers, full.expert_width, full.head_dim) == (4096, 32, 1024, 128)
    assert deep_fusion_preset("tiny", action_horizon=7).action_horizon == 7
    assert PRESETS["tiny"].action_horizon == 10, "overrides must not leak into the preset"


@pytest.mark.parametrize("overrides,message", [
    ({"num_heads": 3}, "multiple of num_kv_heads"),
    ({"head_dim": 31}, "head_dim must be even"),
    ({"expert_width": 63}, "expert_width must be even"),
    ({"llm_type": "gpt2"}, "llm_type must be one of"),
    ({"action_horizon": 0}, "action_horizon must be >= 1"),
    ({"max_state_dim": 0}, "max_state_dim must be >= 1 or None"),
    ({"time_min_period": 5.0}, "time_min_period < time_max_period"),
])
def test_invalid_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        deep_fusion_preset("tiny", **overrides)


def test_unknown_preset_and_bad_lora_settings():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        deep_fusion_preset("huge")
    with pytest.raises(ValueError, match="lora rank"):
        LoRASettings(rank=0)
    with pytest.raises(ValueError, match="on_llm or on_expert"):
        LoRASettings(on_llm=False, on_expert=False)
