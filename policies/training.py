"""Training loop of the geovla policy with ``accelerate``: checkpoints, exact resume, logging.

``scripts/train_policy.py`` is the command line; this module holds the loop so that tests can
call it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from lerobot.configs.types import FeatureType
from lerobot.datasets import LeRobotDatasetMetadata
from lerobot.utils.feature_utils import dataset_to_policy_features
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from envs.recording import open_dataset
from policies.configuration_geovla import GeoVLAConfig
from policies.frame_cache import FrameCache
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.json"


@dataclass
class TrainConfig:
    """What to train on and how; ``policy`` holds ``GeoVLAConfig`` fields to override.

    Args:
        dataset_root: local LeRobotDataset directory.
        output_dir: checkpoints, metrics (``metrics.jsonl``, TensorBoard) and the final policy.
        dataset_repo_id: repo id of the dataset (default ``local/<root name>``).
        episodes: dataset episodes to train on (None: all).
        steps: optimiser steps.
        batch_size: samples per optimiser step and process, before gradient accumulation.
        grad_accum: micro-batches accumulated per optimiser step.
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (accelerate).
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
    mixed_precision: str = "no"
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


class StepBatchSampler(Sampler[list[int]]):
    """Batches that depend only on (seed, global step): each epoch is a fresh permutation seeded by
    ``seed + epoch``, and batch ``k`` of it is ``perm[k*B:(k+1)*B]`` (the tail is dropped).

    Starting at ``start_step`` therefore continues exactly where an interrupted run stopped.
    Example: 10 samples, B = 4 → 2 batches per epoch; step 3 is batch 1 of epoch 1.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start_step: int = 0) -> None:
        if num_samples < batch_size:
            raise ValueError(f"the dataset has {num_samples} samples, fewer than batch_size={batch_size}")
        self.num_samples, self.batch_size, self.seed, self.start_step = num_samples, batch_size, seed, start_step
        self.batches_per_epoch = num_samples // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            epoch, index = divmod(step, self.batches_per_epoch)
            generator = torch.Generator().manual_seed(self.seed + epoch)
            permutation = torch.randperm(self.num_samples, generator=generator)
            yield permutation[index * self.batch_size : (index + 1) * self.batch_size].tolist()
            step += 1

    def __len__(self) -> int:
        return 2**62


def build_policy(cfg: TrainConfig, meta: LeRobotDatasetMetadata, device: str) -> GeoVLAPolicy:
    features = dataset_to_policy_features(meta.features)
    policy_cfg = GeoVLAConfig(
        device=device,
        input_features={k: f for k, f in features.items() if f.type is not FeatureType.ACTION},
        output_features={k: f for k, f in features.items() if f.type is FeatureType.ACTION},
        **cfg.policy,
    )
    policy = GeoVLAPolicy(policy_cfg)
    policy.attach_processors(*make_geovla_pre_post_processors(policy_cfg, dataset_stats=meta.stats))
    return policy


def delta_indices(policy_cfg: GeoVLAConfig, meta: LeRobotDatasetMetadata) -> dict[str, list[int]]:
    """Frame offsets: history for every observation key, the chunk for the action (LeRobot's
    convention)."""
    deltas = {key: policy_cfg.observation_delta_indices for key in meta.features if key.startswith("observation.")}
    deltas["action"] = policy_cfg.action_delta_indices
    return deltas


def training_dataset(cfg: TrainConfig, policy_cfg: GeoVLAConfig, meta: LeRobotDatasetMetadata) -> Dataset:
    deltas = delta_indices(policy_cfg, meta)
    if cfg.cache_frames:
        return FrameCache(open_dataset(cfg.dataset_root, cfg.dataset_repo_id, episodes=cfg.episodes), deltas)
    timestamps = {key: [i / meta.fps for i in offsets] for key, offsets in deltas.items()}
    return open_dataset(cfg.dataset_root, cfg.dataset_repo_id, episodes=cfg.episodes, delta_timestamps=timestamps)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (its state file is written last, so a save cut short by a
    crash is skipped)."""
    checkpoints = sorted(p.parent for p in (output_dir / CHECKPOINTS).glob(f"step_*/{STATE_FILE}"))
    return checkpoints[-1] if checkpoints else None


def train(
    cfg: TrainConfig,
    resume: bool = False,
    evaluate: Callable[[GeoVLAPolicy, int], dict[str, Any]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train; returns ``{"final_dir", "losses": {step: loss}, "steps", "seconds"}``.

    With ``resume`` the run continues from the newest checkpoint in ``output_dir``: model,
    optimiser, scheduler, every RNG and the data position are restored, so the loss curve is the
    one an uninterrupted run would have produced.
    """
    output = Path(cfg.output_dir)
    checkpoint = latest_checkpoint(output) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {output / CHECKPOINTS}")
    if not resume and latest_checkpoint(output) is not None:
        raise FileExistsError(f"{output} already holds checkpoints; pass --resume or choose a new output_dir")

    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    meta = LeRobotDatasetMetadata(cfg.dataset_repo_id or f"local/{Path(cfg.dataset_root).name}", root=cfg.dataset_root)
    policy = build_policy(cfg, meta, accelerator.device.type)
    preprocessor, _ = policy.processors
    dataset = training_dataset(cfg, policy.config, meta)

    optimizer = policy.config.get_optimizer_preset().build(policy.get_optim_params())
    scheduler = policy.config.get_scheduler_preset().build(optimizer, cfg.steps)
    start_step = 0
    if checkpoint is not None:
        start_step = json.loads((checkpoint / STATE_FILE).read_text())["step"]
    micro_batch_steps = start_step * cfg.grad_accum
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start_step=micro_batch_steps)
    # The loader's own generator keeps iterator creation from drawing on the global RNG, which
    # the flow-matching noise uses and a resumed run restores.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    batches = iter(accelerator.prepare_data_loader(loader, device_placement=False))
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint / "accelerate"))

    output.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (output / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        truncate_metrics(output / "metrics.jsonl", start_step)
    writer = SummaryWriter(str(output / "tensorboard")) if accelerator.is_main_process else None
    metrics_file = (output / "metrics.jsonl").open("a") if accelerator.is_main_process else None
    unwrapped = accelerator.unwrap_model(policy)
    grad_clip = unwrapped.config.optimizer_grad_clip_norm
    losses: dict[int, float] = {}
    bar = tqdm(total=cfg.steps, initial=start_step, desc="training", unit="step",
               disable=not (progress and accelerator.is_main_process))
    start = time.perf_counter()
    for step in range(start_step, cfg.steps):
        unwrapped.train()
        for _ in range(cfg.grad_accum):
            batch = preprocessor(next(batches))
            with accelerator.accumulate(policy):
                loss, info = policy(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    info["grad_norm"] = float(accelerator.clip_grad_norm_(policy.parameters(), grad_clip))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(info["loss"]):
            raise FloatingPointError(f"loss became {info['loss']} at step {step}; last checkpoint is kept")
        done = step + 1
        losses[done] = info["loss"]
        bar.update(1)
        bar.set_postfix(loss=f"{info['loss']:.4f}")
        if metrics_file is not None and (done % cfg.log_every == 0 or done == cfg.steps):
            record = {"step": done, "lr": scheduler.get_last_lr()[0], **info,
                      "samples_per_s": (done - start_step) * cfg.batch_size * cfg.grad_accum / (time.perf_counter() - start)}
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            for key, value in record.items():
                if key != "step":
                    writer.add_scalar(f"train/{key}", value, done)
        if evaluate is not None and cfg.eval_every and done % cfg.eval_every == 0 and accelerator.is_main_process:
            results = evaluate(unwrapped, done)
            for key, value in results.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"eval/{key}", value, done)
            metrics_file.write(json.dumps({"step": done, "eval": results}) + "\n")
        if done % cfg.save_every == 0 or done == cfg.steps:
            save_checkpoint(accelerator, unwrapped, output, done)
    bar.close()
    if metrics_file is not None:
        metrics_file.close()
        writer.close()
    accelerator.wait_for_everyone()
    return {
        "final_dir": str(output / CHECKPOINTS / f"step_{cfg.steps:06d}" / "pretrained_model"),
        "losses": losses,
        "steps": cfg.steps,
        "seconds": time.perf_counter() - start,
    }


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the records a crashed run logged after its last checkpoint; they are redone."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def save_checkpoint(accelerator: Accelerator, policy: GeoVLAPolicy, output: Path, step: int) -> Path:
    """``checkpoints/step_N/``: the accelerate state (model, optimiser, scheduler, RNGs), the
    step, and a ``pretrained_model/`` that ``GeoVLAPolicy.from_pretrained`` loads."""
    directory = output / CHECKPOINTS / f"step_{step:06d}"
    accelerator.save_state(str(directory / "accelerate"))
    if accelerator.is_main_process:
        policy.save_pretrained(directory / "pretrained_model")
        (directory / STATE_FILE).write_text(json.dumps({"step": step}))
    accelerator.wait_for_everyone()
    return directory
