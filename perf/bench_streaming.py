"""Benchmark streaming inference: per-step time and peak memory with a bounded vs an unbounded KV cache.

Prints one JSON object. Each cache setting runs in its own subprocess so that the process peak
memory (ru_maxrss on CPU, max_memory_allocated on CUDA) belongs to that setting alone. Step time
at step k is taken over the `--window` steps ending at k: the median wall time (`step_ms`), the
fastest wall time (`step_min_ms`, least disturbed by other processes sharing the cores) and the
median CPU time of this process (`step_cpu_ms`; with one thread, the step's compute). The load
average at the start and end of each run says how busy the machine was. Because that load
drifts over a run, `paired` then times the finished stream against a fresh one advanced to step
100, alternating their steps, so both see the same load: its `ratio` is the load-robust answer
to "is step N as fast as step 100". `cache_mb` is what the KV-cache buffers hold. The unbounded run
stops once its memory passes `--memory-cap-mb` (that step is reported too).

    python perf/bench_streaming.py                       # tiny, CPU, 32 px, 2 views, 1000 steps
    python perf/bench_streaming.py --device cuda --preset small     # 224 px (full: 378 px)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geometry import GeometryModel, make_config  # noqa: E402
from geometry.streaming import GeometryStream  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--img-size", type=int, default=None, help="default: 32 on CPU, the preset's size on CUDA")
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--checkpoints", default="50,100,500,1000")
    p.add_argument("--window", type=int, default=25, help="steps in the median of each step time")
    p.add_argument("--keep-steps", type=int, default=16,
                   help="bounded budget = cached layers x tokens per step x this (time steps per layer on average)")
    p.add_argument("--memory-cap-mb", type=float, default=3000.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--run", choices=["bounded", "unbounded"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.img_size is None:
        args.img_size = 32 if args.device == "cpu" else make_config(args.preset).img_size
    return args


def memory_mb(device: torch.device) -> tuple[float, float]:
    """(current, peak) memory in MiB: process RSS on CPU, allocated tensors on CUDA."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_step(stream: GeometryStream, frame: torch.Tensor, device: torch.device) -> float:
    """Wall seconds of one stream step (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    stream.step(frame)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def paired_step_ms(stream: GeometryStream, fresh: GeometryStream, frames: torch.Tensor, early: int, window: int,
                   device: torch.device) -> dict:
    """Median step times of `stream` (at its current step) and of `fresh` advanced to `early`, with
    their steps alternating so that both see the same machine load."""
    for i in range(early - fresh.steps):
        fresh.step(frames[i % len(frames)])
    late_step = stream.steps
    late, at_early = [], []
    for i in range(window):
        late.append(timed_step(stream, frames[i % len(frames)], device))
        at_early.append(timed_step(fresh, frames[i % len(frames)], device))
    late_ms, early_ms = 1000 * statistics.median(late), 1000 * statistics.median(at_early)
    return {"late_step": late_step, "early_step": early, "late_ms": round(late_ms, 3), "early_ms": round(early_ms, 3),
            "ratio": round(late_ms / early_ms, 3)}


def run_one(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    config = make_config(args.preset, img_size=args.img_size, causal_time=True, track_head=False)
    model = GeometryModel(config).to(device, dtype).eval()
    tokens_per_step = args.views * (config.patch_start_idx + (args.img_size // config.patch_size) ** 2)
    layers = len(model.aggregator.new_caches(args.views, legacy=False))
    budget = layers * tokens_per_step * args.keep_steps if args.run == "bounded" else None
    stream = GeometryStream(model, total_budget=budget)
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    frames = torch.rand(8, 1, args.views, 3, args.img_size, args.img_size, device=device, dtype=dtype)
    times: list[float] = []
    cpu_times: list[float] = []
    report: dict = {"load_average_start": os.getloadavg(), "total_budget": budget, "cached_layers": layers,
                    "tokens_per_step": tokens_per_step, "steps": {}}
    for step in range(1, args.steps + 1):
        cpu_start = time.process_time()
        times.append(timed_step(stream, frames[step % len(frames)], device))
        cpu_times.append(time.process_time() - cpu_start)
        current, peak = memory_mb(device)
        stop = budget is None and current > args.memory_cap_mb
        if step in checkpoints or stop:
            report["steps"][step] = {
                "step_ms": round(1000 * statistics.median(times[-args.window:]), 3),
                "step_min_ms": round(1000 * min(times[-args.window:]), 3),
                "step_cpu_ms": round(1000 * statistics.median(cpu_times[-args.window:]), 3),
                "current_mb": round(current, 1),
                "peak_mb": round(peak, 1),
                "cached_tokens": stream.cached_tokens,
                "cache_mb": round(stream.cache_bytes / 2**20, 2),
            }
        if stop:
            report["stopped_at_step"] = step
            report["stopped_reason"] = f"memory {current:.0f} MB passed the cap {args.memory_cap_mb:.0f} MB"
            break
    report["last_step"] = step
    if "stopped_at_step" not in report and step > 100:
        fresh = GeometryStream(model, total_budget=budget)
        report["paired"] = paired_step_ms(stream, fresh, frames, 100, args.window, device)
    report["load_average_end"] = os.getloadavg()
    return report


def ratio(report: dict, key: str, late: int, early: int) -> float:
    return round(report["steps"][late][key] / report["steps"][early][key], 3)


def main() -> None:
    args = parse_args()
    if args.run is not None:
        print(json.dumps(run_one(args)))
        return
    result = {"preset": args.preset, "device": args.device, "img_size": args.img_size, "views": args.views,
              "steps": args.steps, "threads": args.threads, "dtype": args.dtype, "keep_steps": args.keep_steps,
              "memory_cap_mb": args.memory_cap_mb, "runs": {}}
    for run in ("bounded", "unbounded"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--run", run]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        report = json.loads(out.strip().splitlines()[-1])
        report["steps"] = {int(k): v for k, v in report["steps"].items()}
        reached = sorted(report["steps"])
        early = 100 if 100 in reached else reached[0]
        late = reached[-1]
        if late > early:
            for key in ("step_ms", "step_min_ms", "step_cpu_ms", "peak_mb", "current_mb", "cache_mb"):
                report[f"{key}_ratio_{late}_vs_{early}"] = ratio(report, key, late, early)
        result["runs"][run] = report
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
