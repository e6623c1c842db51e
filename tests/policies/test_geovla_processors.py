"""Pre/post processors: normalise → unnormalise round trip; guarded stats for constant channels."""

from __future__ import annotations

import pytest
import torch
from geovla_helpers import make_config

from policies.processor_geovla import MIN_STD, guard_stats, make_geovla_pre_post_processors


def test_action_round_trips_through_normalisation(dataset_meta, raw_batch):
    config = make_config(dataset_meta)
    pre, post = make_geovla_pre_post_processors(config, dataset_stats=dataset_meta.stats)
    raw = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in raw_batch.items()}
    normalised = pre(raw)["action"]
    stats = guard_stats(dataset_meta.stats, {"action"})["action"]
    expected = ((raw_batch["action"] - stats["mean"]) / stats["std"]).float()
    torch.testing.assert_close(normalised, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(normalised, raw_batch["action"])
    torch.testing.assert_close(post(normalised), raw_batch["action"], rtol=1e-5, atol=1e-5)
    assert pre(dict(raw_batch))["observation.language.tokens"].shape == (4, config.tokenizer_max_length)


def test_constant_channel_does_not_explode(dataset_meta):
    config = make_config(dataset_meta)
    stats = {
        "action": {"mean": torch.tensor([0.0, 0.0, 0.0, -1.0]), "std": torch.tensor([0.5, 0.5, 0.5, 0.0]),
                   "min": torch.tensor([-1.0, -1.0, -1.0, -1.0]), "max": torch.tensor([1.0, 1.0, 1.0, -1.0])},
    }
    guarded = guard_stats(stats, {"action"})["action"]
    assert float(guarded["std"][3]) == pytest.approx(MIN_STD) and float(guarded["std"][0]) == 0.5
    assert float(guarded["max"][3] - guarded["min"][3]) > 0
    assert float(stats["action"]["std"][3]) == 0.0  # the caller's stats are not modified

    _, post = make_geovla_pre_post_processors(config, dataset_stats=stats)
    pre, _ = make_geovla_pre_post_processors(config, dataset_stats={**dataset_meta.stats, **stats})
    sample = {"action": torch.tensor([[0.1, 0.0, 0.0, -0.999]]), "task": "touch the red ball",
              **{k: torch.rand(1, 3, 32, 32) for k in config.camera_keys},
              "observation.state": torch.zeros(1, 4)}
    normalised = pre(sample)["action"]
    assert torch.isfinite(normalised).all()
    assert abs(float(normalised[0, 3]) - 0.1) < 1e-4  # 0.001 off the mean / 0.01
    torch.testing.assert_close(post(normalised), sample["action"])
