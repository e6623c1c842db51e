"""Deep fusion: an HF decoder LLM and an action expert that share attention in every layer.

In layer ``i`` each stream (LLM on the prefix, expert on the suffix) computes q/k/v from its own
tokens with its own ``input_layernorm`` and ``q_proj/k_proj/v_proj``; the streams are
concatenated along the sequence for **one** ``F.scaled_dot_product_attention`` with a boolean
mask; the result is split and each stream applies its own ``o_proj``, residual,
``post_attention_layernorm`` and ``mlp``. The code calls the HF layer modules themselves, so a
pretrained LLM is used with its weights as they are and peft LoRA wrappers apply unchanged.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig

from vla.fused_weights import FusedLayerWeights, fused_layer_weights
from vla.layer_ops import gated_mlp, linear, rms_norm, rotary_tables, rotate
from vla.masks import fold_mask_for_groups


def attention_shape(config: PretrainedConfig) -> dict[str, int]:
    """Layers, heads, KV heads and head_dim of an HF decoder config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": head_dim,
    }


def expert_config(llm_config: PretrainedConfig, width: int, intermediate_size: int) -> PretrainedConfig:
    """The LLM's HF config at the expert's width, keeping layers, heads, KV heads and head_dim."""
    config = copy.deepcopy(llm_config)
    config.head_dim = attention_shape(llm_config)["head_dim"]
    config.hidden_size = width
    config.intermediate_size = intermediate_size
    return config


class ExpertDecoder(nn.Module):
    """The action expert: decoder layers and final norm of the LLM's own family, no embeddings.

    Args:
        config: HF config of the expert (see :func:`expert_config`).
        layer_cls: the decoder layer class (e.g. ``LlamaDecoderLayer``).
        norm_cls: the final norm class (e.g. ``LlamaRMSNorm``).
    """

    def __init__(self, config: PretrainedConfig, layer_cls: type[nn.Module], norm_cls: type[nn.Module]):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(layer_cls(config, i) for i in range(config.num_hidden_layers))
        self.norm = norm_cls(config.hidden_size, eps=config.rms_norm_eps)

    @classmethod
    def like(cls, llm: nn.Module, width: int, intermediate_size: int) -> "ExpertDecoder":
        """An expert of the same family as the HF decoder ``llm`` (e.g. a ``LlamaModel``)."""
        config = expert_config(llm.config, width, intermediate_size)
        return cls(config, type(llm.layers[0]), type(llm.norm))


@dataclass
class PrefixCache:
    """Per-layer prefix keys/values (rotary applied) and the fixed suffix inputs of every step.

    ``keys[i]`` and ``values[i]`` are ``[B, H_kv, L + S, head_dim]`` buffers: slots ``[:L]`` hold
    the prefix, written once by :meth:`DeepFusionDecoder.build_prefix_cache`; slots ``[L:]`` are
    scratch that each denoising step overwrites with its suffix keys/values. So no step copies
    or changes the prefix entries, and attention reads one contiguous buffer. The suffix's
    rotary tables ``[B, 1, S, head_dim]`` (:func:`vla.layer_ops.rotary_tables`) and folded mask
    ``[B, 1, G * S, L + S]`` are the same at every step, so they are computed here once.
    ``expert_weights``: the expert layers' fused projections (:mod:`vla.fused_weights`) the
    steps use on a CPU, or None.
    """

    keys: list[Tensor]
    values: list[Tensor]
    prefix_len: int
    suffix_rotary: tuple[Tensor, Tensor]
    suffix_mask: Tensor
    expert_weights: list[FusedLayerWeights] | None = None

    @property
    def suffix_len(self) -> int:
        return self.keys[0].shape[2] - self.prefix_len


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float,
                      dropout: float = 0.0) -> Tensor:
    """SDPA with grouped-query attention without repeating keys/values.

    The ``G = H_q / H_kv`` query heads sharing a key/value head are folded into the query axis,
    so keys and values (and the prefix cache) are never expanded or copied.

    Args:
        q: ``[B, H_q, N, d]``.
        k, v: ``[B, H_kv, M, d]``.
        mask: ``[B, 1, G * N, M]`` bool, already folded (:func:`vla.masks.fold_mask_for_groups`).
        scale: softmax scale.

    Returns:
        ``[B, H_q, N, d]``.
    """
    batch, heads, n_query, dim = q.shape
    folded = q.reshape(batch, k.shape[1], -1, dim)
    out = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    return out.reshape(batch, heads, n_query, dim)


class DeepFusionDecoder(nn.Module):
    """Runs the LLM on the prefix and the expert on the suffix, fused layer by layer.

    Args:
        llm: an HF decoder base model (``LlamaModel``, ``Qwen2Model``, ...) with ``layers``,
            ``norm`` and ``rotary_emb``.
        expert: an :class:`ExpertDecoder` with the LLM's layer count, heads, KV heads, head_dim.
    """

    def __init__(self, llm: nn.Module, expert: ExpertDecoder):
        super().__init__()
        llm_shape, expert_shape = attention_shape(llm.config), attention_shape(expert.config)
        mismatched = {k: (llm_shape[k], expert_shape[k]) for k in llm_shape if llm_shape[k] != expert_shape[k]}
        if mismatched:
            details = ", ".join(f"{k}: llm {a} vs expert {b}" for k, (a, b) in mismatched.items())
            raise ValueError(f"action expert must match the LLM's attention shape; {details}")
        if getattr(llm.config, "use_sliding_window", False):
            raise ValueError("sliding-window attention is not supported; set use_sliding_window=False")
        self.llm = llm
        self.expert = expert
        self.num_layers = llm_shape["num_hidden_layers"]
        self.head_dim = llm_shape["head_dim"]
        self.num_kv_heads = llm_shape["num_key_value_heads"]
        self.groups = llm_shape["num_attention_heads"] // self.num_kv_heads
        self.scale = self.head_dim**-0.5
        self.attention_dropout = float(getattr(llm.config, "attention_dropout", 0.0))
        self._expert_weights: list[FusedLayerWeights | None] = [None] * self.num_layers

    @staticmethod
    def fuses_expert_weights(device: torch.device) -> bool:
        """Whether the denoising loop on ``device`` uses the fused expert weights: where ops, not
        arithmetic, bound a step (CPU), and only without gradients. On a GPU the copies would cost
        memory that CUDA graphs / torch.compile make unnecessary."""
        return device.type == "cpu" and not torch.is_grad_enabled()

    def fused_expert_weights(self) -> list[FusedLayerWeights] | None:
        """The expert layers' fused q/k/v and gate/up weights, rebuilt where a source changed;
        None when a layer cannot be fused (e.g. LoRA). Inside ``torch.compile``, which cannot
        trace the sources' ``data_ptr``, the weights of the last eager call are returned as they
        are (``GeoVLAModel`` refreshes them eagerly before each compiled call)."""
        if not torch.compiler.is_compiling():
            self._expert_weights = [fused_layer_weights(layer, previous)
                                    for layer, previous in zip(self.expert.layers, self._expert_weights)]
        return None if any(w is None for w in self._expert_weights) else list(self._expert_weights)

    def forward(self, prefix: Tensor | None, suffix: Tensor | None, mask: Tensor,
                position_ids: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Joint forward over ``[prefix, suffix]`` (either may be None or zero-length).

        Args:
            prefix: ``[B, L, D]`` LLM input embeddings.
            suffix: ``[B, S, De]`` expert input embeddings.
            mask: ``[B, 1, L + S, L + S]`` bool (:func:`vla.masks.joint_attention_mask`).
            position_ids: ``[B, L + S]`` rotary positions.

        Returns:
            ``(prefix_out [B, L, D], suffix_out [B, S, De])`` after each stream's final norm; an
            absent or empty stream is returned as given.
        """
        streams = [(self.llm, prefix), (self.expert, suffix)]
        active = [(decoder, h) for decoder, h in streams if h is not None and h.shape[1] > 0]
        if not active:
            raise ValueError("deep fusion needs a non-empty prefix or suffix")
        rotary = self.rotary(active[0][1], position_ids)
        outputs = iter(self._run(active, rotary, fold_mask_for_groups(mask, self.groups), cache=None))
        prefix_out, suffix_out = (
            rms_norm(decoder.norm, next(outputs)) if h is not None and h.shape[1] > 0 else h
            for decoder, h in streams
        )
        return prefix_out, suffix_out

    def rotary(self, like: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """The LLM's rotary tables ``(cos, signed sin)``, each ``[B, 1, N, head_dim]`` in ``like``'s
        dtype (:func:`vla.layer_ops.rotary_tables` of the HF rotary embedding)."""
        return rotary_tables(*self.llm.rotary_emb(like, position_ids))

    def build_prefix_cache(self, prefix: Tensor, prefix_mask: Tensor, prefix_position_ids: Tensor,
                           suffix_mask: Tensor, suffix_position_ids: Tensor) -> PrefixCache:
        """Run the LLM on the prefix once and keep every layer's keys/values.

        Args:
            prefix: ``[B, L, D]``.
            prefix_mask: ``[B, 1, L, L]`` bool (:func:`vla.masks.prefix_attention_mask`).
            prefix_position_ids: ``[B, L]``.
            suffix_mask: ``[B, 1, S, L + S]`` bool (:func:`vla.masks.suffix_attention_mask`).
            suffix_position_ids: ``[B, S]`` (:func:`vla.masks.suffix_position_ids`).
        """
        batch, length, _ = prefix.shape
        suffix_len = suffix_position_ids.shape[1]
        if suffix_mask.shape[-2:] != (suffix_len, length + suffix_len):
            raise ValueError(
                f"suffix_mask must end in ({suffix_len}, {length + suffix_len}), got {tuple(suffix_mask.shape)}"
            )
        shape = (batch, self.num_kv_heads, length + suffix_len, self.head_dim)
        cache = PrefixCache(
            keys=[prefix.new_empty(shape) for _ in range(self.num_layers)],
            values=[prefix.new_empty(shape) for _ in range(self.num_layers)],
            prefix_len=length,
            suffix_rotary=self.rotary(prefix, suffix_position_ids),
            suffix_mask=fold_mask_for_groups(suffix_mask, self.groups),
            expert_weights=self.fused_expert_weights() if self.fuses_expert_weights(prefix.device) else None,
        )
        rotary = self.rotary(prefix, prefix_position_ids)
        self._run([(self.llm, prefix)], rotary, fold_mask_for_groups(prefix_mask, self.groups), cache)
        return cache

    def forward_suffix(self, suffix: Tensor, cache: PrefixCache) -> Tensor:
        """Expert-only forward of the suffix against the cached prefix.

        Args:
            suffix: ``[B, S, De]``.
            cache: from :meth:`build_prefix_cache` with the same ``S``.

        Returns:
            ``[B, S, De]`` after the expert's final norm.
        """
        if suffix.shape[1] != cache.suffix_len:
            raise ValueError(f"suffix has {suffix.shape[1]} tokens, the cache was built for {cache.suffix_len}")
        (hidden,) = self._run([(self.expert, suffix)], cache.suffix_rotary, cache.suffix_mask, cache,
                              cache.expert_weights)
        return rms_norm(self.expert.norm, hidden)

    def _run(self, active: list[tuple[nn.Module, Tensor]], rotary: tuple[Tensor, Tensor],
             mask: Tensor, cache: PrefixCache | None,
             fused: list[FusedLayerWeights] | None = None) -> list[Tensor]:
        """All layers over the active streams; ``mask`` already folded for grouped queries.

        ``cache`` with an LLM-only stream fills the prefix slots; with an expert-only stream it
        writes the suffix slots and attends over the whole buffer. ``fused``: per layer, the
        fused weights of a single active stream.
        """
        lengths = [h.shape[1] for _, h in active]
        rotary = list(zip(rotary[0].split(lengths, dim=2), rotary[1].split(lengths, dim=2)))
        filling = cache is not None and active[0][0] is self.llm
        hiddens = [h for _, h in active]
        for index in range(self.num_layers):
            layers = [decoder.layers[index] for decoder, _ in active]
            weights = None if fused is None else fused[index]
            if weights is None:
                q, k, v = self._project(layers, hiddens, rotary)
            else:
                q, k, v = self._project_fused(hiddens[0], layers[0], weights, rotary[0])
            if cache is not None:
                slots = slice(0, cache.prefix_len) if filling else slice(cache.prefix_len, None)
                cache.keys[index][:, :, slots] = k
                cache.values[index][:, :, slots] = v
                if filling and index == self.num_layers - 1:
                    break  # the last layer's outputs on the prefix feed nothing downstream
                if not filling:
                    k, v = cache.keys[index], cache.values[index]
            dropout = self.attention_dropout if self.training else 0.0
            out = grouped_attention(q, k, v, mask, self.scale, dropout)
            out = out.transpose(1, 2).flatten(2).split(lengths, dim=1)
            hiddens = [self._finish(layer, h, o, weights) for layer, h, o in zip(layers, hiddens, out)]
        return hiddens

    def _project(self, layers: list[nn.Module], hiddens: list[Tensor],
                 rotary: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        """Per-stream norm, q/k/v projections and rotary; concatenated to ``[B, H, N, d]``."""
        qs, ks, vs = [], [], []
        for layer, hidden, tables in zip(layers, hiddens, rotary):
            attn = layer.self_attn
            x = rms_norm(layer.input_layernorm, hidden)
            shape = (*x.shape[:-1], -1, self.head_dim)
            qs.append(rotate(linear(attn.q_proj, x).view(shape).transpose(1, 2), tables))
            ks.append(rotate(linear(attn.k_proj, x).view(shape).transpose(1, 2), tables))
            vs.append(linear(attn.v_proj, x).view(shape).transpose(1, 2))
        if len(layers) == 1:
            return qs[0], ks[0], vs[0]
        return torch.cat(qs, dim=2), torch.cat(ks, dim=2), torch.cat(vs, dim=2)

    def _project_fused(self, hidden: Tensor, layer: nn.Module, weights: FusedLayerWeights,
                       tables: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`_project` of one stream with one q/k/v matmul and one rotary call for q and k."""
        x = rms_norm(layer.input_layernorm, hidden)
        qkv = F.linear(x, weights.qkv, weights.qkv_bias).view(*x.shape[:-1], -1, self.head_dim).transpose(1, 2)
        q_heads = self.groups * self.num_kv_heads
        qk = rotate(qkv[:, : q_heads + self.num_kv_heads], tables)
        return qk[:, :q_heads], qk[:, q_heads:], qkv[:, q_heads + self.num_kv_heads:]

    @staticmethod
    def _finish(layer: nn.Module, hidden: Tensor, attended: Tensor,
                weights: FusedLayerWeights | None = None) -> Tensor:
        """Output projection, residual, post-attention norm, MLP (gate and up in one matmul with
        fused ``weights``), residual."""
        hidden = hidden + linear(layer.self_attn.o_proj, attended)
        x = rms_norm(layer.post_attention_layernorm, hidden)
        if weights is None:
            return hidden + gated_mlp(layer.mlp, x)
        gate, up = F.linear(x, weights.gate_up).chunk(2, dim=-1)
        return hidden + linear(layer.mlp.down_proj, layer.mlp.act_fn(gate) * up)
