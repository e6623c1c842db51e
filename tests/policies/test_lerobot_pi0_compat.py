"""``scripts/lerobot_pi0_compat.py``: LeRobot's pi0 on the transformers release.

The layer is checked on a small Gemma (a denoising step through the prefix cache equals the same
rows of one uncached pass, however often it runs) and end to end on a pi0 shrunk for a CPU test.
"""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import GemmaConfig, GemmaModel, PaliGemmaForConditionalGeneration
from transformers.models.gemma import modeling_gemma

from geovla_helpers import load_script

compat = load_script("lerobot_pi0_compat")
pytestmark = pytest.mark.skipif(compat.fork_installed(), reason="the openpi fork is installed: nothing to adapt")


def small_gemma() -> GemmaModel:
    torch.manual_seed(0)
    config = GemmaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                         initializer_range=0.3)  # large enough weights that attention moves the output
    config._attn_implementation = "eager"  # as pi0 sets for its expert
    return GemmaModel(config).eval()


def steps_through_cache(model: GemmaModel, prefix: torch.Tensor, suffixes: list[torch.Tensor]):
    """pi0's pattern: one cached prefix pass, then one pass per suffix with ``use_cache=False``."""
    _, cache = model(inputs_embeds=prefix, use_cache=True, return_dict=False)
    outputs = [model(inputs_embeds=s, past_key_values=cache, use_cache=False).last_hidden_state for s in suffixes]
    return outputs, cache.get_seq_length()


@torch.no_grad()
def test_denoising_steps_attend_to_the_prefix_alone_and_leave_the_cache_as_it_was():
    model = small_gemma()
    prefix, suffixes = torch.randn(1, 7, 32), list(torch.randn(3, 1, 5, 32))
    uncached = [model(inputs_embeds=torch.cat([prefix, s], dim=1)).last_hidden_state[:, 7:] for s in suffixes]
    with compat.openpi_transformers():
        outputs, cached = steps_through_cache(model, prefix, suffixes)
    assert cached == 7
    for out, ref in zip(outputs, uncached):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # The release alone appends every step's keys to the cache: later steps see earlier suffixes.
    outputs, cached = steps_through_cache(model, prefix, suffixes)
    assert cached == 7 + 3 * 5
    assert (outputs[2] - uncached[2]).abs().max() > 0.1


def test_norm_with_cond_returns_a_gate_and_everything_is_restored_on_exit():
    norm = modeling_gemma.GemmaRMSNorm(16)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(3, 16)
    plain_forward, plain_attention = modeling_gemma.GemmaRMSNorm.forward, modeling_gemma.GemmaAttention.forward
    with compat.openpi_transformers():
        from transformers.models.siglip import check
        assert check.check_whether_transformers_replace_is_installed_correctly()
        out, gate = norm(x, cond=None)
        assert gate is None and torch.equal(out, norm(x))
        with pytest.raises(ValueError, match="adaRMS"):
            norm(x, cond=torch.ones(3, 16))
        assert torch.equal(modeling_gemma._gated_residual(x, x, None), 2 * x)
        assert torch.equal(modeling_gemma._gated_residual(x, x, torch.zeros(1)), x)
    assert modeling_gemma.GemmaRMSNorm.forward is plain_forward
    assert modeling_gemma.GemmaAttention.forward is plain_attention
    assert not hasattr(modeling_gemma, "_gated_residual") and compat.CHECK_MODULE not in sys.modules
    assert not compat.fork_installed()


@pytest.fixture
def small_pi0(monkeypatch):
    """pi0's own classes and code paths at toy sizes: both Gemmas 64 wide and 2 deep, a one-layer
    32-wide SigLIP (pi0 fixes the variants and the vision tower, so they are shrunk here)."""
    from lerobot.policies.pi0 import modeling_pi0

    def paligemma(config):
        vision = config.vision_config
        vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads = 32, 1, 2
        vision.intermediate_size, vision.projection_dim = 64, 64
        return PaliGemmaForConditionalGeneration(config)

    monkeypatch.setattr(modeling_pi0, "get_gemma_config", lambda variant: modeling_pi0.GemmaConfig(
        width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16))
    monkeypatch.setattr(modeling_pi0, "PaliGemmaForConditionalGeneration", paligemma)


def test_bench_anchors_times_lerobot_pi0_next_to_geovla(small_pi0):
    report = load_script("bench_anchors").main([
        "--policies", "pi0", "geovla-tiny", "--image-size", "64", "--chunk-size", "10", "--calls", "2",
        "--warmup", "1", "--threads", "1"])
    pi0, geovla = report["policies"]["pi0"], report["policies"]["geovla-tiny"]
    assert pi0["transformers"] == "release + lerobot_pi0_compat" and pi0["params"] == 33_144_608
    assert pi0["speedup_vs_pi0"] == 1.0
    assert geovla["speedup_vs_pi0"] == pytest.approx(pi0["median_ms"] / geovla["median_ms"], rel=1e-2)
    assert compat.CHECK_MODULE not in sys.modules  # the run restored the release
