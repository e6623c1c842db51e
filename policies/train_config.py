"""What a training run trains on and how (``TrainConfig``), read from YAML and ``key=value`` overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

import yaml


@dataclass
class TrainConfig:
    """What to train on and how; ``policy`` holds ``GeoVLAConfig`` fields to override.

    Args:
        dataset_root: local LeRobotDataset directory.
        output_dir: checkpoints, metrics (``metrics.jsonl``, TensorBoard) and the final policy.
        dataset_repo_id: repo id of the dataset (default ``local/<root name>``).
        episodes: dataset episodes to train on (None: all).
        steps: optimiser steps.
        batch_size: samples per micro-batch and process; an optimiser step trains on
            ``batch_size × grad_accum × num_processes`` samples.
        grad_accum: micro-batches accumulated per optimiser step.
        mixed_precision: ``no``, ``bf16``, ``fp16`` or ``auto`` (``bf16`` on a GPU that supports
            it or a CPU with AVX512-BF16/AMX, else ``no``); None: what ``accelerate launch`` was
            given (``--mixed_precision`` or its config file), ``no`` without it.
        save_every: checkpoint period in steps (the last step is always saved).
        log_every: metrics period in steps.
        eval_every: evaluation-rollout period in steps (0: never).
        eval_env / eval_task / eval_episodes: what the periodic evaluation rolls out
            (``builtin``/``pusht``/``aloha``; the task family; episodes from seed 100000).
        seed: seeds the model initialisation, the data order and the flow-matching noise.
        num_workers: DataLoader workers.
        cache_frames: decode the dataset into memory once (``FrameCache``) instead of decoding every
            sample's history and chunk again; turn off for datasets larger than memory.
        policy: overrides of ``GeoVLAConfig`` fields, e.g. ``{"preset": "tiny", "chunk_size": 10}``.
    """

    dataset_root: str
    output_dir: str
    dataset_repo_id: str | None = None
    episodes: list[int] | None = None
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    mixed_precision: str | None = None
    save_every: int = 500
    log_every: int = 10
    eval_every: int = 0
    eval_env: str = "builtin"
    eval_task: str | None = "reach"
    eval_episodes: int = 10
    seed: int = 0
    num_workers: int = 0
    cache_frames: bool = True
    policy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mixed_precision is False:  # YAML 1.1 reads a bare `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in (None, "no", "bf16", "fp16", "auto"):
            raise ValueError(f"mixed_precision must be no, bf16, fp16 or auto (or left unset), "
                             f"got {self.mixed_precision!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` (no dot) as the float it means; YAML 1.1 reads a string."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def read_yaml(text: str) -> Any:
    """Parse a training config (or one override value) as safe YAML, exponent floats included."""
    return yaml.load(text, Loader=_YamlLoader)
