"""Benchmark policy training: samples/s, peak memory and (on a GPU) model FLOPs utilisation.

Prints one JSON object. A training step is the policy's loss on one batch (flow matching plus
the geometry losses, as on a recorded dataset), backward, gradient clipping and a (fused) AdamW step.
The batch is synthetic and built once: 3 cameras with a T=2 history at the preset's image size,
a 4-d state and action, an instruction, and depth/camera ground truth, passed through the
policy's preprocessor as training data are. Throughput is ``batch * steps / time`` over
``--steps`` steps after ``--warmup`` steps. Peak memory is the process's peak RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA.

``flops_per_step`` counts one step's forward and backward with ``torch.utils.flop_counter.
FlopCounterMode`` (matrix multiplies, convolutions and attention; the optimiser's elementwise
work is not counted); ``mfu = flops_per_step / step_time / (--peak-tflops * 1e12)``. The default
peak, 790 TFLOP/s, is the H100's measured dense bf16 matrix rate, so MFU is reported on CUDA with
``--dtype bfloat16`` only.

``--grad-checkpointing`` recomputes the backbone's ViT blocks in the backward pass (the only
part of the network that supports it: the geometry aggregator and the fused LLM/expert layers
keep their activations).

    python perf/bench_train.py --threads 1                         # tiny, CPU, float32
    python perf/bench_train.py --device cuda --preset small --dtype bfloat16 --batch 32
    python perf/bench_train.py --device cuda --preset full --dtype bfloat16 --lora-rank 16 --grad-checkpointing
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_policy import (  # noqa: E402
    CAMERAS, INSTRUCTION, add_model_arguments, build_policy, emit, peak_memory_mb, select_device, synchronize,
)

H100_BF16_TFLOPS = 790.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, "bfloat16: forward under torch.autocast (weights and optimiser state stay float32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lora-rank", type=int, default=0, help="peft LoRA on the LLM and expert (0: full fine-tuning)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute the backbone ViT blocks")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS, help="device peak for the MFU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        p.error("need --batch >= 1, --steps >= 1 and --warmup >= 0")
    return args


def synthetic_batch(policy: Any, batch: int, seed: int) -> dict[str, Any]:
    """A preprocessed training batch of ``batch`` samples (see the module docstring)."""
    config = policy.config
    generator = torch.Generator().manual_seed(seed)
    T, H, size = config.n_obs_steps, config.chunk_size, config.image_size
    raw: dict[str, Any] = {
        "observation.state": torch.randn(batch, T, 4, generator=generator),
        "action": torch.randn(batch, H, 4, generator=generator),
        "action_is_pad": torch.zeros(batch, H, dtype=torch.bool),
        "task": [INSTRUCTION] * batch,
    }
    intrinsics = torch.tensor([[size, 0.0, size / 2], [0.0, size, size / 2], [0.0, 0.0, 1.0]])
    extrinsics = torch.cat([torch.eye(3), torch.tensor([[0.0], [0.0], [1.0]])], dim=1)
    for cam in CAMERAS:
        raw[f"observation.images.{cam}"] = torch.rand(batch, T, 3, size, size, generator=generator)
        raw[f"observation.depth.{cam}"] = 0.5 + torch.rand(batch, T, size, size, generator=generator)
        raw[f"observation.intrinsics.{cam}"] = intrinsics.expand(batch, T, 3, 3).clone()
        raw[f"observation.extrinsics.{cam}"] = extrinsics.expand(batch, T, 3, 4).clone()
    preprocessor, _ = policy.processors
    return preprocessor(raw)


def enable_grad_checkpointing(policy: Any) -> None:
    """Recompute the backbone's ViT blocks in backward (``FiLMViTEncoder.gradient_checkpointing``)."""
    for encoder in (policy.model.backbone.siglip, policy.model.backbone.dinov2):
        encoder.gradient_checkpointing = True


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = select_device(args.device, args.threads)
    policy = build_policy(args.preset, args.image_size, args.device, n_obs_steps=2, flow_steps=10,
                          seed=args.seed, lora_rank=args.lora_rank)
    if args.grad_checkpointing:
        enable_grad_checkpointing(policy)
    policy.train()
    batch = synthetic_batch(policy, args.batch, args.seed)
    config = policy.config
    params = policy.get_optim_params()
    optimizer = torch.optim.AdamW(params, lr=config.optimizer_lr, betas=config.optimizer_betas,
                                  eps=config.optimizer_eps, weight_decay=config.optimizer_weight_decay, fused=True)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bfloat16"
                else contextlib.nullcontext())

    def step() -> dict[str, float]:
        with autocast:
            loss, info = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.optimizer_grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return info

    for _ in range(args.warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        info = step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))

    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss, _ = policy.forward(batch)
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    achieved = flops / step_s / 1e12
    report = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "image_size": config.image_size,
        "cameras": len(CAMERAS),
        "n_obs_steps": config.n_obs_steps,
        "chunk_size": config.chunk_size,
        "batch": args.batch,
        "lora_rank": args.lora_rank,
        "grad_checkpointing": args.grad_checkpointing,
        "params": sum(p.numel() for p in policy.parameters()),
        "trainable_params": sum(p.numel() for p in params),
        "steps": args.steps,
        "step_ms_median": round(step_s * 1e3, 3),
        "samples_per_s": round(args.batch / step_s, 3),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "flops_per_step": flops,
        "achieved_tflops": round(achieved, 4),
        "losses": {name: round(value, 5) for name, value in info.items()},
    }
    if device.type == "cuda" and args.dtype == "bfloat16":
        report["peak_tflops"] = args.peak_tflops
        report["mfu"] = round(achieved / args.peak_tflops, 4)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return emit(run(args), args.out)


if __name__ == "__main__":
    main()
