"""The local model directory SmolVLA and pi0 read instructions with (nothing is downloaded).

SmolVLA builds its VLM from a model directory and tokenizes with that directory's tokenizer; pi0
tokenizes with PaliGemma's, which the in-process runner redirects to the same directory
(``benchmarks.lerobot_runner``). The directory is :func:`write_smolvlm_dir`'s SmolVLM at
geovla-``tiny`` widths, its word-level tokenizer extended with the suite's words, so
both VLAs read one token per instruction word, as geovla's word tokenizer does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# SmolVLM2-500M's towers (what SmolVLA loads by default), as SmolVLMConfig fields.
SMOLVLM2_500M = {
    "text": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15,
             "num_key_value_heads": 5, "vocab_size": 49280, "rope_theta": 100000.0,
             "max_position_embeddings": 8192, "rms_norm_eps": 1e-5},
    "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "patch_size": 16, "image_size": 512},
    "scale_factor": 4,
}
SMOLVLM_SPECIAL_TOKENS = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                          "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}


def smolvlm_shape(image_size: int) -> dict[str, Any]:
    """SmolVLM text and vision towers as wide and deep as geovla ``tiny``'s LLM (128 wide, 4 layers,
    4 heads) and SigLIP (96 wide, 4 layers, 8-px patches), for square ``image_size`` frames."""
    return {
        "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "vocab_size": 1024},
        "vision": {"hidden_size": 96, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
                   "patch_size": 8, "image_size": image_size},
        "scale_factor": 2,
    }


def write_smolvlm_dir(directory: Path, shape: dict[str, Any] = SMOLVLM2_500M) -> Path:
    """A SmolVLM model directory (config and processor, no weights) of ``shape`` for SmolVLA's
    ``vlm_model_name``; its tokenizer knows only SmolVLM's special tokens (ids are fed directly),
    named as SmolVLA looks them up (``tokenizer.fake_image_token_id``, ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor,
                              SmolVLMVideoProcessor)

    tokens = ["<unk>", "<|endoftext|>", *SMOLVLM_SPECIAL_TOKENS.values()]
    word_level = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", extra_special_tokens=SMOLVLM_SPECIAL_TOKENS)
    processor = SmolVLMProcessor(image_processor=SmolVLMImageProcessor(), tokenizer=tokenizer,
                                 video_processor=SmolVLMVideoProcessor())
    config = SmolVLMConfig(text_config={"model_type": "llama", **shape["text"]}, vision_config=shape["vision"],
                           scale_factor=shape["scale_factor"], image_token_id=shape["text"]["vocab_size"] - 1)
    directory.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(directory)
    config.save_pretrained(directory)
    return directory


def write_word_vlm(directory: Path, vocabulary: tuple[str, ...], image_size: int) -> Path:
    """Write (once; an existing complete directory is kept) the SmolVLM directory of
    :func:`smolvlm_shape` whose tokenizer maps each word of ``vocabulary`` to its own id."""
    from tokenizers import Tokenizer, models

    directory = Path(directory)
    if (directory / "config.json").is_file():
        return directory
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_smolvlm_dir(partial, smolvlm_shape(image_size))
    tokenizer = Tokenizer.from_file(str(partial / "tokenizer.json"))
    ids = tokenizer.get_vocab()
    for word in vocabulary:
        ids.setdefault(word, len(ids))
    if len(ids) >= smolvlm_shape(image_size)["text"]["vocab_size"]:
        raise ValueError(f"{len(vocabulary)} words do not fit the toy SmolVLM's vocabulary")
    tokenizer.model = models.WordLevel(ids, unk_token="<unk>")
    tokenizer.save(str(partial / "tokenizer.json"))
    partial.rename(directory)  # the directory appears complete or not at all
    return directory
