"""Configuration of the deep-fusion LLM + flow-matching action expert, with tiny/small/full presets."""

from dataclasses import dataclass, replace

from vla.tokenizer import TOKENIZERS

LLM_TYPES = ("llama", "qwen2")


@dataclass
class LoRASettings:
    """peft LoRA on the decoder layers of the LLM and/or the action expert.

    Args:
        rank: LoRA rank ``r``.
        alpha: LoRA scaling numerator (``scale = alpha / rank``).
        dropout: dropout on the LoRA input.
        target_modules: projection names inside each decoder layer to adapt.
        on_llm: adapt the LLM layers.
        on_expert: adapt the expert layers.
        freeze_base: freeze the adapted decoders' own weights (the usual LoRA fine-tuning).
    """

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )
    on_llm: bool = True
    on_expert: bool = True
    freeze_base: bool = True

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if not self.target_modules:
            raise ValueError("lora target_modules must name at least one module")
        if not (self.on_llm or self.on_expert):
            raise ValueError("lora needs on_llm or on_expert")


@dataclass
class DeepFusionConfig:
    """LLM, action expert and flow-matching settings.

    The fields most often changed: ``llm_path`` (a local HF checkpoint dir; the decoder shape is
    then read from it and the shape fields below are ignored), ``action_horizon``,
    ``max_action_dim`` and ``max_state_dim``.

    Args:
        llm_type: HF decoder family built from config: ``"llama"`` or ``"qwen2"``.
        llm_path: local directory for ``from_pretrained`` (model and tokenizer), or None.
        hidden_size: LLM width ``D``.
        intermediate_size: LLM MLP width.
        num_layers: decoder layers (shared by LLM and expert).
        num_heads: query heads (shared).
        num_kv_heads: key/value heads (shared; grouped-query attention when fewer than heads).
        head_dim: per-head width (shared).
        vocab_size: embedding rows; None = the tokenizer's size.
        rope_theta: rotary base.
        rms_norm_eps: RMSNorm epsilon.
        max_position_embeddings: rotary table size hint of the HF config.
        tie_word_embeddings: LM head shares the input embedding matrix.
        expert_width: action expert width ``De``.
        expert_intermediate_size: expert MLP width.
        action_horizon: actions per chunk ``H``.
        max_action_dim: padded action width ``A_max``; real dims are the leading ``A`` columns.
        max_state_dim: padded state width, or None for no state token.
        prefix_causal: causal prefix attention (keeps the language path) or bidirectional.
        num_steps: default Euler steps of ``sample_actions``.
        time_alpha: ``t ~ Beta(time_alpha, 1) * 0.999 + 0.001``.
        time_min_period, time_max_period: period range of the sinusoidal time embedding.
        lora: LoRA settings, or None for full fine-tuning.
        tokenizer: file-free tokenizer of an LLM built from config: ``byte`` (UTF-8 bytes) or
            ``word`` (hashed words, one token per word); ignored with ``llm_path``.
        flow_samples: flow-matching (noise, time) draws per observation in training; the
            suffix copies share one prefix pass.
    """

    llm_type: str = "llama"
    llm_path: str | None = None
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    vocab_size: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    expert_width: int = 64
    expert_intermediate_size: int = 128
    action_horizon: int = 10
    max_action_dim: int = 8
    max_state_dim: int | None = 8
    prefix_causal: bool = True
    num_steps: int = 10
    time_alpha: float = 1.5
    time_min_period: float = 4e-3
    time_max_period: float = 4.0
    lora: LoRASettings | None = None
    tokenizer: str = "byte"
    flow_samples: int = 1

    def __post_init__(self):
        if self.llm_type not in LLM_TYPES:
            raise ValueError(f"llm_type must be one of {LLM_TYPES}, got {self.llm_type!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        positive = {
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_layers": self.num_layers, "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "expert_width": self.expert_width,
            "expert_intermediate_size": self.expert_intermediate_size,
            "action_horizon": self.action_horizon, "max_action_dim": self.max_action_dim,
            "num_steps": self.num_steps, "flow_samples": self.flow_samples,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.expert_width % 2:
            raise ValueError(f"expert_width must be even (time embedding), got {self.expert_width}")
        if self.max_state_dim is not None and self.max_state_dim < 1:
            raise ValueError(f"max_state_dim must be >= 1 or None, got {self.max_state_dim}")
        if self.time_alpha <= 0:
            raise ValueError(f"time_alpha must be > 0, got {self.time_alpha}")
        if not 0 < self.time_min_period < self.time_max_period:
            raise ValueError(
                f"need 0 < time_min_period < time_max_period, got "
                f"{self.time_min_period}, {self.time_max_period}"
            )


PRESETS: dict[str, DeepFusionConfig] = {
    "tiny": DeepFusionConfig(),
    # Qwen2-0.5B shape; expert a quarter of its width.
    "small": DeepFusionConfig(
        llm_type="qwen2", hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
        num_kv_heads=2, head_dim=64, vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6,
        max_position_embeddings=32768, tie_word_embeddings=True, expert_width=224,
        expert_intermediate_size=1216, action_horizon=50, max_action_dim=32, max_state_dim=32,
    ),
    # LLaMA-7B shape; expert 1024 wide with the LLM's heads and head_dim (as pi0's expert).
    "full": DeepFusionConfig(
        llm_type="llama", hidden_size=4096, intermediate_size=11008, num_layers=32,
        num_heads=32, num_kv_heads=32, head_dim=128, vocab_size=32000, rope_theta=10000.0,
        rms_norm_eps=1e-5, max_position_embeddings=4096, expert_width=1024,
        expert_intermediate_size=4096, action_horizon=50, max_action_dim=32, max_state_dim=32,
    ),
}


def deep_fusion_preset(name: str, **overrides) -> DeepFusionConfig:
    """A copy of preset ``name`` (``tiny``, ``small``, ``full``) with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
