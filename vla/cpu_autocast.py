"""bfloat16 autocast on a CPU with attention kept in float32.

On a CPU with AVX512-BF16, autocast's bfloat16 matmuls and convolutions run 3-4x faster than in
float32, but torch's CPU flash-attention backward is about 3x slower in bfloat16 than in float32
(``docs/performance.md``, "Training throughput"). Under a CPU bfloat16 autocast,
``float32_attention`` therefore runs every ``F.scaled_dot_product_attention`` call (the project's
own and timm's) on float32 inputs with autocast off, and returns the result in the inputs' dtype.
Elsewhere (no autocast, a GPU, float16) it changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_SDPA = F.scaled_dot_product_attention


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), where a bfloat16
    autocast speeds training up; elsewhere oneDNN emulates it and no speed-up is expected."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def cpu_bfloat16_autocast_enabled() -> bool:
    """Whether a CPU autocast to bfloat16 is active here."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


class _Float32Attention(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not _SDPA:
            return func(*args, **kwargs)
        q, k, v, *rest = args
        with torch.autocast("cpu", enabled=False):
            out = func(q.float(), k.float(), v.float(), *rest, **kwargs)
        return out.to(q.dtype)


@contextlib.contextmanager
def float32_attention() -> Iterator[None]:
    """Run attention in float32 while a CPU bfloat16 autocast is active (else a no-op)."""
    if not cpu_bfloat16_autocast_enabled():
        yield
        return
    with _Float32Attention():
        yield
