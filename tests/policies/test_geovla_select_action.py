"""``select_action``: the action queue (one chunk per ``n_action_steps`` calls, in chunk order) and
the observation history the model sees (``n_obs_steps = 2``)."""

from __future__ import annotations

from typing import Any

import torch
from geovla_helpers import make_policy
from torch import Tensor


class SampleRecorder:
    """Stands in for ``model.sample_actions``: records the images it is given and returns
    chunks whose entries say which call and which step they are (``100 * call + step``)."""

    def __init__(self, action_dim: int, horizon: int) -> None:
        self.images: list[Tensor] = []
        self.action_dim, self.horizon = action_dim, horizon

    def __call__(self, images: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        self.images.append(images.clone())
        steps = torch.arange(self.horizon, dtype=torch.float32) + 100 * len(self.images)
        return steps[None, :, None].expand(images.shape[0], self.horizon, self.action_dim).clone()


def _frame(batch: dict[str, Any], sample: int) -> dict[str, Any]:
    """A single-frame observation (``[B=1, 3, H, W]`` per camera, current state) of one sample."""
    frame = {k: v[sample : sample + 1, -1] for k, v in batch.items() if k.startswith("observation.images.")}
    frame["observation.state"] = batch["observation.state"][sample : sample + 1, -1]
    for key in ("observation.language.tokens", "observation.language.attention_mask"):
        frame[key] = batch[key][sample : sample + 1]
    return frame


def _policy(dataset_meta, **overrides) -> tuple[Any, SampleRecorder]:
    policy = make_policy(dataset_meta, **overrides)
    recorder = SampleRecorder(policy.config.action_dim, policy.config.chunk_size)
    policy.model.sample_actions = recorder
    return policy, recorder


def test_queue_predicts_one_chunk_per_n_action_steps_in_order(dataset_meta, batch):
    policy, recorder = _policy(dataset_meta)
    n = policy.config.n_action_steps
    assert n == 5 and policy.config.chunk_size == 10
    actions = [policy.select_action(_frame(batch, 0)) for _ in range(2 * n + 1)]
    assert len(recorder.images) == 3  # calls 1, n + 1 and 2n + 1
    values = [float(a[0, 0]) for a in actions]
    assert values == [100 + i for i in range(n)] + [200 + i for i in range(n)] + [300]
    assert actions[0].shape == (1, policy.config.action_dim)

    policy.reset()
    assert not policy._action_queue and not policy._history
    first = policy.select_action(_frame(batch, 0))
    assert len(recorder.images) == 4 and float(first[0, 0]) == 400


def test_history_holds_previous_and_current_frame(dataset_meta, batch):
    policy, recorder = _policy(dataset_meta, n_action_steps=2)
    frames = [_frame(batch, i) for i in range(4)]
    image = lambda f: torch.stack([f[k] for k in policy.config.camera_keys], dim=1)  # [1, V, 3, H, W]  # noqa: E731

    policy.select_action(frames[0])
    policy.select_action(frames[1])  # from the queue, but the history advances
    policy.select_action(frames[2])
    assert len(recorder.images) == 2
    first, second = recorder.images
    assert first.shape[1] == 2
    assert torch.equal(first[:, 0], image(frames[0])) and torch.equal(first[:, 1], image(frames[0]))
    assert torch.equal(second[:, 0], image(frames[1])) and torch.equal(second[:, 1], image(frames[2]))

    policy.reset()
    policy.select_action(frames[3])
    assert torch.equal(recorder.images[-1][:, 0], image(frames[3]))
    assert torch.equal(recorder.images[-1][:, 1], image(frames[3]))


def test_a_policy_left_in_training_mode_predicts_in_eval_mode(dataset_meta, batch):
    policy, recorder = _policy(dataset_meta)
    modes: list[bool] = []
    recording = policy.model.sample_actions

    def sample(*args: Any, **kwargs: Any) -> Tensor:
        modes.append(any(m.training for m in policy.modules()))
        return recording(*args, **kwargs)

    policy.model.sample_actions = sample
    policy.train()
    policy.predict_action_chunk(_frame(batch, 0))
    policy.predict_action_chunk(_frame(batch, 0))  # already in eval mode: nothing to switch
    assert modes == [False, False] and not policy.training
