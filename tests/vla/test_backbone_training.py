"""Gradients reach every part of the backbone; peft LoRA on the ViT linears wraps, trains and merges."""

import torch
from peft import LoraConfig, get_peft_model

from vla.backbone import VIT_LORA_TARGETS, FiLMDualBackbone, backbone_config

CFG = backbone_config("tiny")


def _batch():
    images = {"front": torch.rand(2, 3, 64, 64), "wrist": torch.rand(2, 3, 64, 64)}
    return images, torch.randn(2, CFG.llm_dim)


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(CFG).train()
    images, language = _batch()
    out = backbone(images, language)
    (out.tokens * torch.randn_like(out.tokens)).sum().backward()
    no_grad = [n for n, p in backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    names = [n for n, _ in backbone.named_parameters()]
    for part in ("films.0.scale.weight", "films.2.shift.bias", "aggregation.tokens", "projector.net.2.weight", "router.mlp.0.weight"):
        assert any(part in n for n in names), part


def test_lora_on_vit_linears_wraps_starts_exact_and_trains():
    torch.manual_seed(0)
    backbone = FiLMDualBackbone(CFG).eval()
    images, language = _batch()
    with torch.no_grad():
        base_tokens = backbone(images, language).tokens
    frozen_before = {n: p.detach().clone() for n, p in backbone.named_parameters()}

    model = get_peft_model(backbone, LoraConfig(r=4, lora_alpha=8, target_modules=VIT_LORA_TARGETS))
    wrapped = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A" in n})
    kept_blocks = 2 * (4 - 1)  # both ViTs, depth 4 with the last block pruned
    assert len(wrapped) == 4 * kept_blocks
    assert all(n.split(".")[-1] in ("qkv", "proj", "fc1", "fc2") and ".blocks." in n for n in wrapped)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    with torch.no_grad():
        torch.testing.assert_close(model(images, language).tokens, base_tokens)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    out = model(images, language)
    (out.tokens * torch.randn_like(out.tokens)).sum().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        trained_tokens = model(images, language).tokens
    assert (trained_tokens - base_tokens).abs().max() > 1e-4
    base_layer_weights = {n.replace(".base_layer", ""): p for n, p in model.get_base_model().named_parameters()}
    for name, before in frozen_before.items():
        assert torch.equal(base_layer_weights[name], before), f"{name} changed although it is frozen"

    merged = model.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(images, language).tokens, trained_tokens, rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    images, language = _batch()
    grads, mlp_calls = [], []
    for recompute in (False, True):
        torch.manual_seed(0)
        backbone = FiLMDualBackbone(backbone_config("tiny", gradient_checkpointing=recompute)).train()
        calls = []
        backbone.dinov2.vit.blocks[1].mlp.register_forward_hook(lambda *_: calls.append(1))
        out = backbone(images, language)
        torch.manual_seed(1)
        (out.tokens * torch.randn_like(out.tokens)).sum().backward()
        grads.append({n: p.grad for n, p in backbone.named_parameters()})
        mlp_calls.append(len(calls))
    assert mlp_calls == [1, 2], "with checkpointing the block must be recomputed in the backward pass"
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)
