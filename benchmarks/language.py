"""The local model directory SmolVLA and pi0 read instructions with (nothing is downloaded).

SmolVLA builds its VLM from a model directory and tokenizes with that directory's tokenizer; pi0
tokenizes with PaliGemma's, which the in-process runner redirects to the same directory
(``benchmarks.lerobot_runner``). The directory is ``scripts/bench_anchors.write_smolvlm_dir``'s
SmolVLM at geovla-``tiny`` widths, its word-level tokenizer extended with the suite's words, so
both VLAs read one token per instruction word, as geovla's word tokenizer does.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


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


def _bench_anchors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_anchors", SCRIPTS / "bench_anchors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_word_vlm(directory: Path, vocabulary: tuple[str, ...], image_size: int) -> Path:
    """Write (once; an existing complete directory is kept) the SmolVLM directory of
    :func:`smolvlm_shape` whose tokenizer maps each word of ``vocabulary`` to its own id."""
    from tokenizers import Tokenizer, models

    directory = Path(directory)
    if (directory / "config.json").is_file():
        return directory
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _bench_anchors().write_smolvlm_dir(partial, smolvlm_shape(image_size))
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
