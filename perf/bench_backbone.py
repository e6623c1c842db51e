"""Time the FiLM dual-encoder backbone per camera image and print the figures as JSON.

    python perf/bench_backbone.py                                  # tiny on CPU, float32
    python perf/bench_backbone.py --device cuda                    # small and full on a GPU, bfloat16
    python perf/bench_backbone.py --device cuda --preset full --batch 8 --cameras 3

Weights are randomly initialised (timing does not depend on them); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vla.backbone import FiLMDualBackbone, backbone_config
from vla.backbone.config import PRESETS

DEFAULT_PRESETS = {"cpu": ["tiny"], "cuda": ["small", "full"]}
DEFAULT_DTYPES = {"cpu": "float32", "cuda": "bfloat16"}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_preset(preset: str, device: torch.device, dtype: torch.dtype, batch: int, cameras: int, warmup: int, iters: int) -> dict:
    """Mean wall time of `iters` forward passes (after `warmup`) of `batch` samples with `cameras` images each."""
    config = backbone_config(preset)
    torch.manual_seed(0)
    with device:  # allocate and initialise directly on the target device
        backbone = FiLMDualBackbone(config)
    backbone = backbone.to(dtype).eval()
    size = config.image_size
    images = {f"camera{v}": torch.rand(batch, 3, size, size, device=device, dtype=dtype) for v in range(cameras)}
    language = torch.randn(batch, config.llm_dim, device=device, dtype=dtype)

    with torch.inference_mode():
        for _ in range(warmup):
            backbone(images, language)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            out = backbone(images, language)
        _synchronize(device)
        elapsed = time.perf_counter() - start

    per_forward = elapsed / iters
    result = {
        "preset": preset,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "batch": batch,
        "cameras": cameras,
        "image_size": size,
        "tokens_per_camera": config.num_agg_tokens,
        "tokens_total": out.tokens.shape[1],
        "llm_dim": config.llm_dim,
        "params_m": round(sum(p.numel() for p in backbone.parameters()) / 1e6, 2),
        "ms_per_forward": round(per_forward * 1e3, 3),
        "ms_per_camera_image": round(per_forward * 1e3 / (batch * cameras), 3),
    }
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--preset", nargs="+", choices=PRESETS, help="default: tiny on cpu, small and full on cuda")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: float32 on cpu, bfloat16 on cuda")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, help="CPU intra-op threads (torch.set_num_threads); default: torch's")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    for name in ("batch", "cameras", "iters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or DEFAULT_DTYPES[args.device])
    results = [
        bench_preset(preset, device, dtype, args.batch, args.cameras, args.warmup, args.iters)
        for preset in args.preset or DEFAULT_PRESETS[args.device]
    ]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
