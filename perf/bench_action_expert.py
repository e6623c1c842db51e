"""Benchmark action sampling of the deep-fusion LLM + expert: prefix cache versus recomputation.

Prints one JSON object: per preset the prefix time, the time of one cached denoising step, the
total sampling time with and without the prefix cache, and the speed-up.

    python perf/bench_action_expert.py                                   # tiny, CPU, float32
    python perf/bench_action_expert.py --device cuda --presets small full   # bf16 on a GPU
"""

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from vla.action_model import DeepFusionActionModel
from vla.config import deep_fusion_preset
from vla.prefix import Prefix

# Prefix sizes per preset: cameras x aggregation tokens (SPEC section 0), spatial tokens, text.
PREFIX_SIZES = {
    "tiny": {"visual": 3 * 8, "spatial": 16, "text": 32},
    "small": {"visual": 3 * 32, "spatial": 64, "text": 48},
    "full": {"visual": 3 * 64, "spatial": 128, "text": 64},
}


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _random_prefix(model: DeepFusionActionModel, batch: int, sizes: dict[str, int],
                   generator: torch.Generator) -> Prefix:
    """A prefix with the given number of visual, spatial and text tokens."""
    device = model.action_in_proj.weight.device
    text = torch.randint(0, 256, (batch, sizes["text"]), generator=generator)
    images = torch.full((batch, sizes["visual"]), model.image_token_id)
    input_ids = torch.cat([images, text], dim=1).to(device)
    width = model.llm_width
    visual = torch.randn(batch, sizes["visual"], width, generator=generator).to(device)
    spatial = torch.randn(batch, sizes["spatial"], width, generator=generator).to(device)
    return model.embed_prefix(input_ids, torch.ones_like(input_ids), visual, None, spatial)


@torch.no_grad()
def bench_preset(name: str, device: torch.device, dtype: torch.dtype, batch: int, num_steps: int,
                 repeats: int) -> dict:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = deep_fusion_preset(name)
    with device:
        model = DeepFusionActionModel(config)
    model = model.to(dtype).eval()
    prefix = _random_prefix(model, batch, PREFIX_SIZES[name], generator)
    state = torch.randn(batch, config.max_state_dim, generator=generator).to(device)
    noise = torch.randn(batch, config.action_horizon, config.max_action_dim, generator=generator).to(device)
    t_one = torch.ones(batch, device=device)

    prefix_ms = _timed(lambda: model.cached_velocity(prefix, state), device, repeats)
    velocity = model.cached_velocity(prefix, state)
    step_ms = _timed(lambda: velocity(noise, t_one), device, repeats)
    cached_ms = _timed(lambda: model.sample_actions(prefix, state, num_steps, noise), device, repeats)
    uncached_ms = _timed(
        lambda: model.sample_actions(prefix, state, num_steps, noise, use_cache=False), device, repeats
    )
    cached = model.sample_actions(prefix, state, num_steps, noise)
    uncached = model.sample_actions(prefix, state, num_steps, noise, use_cache=False)
    return {
        "preset": name,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": batch,
        "prefix_tokens": prefix.embeds.shape[1],
        "suffix_tokens": model.suffix_len,
        "llm_params": sum(p.numel() for p in model.fusion.llm.parameters()),
        "expert_params": sum(p.numel() for p in model.fusion.expert.parameters()),
        "num_steps": num_steps,
        "prefix_ms": round(prefix_ms, 3),
        "step_ms": round(step_ms, 3),
        "sample_cached_ms": round(cached_ms, 3),
        "sample_uncached_ms": round(uncached_ms, 3),
        "speedup_cached_vs_uncached": round(uncached_ms / cached_ms, 2),
        "max_abs_diff_cached_vs_uncached": float((cached - uncached).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--presets", nargs="+", default=None, choices=sorted(PREFIX_SIZES),
                        help="default: tiny on cpu, small and full on cuda")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="default: float32 on cpu, bfloat16 on cuda")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.presets or (["small", "full"] if device.type == "cuda" else ["tiny"])
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    results = [bench_preset(name, device, dtype, args.batch, args.num_steps, args.repeats) for name in presets]
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
