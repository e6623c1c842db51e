"""Builders of tiny 32-px geovla configs and policies on a recorded dataset (used by the tests here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from lerobot.configs.types import FeatureType
from lerobot.datasets import LeRobotDatasetMetadata
from lerobot.utils.feature_utils import dataset_to_policy_features

from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 32
CAMERAS = ("front", "left", "right", "wrist")


def make_config(meta: LeRobotDatasetMetadata, **overrides: Any) -> GeoVLAConfig:
    """A tiny 32-px config whose features are the dataset's (geometry keys dropped by the policy)."""
    features = dataset_to_policy_features(meta.features)
    return GeoVLAConfig(
        device="cpu",
        image_size=IMAGE_SIZE,
        push_to_hub=False,
        input_features={k: f for k, f in features.items() if f.type is not FeatureType.ACTION},
        output_features={k: f for k, f in features.items() if f.type is FeatureType.ACTION},
        **overrides,
    )


def make_policy(meta: LeRobotDatasetMetadata, seed: int = 0, **overrides: Any) -> GeoVLAPolicy:
    """A tiny policy with its processors (dataset stats) attached."""
    torch.manual_seed(seed)
    config = make_config(meta, **overrides)
    policy = GeoVLAPolicy(config)
    policy.attach_processors(*make_geovla_pre_post_processors(config, dataset_stats=meta.stats))
    return policy


def load_script(path: str) -> ModuleType:
    """``<path>.py`` of the repository (e.g. ``"scripts/eval_policy"``) as a module; its folder goes
    on the path, since scripts import their neighbours."""
    file = ROOT / f"{path}.py"
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    spec = importlib.util.spec_from_file_location(f"{file.stem}_script", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
