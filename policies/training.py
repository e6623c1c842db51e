"""Training loop of the geovla policy with ``accelerate``: checkpoints, exact resume, logging.

``scripts/train_policy.py`` is the command line; this module holds the loop so that tests can
call it.

Under ``accelerate launch`` (DDP, or FSDP on GPUs) ``batch_size`` is per process and micro-batch:
an optimiser step trains on ``batch_size × grad_accum × num_processes`` samples, the
``grad_accum × num_processes`` batches of the ``StepBatchSampler`` that follow the previous step's
(``policies.distributed.step_batches``). The randomness of each batch's forward pass is seeded by the batch's sampler
index (``batch_randomness``), so N processes train exactly as one process accumulating N
micro-batches does, and a checkpoint resumes under any split of the same global batch.

A crash at any point loses at most the steps since the last complete checkpoint
(``policies.checkpoints``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from lerobot.configs.types import FeatureType
from lerobot.datasets import LeRobotDatasetMetadata
from lerobot.utils.feature_utils import dataset_to_policy_features
from torch.utils.data import Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from envs.recording import open_dataset, open_metadata
from policies.checkpoints import (
    CHECKPOINTS, STATE_FILE, checkpoint_directories, flush_to_disk, latest_checkpoint, resume_step, save_checkpoint,
    truncate_metrics, write_atomic,
)
from policies.configuration_geovla import GeoVLAConfig
from policies.distributed import batch_randomness, check_launch, global_mean, make_accelerator, step_batches
from policies.frame_cache import FrameCache
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors
from policies.train_config import TrainConfig


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


def build_optimizer(policy: GeoVLAPolicy) -> torch.optim.AdamW:
    """The config's AdamW preset with torch's fused kernel: one op for all parameters instead of
    about ten per parameter (the same update up to float rounding)."""
    preset = policy.config.get_optimizer_preset()
    return torch.optim.AdamW(policy.get_optim_params(), lr=preset.lr, betas=preset.betas, eps=preset.eps,
                             weight_decay=preset.weight_decay, fused=True)


def delta_indices(policy_cfg: GeoVLAConfig, meta: LeRobotDatasetMetadata) -> dict[str, list[int]]:
    """Frame offsets: history for every observation key (none for a one-frame policy), the chunk
    for the action (LeRobot's convention)."""
    history = policy_cfg.observation_delta_indices
    deltas = {key: history for key in meta.features if key.startswith("observation.")} if history else {}
    deltas["action"] = policy_cfg.action_delta_indices
    return deltas


def training_dataset(cfg: TrainConfig, policy_cfg: GeoVLAConfig, meta: LeRobotDatasetMetadata) -> Dataset:
    deltas = delta_indices(policy_cfg, meta)
    if cfg.cache_frames:
        return FrameCache(open_dataset(cfg.dataset_root, cfg.dataset_repo_id, episodes=cfg.episodes), deltas)
    timestamps = {key: [i / meta.fps for i in offsets] for key, offsets in deltas.items()}
    return open_dataset(cfg.dataset_root, cfg.dataset_repo_id, episodes=cfg.episodes, delta_timestamps=timestamps)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    evaluate: Callable[[GeoVLAPolicy, int], dict[str, Any]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train; returns ``{"final_dir", "losses": {step: loss}, "steps", "seconds"}``.

    With ``resume`` the run continues from the newest checkpoint in ``output_dir``: model,
    optimiser, scheduler and the data position are restored, so the loss curve is the one an
    uninterrupted run would have produced, also when the checkpoint was written by another number
    of processes with the same global batch (``check_resumable``). ``losses`` are means over the
    global batch (``global_mean``).
    """
    output = Path(cfg.output_dir)
    checkpoint = latest_checkpoint(output) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {output / CHECKPOINTS}")
    if not resume and any((directory / STATE_FILE).exists() for directory in checkpoint_directories(output)):
        raise FileExistsError(f"{output} already holds checkpoints; pass --resume or choose a new output_dir")

    accelerator = make_accelerator(cfg)
    check_launch(accelerator)
    if evaluate is not None and cfg.eval_every and accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError("eval_every needs the whole policy in the main process, which FSDP shards; set eval_every=0 "
                         "and evaluate the checkpoints' pretrained_model/ (scripts/eval_policy.py)")
    start_step = resume_step(checkpoint, cfg, accelerator.num_processes)
    set_seed(cfg.seed)
    meta = open_metadata(cfg.dataset_root, cfg.dataset_repo_id)
    policy = build_policy(cfg, meta, accelerator.device.type)
    preprocessor, _ = policy.processors
    dataset = training_dataset(cfg, policy.config, meta)

    optimizer = build_optimizer(policy)
    scheduler = policy.config.get_scheduler_preset().build(optimizer, cfg.steps)
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint / "accelerate"))
        # load_state restores the micro-step counter of the process count that saved; gradient
        # accumulation must count from this run's own.
        accelerator.step = start_step * cfg.grad_accum

    output.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        write_atomic(output / "train_config.json", json.dumps(asdict(cfg), indent=2))
        truncate_metrics(output / "metrics.jsonl", start_step)
    writer = SummaryWriter(str(output / "tensorboard")) if accelerator.is_main_process else None
    metrics_file = (output / "metrics.jsonl").open("a") if accelerator.is_main_process else None
    unwrapped = accelerator.unwrap_model(policy)
    grad_clip = unwrapped.config.optimizer_grad_clip_norm
    batches = step_batches(dataset, cfg, start_step, accelerator.num_processes, accelerator.process_index)
    losses: dict[int, float] = {}
    bar = tqdm(total=cfg.steps, initial=start_step, desc="training", unit="step",
               disable=not (progress and accelerator.is_main_process))
    start = time.perf_counter()
    samples_per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    batch_layout = {"batch_size": cfg.batch_size, "batches_per_step": cfg.grad_accum * accelerator.num_processes}
    for step in range(start_step, cfg.steps):
        unwrapped.train()
        info = optimiser_step(accelerator, policy, optimizer, scheduler, batches, preprocessor, cfg.seed, grad_clip)
        if not math.isfinite(info["loss"]):
            raise FloatingPointError(f"loss became {info['loss']} at step {step}; last checkpoint is kept")
        done = step + 1
        losses[done] = info["loss"]
        bar.update(1)
        bar.set_postfix(loss=f"{info['loss']:.4f}")
        if metrics_file is not None and (done % cfg.log_every == 0 or done == cfg.steps):
            record = {"step": done, "lr": scheduler.get_last_lr()[0], **info,
                      "samples_per_s": (done - start_step) * samples_per_step / (time.perf_counter() - start)}
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
            if metrics_file is not None:
                flush_to_disk(metrics_file)  # a power loss that keeps the checkpoint keeps its records
            save_checkpoint(accelerator, policy, output, {"step": done, **batch_layout})
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


def optimiser_step(accelerator: Accelerator, policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: Any, batches: Iterator[tuple[int, Any]], preprocessor: Callable[[Any], Any],
                   seed: int, grad_clip: float) -> dict[str, float]:
    """One optimiser step over ``grad_accum`` micro-batches of ``batches`` (``step_batches``);
    returns the loss terms averaged over the global batch (``global_mean``) and the clipped
    gradients' norm."""
    infos = []
    for _ in range(accelerator.gradient_accumulation_steps):
        batch_index, batch = next(batches)
        batch = preprocessor(batch)
        with accelerator.accumulate(policy):
            with batch_randomness(seed, batch_index, accelerator.device):
                loss, info = policy(batch)
            infos.append(info)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = float(accelerator.clip_grad_norm_(policy.parameters(), grad_clip))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
    return {**global_mean(accelerator, infos), "grad_norm": grad_norm}


