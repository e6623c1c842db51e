"""LayerNorm whose compiled form inductor turns into fast CPU kernels."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same arguments and parameters) that, under ``torch.compile``, normalises
    with two means rather than the Welford reduction inductor builds for ``native_layer_norm``,
    whose CPU kernel is slow over a few dozen channels. Tiny preset, one thread, 414 tokens: the
    q/k norms and RoPE of one attention take 254 us as ``native_layer_norm``, 67 us written out; a
    64-channel block norm 37 us and 13 us. Statistics are taken in at least float32, as eagerly.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return super().forward(x)
        dims = tuple(range(-len(self.normalized_shape), 0))
        work = x.to(torch.promote_types(x.dtype, torch.float32))
        centred = work - work.mean(dims, keepdim=True)
        out = centred * torch.rsqrt(centred.square().mean(dims, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype)
