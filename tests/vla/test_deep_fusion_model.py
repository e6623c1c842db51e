"""DeepFusionActionModel: cached sampling, language path, loss masking, errors, LoRA, loading, presets."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vla.action_model import DeepFusionActionModel
from vla.config import LoRASettings, deep_fusion_preset
from vla.lora import set_lora_merged
from vla.tokenizer import ByteTokenizer

HORIZON = 3


def _model(**overrides) -> DeepFusionActionModel:
    torch.manual_seed(0)
    fields = {"action_horizon": HORIZON, "max_action_dim": 4, "max_state_dim": 5, **overrides}
    config = deep_fusion_preset("tiny", **fields)
    model = DeepFusionActionModel(config).eval()
    with torch.no_grad():  # move every weight off its init so that no path is trivially zero
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def _batch(model, visual: bool = True):
    prompts = ["<image><image> pick up the red cube", "<image><image> stop"]
    enc = model.tokenizer(prompts, padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(3)
    visual_tokens = torch.randn(2, 2, model.llm_width, generator=generator) if visual else None
    prefix = model.embed_prefix(
        enc["input_ids"], enc["attention_mask"], visual_tokens,
        torch.tensor([[1, 1], [0, 1]]) if visual else None,
    )
    state = torch.randn(2, 4, generator=generator)
    noise = torch.randn(2, HORIZON, 4, generator=generator)
    return enc, prefix, state, noise


@pytest.mark.parametrize("family,causal", [("llama", True), ("llama", False), ("qwen2", True)])
def test_cached_sampling_equals_uncached(family, causal):
    model = _model(llm_type=family, prefix_causal=causal)
    _, prefix, state, noise = _batch(model)
    cached = model.sample_actions(prefix, state, num_steps=10, noise=noise)
    uncached = model.sample_actions(prefix, state, num_steps=10, noise=noise, use_cache=False)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)
    other = model.sample_actions(prefix, state + 1.0, num_steps=10, noise=noise)
    assert (other - cached).abs().max() > 1e-3, "the state token must reach the actions"


def test_language_path_matches_hf_causal_lm():
    model = _model()
    enc, _, _, _ = _batch(model, visual=False)
    logits = model(enc["input_ids"], enc["attention_mask"])["logits"]
    with torch.no_grad():
        hidden = model.fusion.llm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        reference = model.lm_head(hidden)
    valid = enc["attention_mask"].bool()
    assert logits.shape == (2, enc["input_ids"].shape[1], len(model.tokenizer))
    torch.testing.assert_close(logits[valid], reference[valid], atol=2e-5, rtol=1e-5)


def test_loss_covers_only_real_steps_and_real_action_dims():
    model = _model()
    _, prefix, state, noise = _batch(model)
    actions = torch.randn(2, HORIZON, 2)
    is_pad = torch.tensor([[False, False, True], [False, False, False]])
    time = torch.tensor([0.3, 0.8])
    captured = []

    def keep_velocity(module, inputs, output):
        output.retain_grad()
        captured.append(output)

    handle = model.action_out_proj.register_forward_hook(keep_velocity)
    losses = model.compute_loss(prefix, actions, state, is_pad, noise=noise, time=time)
    handle.remove()
    losses["loss"].backward()
    velocity = captured[0]
    grad = velocity.grad
    assert grad[0, 2].abs().max() == 0 and grad[..., 2:].abs().max() == 0, "padding must not be a target"
    assert grad[0, :2, :2].abs().min() > 0 and grad[1, :, :2].abs().min() > 0
    target = noise[..., :2] - actions
    real = ~is_pad
    expected = (velocity.detach()[..., :2] - target).square()[real].mean()
    torch.testing.assert_close(losses["loss"], expected)
    assert set(losses) == {"loss", "flow_matching_loss", "loss_per_sample"}
    assert losses["loss_per_sample"].shape == (2,)


def test_bad_inputs_raise_clear_errors():
    model = _model()
    _, prefix, state, noise = _batch(model)
    good = torch.randn(2, HORIZON, 4)
    cases = [
        (dict(actions=torch.randn(2, HORIZON, 5)), "actions has 5 dims, more than the configured maximum 4"),
        (dict(actions=torch.randn(2, HORIZON + 1, 4)), r"actions must be \[B=2, H=3, A\]"),
        (dict(actions=torch.full((2, HORIZON, 4), float("nan"))), "actions contains NaN"),
        (dict(actions=good, state=torch.full((2, 4), float("inf"))), "state contains NaN"),
        (dict(actions=good, state=torch.randn(2, 6)), "state has 6 dims"),
        (dict(actions=good, state=None), "state is required"),
        (dict(actions=good, noise=torch.randn(2, HORIZON, 3)), "noise must be"),
        (dict(actions=good, action_is_pad=torch.zeros(2, 2, dtype=torch.bool)), "action_is_pad must be"),
        (dict(actions=good, time=torch.rand(3)), "time must be"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("state", state)
        with pytest.raises(ValueError, match=message):
            model.compute_loss(prefix, **kwargs)
    nan_prefix = type(prefix)(prefix.embeds.clone(), prefix.valid)
    nan_prefix.embeds[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="prefix.embeds contains NaN"):
        model.sample_actions(nan_prefix, state, noise=noise)
    with pytest.raises(ValueError, match="no state token"):
        _model(max_state_dim=None).sample_actions(prefix, state)


def test_lora_merged_and_unmerged_sample_the_same_actions():
    model = _model(lora=LoRASettings(rank=4, alpha=8.0))
    _, prefix, state, noise = _batch(model)
    with torch.no_grad():
        base = model.sample_actions(prefix, state, noise=noise)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    unmerged = model.sample_actions(prefix, state, noise=noise)
    assert (unmerged - base).abs().max() > 1e-3, "the adapters must change the output"
    assert set_lora_merged(model, True) == 2 * 4 * 7
    merged = model.sample_actions(prefix, state, noise=noise)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    set_lora_merged(model, False)
    torch.testing.assert_close(model.sample_actions(prefix, state, noise=noise), unmerged, atol=1e-5, rtol=1e-5)

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("fusion.llm.layers.0.self_attn.q_proj.lora_A" in n for n in trainable)
    assert any("fusion.expert.layers.3.mlp.down_proj.lora_B" in n for n in trainable)
    assert "action_out_proj.weight" in trainable and "time_encoder.mlp.0.weight" in trainable
    assert not any(n.startswith(("fusion.llm.embed_tokens", "lm_head")) for n in trainable)
    assert not any("base_layer" in n for n in trainable)


def test_lora_targets_only_the_chosen_parts():
    model = _model(lora=LoRASettings(rank=2, target_modules=("q_proj", "v_proj"), on_llm=False))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A" in n}
    assert adapted == {f"fusion.expert.layers.{i}.self_attn.{p}" for i in range(4) for p in ("q_proj", "v_proj")}
    assert model.fusion.llm.layers[0].self_attn.q_proj.weight.requires_grad


WORDS = ["<unk>", "<s>", "</s>", "pick", "the", "cube"]


def _word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer without pad, <image> or <spatial> tokens."""
    backend = Tokenizer(models.WordLevel(vocab={word: i for i, word in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _save_tiny_llama(directory):
    tokenizer = _word_tokenizer()
    torch.manual_seed(5)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    llm = LlamaForCausalLM(config)
    llm.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return llm, tokenizer


def test_from_pretrained_local_dir_keeps_weights_and_adds_special_tokens(tmp_path):
    words = WORDS
    saved, _ = _save_tiny_llama(tmp_path)
    config = deep_fusion_preset("tiny", llm_path=str(tmp_path), expert_width=32, expert_intermediate_size=48,
                                action_horizon=HORIZON, max_action_dim=4, max_state_dim=None)
    model = DeepFusionActionModel(config).eval()
    tokenizer = model.tokenizer
    assert model.image_token_id >= len(words) and model.spatial_token_id >= len(words)
    assert tokenizer.pad_token_id is not None
    assert model.fusion.llm.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.fusion.expert.config.head_dim == 16 and model.fusion.expert.config.num_hidden_layers == 2
    torch.testing.assert_close(model.fusion.llm.layers[1].mlp.up_proj.weight, saved.model.layers[1].mlp.up_proj.weight)

    ids = torch.tensor([[1, 3, 4, 5]])
    with torch.no_grad():
        reference = saved(input_ids=ids).logits
    logits = model(ids, torch.ones_like(ids))["logits"]
    torch.testing.assert_close(logits[..., : len(words)], reference, atol=2e-5, rtol=1e-5)

    enc = tokenizer(["<image> pick the cube"], return_tensors="pt")
    prefix = model.embed_prefix(enc["input_ids"], enc["attention_mask"], torch.randn(1, 1, 64))
    noise = torch.randn(1, HORIZON, 4)
    torch.testing.assert_close(model.sample_actions(prefix, noise=noise),
                               model.sample_actions(prefix, noise=noise, use_cache=False), atol=1e-5, rtol=1e-5)


def test_model_from_config_with_a_given_tokenizer_gains_the_prompt_tokens():
    model = DeepFusionActionModel(deep_fusion_preset("tiny"), tokenizer=_word_tokenizer())
    ids = {model.image_token_id, model.spatial_token_id, model.tokenizer.pad_token_id}
    assert len(ids) == 3 and min(ids) >= len(WORDS)
    assert model.fusion.llm.get_input_embeddings().num_embeddings == len(WORDS) + 3
    enc = model.tokenizer(["<image> pick the cube"], return_tensors="pt")
    assert enc["input_ids"][0].tolist() == [model.image_token_id, 3, 4, 5]


def test_byte_tokenizer_model_round_trips_through_a_local_dir(tmp_path):
    built = _model()
    causal_lm = LlamaForCausalLM(built.fusion.llm.config)
    causal_lm.model, causal_lm.lm_head = built.fusion.llm, built.lm_head
    causal_lm.save_pretrained(tmp_path)
    built.tokenizer.save_pretrained(tmp_path)
    loaded = DeepFusionActionModel(deep_fusion_preset("tiny", llm_path=str(tmp_path), action_horizon=HORIZON,
                                                      max_action_dim=4, max_state_dim=5))
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    for ours, theirs in zip(loaded.fusion.llm.state_dict().values(), built.fusion.llm.state_dict().values()):
        torch.testing.assert_close(ours, theirs)


def test_missing_llm_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        DeepFusionActionModel(deep_fusion_preset("tiny", llm_path=str(tmp_path / "nowhere")))


@pytest.mark.parametrize("name,llm_params,expert_params", [
    ("small", (0.45e9, 0.55e9), (20e6, 40e6)),
    ("full", (6.5e9, 6.8e9), (0.8e9, 1.0e9)),
])
def test_large_presets_build_on_meta_device(name, llm_params, expert_params):
    config = deep_fusion_preset(name)
    with torch.device("meta"):
        model = DeepFusionActionModel(config)
    llm = sum(p.numel() for p in model.fusion.llm.parameters())
    expert = sum(p.numel() for p in model.fusion.expert.parameters())
    assert llm_params[0] < llm < llm_params[1] and expert_params[0] < expert < expert_params[1]
    layer = model.fusion.expert.layers[0].self_attn
    assert layer.q_proj.in_features == config.expert_width
    assert layer.q_proj.out_features == config.num_heads * config.head_dim
    assert layer.k_proj.out_features == config.num_kv_heads * config.head_dim
    assert model.suffix_len == 1 + 1 + config.action_horizon


def test_tiny_preset_forward_and_backward_reach_every_part():
    model = _model()
    model.train()
    _, prefix, state, _ = _batch(model)
    loss = model.compute_loss(prefix, torch.randn(2, HORIZON, 4), state)["loss"]
    loss.backward()
    for part in (model.fusion.llm.layers[0].self_attn.q_proj, model.fusion.expert.layers[0].mlp.up_proj,
                 model.state_proj, model.time_encoder.mlp[0], model.action_in_proj):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0


def test_every_action_token_carries_the_flow_time():
    """The time embedding is added to each action token (not only in the time token)."""
    model = _model()
    state = torch.zeros(2, model.config.max_state_dim)
    noisy = torch.randn(2, model.config.action_horizon, model.config.max_action_dim)
    early = model.embed_suffix(state, noisy, torch.tensor([0.9, 0.9]))
    late = model.embed_suffix(state, noisy, torch.tensor([0.1, 0.1]))
    time_delta = model.time_encoder(torch.tensor([0.9, 0.9])) - model.time_encoder(torch.tensor([0.1, 0.1]))
    actions = slice(model.suffix_len - model.config.action_horizon, None)
    torch.testing.assert_close(early[:, actions] - late[:, actions], time_delta.expand(-1, model.config.action_horizon, -1))
    assert time_delta.abs().max() > 1e-3
    torch.testing.assert_close(early[:, 1], late[:, 1])  # the state token does not depend on t


@pytest.mark.parametrize("causal", [True, False])
def test_several_noise_draws_in_one_pass_equal_separate_passes(causal):
    """K suffix copies in one pass: each copy's velocity and loss are those of its own pass."""
    model = _model(prefix_causal=causal)
    _, prefix, state, _ = _batch(model)
    generator = torch.Generator().manual_seed(5)
    actions = torch.randn(2, HORIZON, 3, generator=generator)
    is_pad = torch.tensor([[False, False, True], [False, False, False]])
    noise = torch.randn(2, 3, HORIZON, 4, generator=generator)
    time = torch.rand(2, 3, generator=generator)
    joint = model.compute_loss(prefix, actions, state, is_pad, noise, time, samples=3)
    separate = [model.compute_loss(prefix, actions, state, is_pad, noise[:, k], time[:, k], samples=1) for k in range(3)]
    per_sample = torch.stack([s["loss_per_sample"] for s in separate]).mean(0)
    torch.testing.assert_close(joint["loss_per_sample"], per_sample, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(joint["loss"], torch.stack([s["loss"] for s in separate]).mean(), rtol=1e-5, atol=1e-6)
    # The copies really differ (each copy saw its own noise and time, not copy 0's).
    assert separate[0]["loss"] != separate[1]["loss"]
    with pytest.raises(ValueError, match="noise must be"):
        model.compute_loss(prefix, actions, state, is_pad, noise[:, 0], time, samples=3)
    with pytest.raises(ValueError, match="time must be"):
        model.compute_loss(prefix, actions, state, is_pad, noise, time[:, 0], samples=3)


def test_a_bfloat16_checkpoint_loads_in_float32(tmp_path):
    """transformers 5 keeps a checkpoint's dtype by default; the LLM must match the float32 expert."""
    saved, _ = _save_tiny_llama(tmp_path)
    saved.to(torch.bfloat16).save_pretrained(tmp_path)
    config = deep_fusion_preset("tiny", llm_path=str(tmp_path), expert_width=32, expert_intermediate_size=48,
                                action_horizon=HORIZON, max_action_dim=4, max_state_dim=None)
    model = DeepFusionActionModel(config)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    torch.testing.assert_close(model.fusion.llm.layers[0].mlp.up_proj.weight,
                               saved.model.layers[0].mlp.up_proj.weight.float())
