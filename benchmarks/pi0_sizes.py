"""pi0 at geovla-``tiny`` widths, and its tokenizer read from a local directory.

LeRobot's pi0 names its two Gemmas by variant (``gemma_2b`` for PaliGemma's language model,
``gemma_300m`` for the action expert) and looks their sizes up in ``get_gemma_config``; SigLIP's
size is fixed where PaliGemma is built. :func:`pi0_sizes` swaps that size table (and SigLIP's
size) while it is open, as ``perf/bench_anchors.toy_pi_sizes`` does; every LeRobot class stays
as it is. Training and evaluation must both open it (``benchmarks.lerobot_runner`` does), since
a checkpoint's config still names the variants.

pi0's processor loads PaliGemma's tokenizer by its Hub name; :func:`redirected_tokenizers`
makes that name load a local directory instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"

# Both Gemmas share heads, head_dim and depth (their layers attend jointly; LeRobot's joint attention
# assumes 8 query heads); PaliGemma's is as wide as geovla tiny's LLM (128, queries 8 x 16 = its
# 4 x 32) and the expert as wide as geovla's action expert (64).
PI0_TINY_GEMMA: dict[str, dict[str, int]] = {
    "gemma_2b": {"width": 128, "depth": 4, "mlp_dim": 256, "num_heads": 8, "num_kv_heads": 2, "head_dim": 16},
    "gemma_300m": {"width": 64, "depth": 4, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 2, "head_dim": 16},
}
# geovla tiny's SigLIP stream: 96 wide, 4 blocks, 8-px patches.
PI0_TINY_SIGLIP: dict[str, int] = {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4,
                                   "intermediate_size": 384, "patch_size": 8}
SIZES: dict[str, tuple[dict[str, dict[str, int]], dict[str, int]]] = {"tiny": (PI0_TINY_GEMMA, PI0_TINY_SIGLIP)}


@contextlib.contextmanager
def pi0_sizes(name: str) -> Iterator[None]:
    """While open, LeRobot's pi0 builds its Gemmas and SigLIP at the sizes ``SIZES[name]``."""
    from lerobot.policies.pi0 import modeling_pi0

    if name not in SIZES:
        raise ValueError(f"unknown pi0 sizes {name!r}; known: {sorted(SIZES)}")
    gemmas, siglip = SIZES[name]
    paligemma_class = modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma

    def gemma_config(variant: str) -> Any:
        if variant not in gemmas:
            raise ValueError(f"pi0 variant {variant!r} has no size in {name!r}")
        return modeling_pi0.GemmaConfig(**gemmas[variant])

    def sized_paligemma(config: Any) -> Any:
        for key, value in siglip.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size  # the projector feeds the Gemma
        return paligemma_class(config)

    with (mock.patch.object(modeling_pi0, "get_gemma_config", gemma_config),
          mock.patch.object(modeling_pi0, "PaliGemmaForConditionalGenerationWithPiGemma", sized_paligemma)):
        yield


class _RedirectingAutoTokenizer:
    """``AutoTokenizer`` whose ``from_pretrained`` reads some names from local directories."""

    def __init__(self, auto_tokenizer: Any, redirects: Mapping[str, Path]) -> None:
        self._auto = auto_tokenizer
        self._redirects = dict(redirects)

    def from_pretrained(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._auto.from_pretrained(str(self._redirects.get(name, name)), *args, **kwargs)


@contextlib.contextmanager
def redirected_tokenizers(redirects: Mapping[str, Path]) -> Iterator[None]:
    """While open, LeRobot's tokenizer step loads ``redirects[name]`` for a tokenizer ``name``."""
    from lerobot.processor import tokenizer_processor

    for name, directory in redirects.items():
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"the tokenizer directory for {name!r} does not exist: {directory}")
    redirecting = _RedirectingAutoTokenizer(tokenizer_processor.AutoTokenizer, redirects)
    with mock.patch.object(tokenizer_processor, "AutoTokenizer", redirecting):
        yield
