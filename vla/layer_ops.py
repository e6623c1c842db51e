"""Calls of an HF decoder layer's parts without the per-module overhead of ``nn.Module.__call__``.

With a tiny expert on a dozen suffix tokens, a denoising step is bound by the number of ops
and module calls, not by arithmetic. These helpers compute what the modules compute: a plain
``nn.Linear`` becomes one ``F.linear``, an HF ``RMSNorm`` one ``F.rms_norm`` (same float32
maths), a gated MLP three linears. Anything else (peft LoRA wrappers, other norms or MLPs) is
called as the module, so adapters keep working. Rotary embeddings use tables prepared once
(:func:`rotary_tables`), two multiplies and a roll instead of HF's slice/negate/concatenate.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

RMS_NORMS = (LlamaRMSNorm, Qwen2RMSNorm)


def linear(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)``; one ``F.linear`` for an exact ``nn.Linear``. ``x``: ``[..., in]`` -> ``[..., out]``."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight, module.bias)
    return module(x)


def rms_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)`` for ``x [..., D]``; an HF RMSNorm as ``F.rms_norm``.

    HF normalises in float32, casts back to the input dtype, then multiplies by the weight; with
    float32 input and weight that is one fused ``F.rms_norm``, otherwise the same three steps.
    """
    if not isinstance(norm, RMS_NORMS):
        return norm(x)
    weight, eps = norm.weight, norm.variance_epsilon
    if x.dtype == weight.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    return weight * F.rms_norm(x.float(), weight.shape, eps=eps).to(x.dtype)


def rotary_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """HF rotary ``(cos, sin)`` ``[B, N, d]`` -> ``(cos, signed sin)`` ``[B, 1, N, d]`` for :func:`rotate`.

    HF rotates by ``x * cos + cat(-x2, x1) * sin``; ``cat(-x2, x1) = roll(x, d/2) * [-1, +1]``, so
    the sign goes into ``sin`` once instead of a negation per call.
    """
    half = sin.shape[-1] // 2
    signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return cos.unsqueeze(1), signed.unsqueeze(1)


def rotate(x: Tensor, tables: tuple[Tensor, Tensor]) -> Tensor:
    """``x [B, H, N, d]`` rotated as HF's ``apply_rotary_pos_emb`` does (bitwise equal), with
    tables from :func:`rotary_tables`."""
    cos, signed_sin = tables
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def gated_mlp(mlp: nn.Module, x: Tensor) -> Tensor:
    """``mlp(x)`` for ``x [..., D]``: ``down(act(gate(x)) * up(x))`` (Llama/Qwen2 MLP) through
    :func:`linear`; any other MLP is called as the module."""
    if not all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return mlp(x)
    return linear(mlp.down_proj, mlp.act_fn(linear(mlp.gate_proj, x)) * linear(mlp.up_proj, x))
