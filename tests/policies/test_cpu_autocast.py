"""Training under a CPU bfloat16 autocast: attention runs in float32 (``vla.cpu_autocast``),
everything else autocast allows in bfloat16, and the loss and gradients stay within a stated
tolerance of float32 training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from geovla_helpers import make_policy
from timm.layers import Attention as TimmAttention
from torch.utils._python_dispatch import TorchDispatchMode

from geometry.layers.attention import Attention
from vla.cpu_autocast import float32_attention
from policies.train_config import TrainConfig

# Largest relative difference of the bfloat16-autocast training loss from the float32 one.
LOSS_TOLERANCE = 0.02


class _AttentionDtypes(TorchDispatchMode, list):
    """Records the query dtype of every attention kernel torch dispatches."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.__name__:
            self.append(args[0].dtype)
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        super().__enter__()
        return self


def _qkv(seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 4, 37, 16, generator=generator).bfloat16() for _ in range(3))


def test_attention_runs_in_float32_under_cpu_bfloat16_autocast():
    q, k, v = _qkv()
    in_float32 = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).bfloat16()
    in_bfloat16 = F.scaled_dot_product_attention(q, k, v)
    assert not torch.equal(in_float32, in_bfloat16)  # the two precisions are told apart
    with torch.autocast("cpu", dtype=torch.bfloat16), float32_attention():
        out = F.scaled_dot_product_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, in_float32)


def test_float32_attention_changes_nothing_without_autocast():
    q, k, v = _qkv(1)
    with float32_attention():
        out = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("make", [lambda: Attention(64, 4), lambda: TimmAttention(64, 4)],
                         ids=["geometry", "timm"])
def test_modules_attend_in_float32_and_backpropagate(make):
    """The project's attention and timm's (the ViT encoders) both go through the float32 path;
    their outputs and input gradients match a float32 attention inside the same autocast."""
    torch.manual_seed(0)
    module = make()
    x = torch.randn(2, 37, 64, requires_grad=True)
    with _AttentionDtypes() as seen, torch.autocast("cpu", dtype=torch.bfloat16), float32_attention():
        module(x).float().sum().backward()
    assert seen and set(seen) == {torch.float32}  # forward and backward kernels
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("spatial_tokens", ["patch", "voxel"])
def test_bfloat16_autocast_training_loss_matches_float32(dataset_meta, batch, spatial_tokens):
    """The voxel tokens' unprojection and the geometry losses stay float32 inside the autocast."""
    policy = make_policy(dataset_meta, geometry_loss_weight=0.1, spatial_tokens=spatial_tokens, voxel_target=64)
    policy.train()
    torch.manual_seed(0)
    reference, _ = policy.forward(batch)
    reference.backward()
    reference_grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    policy.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, info = policy.forward(batch)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference.item()) <= LOSS_TOLERANCE * abs(reference.item())
    assert "geometry_loss" in info
    grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert grads.keys() == reference_grads.keys()
    flat, flat_reference = (torch.cat([g.flatten() for g in d.values()]) for d in (grads, reference_grads))
    assert torch.isfinite(flat).all()
    assert torch.nn.functional.cosine_similarity(flat, flat_reference, dim=0) > 0.95


def test_gradient_checkpointing_recomputes_attention_in_float32(dataset_meta, batch):
    """The ViT blocks' recomputation in backward attends in float32 as their forward did
    (otherwise the recomputed activations' dtypes differ from the saved ones and backward fails)."""
    policy = make_policy(dataset_meta)
    policy.train()
    for encoder in (policy.model.backbone.siglip, policy.model.backbone.dinov2):
        encoder.gradient_checkpointing = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = policy.forward(batch)
    loss.backward()
    grads = [p.grad for p in policy.model.backbone.siglip.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_train_config_reads_a_yaml_no_as_no_mixed_precision():
    assert TrainConfig(dataset_root="d", output_dir="o", mixed_precision=False).mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision must be no, bf16, fp16 or auto.*'bf32'"):
        TrainConfig(dataset_root="d", output_dir="o", mixed_precision="bf32")


def test_auto_mixed_precision_takes_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    from policies import distributed

    cpu = torch.device("cpu")
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(distributed, "cpu_has_native_bfloat16", lambda native=native: native)
        assert distributed.resolve_mixed_precision("auto", cpu) == expected
    assert distributed.resolve_mixed_precision("fp16", cpu) == "fp16"
    assert distributed.resolve_mixed_precision(None, cpu) is None
    assert TrainConfig(dataset_root="d", output_dir="o", mixed_precision="auto").mixed_precision == "auto"
