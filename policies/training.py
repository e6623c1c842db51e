"""Training loop of the geovla policy with ``accelerate``: checkpoints, exact resume, logging.

``scripts/train_policy.py`` is the command line; this module holds the loop so that tests can
call it.

Under ``accelerate launch`` (DDP, or FSDP on GPUs) ``batch_size`` is per process and micro-batch:
an optimiser step trains on ``batch_size × grad_accum × num_processes`` samples, the
``grad_accum × num_processes`` batches of the ``StepBatchSampler`` that follow the previous step's
(``step_batches``). The randomness of each batch's forward pass is seeded by the batch's sampler
index (``batch_randomness``), so N processes train exactly as one process accumulating N
micro-batches does, and a checkpoint resumes under any split of the same global batch.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from lerobot.configs.types import FeatureType
from lerobot.datasets import LeRobotDatasetMetadata
from lerobot.utils.feature_utils import dataset_to_policy_features
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from envs.recording import open_dataset, open_metadata
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
        batch_size: samples per micro-batch and process; an optimiser step trains on
            ``batch_size × grad_accum × num_processes`` samples.
        grad_accum: micro-batches accumulated per optimiser step.
        mixed_precision: ``no``, ``bf16`` or ``fp16``; None: what ``accelerate launch`` was given
            (``--mixed_precision`` or its config file), ``no`` without it.
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


def step_batches(dataset: Dataset, cfg: TrainConfig, start_step: int, num_processes: int,
                 process_index: int) -> Iterator[tuple[int, Any]]:
    """This process's micro-batches from optimiser step ``start_step`` on, each with its index in
    the ``StepBatchSampler``.

    accelerate's sharding (``BatchSamplerShard``) hands sampler batch ``m`` to process
    ``m % num_processes``, so optimiser step ``s`` trains on the disjoint sampler batches
    ``[s·g·N, (s+1)·g·N)`` (``g = grad_accum``, ``N = num_processes``): the same samples for every
    split of ``g·N``. Example: 2 processes, g = 1 → step 3 is batch 6 on process 0 and batch 7 on
    process 1, which one process with g = 2 takes as its two micro-batches.
    """
    first = start_step * cfg.grad_accum * num_processes
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start_step=first)
    # The loader's own generator keeps iterator creation from drawing on the global RNG.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    shard = prepare_data_loader(loader, num_processes=num_processes, process_index=process_index,
                                put_on_device=False)
    for position, batch in enumerate(shard):
        yield first + position * num_processes + process_index, batch


def batch_seed(seed: int, batch_index: int) -> int:
    """A well-mixed 32-bit seed for sampler batch ``batch_index`` of a run seeded ``seed`` (torch's
    CPU generator keeps only 32 bits of a seed)."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])


@contextmanager
def batch_randomness(seed: int, batch_index: int, device: torch.device) -> Iterator[None]:
    """Seed the random draws of one micro-batch's forward pass (flow-matching noise and time,
    dropout) from the batch's sampler index, and give back the global RNG state afterwards.

    The draws then depend on which samples the batch holds, not on which process or micro-step
    runs it or on what ran before: a batch draws the same noise in an N-process run, in one
    process accumulating N micro-batches, and in a run resumed from a checkpoint.
    """
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type):
        torch.manual_seed(batch_seed(seed, batch_index))
        yield


def check_launch(accelerator: Accelerator) -> None:
    """Fail on an ``accelerate launch`` whose processes would not train together as asked.

    Without GPUs, a multi-process launch (``--multi_gpu --num_processes N``, or an FSDP config)
    starts N processes that each see no accelerator and would each train the whole run alone; they
    join one gloo group only with ``ACCELERATE_USE_CPU=true`` in the environment (``--cpu`` starts
    a single process). accelerate also runs FSDP only on GPUs (and similar devices): on CPUs it
    silently falls back to DDP.
    """
    fsdp_asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_asked and accelerator.distributed_type != DistributedType.FSDP:
        raise RuntimeError(
            f"the launch asks for FSDP but accelerate runs {accelerator.distributed_type} on "
            f"{accelerator.device.type}: accelerate shards with FSDP only on GPUs; launch without the FSDP config "
            "to train with DDP")
    launched = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))
    if launched != accelerator.num_processes:
        raise RuntimeError(
            f"accelerate launched {launched} processes but they joined a group of {accelerator.num_processes} "
            f"({accelerator.distributed_type}); on a machine without GPUs set ACCELERATE_USE_CPU=true: "
            "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N scripts/train_policy.py ...")


def check_resumable(state: dict[str, Any], cfg: TrainConfig, num_processes: int, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint under another global batch: the data order and the noise are
    indexed by sampler batches of ``batch_size``, ``grad_accum × num_processes`` per step, so only
    a run with the same two numbers continues it exactly (whatever the split between the factors).

    Checkpoints written before these numbers were recorded are taken to match.
    """
    saved = (state.get("batch_size", cfg.batch_size), state.get("batches_per_step", cfg.grad_accum * num_processes))
    current = (cfg.batch_size, cfg.grad_accum * num_processes)
    if saved != current:
        raise ValueError(
            f"{checkpoint} was trained with batch_size={saved[0]} and grad_accum × num_processes = {saved[1]}; "
            f"this run has batch_size={current[0]} and {cfg.grad_accum} × {num_processes} = {current[1]}. Resume with "
            f"batch_size={saved[0]} and grad_accum × num_processes = {saved[1]} to continue the run exactly")


def global_mean(accelerator: Accelerator, infos: list[dict[str, float]]) -> dict[str, float]:
    """The loss terms of one optimiser step averaged over its micro-batches and processes: each
    micro-batch holds ``batch_size`` samples, so this is the mean over the global batch's shards,
    whatever the process count (logging only the main process's shard would change with it)."""
    keys = sorted(infos[0])
    local = torch.tensor([[info[key] for key in keys] for info in infos], dtype=torch.float64,
                         device=accelerator.device).mean(dim=0)
    return dict(zip(keys, accelerator.reduce(local, reduction="mean").tolist()))


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
    optimiser, scheduler and the data position are restored, so the loss curve is the one an
    uninterrupted run would have produced, also when the checkpoint was written by another number
    of processes with the same global batch (``check_resumable``). ``losses`` are means over the
    global batch (``global_mean``).
    """
    output = Path(cfg.output_dir)
    checkpoint = latest_checkpoint(output) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {output / CHECKPOINTS}")
    if not resume and latest_checkpoint(output) is not None:
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

    optimizer = policy.config.get_optimizer_preset().build(policy.get_optim_params())
    scheduler = policy.config.get_scheduler_preset().build(optimizer, cfg.steps)
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint / "accelerate"))
        # load_state restores the micro-step counter of the process count that saved; gradient
        # accumulation must count from this run's own.
        accelerator.step = start_step * cfg.grad_accum

    output.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (output / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
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


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The run's accelerator. Its scheduler counts optimiser steps (by default accelerate steps it
    once per process and step, which would shorten the schedule under N processes), and DDP
    tolerates parameters that a step's loss does not reach (the LM head, the LLM's last MLP)."""
    return Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                       step_scheduler_with_optimizer=False,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def resume_step(checkpoint: Path | None, cfg: TrainConfig, num_processes: int) -> int:
    """The optimiser step the run starts at: 0, or the checkpoint's once ``check_resumable`` has
    accepted it."""
    if checkpoint is None:
        return 0
    state = json.loads((checkpoint / STATE_FILE).read_text())
    check_resumable(state, cfg, num_processes, checkpoint)
    return state["step"]


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


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the records a crashed run logged after its last checkpoint; they are redone."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole policy's weights gathered from the FSDP shards (complete on the main process), or
    None outside FSDP, where the unwrapped policy holds them all. Under FSDP this is a collective:
    every process must call it."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    return accelerator.get_state_dict(model)


def save_checkpoint(accelerator: Accelerator, model: torch.nn.Module, output: Path, state: dict[str, int]) -> Path:
    """``checkpoints/step_N/``: the accelerate state (model, optimiser, scheduler, RNGs), ``state``
    (the step and the global batch's layout, see ``check_resumable``), and a ``pretrained_model/``
    that ``GeoVLAPolicy.from_pretrained`` loads. ``model`` is the prepared (wrapped) policy; every
    process calls this."""
    directory = output / CHECKPOINTS / f"step_{state['step']:06d}"
    accelerator.save_state(str(directory / "accelerate"))
    weights = full_state_dict(accelerator, model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(directory / "pretrained_model", state_dict=weights)
        (directory / STATE_FILE).write_text(json.dumps(state))
    accelerator.wait_for_everyone()
    return directory
