"""Concatenated q/k/v and gate/up weights of a decoder layer, for the denoising loop on a CPU.

A denoising step of a small expert is bound by the number of ops: one matmul for q, k and v
and one for gate and up instead of five saves a third of a layer's ops. The concatenated
copies are built once and rebuilt only when a source weight changes (another tensor, or an
in-place update such as an optimiser step or ``load_state_dict``). Layers whose projections are
not plain ``nn.Linear`` (peft LoRA wrappers) are not fused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class FusedLayerWeights:
    """``qkv [(H_q + 2 H_kv) * d, D]`` (+ ``qkv_bias`` or None) and ``gate_up [2 I, D]`` of one layer."""

    qkv: Tensor
    qkv_bias: Tensor | None
    gate_up: Tensor
    source_key: tuple


def _source_key(tensors: list[Tensor]) -> tuple:
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def fused_layer_weights(layer: nn.Module, previous: FusedLayerWeights | None = None) -> FusedLayerWeights | None:
    """The fused weights of an HF Llama/Qwen2 decoder ``layer`` (``previous`` when still current),
    or None when its projections are not all plain ``nn.Linear`` or only some have a bias."""
    attn, mlp = layer.self_attn, layer.mlp
    projections = [attn.q_proj, attn.k_proj, attn.v_proj]
    gate_up = [getattr(mlp, "gate_proj", None), getattr(mlp, "up_proj", None)]
    if any(type(m) is not nn.Linear for m in projections + gate_up):
        return None
    biases = [m.bias for m in projections]
    if any(b is None for b in biases) != all(b is None for b in biases) or any(m.bias is not None for m in gate_up):
        return None
    sources = [m.weight for m in projections + gate_up] + [b for b in biases if b is not None]
    key = _source_key(sources)
    if previous is not None and previous.source_key == key:
        return previous
    with torch.no_grad():
        return FusedLayerWeights(
            qkv=torch.cat([m.weight for m in projections]),
            qkv_bias=None if biases[0] is None else torch.cat(biases),
            gate_up=torch.cat([m.weight for m in gate_up]),
            source_key=key,
        )
