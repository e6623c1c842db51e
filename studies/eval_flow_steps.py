"""Success rate vs flow-matching steps: the quality cost of sampling with fewer Euler steps.

    python studies/eval_flow_steps.py --policy outputs/demo/policy --steps 10 5 3 --episodes 50

Evaluates a saved policy on the built-in task once per step count (``policies.rollout.
evaluate_policy``; every step count sees the same seeds, so the comparison is paired) and
prints one JSON object, also written to ``--out``: per step count the success rate, mean reward
and episode length, the number of chunks predicted, the expert calls per chunk (the sampler's
real step count) and the median wall time of one chunk (one batched ``predict_action_chunk``
over ``min(batch_size, episodes)`` envs) in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from policies.modeling_geovla import GeoVLAPolicy  # noqa: E402
from envs.tabletop.env import TASKS  # noqa: E402
from policies.rollout import DEFAULT_SEED, env_factory, evaluate_policy  # noqa: E402


class SamplerProbe:
    """Counts the expert's denoising calls and times every chunk prediction of ``policy``."""

    def __init__(self, policy: GeoVLAPolicy) -> None:
        self.chunk_ms: list[float] = []
        self.expert_calls = 0
        self._wrap(policy, "predict_action_chunk", self._timed)
        self._wrap(policy.model.action_model.fusion, "forward_suffix", self._counted)

    @staticmethod
    def _wrap(owner: Any, name: str, wrapper: Callable[[Callable, tuple, dict], Any]) -> None:
        method = getattr(owner, name)
        setattr(owner, name, lambda *args, **kwargs: wrapper(method, args, kwargs))

    def _timed(self, method: Callable, args: tuple, kwargs: dict) -> Any:
        start = time.perf_counter()
        out = method(*args, **kwargs)
        self.chunk_ms.append((time.perf_counter() - start) * 1e3)
        return out

    def _counted(self, method: Callable, args: tuple, kwargs: dict) -> Any:
        self.expert_calls += 1
        return method(*args, **kwargs)

    def take(self) -> dict[str, Any]:
        """Chunks, expert calls per chunk and median chunk time since the last ``take``."""
        chunks = len(self.chunk_ms)
        stats = {
            "chunks": chunks,
            "expert_calls_per_chunk": self.expert_calls / chunks if chunks else 0.0,
            "chunk_ms_median": round(statistics.median(self.chunk_ms), 3) if chunks else None,
        }
        self.chunk_ms, self.expert_calls = [], 0
        return stats


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="directory saved by GeoVLAPolicy.save_pretrained")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 5, 3], help="flow steps to compare")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--task", default="reach", choices=TASKS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--batch-size", type=int, default=10, help="envs stepped together")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per episode")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_flow_steps.json"))
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.steps):
        parser.error(f"--steps must all be >= 1, got {args.steps}")

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = GeoVLAPolicy.from_pretrained(args.policy, device=args.device)
    make_env, task = env_factory(policy, "builtin", args.task)
    probe = SamplerProbe(policy)
    trained_steps = policy.config.num_flow_steps
    rows = []
    try:
        for steps in args.steps:
            policy.config.num_flow_steps = steps
            results = evaluate_policy(policy, make_env, args.episodes, args.seed, max_steps=args.max_steps,
                                      batch_size=args.batch_size, progress=False)
            rows.append({
                "flow_steps": steps,
                "success_rate": results["success_rate"],
                "mean_reward": results["mean_reward"],
                "mean_steps": results["mean_steps"],
                **probe.take(),
                "eval_s": round(results["eval_s"], 2),
            })
    finally:
        policy.config.num_flow_steps = trained_steps
    report = {
        "policy": str(args.policy),
        "task": task,
        "episodes": args.episodes,
        "seed": args.seed,
        "batch_size": min(args.batch_size, args.episodes),
        "trained_flow_steps": trained_steps,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
