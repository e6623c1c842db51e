"""Training behaviour of the tiny geovla policy: loss, gradients, batch immutability, geometry
losses, a real learning check, freezing."""

from __future__ import annotations

import math
from typing import Any

import torch
from geovla_helpers import make_policy


def _grad_norm(policy, fragment: str) -> float:
    grads = [p.grad for n, p in policy.named_parameters() if fragment in n and p.grad is not None]
    return sum(float(g.norm()) for g in grads)


def _snapshot(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def test_forward_backward_reaches_every_part_and_leaves_batch_intact(dataset_meta, batch):
    policy = make_policy(dataset_meta)
    policy.train()
    before = _snapshot(batch)
    loss, info = policy.forward(batch)
    assert math.isfinite(float(loss.detach()))
    assert set(info) >= {"loss", "flow_matching_loss", "geometry_loss"}
    assert all(math.isfinite(v) for v in info.values())
    loss.backward()
    for fragment in ("backbone.siglip.films", "backbone.dinov2.films", "spatial.projector",
                     "fusion.expert", "action_out_proj", "geometry.aggregator"):
        assert _grad_norm(policy, fragment) > 0, f"no gradient reaches {fragment}"
    assert set(batch) == set(before)
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(batch[key], value), f"forward modified batch[{key!r}]"
        else:
            assert batch[key] == value


def test_geometry_loss_only_with_ground_truth_and_weight(dataset_meta, batch):
    policy = make_policy(dataset_meta)
    _, with_truth = policy.forward(batch)
    assert "geometry_loss" in with_truth and any(k.startswith("geometry_") and k != "geometry_loss" for k in with_truth)
    assert with_truth["loss"] > with_truth["flow_matching_loss"]

    without_truth = {k: v for k, v in batch.items() if not k.startswith(("observation.depth.", "observation.intrinsics."))}
    torch.manual_seed(0)
    _, info = policy.forward(without_truth)
    assert not any(k.startswith("geometry") for k in info)

    unweighted = make_policy(dataset_meta, geometry_loss_weight=0.0)
    _, info = unweighted.forward(batch)
    assert not any(k.startswith("geometry") for k in info)
    assert info["loss"] == info["flow_matching_loss"]


def test_a_few_steps_on_one_batch_lower_the_loss(dataset_meta, batch):
    """Flow-matching loss is noisy (random time and noise); evaluate with fixed seeds."""
    policy = make_policy(dataset_meta, geometry_loss_weight=0.0)
    optimizer = torch.optim.AdamW(policy.get_optim_params(), lr=2e-3)

    def evaluate() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            return sum(float(policy.forward(batch)[0]) for _ in range(2)) / 2

    policy.train()
    start = evaluate()
    for step in range(15):
        torch.manual_seed(step)
        loss, _ = policy.forward(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = evaluate()
    print(f"fixed-batch loss {start:.3f} -> {end:.3f} after 15 AdamW steps")
    assert end < 0.7 * start


def test_freeze_vision_keeps_film_trainable(dataset_meta, batch):
    policy = make_policy(dataset_meta, freeze="vision")
    vit = [p for n, p in policy.named_parameters() if n.startswith("model.backbone.") and ".vit." in n]
    film = [p for n, p in policy.named_parameters() if ".films." in n]
    assert vit and film
    assert not any(p.requires_grad for p in vit)
    assert all(p.requires_grad for p in film)
    trainable = {id(p) for p in policy.get_optim_params()}
    assert not any(id(p) in trainable for p in vit)
    loss, _ = policy.forward(batch)
    loss.backward()
    assert all(p.grad is None for p in vit)
    assert _grad_norm(policy, ".films.") > 0
