"""Building the LLM from a config, or loading it and its tokenizer from a local directory.

Nothing is downloaded: ``llm_path`` must be a directory written by ``save_pretrained``.
"""

import json
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PretrainedConfig, PreTrainedTokenizerBase,
    Qwen2Config,
)

from vla.config import DeepFusionConfig
from vla.tokenizer import (
    IMAGE_TOKEN, PAD_TOKEN, SPATIAL_TOKEN, ByteTokenizer, HashedWordTokenizer, make_file_free_tokenizer,
)

HF_CONFIGS: dict[str, type[PretrainedConfig]] = {"llama": LlamaConfig, "qwen2": Qwen2Config}


def hf_decoder_config(config: DeepFusionConfig, vocab_size: int,
                      tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The HF config of the LLM described by ``config``."""
    return HF_CONFIGS[config.llm_type](
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        rope_theta=config.rope_theta,
        rms_norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="sdpa",
    )


def build_language_model(
    config: DeepFusionConfig, tokenizer: PreTrainedTokenizerBase | None = None
) -> tuple[nn.Module, nn.Module, PreTrainedTokenizerBase]:
    """``(decoder, lm_head, tokenizer)``: loaded from ``config.llm_path`` or built from config.

    Built from config, the tokenizer defaults to the file-free one ``config.tokenizer`` names
    (:func:`vla.tokenizer.make_file_free_tokenizer`) and the vocabulary to the tokenizer's size (or ``config.vocab_size`` when larger). The model is
    created on the current default device, so ``with torch.device("meta")`` builds it empty.
    """
    if config.llm_path is not None:
        return load_language_model(config.llm_path)
    if tokenizer is None:
        tokenizer = make_file_free_tokenizer(config.tokenizer)
    else:
        tokenizer = ensure_prompt_tokens(tokenizer)
    vocab_size = config.vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    causal_lm = AutoModelForCausalLM.from_config(hf_decoder_config(config, vocab_size, tokenizer))
    return causal_lm.get_decoder(), causal_lm.get_output_embeddings(), tokenizer


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``path``, with ``<image>``, ``<spatial>`` and a pad token ensured."""
    config_file = Path(path) / "tokenizer_config.json"
    saved_class = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.exists() else None
    for file_free in (ByteTokenizer, HashedWordTokenizer):
        if saved_class == file_free.__name__:
            return file_free.from_pretrained(path)
    return ensure_prompt_tokens(AutoTokenizer.from_pretrained(path, local_files_only=True))


def ensure_prompt_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add ``<image>``, ``<spatial>`` (special) and a pad token to ``tokenizer`` where missing."""
    missing = [t for t in (IMAGE_TOKEN, SPATIAL_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"extra_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def load_language_model(path: str | Path) -> tuple[nn.Module, nn.Module, PreTrainedTokenizerBase]:
    """``(decoder, lm_head, tokenizer)`` from a local ``save_pretrained`` directory.

    The embeddings grow when the tokenizer gained ``<image>``/``<spatial>``/pad tokens.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise ValueError(f"llm_path {str(path)!r} has no config.json (expected a save_pretrained dir)")
    tokenizer = load_tokenizer(path)
    # float32 like the rest of the model (transformers 5 would keep a bfloat16 checkpoint's dtype);
    # the whole policy is cast at once when it runs in another precision.
    causal_lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="sdpa",
                                                     dtype=torch.float32)
    if len(tokenizer) > causal_lm.get_input_embeddings().num_embeddings:
        causal_lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return causal_lm.get_decoder(), causal_lm.get_output_embeddings(), tokenizer
