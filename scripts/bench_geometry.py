"""Benchmark the geometry model's forward pass; prints JSON.

CPU (default): `tiny` across S = 2, 4, 8, 16 frames; time per forward and peak resident memory
above the pre-forward baseline (sampled). CUDA: `--device cuda --preset small` or `full`; time
with CUDA events after warm-up and `torch.cuda.max_memory_allocated`.

    python scripts/bench_geometry.py
    python scripts/bench_geometry.py --device cuda --preset full --frames 2 4 8 16 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import psutil
import torch

from geometry.config import make_config
from geometry.model import GeometryModel


class PeakRSS:
    """Samples this process's resident memory in a thread; `peak_mb` is the maximum above start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.proc, self.peak, self._stop = interval, psutil.Process(), 0, threading.Event()

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def bench_one(model: GeometryModel, frames: int, views: int, size: int, device: torch.device, dtype: torch.dtype,
              repeats: int) -> dict:
    T = frames // views
    if views == 1:
        images = torch.rand(1, frames, 3, size, size, device=device)
    else:
        images = torch.rand(1, T, views, 3, size, size, device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        model(images)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                model(images)
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000 / repeats
            peak = torch.cuda.max_memory_allocated() / 2**20
            return {"frames": frames, "views": views, "forward_s": round(seconds, 4), "peak_cuda_mb": round(peak, 1)}
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(images)
            seconds = (time.perf_counter() - t0) / repeats
        return {"frames": frames, "views": views, "forward_s": round(seconds, 4), "peak_rss_delta_mb": round(mem.peak_mb, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--views", type=int, default=1, help="cameras per time step (1 = legacy [B, S, 3, H, W])")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    config = make_config(args.preset, track_head=False)
    torch.manual_seed(0)
    model = GeometryModel(config).to(device).eval()
    dtype = getattr(torch, args.dtype)
    results = [bench_one(model, s, args.views, config.img_size, device, dtype, args.repeats) for s in args.frames]
    print(json.dumps({
        "preset": args.preset, "device": str(device), "dtype": args.dtype, "image_size": config.img_size,
        "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
