"""Shared fixtures of the policy tests: a small recorded dataset and tiny policies built on it.

The dataset (3 reach episodes, 32-px images, geometry ground truth) is recorded once per session;
policies run at image_size 32 so that everything stays fast on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from lerobot.datasets import LeRobotDatasetMetadata

import envs
from envs.recording import open_dataset, record_demos
from geovla_helpers import IMAGE_SIZE, make_config
from policies.processor_geovla import make_geovla_pre_post_processors

# The test machine's 2 cores are shared: one intra-op thread avoids the spin-wait contention
# that makes two-thread CPU kernels many times slower under load.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("policy_data") / "reach32"
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=IMAGE_SIZE, geometry=True)
    record_demos(env, envs.make_expert(env), root, num_episodes=3, seed=0, progress=False)
    env.close()
    return root


@pytest.fixture(scope="session")
def dataset_meta(dataset_root: Path) -> LeRobotDatasetMetadata:
    return LeRobotDatasetMetadata(f"local/{dataset_root.name}", root=dataset_root)


@pytest.fixture(scope="session")
def raw_batch(dataset_root: Path, dataset_meta: LeRobotDatasetMetadata) -> dict[str, Any]:
    """4 samples with a 2-step observation history and 10-step action chunks (not normalised)."""
    config = make_config(dataset_meta)
    fps = dataset_meta.fps
    delta = {k: [i / fps for i in config.observation_delta_indices]
             for k in dataset_meta.features if k.startswith("observation.")}
    delta["action"] = [i / fps for i in config.action_delta_indices]
    dataset = open_dataset(dataset_root, delta_timestamps=delta)
    samples = [dataset[i] for i in (0, 5, len(dataset) // 2, len(dataset) - 3)]
    return torch.utils.data.default_collate(samples)


@pytest.fixture()
def batch(raw_batch: dict[str, Any], dataset_meta: LeRobotDatasetMetadata) -> dict[str, Any]:
    """The raw batch through a tiny policy's preprocessor (a fresh copy per test)."""
    preprocessor, _ = make_geovla_pre_post_processors(make_config(dataset_meta), dataset_stats=dataset_meta.stats)
    return preprocessor({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in raw_batch.items()})
