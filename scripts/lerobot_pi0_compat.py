"""LeRobot's pi0 on PyPI's transformers release, for benchmarks.

LeRobot 0.4.4's ``PI0Policy`` is written against the openpi fork of transformers that its
``lerobot[pi]`` extra installs from git, which an offline machine cannot fetch. For pi0 (adaRMS
off) the fork differs from the 4.57 release in four places, which :func:`openpi_transformers`
supplies while its context is open and restores on exit:

- the marker module ``transformers.models.siglip.check`` that pi0's constructor imports;
- Gemma's RMSNorm called with ``cond=`` (pi0's joint training layers) returns ``(normed, None)``;
  a conditioning tensor (pi0.5's adaRMS) raises, as the release has no modulation weights;
- ``modeling_gemma._gated_residual``: ``x + y``, or ``x + y * gate`` with a gate;
- Gemma attention called with ``use_cache=False`` and a cache (every denoising step) attends to
  the cached prefix and the step's own tokens without appending them to the cache, so each step
  sees the prefix alone and not the suffixes of earlier steps.

Everything else, numerics included, is the release's. Where the fork itself is installed the
context changes nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch

CHECK_MODULE = "transformers.models.siglip.check"
_NO_COND = object()


class PrefixCacheView:
    """Serves a cache's stored keys / values with the new ones appended, without storing them."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int,
               cache_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        cached_keys, cached_values = self.cache[layer_idx]
        return torch.cat([cached_keys, keys], dim=-2), torch.cat([cached_values, values], dim=-2)


def fork_installed() -> bool:
    """True when the marker module of the openpi fork is importable: the fork is installed (or
    an `openpi_transformers` context is already open)."""
    try:
        return importlib.util.find_spec(CHECK_MODULE) is not None
    except ModuleNotFoundError:
        return False
    except ValueError:  # imported without a spec: the module of an open `openpi_transformers` context
        return True


def _gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x + y if gate is None else x + y * gate


@contextlib.contextmanager
def openpi_transformers() -> Iterator[None]:
    """While open, LeRobot's pi0 builds and runs on the transformers release (see the module)."""
    if fork_installed():
        yield
        return
    from transformers.models import siglip
    from transformers.models.gemma import modeling_gemma

    norm_forward = modeling_gemma.GemmaRMSNorm.forward
    attention_forward = modeling_gemma.GemmaAttention.forward

    def rms_norm(self, x: torch.Tensor, cond: Any = _NO_COND):
        out = norm_forward(self, x)
        if cond is _NO_COND:
            return out
        if cond is not None:
            raise ValueError("adaRMS conditioning (pi0.5) needs the openpi fork of transformers; "
                             "this compatibility layer covers pi0 only")
        return out, None

    def attention(self, *args: Any, past_key_values: Any = None, **kwargs: Any):
        if past_key_values is not None and kwargs.get("use_cache") is False:
            past_key_values = PrefixCacheView(past_key_values)
        return attention_forward(self, *args, past_key_values=past_key_values, **kwargs)

    check = types.ModuleType(CHECK_MODULE)
    check.check_whether_transformers_replace_is_installed_correctly = lambda: True
    sys.modules[CHECK_MODULE] = check
    siglip.check = check
    modeling_gemma.GemmaRMSNorm.forward = rms_norm
    modeling_gemma.GemmaAttention.forward = attention
    modeling_gemma._gated_residual = _gated_residual
    try:
        yield
    finally:
        modeling_gemma.GemmaRMSNorm.forward = norm_forward
        modeling_gemma.GemmaAttention.forward = attention_forward
        del modeling_gemma._gated_residual, siglip.check, sys.modules[CHECK_MODULE]
