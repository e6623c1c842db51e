"""Round-trip latency of the policy server over loopback against the same policy in-process.

    python perf/bench_serving.py                          # random-weight tiny policy, 3 cameras, 64 px, CPU
    python perf/bench_serving.py --policy DIR --calls 100 # a saved policy (with its processors)
    python perf/bench_serving.py --device cuda            # both copies of the policy on the GPU

Starts ``scripts/serve_policy.py`` in a subprocess on a free loopback port and loads the same
policy in this process. Each timed call sends the same observation and noise to both (in
alternating order), so ``overhead_ms`` (paired differences) is what serving adds: framing,
copying, the socket and the server's thread hand-off. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from tqdm.auto import tqdm

from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors
from policies.policy_client import PolicyClient
from policies.wire import encode_message

SERVE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "serve_policy.py"
STATE_DIM = ACTION_DIM = 4


def save_random_policy(directory: Path, cameras: int, image_size: int) -> None:
    """A random-weight ``tiny`` policy with unit normalisation stats, saved with its processors."""
    features = {f"observation.images.camera{v}": PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size))
                for v in range(cameras)}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    config = GeoVLAConfig(
        preset="tiny", device="cpu", image_size=image_size, push_to_hub=False, input_features=features,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
    )
    unit = {"mean": np.zeros(ACTION_DIM, np.float32), "std": np.ones(ACTION_DIM, np.float32),
            "min": -np.ones(ACTION_DIM, np.float32), "max": np.ones(ACTION_DIM, np.float32)}
    torch.manual_seed(0)
    policy = GeoVLAPolicy(config)
    policy.attach_processors(*make_geovla_pre_post_processors(config, {"observation.state": unit, "action": unit}))
    policy.save_pretrained(directory)


def observations(policy: GeoVLAPolicy, count: int, seed: int) -> list[dict]:
    """``count`` random observations in the policy's cameras, image size and state width."""
    rng = np.random.default_rng(seed)
    shapes = {key.removeprefix("observation.images."): policy.config.image_features[key].shape
              for key in policy.config.camera_keys}
    return [{
        "images": {cam: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for cam, (_, h, w) in shapes.items()},
        "state": rng.uniform(-0.1, 0.1, policy.config.state_dim or 0).astype(np.float32),
        "instruction": "touch the red ball",
    } for _ in range(count)]


def start_server(directory: Path, device: str | None) -> tuple[subprocess.Popen, int]:
    """``serve_policy.py`` on a free loopback port; returns the process and the port."""
    command = [sys.executable, str(SERVE_SCRIPT), "--policy", str(directory), "--port", "0"]
    process = subprocess.Popen(command + (["--device", device] if device else []), stdout=subprocess.PIPE, text=True)
    for line in process.stdout:  # loading may print other lines first
        if line.startswith("{"):
            return process, json.loads(line)["port"]
    raise RuntimeError(f"serve_policy.py exited with code {process.wait()} before listening")


def _timed_ms(fn, device: str) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3, result


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3)}


def bench(directory: Path, device: str | None, calls: int, warmup: int) -> dict:
    """Paired in-process and round-trip ``predict_action`` latencies (ms) on the same inputs."""
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON (loading prints a line)
        policy = GeoVLAPolicy.from_pretrained(directory, **({"device": device} if device else {}))
    device = policy.config.device
    inputs = observations(policy, warmup + calls, seed=0)
    generator = torch.Generator().manual_seed(0)
    noises = [torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, generator=generator)
              for _ in inputs]
    process, port = start_server(directory, device)
    local, remote, max_diff = [], [], 0.0
    try:
        with PolicyClient("127.0.0.1", port) as client:
            policy.reset()
            client.reset()
            for i in tqdm(range(warmup + calls), desc="calls", unit="call"):
                run_local = lambda: policy.predict_action(inputs[i], noise=noises[i].to(device))  # noqa: E731
                run_remote = lambda: client.predict_action(inputs[i], noise=noises[i])  # noqa: E731
                if i % 2:  # alternate the order so neither side always runs second
                    (t_remote, a_remote), (t_local, a_local) = _timed_ms(run_remote, device), _timed_ms(run_local, device)
                else:
                    (t_local, a_local), (t_remote, a_remote) = _timed_ms(run_local, device), _timed_ms(run_remote, device)
                max_diff = max(max_diff, float(np.abs(a_local - a_remote).max()))
                if i >= warmup:
                    local.append(t_local)
                    remote.append(t_remote)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "preset": policy.config.preset,
        "cameras": len(policy.config.camera_keys),
        "image_size": list(policy.config.image_features[policy.config.camera_keys[0]].shape[1:]),
        "request_bytes": len(encode_message({"op": "predict_action", "observation": inputs[0], "noise": noises[0]})),
        "calls": calls,
        "warmup": warmup,
        "round_trip_ms": _summary(remote),
        "in_process_ms": _summary(local),
        "overhead_ms": _summary([r - l for r, l in zip(remote, local)]),
        "max_abs_action_diff": max_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=None, help="saved policy dir; default: a random tiny policy")
    parser.add_argument("--device", default=None, help="device of both policy copies (default: the saved one)")
    parser.add_argument("--cameras", type=int, default=3, help="cameras of the random policy")
    parser.add_argument("--image-size", type=int, default=64, help="image side of the random policy")
    parser.add_argument("--calls", type=int, default=50, help="timed calls (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.policy
        if directory is None:
            directory = Path(scratch) / "policy"
            save_random_policy(directory, args.cameras, args.image_size)
        result = bench(directory, args.device, args.calls, args.warmup)
    result["policy"] = str(args.policy) if args.policy else f"random tiny, {args.cameras} cameras"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
