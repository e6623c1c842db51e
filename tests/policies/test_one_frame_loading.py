"""A one-frame policy (``n_obs_steps=1``) asks LeRobot's loader for no observation history, so
each sample's row is read once; its training loss equals the loss on samples loaded with a
one-step history ``[0]`` for every observation key (the slow path it replaces)."""

from __future__ import annotations

import torch

from envs.recording import open_dataset
from geovla_helpers import make_policy
from policies.training import delta_indices


def _batch(root, deltas: dict[str, list[int]], fps: int) -> dict:
    dataset = open_dataset(root, delta_timestamps={k: [d / fps for d in v] for k, v in deltas.items()})
    samples = [dataset[i] for i in (0, 7, len(dataset) // 2, len(dataset) - 4)]
    return torch.utils.data.default_collate(samples)


def _loss(policy, batch: dict) -> torch.Tensor:
    torch.manual_seed(0)
    loss, _ = policy.forward(policy.processors[0](batch))
    return loss


def test_one_frame_loss_equals_the_one_step_history_loss(dataset_root, dataset_meta):
    policy = make_policy(dataset_meta, n_obs_steps=1, spatial_tokens="voxel", geometry_loss_weight=0.1)
    assert policy.config.observation_delta_indices is None
    deltas = delta_indices(policy.config, dataset_meta)
    assert list(deltas) == ["action"]
    observation_keys = [k for k in dataset_meta.features if k.startswith("observation.")]
    assert any(k.startswith("observation.depth.") for k in observation_keys)
    one_step = {**{k: [0] for k in observation_keys}, **deltas}

    fps = dataset_meta.fps
    rows, history = _batch(dataset_root, deltas, fps), _batch(dataset_root, one_step, fps)
    assert history["observation.images.front"].shape[1] == 1 and rows["observation.images.front"].dim() == 4
    policy.eval()  # no dropout: the two losses must agree exactly up to float rounding
    with torch.no_grad():
        assert torch.allclose(_loss(policy, rows), _loss(policy, history), rtol=1e-5, atol=1e-6)
