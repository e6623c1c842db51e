"""Side by side in one run: LeRobot's ``pi0``, ``pi05`` and ``smolvla`` policy classes against geovla.

Prints one JSON object. Every policy is built from its config with random weights (nothing is
downloaded), gets the same cameras (3 by default, ``--image-size`` square frames in [0, 1]), a
4-d state and the same chunk size (50) and flow steps (10), batch 1, and is timed on
``predict_action_chunk`` of an already preprocessed batch (token ids fed directly, no
tokenizer): median, p95 and fastest of ``--calls`` calls after ``--warmup``, peak memory, and
parameter count. Peak memory is CUDA's ``max_memory_allocated`` while that policy runs; on a CPU
the process has one peak RSS for all of them, reported once as ``process_peak_rss_mb``. Each one
resizes the frames as it does on a robot (pi0 and pi05 pad to 224 px, smolvla to its VLM's
512 px); geovla keeps its ``--n-obs-steps`` history (2: the previous and current frames) and pads
nothing. Each gets as many token ids as its processor gives it: pi0 48 and pi05 200 (both pad to
their ``tokenizer_max_length``; pi05's prompt also carries the discretised state), smolvla and
geovla the instruction's 16. ``speedup_vs_pi0`` is pi0's median over each policy's median.

pi0 and pi05 are LeRobot's ports of openpi on transformers' own PaliGemma and Gemma
(``lerobot.policies.pi_gemma``): SigLIP So400m/14, Gemma 2B and a Gemma 300M action expert,
which in pi05 is conditioned on the flow time through adaptive RMS norms and gets no state token.
Their parameter counts include two vocabulary heads that LeRobot builds and the policies never
call (PaliGemma's, untied from its embeddings: 527M; the expert's: 263M), so pi0 reports 4.03B
and pi05 4.14B.

Precision with ``--dtype bfloat16``, as each stack is deployed: pi0 and pi05 with
``dtype="bfloat16"`` (their own mix: SigLIP, its projector and the norms stay float32), smolvla
with its VLM and expert in bfloat16 (its projections stay float32, as when it loads its
checkpoint), geovla with ``policy.to(torch.bfloat16)``.

SmolVLA builds its VLM from a model directory; without the real one this script writes one with
the shape of ``SmolVLM2-500M-Video-Instruct`` (text: 960 wide, 32 layers of which SmolVLA keeps
its default 16, 15 heads, 5 key/value heads; vision: SigLIP-B/16 at 512 px; pixel shuffle 4) and
a word-level tokenizer holding its special tokens. ``--smolvla-vlm DIR`` uses another directory
(e.g. the real checkpoint's, or a small one from :func:`write_smolvlm_dir`).

``--toy`` builds the same classes at toy sizes, to check on a CPU in seconds that they build and
run here (the figures mean nothing): pi0 and pi05 with both Gemmas 64 wide and 2 deep and a
one-layer 32-wide SigLIP (their variants are fixed names, so this script swaps in the toy shapes
while it builds them), smolvla on a 4-layer 64-wide SmolVLM (``SMOLVLM_TOY``).

Reference points printed with the figures: pi0 takes 73 ms per chunk on an RTX 4090 with 3
cameras (openpi); the targets on an H100 are geovla ``full`` <= 50 ms and ``small`` <= 15 ms.

    python perf/bench_anchors.py --device cuda --dtype bfloat16
    python perf/bench_anchors.py --toy --policies pi0 pi05 smolvla geovla-tiny --image-size 64 --calls 3
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import lerobot
import numpy as np
import torch
import transformers
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS, OBS_STATE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks.language import SMOLVLM2_500M, write_smolvlm_dir  # noqa: E402
from bench_policy import ACTION_DIM, STATE_DIM, build_policy, emit, peak_memory_mb, select_device, synchronize  # noqa: E402

PI_POLICIES = ("pi0", "pi05")
POLICIES = (*PI_POLICIES, "smolvla", "geovla-tiny", "geovla-small", "geovla-full")
DEFAULT_POLICIES = (*PI_POLICIES, "smolvla", "geovla-small", "geovla-full")
PI0_RTX4090_MS = 73.0
H100_TARGET_MS = {"geovla-full": 50.0, "geovla-small": 15.0}
INSTRUCTION_TOKENS = 16
TOKEN_ID_RANGE = 256  # random ids below every vocabulary's size (geovla tiny: bytes)

SMOLVLM_TOY = {
    "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1024},
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "patch_size": 16, "image_size": 64},
    "scale_factor": 2,
}
# Both Gemmas of a toy pi0 / pi05 (paligemma and expert attend to each other's keys, so they share
# heads and depth; 8 query heads as in every pi Gemma variant), and its SigLIP.
PI_TOY_GEMMA = {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16}
PI_TOY_SIGLIP = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), choices=POLICIES)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224, help="side of the square camera frames fed to every policy")
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument("--flow-steps", type=int, default=10)
    p.add_argument("--n-obs-steps", type=int, default=2, help="geovla's camera history")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smolvla-vlm", type=Path, default=None,
                   help="SmolVLA's VLM directory (default: one written with SmolVLM2-500M's shape)")
    p.add_argument("--toy", action="store_true",
                   help="pi0, pi05 and smolvla at toy sizes: checks that they build and run, not their figures")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.calls < 2 or args.warmup < 1 or args.cameras < 1:
        p.error("need --calls >= 2, --warmup >= 1 and --cameras >= 1")
    return args


def features(cameras: int, size: int) -> tuple[dict[str, PolicyFeature], dict[str, PolicyFeature]]:
    inputs = {f"observation.images.cam{i}": PolicyFeature(FeatureType.VISUAL, (3, size, size)) for i in range(cameras)}
    inputs[OBS_STATE] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    return inputs, {ACTION: PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}


def pi_modules(name: str) -> tuple[Any, Any, Any]:
    """LeRobot's (config class, policy class, modeling module) of ``pi0`` or ``pi05``."""
    if name == "pi0":
        from lerobot.policies.pi0 import modeling_pi0
        from lerobot.policies.pi0.configuration_pi0 import PI0Config

        return PI0Config, modeling_pi0.PI0Policy, modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05
    from lerobot.policies.pi05.configuration_pi05 import PI05Config

    return PI05Config, modeling_pi05.PI05Policy, modeling_pi05


def pi_config(args: argparse.Namespace, name: str) -> Any:
    """``PI0Config`` / ``PI05Config`` at its defaults (PaliGemma 2B + 300M expert, 224 px) with the
    run's cameras, chunk, flow steps, dtype and device."""
    config_class, _, _ = pi_modules(name)
    inputs, outputs = features(args.cameras, args.image_size)
    return config_class(input_features=inputs, output_features=outputs, chunk_size=args.chunk_size,
                        n_action_steps=args.chunk_size, num_inference_steps=args.flow_steps, dtype=args.dtype,
                        device=args.device, push_to_hub=False)


@contextlib.contextmanager
def toy_pi_sizes(modeling: Any) -> Iterator[None]:
    """While open, pi0's or pi05's ``modeling`` module builds its Gemmas as ``PI_TOY_GEMMA`` and its
    SigLIP as ``PI_TOY_SIGLIP``, whatever variant the config names; nothing else changes."""
    gemma = modeling.GemmaConfig(**PI_TOY_GEMMA)
    paligemma_class = modeling.PaliGemmaForConditionalGenerationWithPiGemma

    def toy_paligemma(config: Any) -> Any:
        for key, value in PI_TOY_SIGLIP.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = gemma.width  # the projector feeds the toy Gemma
        return paligemma_class(config)

    with (mock.patch.object(modeling, "get_gemma_config", lambda variant: gemma),
          mock.patch.object(modeling, "PaliGemmaForConditionalGenerationWithPiGemma", toy_paligemma)):
        yield


def build_pi(args: argparse.Namespace, name: str) -> tuple[Any, int]:
    """LeRobot's ``PI0Policy`` or ``PI05Policy`` (toy sizes with ``args.toy``), and its token count."""
    _, policy_class, modeling = pi_modules(name)
    config = pi_config(args, name)
    with toy_pi_sizes(modeling) if args.toy else contextlib.nullcontext():
        policy = policy_class(config)
    return policy, config.tokenizer_max_length  # its processor pads to the max length


def build_smolvla(args: argparse.Namespace, vlm_dir: Path) -> tuple[Any, int]:
    """LeRobot's ``SmolVLAPolicy`` with its default config on the VLM in ``vlm_dir``."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from transformers import AutoConfig

    side = AutoConfig.from_pretrained(vlm_dir).vision_config.image_size
    inputs, outputs = features(args.cameras, args.image_size)
    config = SmolVLAConfig(input_features=inputs, output_features=outputs, chunk_size=args.chunk_size,
                           n_action_steps=args.chunk_size, num_steps=args.flow_steps, vlm_model_name=str(vlm_dir),
                           load_vlm_weights=False, resize_imgs_with_padding=(side, side), device=args.device,
                           push_to_hub=False)
    policy = SmolVLAPolicy(config)
    if args.dtype == "bfloat16":
        policy.model.vlm_with_expert.to(torch.bfloat16)
    return policy, INSTRUCTION_TOKENS  # its processor pads to the longest instruction


def build_geovla(args: argparse.Namespace, preset: str) -> tuple[Any, int]:
    """geovla ``preset`` with the run's cameras, chunk, flow steps, history and dtype."""
    policy = build_policy(preset, args.image_size, args.device, args.n_obs_steps, args.flow_steps, args.seed,
                          chunk_size=args.chunk_size, cameras=tuple(f"cam{i}" for i in range(args.cameras)))
    return policy.to(getattr(torch, args.dtype)), INSTRUCTION_TOKENS


def build(name: str, args: argparse.Namespace, scratch: Path) -> tuple[Any, int]:
    """Policy ``name`` of ``POLICIES`` and the number of token ids its batches carry; smolvla's VLM
    directory is ``--smolvla-vlm`` or one written under ``scratch``."""
    if name in PI_POLICIES:
        return build_pi(args, name)
    if name == "smolvla":
        shape = SMOLVLM_TOY if args.toy else SMOLVLM2_500M
        return build_smolvla(args, args.smolvla_vlm or write_smolvlm_dir(scratch / "smolvlm", shape))
    return build_geovla(args, name.removeprefix("geovla-"))


def batch_for(args: argparse.Namespace, tokens: int, device: torch.device, generator: torch.Generator) -> dict[str, Any]:
    """A preprocessed batch of one: frames, state, ``tokens`` ids of which the first
    ``INSTRUCTION_TOKENS`` are the instruction (the rest padding)."""
    batch: dict[str, Any] = {
        f"observation.images.cam{i}": torch.rand(1, 3, args.image_size, args.image_size, generator=generator)
        for i in range(args.cameras)
    }
    batch[OBS_STATE] = torch.randn(1, STATE_DIM, generator=generator)
    batch[OBS_LANGUAGE_TOKENS] = torch.randint(0, TOKEN_ID_RANGE, (1, tokens), generator=generator)
    batch[OBS_LANGUAGE_ATTENTION_MASK] = torch.arange(tokens)[None] < INSTRUCTION_TOKENS
    return {k: v.to(device) for k, v in batch.items()}


def check_chunk(policy: Any, chunk: torch.Tensor, chunk_size: int) -> None:
    """Exits unless ``chunk`` is one finite ``(1, chunk_size, ACTION_DIM)`` chunk: a policy that
    returns anything else is broken here, and its time would mean nothing."""
    if tuple(chunk.shape) != (1, chunk_size, ACTION_DIM) or not bool(torch.isfinite(chunk).all()):
        raise SystemExit(f"{type(policy).__name__} returned a chunk of shape {tuple(chunk.shape)} "
                         f"(expected (1, {chunk_size}, {ACTION_DIM})) or non-finite values")


def time_policy(policy: Any, args: argparse.Namespace, tokens: int, device: torch.device) -> dict[str, Any]:
    """Latency of ``predict_action_chunk`` (fresh frames every call), peak memory, parameters."""
    generator = torch.Generator().manual_seed(args.seed)
    batches = [batch_for(args, tokens, device, generator) for _ in range(4)]
    policy.to(device).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    latencies = []
    for i in range(args.warmup + args.calls):
        synchronize(device)
        start = time.perf_counter()
        chunk = policy.predict_action_chunk(batches[i % len(batches)])
        synchronize(device)
        if i >= args.warmup:
            latencies.append((time.perf_counter() - start) * 1e3)
    check_chunk(policy, chunk, args.chunk_size)
    return {
        "median_ms": round(statistics.median(latencies), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "min_ms": round(min(latencies), 3),
        "peak_memory_mb": round(peak_memory_mb(device), 1) if device.type == "cuda" else None,
        "params": sum(p.numel() for p in policy.parameters()),
        "language_tokens": tokens,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = select_device(args.device, args.threads)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.policies:
            torch.manual_seed(args.seed)
            # Built on the device (random init of billions of weights is slow on a CPU);
            # LeRobot prints while building, and stdout is the JSON.
            with device, contextlib.redirect_stdout(sys.stderr):
                policy, tokens = build(name, args, Path(scratch))
            results[name] = time_policy(policy, args, tokens, device)
            del policy
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "pi0" in results:
        for result in results.values():
            result["speedup_vs_pi0"] = round(results["pi0"]["median_ms"] / result["median_ms"], 3)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "toy": args.toy,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "lerobot": lerobot.__version__},
        "torch_threads": torch.get_num_threads(),
        "cameras": args.cameras,
        "image_size": args.image_size,
        "chunk_size": args.chunk_size,
        "flow_steps": args.flow_steps,
        "geovla_n_obs_steps": args.n_obs_steps,
        "calls": args.calls,
        "policies": results,
        "process_peak_rss_mb": None if device.type == "cuda" else round(peak_memory_mb(device), 1),
        "reference": {"pi0_rtx4090_ms": PI0_RTX4090_MS, "h100_targets_ms": H100_TARGET_MS},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return emit(run(args), args.out)


if __name__ == "__main__":
    main()
