"""Evaluate a saved geovla policy by batched rollouts: success rate, mean reward, videos, a plot.

    python scripts/eval_policy.py --policy outputs/demo/policy --env builtin --task reach --episodes 50
    python scripts/eval_policy.py --policy DIR --env builtin --episodes 50 --swap-instruction
    python scripts/eval_policy.py --policy DIR --env pusht --episodes 10 --videos 2
    python scripts/eval_policy.py --policy DIR --env builtin --device cuda --dtype bfloat16

Episode ``i`` uses seed ``--seed + i``; the default seed (100000) is disjoint from the recording
seeds of the training demos (from 0). ``--swap-instruction`` (built-in task) names another object
of the scene after reset and measures success against it: does the policy follow the language?
Writes ``results.json``, ``success.png`` and ``videos/episode_NNN.mp4`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from policies.figures import save_figure  # noqa: E402
from policies.modeling_geovla import GeoVLAPolicy  # noqa: E402
from envs.tabletop.env import TASKS  # noqa: E402
from policies.rollout import DEFAULT_SEED, env_factory, evaluate_policy  # noqa: E402

ENVS = ("builtin", "pusht", "aloha")


def family(results: dict[str, Any], index: int) -> str:
    """Task family of an episode: the target's shape on the built-in task, else the task."""
    target = results["targets"][index]
    return f"{results['task']}: {target.split()[-1]}" if target else results["task"]


def plot_results(results: dict[str, Any], path: Path) -> Path:
    """Success rate per task family (bars) and cumulative success rate over episodes."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for index, success in enumerate(results["successes"]):
        groups[family(results, index)].append(success)
    names = sorted(groups)
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(10, 4))
    bars.bar(names, [np.mean(groups[n]) for n in names], color="tab:blue")
    for i, name in enumerate(names):
        bars.text(i, np.mean(groups[name]) + 0.02, f"n={len(groups[name])}", ha="center")
    bars.set_ylim(0, 1.1)
    bars.set_ylabel("success rate")
    bars.set_title("success per task family")
    successes = np.asarray(results["successes"], dtype=float)
    episodes = np.arange(1, len(successes) + 1)
    curve.plot(episodes, np.cumsum(successes) / episodes, marker=".")
    curve.set_ylim(0, 1.05)
    curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve.set_xlabel("episode")
    curve.set_ylabel("cumulative success rate")
    swap = " (instruction swapped)" if results["swap_instruction"] else ""
    curve.set_title(f"{results['env']}{swap}: {results['success_rate']:.0%} success")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="directory saved by GeoVLAPolicy.save_pretrained")
    parser.add_argument("--env", required=True, choices=ENVS)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--task", default=None, help=f"builtin: {'|'.join(TASKS)} (reach); aloha: insertion|transfer_cube")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--swap-instruction", action="store_true", help="builtin only: name another object")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval"))
    parser.add_argument("--videos", type=int, default=2, help="episodes written as mp4")
    parser.add_argument("--batch-size", type=int, default=10, help="envs stepped together")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per episode")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="weights' dtype (bfloat16: policy.to(torch.bfloat16), for GPUs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is several times faster on a busy 2-core machine)")
    args = parser.parse_args(argv)
    if args.swap_instruction and args.env != "builtin":
        parser.error("--swap-instruction needs --env builtin (the other envs have one object to act on)")
    if args.task is not None and args.env == "builtin" and args.task not in TASKS:
        parser.error(f"--task for builtin must be one of {TASKS}, got {args.task!r}")

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = GeoVLAPolicy.from_pretrained(args.policy, device=args.device).to(getattr(torch, args.dtype))
    make_env, task = env_factory(policy, args.env, args.task)
    results = evaluate_policy(
        policy, make_env, args.episodes, args.seed, swap_instruction=args.swap_instruction,
        max_steps=args.max_steps, video_dir=args.out / "videos", num_videos=args.videos,
        batch_size=args.batch_size,
    )
    dtype = str(policy.model.dtype).removeprefix("torch.")  # the weights' dtype, as the rollouts ran
    results = {"env": args.env, "task": task, "policy": str(args.policy), "dtype": dtype, **results}
    results["plot"] = str(plot_results(results, args.out / "success.png"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, list) or k == "videos"}, indent=2))
    print(f"results: {args.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
