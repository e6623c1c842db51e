"""Inference with bfloat16 weights (``policy.to(torch.bfloat16)``): the model casts its inputs, keeps
voxel geometry and the flow integration in float32, and predicts the float32 chunk within a
stated tolerance."""

from __future__ import annotations

import copy

import pytest
import torch
from geovla_helpers import make_policy

# Largest bfloat16-vs-float32 chunk difference as a fraction of the chunk's largest entry.
TOLERANCE = 0.02


@pytest.mark.parametrize("spatial_tokens", ["patch", "voxel"])
def test_bfloat16_weights_predict_the_float32_chunk_within_tolerance(dataset_meta, batch, spatial_tokens):
    policy = make_policy(dataset_meta, spatial_tokens=spatial_tokens, voxel_target=64).eval()
    with torch.no_grad():  # away from the near-identity init, so that the observations matter
        generator = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    config = policy.config
    noise = torch.randn(1, config.chunk_size, config.max_action_dim, generator=torch.Generator().manual_seed(0))
    noise = noise.expand(batch["action"].shape[0], -1, -1)
    reference = policy.predict_action_chunk(batch, noise=noise)

    half = copy.deepcopy(policy).to(torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    chunk = half.predict_action_chunk(batch, noise=noise)

    assert chunk.dtype == torch.float32 and chunk.shape == reference.shape
    error = (chunk - reference).abs().max()
    assert 0 < error < TOLERANCE * reference.abs().max()
    # What the observations change in the chunk (same noise) survives the rounding.
    by_observation = lambda c: (c - c.mean(dim=0)).flatten()  # noqa: E731
    correlation = torch.corrcoef(torch.stack([by_observation(chunk), by_observation(reference)]))[0, 1]
    assert correlation > 0.9
