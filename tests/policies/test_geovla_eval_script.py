"""``scripts/eval_policy.py`` and ``policies.rollout``: results JSON, video, plot, batched
rollouts, and the swapped instruction (the policy is told about another object, and success is
measured against that object)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from geovla_helpers import load_script, make_policy

import envs
from policies.modeling_geovla import GeoVLAPolicy
from policies.rollout import camera_map, evaluate_policy, swap_target




@pytest.fixture(scope="module")
def saved_policy(dataset_meta, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("eval") / "policy"
    make_policy(dataset_meta).save_pretrained(directory)
    return directory


def test_script_writes_results_video_and_plot(saved_policy, tmp_path):
    out = tmp_path / "out"
    results = load_script("scripts/eval_policy").main([
        "--policy", str(saved_policy), "--env", "builtin", "--task", "reach", "--episodes", "2",
        "--max-steps", "6", "--videos", "1", "--out", str(out), "--batch-size", "2",
    ])
    written = json.loads((out / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    for key in ("success_rate", "mean_reward", "mean_max_reward", "mean_steps", "episodes", "seed", "env", "task"):
        assert key in written, key
    assert written["episodes"] == 2 and written["seed"] == 100_000 and written["seeds"] == [100_000, 100_001]
    assert 0.0 <= written["success_rate"] <= 1.0 and written["success_rate"] == np.mean(written["successes"])
    assert written["mean_reward"] == np.mean(written["rewards"])
    assert all(1 <= s <= 6 for s in written["steps"])
    assert written["instructions"] == written["original_instructions"]
    assert [Path(v).name for v in written["videos"]] == ["episode_000.mp4"]
    assert (out / "videos" / "episode_000.mp4").stat().st_size > 1000
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_runs_the_policy_with_bfloat16_weights(saved_policy, tmp_path):
    results = load_script("scripts/eval_policy").main([
        "--policy", str(saved_policy), "--env", "builtin", "--episodes", "1", "--max-steps", "3", "--videos", "0",
        "--out", str(tmp_path), "--dtype", "bfloat16",
    ])
    assert results["dtype"] == "bfloat16" and results["episodes"] == 1 and len(results["steps"]) == 1


def test_swapped_instruction_reaches_the_policy(saved_policy):
    policy = GeoVLAPolicy.from_pretrained(saved_policy)
    preprocessor, postprocessor = policy.processors
    seen: list[list[str]] = []

    def recording_preprocessor(batch):
        seen.append(list(batch["task"]))
        return preprocessor(batch)

    policy.processors = (recording_preprocessor, postprocessor)
    make_env = lambda: gym.make(envs.TABLETOP_ID, task="reach", image_size=32)  # noqa: E731
    policy.train()  # as in periodic evaluation during training
    results = evaluate_policy(policy, make_env, episodes=2, seed=7, swap_instruction=True, max_steps=3,
                              batch_size=2, progress=False)
    assert len(seen) == 3 and all(tasks == results["instructions"] for tasks in seen)  # one batched call per step
    assert policy.training and not policy._action_queue and not policy._history
    for instruction, original, target in zip(results["instructions"], results["original_instructions"],
                                              results["targets"]):
        assert instruction != original and instruction == f"touch the {target}"
        assert target not in original


class ActionRecorder(gym.Wrapper):
    """Keeps every action the env is stepped with."""

    def __init__(self, env: gym.Env, actions: list[np.ndarray]) -> None:
        super().__init__(env)
        self.actions = actions

    def step(self, action):
        self.actions.append(np.array(action))
        return self.env.step(action)


def test_evaluation_repeats_for_a_seed_whatever_the_global_random_state(saved_policy):
    policy = GeoVLAPolicy.from_pretrained(saved_policy)

    def actions_taken(global_seed: int, seed: int = 7) -> np.ndarray:
        taken: list[np.ndarray] = []
        make_env = lambda: ActionRecorder(gym.make(envs.TABLETOP_ID, task="reach", image_size=32), taken)  # noqa: E731
        torch.manual_seed(global_seed)
        evaluate_policy(policy, make_env, episodes=2, seed=seed, max_steps=6, batch_size=2, progress=False)
        after = torch.rand(1)
        torch.manual_seed(global_seed)
        assert torch.equal(after, torch.rand(1))  # the evaluation drew nothing from the global generator
        return np.stack(taken)

    first = actions_taken(global_seed=1)
    np.testing.assert_array_equal(actions_taken(global_seed=2), first)
    assert not np.array_equal(actions_taken(global_seed=1, seed=8), first)


def test_swap_moves_the_success_criterion_to_the_new_target():
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=32)
    expert = envs.make_expert(env)
    obs, info = env.reset(seed=3)
    original_target = env.unwrapped.target
    instruction = swap_target(env, seed=3)
    new_target = env.unwrapped.target
    assert new_target != original_target and new_target.name in instruction
    assert env.unwrapped.task_description == instruction
    done = False
    while not done:  # the scripted expert follows env.target, i.e. the swapped object
        obs, _, terminated, truncated, info = env.step(expert(obs))
        done = terminated or truncated
    assert info["is_success"] and info["target"] == new_target.name
    distance = np.linalg.norm(env.unwrapped.ee_position() - env.unwrapped.object_position(original_target))
    assert distance > 0.05  # it reached the other object, not the one first named
    env.close()


def test_camera_map():
    assert camera_map(["observation.images.front", "observation.images.wrist"], ["front", "left", "wrist"]) == {
        "front": "front", "wrist": "wrist"}
    assert camera_map(["observation.image"], ["top"]) == {"observation.image": "top"}
    with pytest.raises(ValueError, match=r"\['wrist'\] are not among"):
        camera_map(["observation.images.front", "observation.images.wrist"], ["front", "top"])
