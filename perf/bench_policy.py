"""Benchmark ``GeoVLAPolicy.predict_action``: latency per action chunk, its breakdown, peak memory.

Prints one JSON object. The policy has random weights and synthetic normalisation stats; each
call gets 3 camera images at the policy's size, a state and an instruction, and is one control
step of the ``n_obs_steps``-frame history the geometry aggregator reads (T=2 by default), with
10 flow steps. Latency is the median and p95 wall time of ``--calls`` plain calls after
``--warmup`` calls (``cpu_median``: the median CPU time of the process; with one thread, the
call's compute, less disturbed by other processes sharing the cores). The breakdown times
``--breakdown-calls`` further calls with timers around the parts (medians, milliseconds):
``geometry`` (aggregator + spatial tokens), ``backbone`` (the FiLM ViTs), ``prefix`` (the LLM pass
that fills the prefix KV cache), ``denoising`` (the flow loop, i.e. sampling minus the prefix
pass) and ``other`` (pre/post-processing, prefix assembly). ``kernels_ms`` splits the mean self
time of ``--breakdown-calls`` profiled calls by op kind (``torch.profiler``; CPU time, so on CUDA
it is the host's side): ``attention`` (the SDPA kernels), ``matmul`` (matrix products and
convolutions) and ``other`` (every other aten op). Attention and matmul are the arithmetic the
model asks for; at this precision and thread count a call cannot take less than their sum however
little else it does. With ``--compile`` (``GeoVLAModel.compile_sampling``) a call is one compiled
graph that neither timers nor the profiler can split, so both are null.
Peak memory is the process's peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
``chunk`` is the action chunk of a reset policy for fixed noise, to compare code versions.

``--paired DIR`` compares this checkout against another one (e.g. a ``git worktree`` of an
older commit): ``--rounds`` times, a subprocess importing the packages from DIR and one
importing them from this checkout each run the benchmark, alternating so that both see the
same machine load; it reports each side's latencies, the per-round and median speed-ups (of the
median wall and CPU times), the speed-up of the fastest call (the least disturbed by other
processes), and the largest difference between the two sides' chunks. With ``--paired-eager`` the
other side runs without ``--compile``.

    python perf/bench_policy.py --threads 1                                  # tiny, CPU, 64 px
    python perf/bench_policy.py --threads 1 --paired /tmp/geovla_baseline --rounds 3
    python perf/bench_policy.py --threads 1 --compile --paired /tmp/geovla_baseline --paired-eager
    python perf/bench_policy.py --device cuda --preset small --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_STATE

REPO = Path(__file__).resolve().parents[1]
CAMERAS = ("front", "left", "right")
STATE_DIM = ACTION_DIM = 4
INSTRUCTION = "touch the red cube"
PARTS = ("geometry", "backbone", "prefix", "denoising", "other")


def add_model_arguments(p: argparse.ArgumentParser, dtype_help: str) -> None:
    """``--preset --device --dtype --image-size --threads``, shared with ``bench_train``."""
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help=dtype_help)
    p.add_argument("--image-size", type=int, default=None, help="default: the preset's (64 tiny, 224 small/full)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, "bfloat16 casts the weights (policy.to(torch.bfloat16)); actions stay float32")
    p.add_argument("--compile", action="store_true", help="torch.compile the sampling (GeoVLAModel.compile_sampling)")
    p.add_argument("--compile-mode", default=None, choices=["reduce-overhead", "max-autotune"],
                   help="torch.compile mode with --compile (reduce-overhead: CUDA graphs on a GPU)")
    p.add_argument("--n-obs-steps", type=int, default=2)
    p.add_argument("--flow-steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--breakdown-calls", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paired", type=Path, default=None, help="another checkout to compare against (see above)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of --paired")
    p.add_argument("--paired-eager", action="store_true",
                   help="with --paired and --compile: the other checkout runs eager "
                        "(e.g. one from before compile_sampling)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.calls < 2 or args.warmup < 1 or args.breakdown_calls < 1:
        p.error("need --calls >= 2, --warmup >= 1 and --breakdown-calls >= 1")
    return args


def build_policy(preset: str, image_size: int | None, device: str, n_obs_steps: int, flow_steps: int,
                 seed: int, lora_rank: int = 0, chunk_size: int | None = None,
                 cameras: tuple[str, ...] = CAMERAS) -> Any:
    """A random-weight ``GeoVLAPolicy`` (eval mode) with ``cameras``, 4-d state and action, and
    processors attached; ``lora_rank`` > 0 adds peft LoRA to the LLM and expert; ``chunk_size``
    None keeps the config's default."""
    from policies.configuration_geovla import GeoVLAConfig
    from policies.modeling_geovla import GeoVLAPolicy
    from policies.processor_geovla import make_geovla_pre_post_processors

    size = image_size or (64 if preset == "tiny" else 224)
    inputs = {f"observation.images.{cam}": PolicyFeature(FeatureType.VISUAL, (3, size, size)) for cam in cameras}
    inputs[OBS_STATE] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    config = GeoVLAConfig(
        preset=preset, image_size=size, device=device, push_to_hub=False, n_obs_steps=n_obs_steps,
        num_flow_steps=flow_steps, lora_rank=lora_rank, input_features=inputs,
        **({} if chunk_size is None else {"chunk_size": chunk_size}),
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
    )
    stats = {
        OBS_STATE: {"mean": np.zeros(STATE_DIM, np.float32), "std": np.full(STATE_DIM, 0.5, np.float32)},
        ACTION: {"mean": np.zeros(ACTION_DIM, np.float32), "std": np.ones(ACTION_DIM, np.float32)},
    }
    torch.manual_seed(seed)
    with torch.device(device):  # built where it runs: random init of a `full` model is slow on a CPU
        policy = GeoVLAPolicy(config).to(device).eval()
    policy.attach_processors(*make_geovla_pre_post_processors(config, dataset_stats=stats))
    return policy


def observations(size: int, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` robot observations with random uint8 images ``[size, size, 3]`` per camera."""
    rng = np.random.default_rng(seed)
    return [{
        "images": {cam: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for cam in CAMERAS},
        "state": rng.standard_normal(STATE_DIM).astype(np.float32),
        "instruction": INSTRUCTION,
    } for _ in range(count)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PartTimers:
    """Wall-time accumulators wrapped around the policy's parts (synchronised on CUDA)."""

    def __init__(self, policy: Any, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        model = policy.model
        self._time_method(model.backbone, "forward_streams", "backbone")
        self._time_method(model.action_model, "sample_actions", "sampling")
        self._time_method(model.action_model.fusion, "build_prefix_cache", "prefix")
        if model.geometry is not None:
            self._time_module(model.geometry.aggregator, "geometry")
            self._time_module(model.spatial, "geometry")
        self._started: dict[str, float] = {}

    def _time_method(self, owner: Any, name: str, part: str) -> None:
        """Replace the bound method ``owner.name`` by a timed call of it."""
        method = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._start(part)
            out = method(*args, **kwargs)
            self._stop(part)
            return out

        setattr(owner, name, timed)

    def _time_module(self, module: torch.nn.Module, part: str) -> None:
        """Time every call of ``module`` with forward hooks."""
        module.register_forward_pre_hook(lambda *_: self._start(part))
        module.register_forward_hook(lambda *_: self._stop(part))

    def _start(self, part: str) -> None:
        synchronize(self.device)
        self._started[part] = time.perf_counter()

    def _stop(self, part: str) -> None:
        synchronize(self.device)
        self.totals[part] += time.perf_counter() - self._started.pop(part)

    def take(self, total_s: float) -> dict[str, float]:
        """This call's parts in ms (and reset): denoising = sampling - prefix; other = the rest."""
        t = dict(self.totals)
        self.totals.clear()
        parts = {
            "geometry": t.get("geometry", 0.0),
            "backbone": t.get("backbone", 0.0),
            "prefix": t.get("prefix", 0.0),
            "denoising": t.get("sampling", 0.0) - t.get("prefix", 0.0),
        }
        parts["other"] = total_s - sum(parts.values())
        return {k: v * 1e3 for k, v in parts.items()}


# The kernels, not their dispatching wrappers (aten::scaled_dot_product_attention, aten::linear, ...).
ATTENTION_PREFIXES = ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::addbmm",
              "aten::mkldnn_convolution", "aten::cudnn_convolution")


def op_kind(name: str) -> str:
    """``attention``, ``matmul`` or ``other`` for a profiler event name such as ``aten::addmm``."""
    if name.startswith(ATTENTION_PREFIXES):
        return "attention"
    return "matmul" if name in MATMUL_OPS else "other"


def kernel_times(call: Callable[[], Any], calls: int) -> dict[str, float]:
    """Mean self time per call in ms of each ``op_kind`` over ``calls`` profiled calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):  # self times of ops add up without double counting
            totals[op_kind(event.key)] += event.self_cpu_time_total
    return {kind: round(totals[kind] / calls / 1e3, 3) for kind in ("attention", "matmul", "other")}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def select_device(name: str, threads: int | None) -> torch.device:
    """The torch device ``name`` (exits when CUDA is asked for but absent); CPU threads if given."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    if threads:
        torch.set_num_threads(threads)
    return device


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark in this process (see the module docstring)."""
    import geometry

    device = select_device(args.device, args.threads)
    policy = build_policy(args.preset, args.image_size, args.device, args.n_obs_steps, args.flow_steps, args.seed)
    policy.to(getattr(torch, args.dtype))
    if args.compile:
        policy.model.compile_sampling(mode=args.compile_mode)
    size = policy.config.image_size
    obs = observations(size, 8, args.seed)
    stream: Iterator[dict[str, Any]] = (obs[i % len(obs)] for i in range(10**9))

    def call() -> tuple[float, float]:
        """(wall, CPU) seconds of one call."""
        start, cpu = time.perf_counter(), time.process_time()
        policy.predict_action(next(stream))
        synchronize(device)
        return time.perf_counter() - start, time.process_time() - cpu

    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, generator=generator).to(device)
    policy.reset()
    chunk = policy.predict_action(obs[0], noise=noise)

    for _ in range(args.warmup):
        call()
    latencies, cpu_times = (np.array(t) * 1e3 for t in zip(*(call() for _ in range(args.calls))))
    breakdown = kernels = None  # a compiled call is one graph: timers would be traced into it
    if not args.compile:
        timers = PartTimers(policy, device)
        parts = [timers.take(call()[0]) for _ in range(args.breakdown_calls)]
        breakdown = {k: round(statistics.median(p[k] for p in parts), 3) for k in PARTS}
        kernels = kernel_times(call, args.breakdown_calls)
    return {
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": args.dtype,
        "compile": (args.compile_mode or "default") if args.compile else False,
        "torch_threads": torch.get_num_threads(),
        "image_size": size,
        "cameras": len(CAMERAS),
        "n_obs_steps": policy.config.n_obs_steps,
        "flow_steps": policy.config.num_flow_steps,
        "chunk_size": policy.config.chunk_size,
        "calls": args.calls,
        "latency_ms": {
            "median": round(float(np.median(latencies)), 3),
            "p95": round(float(np.percentile(latencies, 95)), 3),
            "min": round(float(latencies.min()), 3),
            "cpu_median": round(float(np.median(cpu_times)), 3),
        },
        "breakdown_ms": breakdown,
        "kernels_ms": kernels,
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "params": sum(p.numel() for p in policy.parameters()),
        "chunk": np.asarray(chunk).round(6).tolist(),
        "source": str(Path(geometry.__file__).resolve().parents[1]),
    }


def side_arguments(argv: list[str], paired_eager: bool) -> tuple[list[str], list[str]]:
    """The arguments of one benchmark run of the other checkout and of this one: ``argv`` without
    the pairing options, and for the other side without ``--compile`` when ``paired_eager``."""
    this = [a for a in argv if a != "--paired-eager"]
    for option in ("--paired", "--rounds", "--out"):
        this = _drop_option(this, option)
    other = _drop_option([a for a in this if a != "--compile"], "--compile-mode") if paired_eager else this
    return other, this


def paired(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Alternate subprocess runs importing from ``args.paired`` and from this checkout."""
    other_args, forwarded = side_arguments(argv, args.paired_eager)
    sides: dict[str, list[dict[str, Any]]] = {"other": [], "this": []}
    for _ in range(args.rounds):
        for side, root, side_args in (("other", args.paired.resolve(), other_args), ("this", REPO, forwarded)):
            env = {**os.environ, "PYTHONPATH": str(root)}
            proc = subprocess.run([sys.executable, __file__, *side_args], env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"benchmark run for {root} failed:\n{proc.stderr[-4000:]}")
            result = json.loads(proc.stdout)
            if Path(result["source"]) != root:
                raise SystemExit(f"the run meant for {root} imported the packages from {result['source']}")
            sides[side].append(result)
    medians = {side: [r["latency_ms"]["median"] for r in runs] for side, runs in sides.items()}
    cpu = {side: [r["latency_ms"]["cpu_median"] for r in runs] for side, runs in sides.items()}
    ratios = [o / t for o, t in zip(medians["other"], medians["this"])]
    cpu_ratios = [o / t for o, t in zip(cpu["other"], cpu["this"])]
    fastest = {side: min(r["latency_ms"]["min"] for r in runs) for side, runs in sides.items()}
    chunks = {side: np.asarray(runs[0]["chunk"]) for side, runs in sides.items()}
    return {
        "other": str(args.paired.resolve()),
        "this": str(REPO),
        "rounds": args.rounds,
        "median_latency_ms": medians,
        "speedup_per_round": [round(r, 3) for r in ratios],
        "speedup_median": round(statistics.median(ratios), 3),
        "median_cpu_ms": cpu,
        "cpu_speedup_median": round(statistics.median(cpu_ratios), 3),
        "fastest_call_ms": fastest,
        "speedup_fastest_call": round(fastest["other"] / fastest["this"], 3),
        "chunk_max_abs_diff": float(np.abs(chunks["other"] - chunks["this"]).max()),
        "runs": sides,
    }


def _drop_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` (or ``name=VALUE``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(f"{name}="):
            out.append(a)
    return out


def emit(result: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Print ``result`` as JSON and write it to ``out`` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return emit(paired(args, argv) if args.paired is not None else run(args), args.out)


if __name__ == "__main__":
    main()
