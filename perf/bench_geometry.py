"""Benchmark the geometry model's forward pass; prints JSON.

CPU (default): `tiny` across S = 2, 4, 8, 16 frames. Each S runs in a fresh process so that the
peak resident memory of the forward (`ru_maxrss` after it minus before it) is its own; times
are the median and minimum over `--repeats` forwards after one warm-up. CUDA (`--device cuda`,
`small`/`full`): CUDA-event timing after warm-up and `torch.cuda.max_memory_allocated`.

    python perf/bench_geometry.py
    python perf/bench_geometry.py --device cuda --preset full --frames 2 4 8 16 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import time

import torch

from geometry.config import make_config
from geometry.model import GeometryModel


def _images(frames: int, views: int, size: int, device: torch.device) -> torch.Tensor:
    if views == 1:
        return torch.rand(1, frames, 3, size, size, device=device)
    return torch.rand(1, frames // views, views, 3, size, size, device=device)


def bench_one(preset: str, frames: int, views: int, device_name: str, dtype_name: str, repeats: int,
              threads: int | None) -> dict:
    """Build `preset`, run one warm-up and `repeats` timed forwards on S = `frames` frames."""
    if threads:
        torch.set_num_threads(threads)
    device, dtype = torch.device(device_name), getattr(torch, dtype_name)
    config = make_config(preset, track_head=False)
    torch.manual_seed(0)
    model = GeometryModel(config).to(device).eval()
    images = _images(frames, views, config.img_size, device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode(), autocast:
        model(images)
        sync()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(images)
                end.record()
                sync()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                model(images)
                times.append(time.perf_counter() - t0)
    result = {"frames": frames, "views": views, "forward_s_median": round(statistics.median(times), 4),
              "forward_s_min": round(min(times), 4)}
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        result["peak_rss_increase_mb"] = round((rss_after - rss_before) / 1024, 1)  # ru_maxrss is in KiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--views", type=int, default=1, help="cameras per time step (1 = legacy [B, S, 3, H, W])")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if any(s % args.views for s in args.frames):
        raise SystemExit(f"every --frames value must be a multiple of --views={args.views}")
    jobs = [(args.preset, s, args.views, args.device, args.dtype, args.repeats, args.threads) for s in args.frames]
    if args.device.startswith("cuda"):
        results = [bench_one(*job) for job in jobs]
        device_name = torch.cuda.get_device_name(torch.device(args.device))
    else:
        ctx = multiprocessing.get_context("spawn")
        results = []
        for job in jobs:
            with ctx.Pool(1) as pool:
                results.append(pool.apply(bench_one, job))
        device_name = "cpu"
    config = make_config(args.preset, track_head=False)
    with torch.device("meta"):
        params = sum(p.numel() for p in GeometryModel(config).parameters())
    print(json.dumps({
        "preset": args.preset, "device": args.device, "device_name": device_name, "dtype": args.dtype,
        "image_size": config.img_size, "params": params, "threads": args.threads or torch.get_num_threads(),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
