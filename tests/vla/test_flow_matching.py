"""Flow matching: time law, path, embedding, masked loss, Euler sampler, and a toy training run."""

import math

import pytest
import torch

from vla.action_model import DeepFusionActionModel
from vla.config import deep_fusion_preset
from vla.flow_matching import (
    euler_sample, interpolate, masked_velocity_loss, sample_time, sinusoidal_time_embedding,
)


def test_sample_time_follows_scaled_beta():
    t = sample_time(200_000, alpha=1.5, generator=torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0.001 and float(t.max()) <= 1.0
    # Beta(1.5, 1): mean 0.6, P(x <= 0.5) = 0.5 ** 1.5.
    assert abs(float(t.mean()) - (0.6 * 0.999 + 0.001)) < 3e-3
    assert abs(float((t <= 0.5 * 0.999 + 0.001).float().mean()) - 0.5**1.5) < 3e-3
    with pytest.raises(ValueError, match="alpha"):
        sample_time(2, alpha=0.0)


def test_interpolate_endpoints_and_velocity():
    actions, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    x1, target = interpolate(actions, noise, torch.ones(2))
    x0, _ = interpolate(actions, noise, torch.zeros(2))
    torch.testing.assert_close(x1, noise)
    torch.testing.assert_close(x0, actions)
    torch.testing.assert_close(target, noise - actions)
    t, h = torch.full((2,), 0.3), 1e-3
    finite_difference = (interpolate(actions, noise, t + h)[0] - interpolate(actions, noise, t)[0]) / h
    torch.testing.assert_close(finite_difference, target, atol=1e-3, rtol=1e-3)


def test_sinusoidal_time_embedding_periods():
    width, min_period, max_period = 16, 4e-3, 4.0
    quarter_fast = torch.tensor([min_period / 4])
    emb = sinusoidal_time_embedding(quarter_fast, width, min_period, max_period)
    assert emb.shape == (1, width)
    assert math.isclose(float(emb[0, 0]), 1.0, abs_tol=1e-6)  # sin at a quarter of the shortest period
    t = torch.tensor([0.37])
    emb = sinusoidal_time_embedding(t, width, min_period, max_period)
    slowest = 2 * math.pi * 0.37 / max_period
    assert math.isclose(float(emb[0, width // 2 - 1]), math.sin(slowest), abs_tol=1e-6)
    assert math.isclose(float(emb[0, -1]), math.cos(slowest), abs_tol=1e-6)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_time_embedding(t, 7)


def test_masked_loss_ignores_padded_steps_and_dims():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    is_pad = torch.tensor([[False, False, True, True], [False, False, False, False]])
    loss, per_sample = masked_velocity_loss(pred, target, is_pad, action_dim=3)
    corrupted = pred.clone()
    corrupted[..., 3:] = 1e3
    corrupted[0, 2:] = 1e3
    loss2, _ = masked_velocity_loss(corrupted, target, is_pad, action_dim=3)
    torch.testing.assert_close(loss, loss2)
    sq = (pred - target)[..., :3].square()
    expected = (sq[0, :2].sum() + sq[1].sum()) / (2 * 3 + 4 * 3)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(per_sample[0], sq[0, :2].mean())


def test_euler_steps_and_exactness_on_straight_paths():
    actions, noise = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    times = []

    def velocity(x, t):
        times.append(float(t[0]))
        return noise - actions  # the straight path's constant velocity

    out = euler_sample(velocity, noise, num_steps=4)
    assert times == [1.0, 0.75, 0.5, 0.25]
    torch.testing.assert_close(out, actions, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="num_steps"):
        euler_sample(velocity, noise, 0)


def test_tiny_model_learns_a_conditional_toy_task():
    """Actions are a fixed function of one instruction character; flow matching must learn it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster than two contended ones
    try:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        config = deep_fusion_preset("tiny", action_horizon=4, max_action_dim=3, max_state_dim=None)
        model = DeepFusionActionModel(config)
        targets = torch.rand(4, 4, 2, generator=generator) * 2 - 1
        enc = model.tokenizer(["pick a", "pick b", "pick c", "pick d"], return_tensors="pt")
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        losses = []
        for _ in range(250):
            label = torch.randint(0, 4, (16,), generator=generator)
            prefix = model.embed_prefix(enc["input_ids"][label], enc["attention_mask"][label])
            loss = model.compute_loss(prefix, targets[label], generator=generator)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        prefix = model.embed_prefix(enc["input_ids"], enc["attention_mask"])
        sampled = model.sample_actions(prefix, generator=generator, action_dim=2)
    finally:
        torch.set_num_threads(threads)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.3 * first, (first, last)
    error = (sampled - targets).abs().mean().item()
    unconditional = (targets.mean(dim=0, keepdim=True) - targets).abs().mean().item()
    assert error < 0.2 and error < 0.4 * unconditional, (error, unconditional)
