"""Configuration of the FiLM dual-encoder backbone and its tiny / small / full presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

ROUTER_MODES = ("moe", "add")

# Keys the backbone sets itself when it builds a timm model.
_RESERVED_TIMM_KWARGS = ("img_size", "num_classes", "pretrained")


@dataclass
class EncoderConfig:
    """One timm ViT stream of the backbone.

    Args:
        timm_name: name passed to `timm.create_model(name, pretrained=False, ...)`; a pretrained tag
            (`.lvd142m`) is allowed and only selects timm's default config, nothing is downloaded.
        mean: per-channel mean used to normalise `[0, 1]` images for this encoder.
        std: per-channel std used to normalise `[0, 1]` images for this encoder.
        timm_kwargs: VisionTransformer keyword overrides (`embed_dim`, `depth`, `num_heads`,
            `patch_size`, `drop_path_rate`, ...). This is how `tiny` shrinks the `full` models
            while running the same code.
        weights: optional local checkpoint file (`.safetensors`, `.pth`, `.bin`) in timm's key
            format or one timm's checkpoint filter converts (original DINOv2, open_clip). Loaded
            before the last block is pruned. Never a URL.
    """

    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(
                f"EncoderConfig({self.timm_name!r}): mean and std need 3 values, got "
                f"mean={self.mean}, std={self.std}"
            )
        if min(self.std) <= 0:
            raise ValueError(f"EncoderConfig({self.timm_name!r}): std must be > 0, got {self.std}")
        reserved = sorted(set(self.timm_kwargs) & set(_RESERVED_TIMM_KWARGS))
        if reserved:
            raise ValueError(
                f"EncoderConfig({self.timm_name!r}): timm_kwargs may not set {reserved}; "
                "the image size comes from BackboneConfig.image_size and weights from `weights`"
            )


@dataclass
class BackboneConfig:
    """FiLM-modulated SigLIP + DINOv2 backbone with aggregation tokens and a stream router.

    The two fields a user most often changes are `num_agg_tokens` (visual tokens per camera) and
    `llm_dim` (must equal the hidden size of the LLM the tokens feed).

    Args:
        siglip: the SigLIP stream (stream 0 of the router and channels 0-2 of a stacked camera).
        dinov2: the DINOv2-with-registers stream (stream 1, channels 3-5).
        image_size: square input size in pixels; both ViTs are built at this size.
        num_agg_tokens: K, learnable aggregation tokens per encoder; also the tokens per camera.
        llm_dim: D_llm, width of the LLM. The language vector (mean LLM input embedding) has this
            width, FiLM maps it to each ViT's width, projectors map the ViTs to it.
        router: "moe" weights the two projected streams with `softmax(MLP(language))`; "add" sums
            them.
        gradient_checkpointing: recompute each ViT block in the backward pass instead of storing
            its activations (training only; same gradients, less memory, ~1/3 more compute).
    """

    siglip: EncoderConfig
    dinov2: EncoderConfig
    image_size: int = 224
    num_agg_tokens: int = 64
    llm_dim: int = 4096
    router: str = "moe"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("image_size", "num_agg_tokens", "llm_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"BackboneConfig.{name} must be a positive int, got {value!r}")
        if self.router not in ROUTER_MODES:
            raise ValueError(f"BackboneConfig.router must be one of {ROUTER_MODES}, got {self.router!r}")


def _tiny() -> BackboneConfig:
    # The `full` architectures (registers, LayerScale, no class token, SigLIP's MLP ratio) shrunk
    # through timm kwargs, so CPU tests run the same code as the real models.
    return BackboneConfig(
        siglip=EncoderConfig(
            "vit_so400m_patch14_siglip_224",
            SIGLIP_MEAN,
            SIGLIP_STD,
            dict(patch_size=8, embed_dim=96, depth=4, num_heads=4),
        ),
        dinov2=EncoderConfig(
            "vit_large_patch14_reg4_dinov2",
            IMAGENET_MEAN,
            IMAGENET_STD,
            dict(patch_size=8, embed_dim=64, depth=4, num_heads=4),
        ),
        image_size=64,
        num_agg_tokens=8,
        llm_dim=128,
    )


def _small() -> BackboneConfig:
    # DINOv2 ViT-S/14-reg4 (384 wide); SigLIP has no ViT-S release, its smallest timm model is
    # B/16 (768 wide), used so that both streams have public weights. D_llm 896 = Qwen2-0.5B.
    return BackboneConfig(
        siglip=EncoderConfig("vit_base_patch16_siglip_224", SIGLIP_MEAN, SIGLIP_STD),
        dinov2=EncoderConfig("vit_small_patch14_reg4_dinov2.lvd142m", IMAGENET_MEAN, IMAGENET_STD),
        image_size=224,
        num_agg_tokens=32,
        llm_dim=896,
    )


def _full() -> BackboneConfig:
    return BackboneConfig(
        siglip=EncoderConfig("vit_so400m_patch14_siglip_224", SIGLIP_MEAN, SIGLIP_STD),
        dinov2=EncoderConfig("vit_large_patch14_reg4_dinov2.lvd142m", IMAGENET_MEAN, IMAGENET_STD),
        image_size=224,
        num_agg_tokens=64,
        llm_dim=4096,
    )


_PRESETS = {"tiny": _tiny, "small": _small, "full": _full}
PRESETS = tuple(_PRESETS)


def backbone_config(preset: str, **overrides: Any) -> BackboneConfig:
    """The named preset (`tiny`, `small`, `full`) with top-level fields replaced by `overrides`.

    >>> backbone_config("tiny", router="add").num_agg_tokens
    8
    """
    if preset not in _PRESETS:
        raise ValueError(f"unknown backbone preset {preset!r}; choose one of {PRESETS}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(BackboneConfig)})
    if unknown:
        raise ValueError(f"backbone_config({preset!r}): unknown BackboneConfig fields {unknown}")
    return dataclasses.replace(_PRESETS[preset](), **overrides)
