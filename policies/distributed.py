"""Training over several processes: which samples each process trains on, the randomness of each
batch, and checks of the launch.

``batch_size`` is per process and micro-batch: an optimiser step trains on ``batch_size ×
grad_accum × num_processes`` samples, the ``grad_accum × num_processes`` batches of the
``StepBatchSampler`` that follow the previous step's (``step_batches``). Each batch's forward pass
is seeded by its sampler index (``batch_randomness``), so N processes train exactly as one process
accumulating N micro-batches does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.data_loader import prepare_data_loader
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType
from torch.utils.data import DataLoader, Dataset, Sampler

from policies.train_config import TrainConfig
from vla.cpu_autocast import cpu_has_native_bfloat16


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


def global_mean(accelerator: Accelerator, infos: list[dict[str, float]]) -> dict[str, float]:
    """The loss terms of one optimiser step averaged over its micro-batches and processes: each
    micro-batch holds ``batch_size`` samples, so this is the mean over the global batch's shards,
    whatever the process count (logging only the main process's shard would change with it)."""
    keys = sorted(infos[0])
    local = torch.tensor([[info[key] for key in keys] for info in infos], dtype=torch.float64,
                         device=accelerator.device).mean(dim=0)
    return dict(zip(keys, accelerator.reduce(local, reduction="mean").tolist()))


def resolve_mixed_precision(setting: str | None, device: torch.device) -> str | None:
    """``auto``: ``bf16`` on a GPU that supports it or a CPU with native bfloat16 arithmetic,
    else ``no``; any other setting as it is."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if device.type == "cpu" and cpu_has_native_bfloat16() else "no"


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The run's accelerator. Its scheduler counts optimiser steps (by default accelerate steps it
    once per process and step, which would shorten the schedule under N processes), and DDP
    tolerates parameters that a step's loss does not reach (the LM head, the LLM's last MLP)."""
    if PartialState._shared_state.get("distributed_type") == DistributedType.NO:
        # accelerate keeps one mixed precision per process; a single process may train again
        # (tests, scripts training several configs) with another one.
        AcceleratorState._reset_state()
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    device = torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")
    return Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                       mixed_precision=resolve_mixed_precision(cfg.mixed_precision, device),
                       step_scheduler_with_optimizer=False,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
