"""peft LoRA on the decoder layers of the LLM and the action expert, and merging it."""

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from vla.config import LoRASettings


LLM_MODULES = ("fusion.llm.", "lm_head.")
EXPERT_MODULES = ("fusion.expert.",)


def lora_target_pattern(settings: LoRASettings) -> str:
    """Regex (peft full-match) over module names, e.g. ``fusion.llm.layers.3.self_attn.q_proj``."""
    parts = [name for name, on in (("llm", settings.on_llm), ("expert", settings.on_expert)) if on]
    names = "|".join(settings.target_modules)
    return rf"fusion\.({'|'.join(parts)})\.layers\.\d+\.(self_attn|mlp)\.({names})"


def apply_lora(model: nn.Module, settings: LoRASettings) -> nn.Module:
    """Inject LoRA adapters in place into a :class:`vla.action_model.DeepFusionActionModel`.

    Adapters always train. With ``freeze_base`` the adapted parts' own weights freeze (the LLM
    with its embeddings and LM head, and/or the expert); everything else, such as the
    time/state/action projections, keeps training.
    """
    peft_config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_target_pattern(settings),
    )
    inject_adapter_in_model(peft_config, model)
    frozen = (LLM_MODULES if settings.on_llm else ()) + (EXPERT_MODULES if settings.on_expert else ())
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name or not (settings.freeze_base and name.startswith(frozen))
    return model


def set_lora_merged(model: nn.Module, merged: bool) -> int:
    """Merge every LoRA adapter into its base weight, or undo the merge. Returns layers changed."""
    changed = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer) or module.merged == merged:
            continue
        if merged:
            module.merge()
        else:
            module.unmerge()
        changed += 1
    return changed
