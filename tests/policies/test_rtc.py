"""Real-time chunking through LeRobot's ``RTCProcessor``: the new chunk starts on the actions in
flight, leftovers are ignored while RTC is off, and the call shape of LeRobot's RTC engine works."""

from __future__ import annotations

import pytest
import torch
from geovla_helpers import make_policy
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.rollout.inference.rtc import _normalize_prev_actions_length, supports_rtc_inference

from policies.modeling_geovla import GeoVLAPolicy

# The first `inference_delay` actions of a guided chunk stay this close (normalised units) to the
# leftovers; on a random tiny policy they were within 0.0065 (unguided: 2 to 3.5 apart).
FOLLOW_TOLERANCE = 0.02


def _current(batch: dict) -> dict:
    """The batch's current frame only (the policy keeps its own history)."""
    return {k: (v[:, -1] if k.startswith("observation.images.") or k == "observation.state" else v)
            for k, v in batch.items()}


def _chunk(policy: GeoVLAPolicy, batch: dict, noise: torch.Tensor, **rtc) -> torch.Tensor:
    policy.reset()
    return policy.predict_action_chunk(_current(batch), noise=noise, **rtc)


@pytest.mark.parametrize("delay", [1, 3])
def test_the_first_delay_actions_follow_the_leftovers(dataset_meta, batch, delay):
    policy = make_policy(dataset_meta, rtc_config=RTCConfig(execution_horizon=10))
    assert supports_rtc_inference(policy)
    B, H = batch["action"].shape[:2]
    noise = torch.randn(B, H, policy.config.max_action_dim, generator=torch.Generator().manual_seed(0))
    left_over = torch.randn(B, H - 2, policy.config.action_dim, generator=torch.Generator().manual_seed(1))
    free = _chunk(policy, batch, noise)
    guided = _chunk(policy, batch, noise, inference_delay=delay, prev_chunk_left_over=left_over)
    assert (guided[:, :delay] - left_over[:, :delay]).abs().max() < FOLLOW_TOLERANCE
    assert (free[:, :delay] - left_over[:, :delay]).abs().max() > 0.5
    # Past the delay the guidance fades: the blend stays nearer the leftovers than the free chunk.
    blend = slice(delay, H - 2)
    assert (guided[:, blend] - left_over[:, blend]).abs().mean() < (free[:, blend] - left_over[:, blend]).abs().mean()


def test_leftovers_are_ignored_without_rtc(dataset_meta, batch):
    B, H = batch["action"].shape[:2]
    noise = torch.randn(B, H, 8, generator=torch.Generator().manual_seed(0))
    left_over = torch.randn(H, 4)
    for config in (None, RTCConfig(enabled=False)):
        policy = make_policy(dataset_meta, rtc_config=config)
        free = _chunk(policy, batch, noise)
        assert torch.equal(_chunk(policy, batch, noise, inference_delay=2, prev_chunk_left_over=left_over), free)


def test_lerobot_rtc_engine_call_shape(dataset_meta, batch):
    """As ``lerobot-rollout --inference.type=rtc`` calls it: one robot, an unbatched ``[T, A]``
    leftover padded to the execution horizon with zeros, no ``execution_horizon`` argument."""
    policy = make_policy(dataset_meta, rtc_config=RTCConfig(execution_horizon=8))
    one = {k: v[:1] for k, v in _current(batch).items() if isinstance(v, (torch.Tensor, list))}
    left_over = _normalize_prev_actions_length(torch.randn(5, 4), target_steps=8)
    policy.reset()
    chunk = policy.predict_action_chunk(one, inference_delay=2, prev_chunk_left_over=left_over)
    assert chunk.shape == (1, policy.config.chunk_size, 4)
    assert (chunk[0, :2] - left_over[:2]).abs().max() < FOLLOW_TOLERANCE


def test_bad_leftovers_are_named(dataset_meta, batch):
    policy = make_policy(dataset_meta, rtc_config=RTCConfig())
    current = _current(batch)
    with pytest.raises(ValueError, match=r"prev_chunk_left_over must be \[T, 4\].*got \(5, 3\)"):
        policy.predict_action_chunk(current, inference_delay=1, prev_chunk_left_over=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        policy.predict_action_chunk(current, inference_delay=1, prev_chunk_left_over=torch.full((5, 4), float("nan")))
    with pytest.raises(ValueError, match="inference_delay must be >= 0"):
        policy.predict_action_chunk(current, inference_delay=-1, prev_chunk_left_over=torch.zeros(5, 4))


def test_rtc_config_is_saved_with_the_policy(dataset_meta, tmp_path):
    policy = make_policy(dataset_meta, rtc_config=RTCConfig(execution_horizon=7, max_guidance_weight=5.0))
    policy.save_pretrained(tmp_path / "policy")
    loaded = GeoVLAPolicy.from_pretrained(tmp_path / "policy")
    assert loaded.config.rtc_config == policy.config.rtc_config
    assert loaded.rtc_processor is not None and loaded.rtc_processor.rtc_config.execution_horizon == 7
