"""``DelayedChunkExecutor``: which chunk and index each step executes under an inference delay,
what real-time chunking is told, and ``studies/eval_rtc.py`` end to end on a random policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from geovla_helpers import load_script, make_policy
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from test_eval_flow_steps_bench import _saved_random_policy
from test_geovla_select_action import _frame, _policy

from policies.delayed_chunks import DelayedChunkExecutor, action_changes
from policies.intervals import wilson_interval


def _run(executor: DelayedChunkExecutor, frame: dict, steps: int) -> tuple[list[int], list[bool]]:
    actions, switched = [], []
    for _ in range(steps):
        actions.append(int(executor.act(frame)[0, 0]))
        switched.append(executor.switched)
    return actions, switched


def test_a_chunk_takes_over_delay_steps_after_its_observation(dataset_meta, batch):
    """Chunk entries are ``100 * call + index``: with delay 2 and 5 steps a chunk, call 2 (from
    the observation of step 5) runs from step 7 at its index 2."""
    policy, recorder = _policy(dataset_meta)
    actions, switched = _run(DelayedChunkExecutor(policy, delay=2), _frame(batch, 0), 14)
    assert actions == [100, 101, 102, 103, 104, 105, 106, 202, 203, 204, 205, 206, 302, 303]
    assert [step for step, s in enumerate(switched) if s] == [7, 12]
    assert len(recorder.images) == 3  # requests at steps 0, 5 and 10


def test_without_delay_it_executes_what_select_action_does(dataset_meta, batch):
    policy, recorder = _policy(dataset_meta)
    executed, _ = _run(DelayedChunkExecutor(policy, delay=0), _frame(batch, 0), 12)
    policy.reset()
    queued = [int(policy.select_action(_frame(batch, 0))[0, 0]) - 300 for _ in range(12)]  # calls 4 to 6
    assert executed == queued and len(recorder.images) == 6


def test_rtc_is_given_the_actions_in_flight(dataset_meta, batch):
    policy, _ = _policy(dataset_meta, rtc_config=RTCConfig())
    calls: list[dict[str, Any]] = []
    predict = policy.predict_action_chunk

    def recording(frame: dict, noise: Any = None, **rtc: Any) -> torch.Tensor:
        calls.append(rtc)
        return predict(frame, noise=noise, **rtc)

    policy.predict_action_chunk = recording
    _run(DelayedChunkExecutor(policy, delay=3, rtc=True), _frame(batch, 0), 6)
    assert calls[0] == {} and calls[1]["inference_delay"] == 3
    assert calls[1]["prev_chunk_left_over"][0, :, 0].tolist() == [105, 106, 107, 108, 109]


def test_impossible_schedules_are_refused(dataset_meta):
    with pytest.raises(ValueError, match="execute \\+ delay <= chunk_size"):
        DelayedChunkExecutor(make_policy(dataset_meta), delay=6)
    with pytest.raises(ValueError, match="rtc_config enabled"):
        DelayedChunkExecutor(make_policy(dataset_meta), delay=2, rtc=True)


def test_action_changes_split_at_chunk_boundaries():
    actions = [torch.tensor([0.0, 0.0]).numpy(), torch.tensor([3.0, 4.0]).numpy(), torch.tensor([3.0, 5.0]).numpy()]
    assert action_changes(actions, [False, True, False]) == {"boundary": [5.0], "within": [1.0]}


def test_wilson_interval():
    low, high = wilson_interval(84, 100)
    assert low == pytest.approx(0.7558, abs=1e-4) and high == pytest.approx(0.8990, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_eval_rtc_script(tmp_path):
    policy_dir = _saved_random_policy(tmp_path / "policy")
    results = load_script("studies/eval_rtc").main([
        "--policy", str(policy_dir), "--delays", "0", "2", "--episodes", "2", "--max-steps", "12",
        "--batch-size", "2", "--out", str(tmp_path / "rtc"),
    ])
    assert json.loads((tmp_path / "rtc" / "results.json").read_text())["runs"] == json.loads(json.dumps(results["runs"]))
    assert [(r["delay"], r["rtc"]) for r in results["runs"]] == [(0, False), (0, True), (2, False), (2, True)]
    for run in results["runs"]:
        low, high = run["success_interval"]
        # 12 steps, 2 envs: chunks take over at steps 5 and 10 without delay, at step 7 with delay 2
        assert low <= run["success_rate"] <= high and run["boundaries"] == {0: 4, 2: 2}[run["delay"]]
        assert run["boundary_change"] > 0 and run["within_chunk_change"] > 0
    assert (tmp_path / "rtc" / "rtc.png").stat().st_size > 0
