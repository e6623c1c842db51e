"""The built-in task and MetaWorld as LeRobot's ``--env.type=geovla_tabletop`` / ``geovla_metaworld``:
the configs' features, and what a policy receives from LeRobot's own rollout loop (cameras, state,
the instruction, depth)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from lerobot.configs.types import FeatureType
from lerobot.envs.configs import EnvConfig
from lerobot.envs.utils import env_to_policy_features
from lerobot.processor import PolicyProcessorPipeline
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.scripts.lerobot_eval import rollout
from torch import nn

import lerobot_policy_geovla  # noqa: F401  (registers the env configs as the plugin does)
from envs.lerobot_env import MetaWorldEnvConfig, TabletopEnvConfig

# env type -> (a task, two of its cameras)
ENVS = {"geovla_tabletop": ("reach", ["front", "wrist"]), "geovla_metaworld": ("pick-place", ["corner2", "gripperPOV"])}


class RecordingPolicy(nn.Module):
    """Records each batch ``select_action`` gets and moves nowhere (a zero action)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.batches.clear()

    def select_action(self, batch: dict[str, Any]) -> torch.Tensor:
        self.batches.append(batch)
        return torch.zeros(len(batch["task"]), 4)


def test_the_configs_are_registered_with_lerobot():
    config = EnvConfig.get_choice_class("geovla_tabletop")(task="pick", image_size=32, cameras=["front", "wrist"])
    features = env_to_policy_features(config)
    assert features["observation.images.front"].shape == (3, 32, 32)
    assert features["observation.state"].type is FeatureType.STATE and features["action"].shape == (4,)
    assert set(features) == {"observation.images.front", "observation.images.wrist", "observation.state", "action"}
    assert config.fps == 20 and config.gym_kwargs["max_episode_steps"] == 80
    config = EnvConfig.get_choice_class("geovla_metaworld")(task="peg-insert-side", image_size=48)
    assert set(env_to_policy_features(config)) == {"observation.images.corner2", "observation.images.topview",
                                                   "observation.images.gripperPOV", "observation.state", "action"}
    assert config.fps == 80 and config.gym_kwargs["max_episode_steps"] == 500
    assert MetaWorldEnvConfig(episode_length=150).gym_kwargs["episode_steps"] == 150


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="--env.task must be one of"):
        TabletopEnvConfig(task="stack")
    with pytest.raises(ValueError, match="--env.cameras"):
        TabletopEnvConfig(cameras=["top"])
    with pytest.raises(ValueError, match="--env.task: unknown MetaWorld task 'pick-plate'"):
        MetaWorldEnvConfig(task="pick-plate")
    with pytest.raises(ValueError, match="--env.cameras must be a non-empty subset of .*'corner2'"):
        MetaWorldEnvConfig(cameras=["front"])
    with pytest.raises(ValueError, match="--env.episode_length must be >= 1, got 0"):
        MetaWorldEnvConfig(episode_length=0)


@pytest.mark.parametrize("env_type", list(ENVS))
@pytest.mark.parametrize("geometry", [False, True])
def test_lerobot_rollout_gives_the_policy_cameras_state_instruction_and_depth(env_type, geometry):
    task, cameras = ENVS[env_type]
    config = EnvConfig.get_choice_class(env_type)(task=task, image_size=32, cameras=cameras, geometry=geometry,
                                                  episode_length=3)
    env = config.create_envs(n_envs=2)[env_type][0]
    identity = PolicyProcessorPipeline(steps=[])
    action_identity = PolicyProcessorPipeline(steps=[], to_transition=policy_action_to_transition,
                                              to_output=transition_to_policy_action)
    policy = RecordingPolicy()
    try:
        rollout(env, policy, identity, identity, identity, action_identity, seeds=[7, 8])
        first = policy.batches[0]
        # The same seeds through the env alone give the observations the policy must have seen.
        observation, _ = env.reset(seed=[7, 8])
        instructions = list(env.call("task_description"))
    finally:
        env.close()
    assert len(policy.batches) == 3 and first["task"] == instructions and all(instructions)
    for camera in cameras:
        image = (first[f"observation.images.{camera}"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        assert torch.equal(image, torch.from_numpy(observation["pixels"][camera]))
    torch.testing.assert_close(first["observation.state"], torch.from_numpy(observation["agent_pos"]))
    depth_keys = [k for k in first if k.startswith(("observation.depth.", "observation.intrinsics."))]
    if not geometry:
        assert depth_keys == []
        return
    for camera in cameras:
        depth = first[f"observation.depth.{camera}"]
        assert depth.shape == (2, 32, 32) and depth.dtype == torch.float32
        np.testing.assert_array_equal(depth.numpy(), observation[f"depth.{camera}"])
        assert first[f"observation.extrinsics.{camera}"].shape == (2, 3, 4)
        assert first[f"observation.intrinsics.{camera}"].shape == (2, 3, 3)
