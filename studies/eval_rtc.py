"""Real-time chunking under a simulated inference delay: success and the smoothness of chunk joins.

    python studies/eval_rtc.py --policy outputs/demo/policy --delays 0 2 3 --episodes 100

On the built-in task, each chunk arrives ``d`` control steps after the observation it was
predicted from while the robot keeps executing the chunk in flight
(``policies.delayed_chunks``). For every delay the policy is evaluated without and with real-time
chunking (LeRobot's ``RTCProcessor``) on the same held-out seeds and flow noise. Reported per run:
success rate with its Wilson 95% interval, the mean change of the executed action at the steps
where a new chunk takes over (``boundary_change``) and, for reference, within chunks. Writes
``results.json`` and ``rtc.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from lerobot.configs import RTCAttentionSchedule  # noqa: E402
from lerobot.policies.rtc.configuration_rtc import RTCConfig  # noqa: E402

from policies.figures import save_figure  # noqa: E402
from policies.intervals import wilson_interval  # noqa: E402
from policies.modeling_geovla import GeoVLAPolicy  # noqa: E402
from envs.tabletop.env import TASKS  # noqa: E402
from policies.rollout import DEFAULT_SEED, env_factory, evaluate_policy  # noqa: E402

SUMMARY_KEYS = ("delay", "rtc", "success_rate", "success_interval", "boundary_change", "within_chunk_change",
                "boundaries", "mean_steps", "eval_s")


def run(policy: GeoVLAPolicy, delays: list[int], episodes: int, seed: int, task: str,
        batch_size: int, max_steps: int | None = None) -> list[dict[str, Any]]:
    """One evaluation per (delay, with/without RTC), all on the same seeds."""
    make_env, _ = env_factory(policy, "builtin", task)
    runs = []
    for delay in delays:
        for rtc in (False, True):
            result = evaluate_policy(policy, make_env, episodes, seed, batch_size=batch_size, max_steps=max_steps,
                                     delay=delay, rtc=rtc)
            successes = sum(result["successes"])
            result["success_interval"] = wilson_interval(successes, episodes)
            runs.append({key: result[key] for key in SUMMARY_KEYS})
            print(json.dumps(runs[-1]))
    return runs


def plot(runs: list[dict[str, Any]], path: Path) -> Path:
    """Success (with Wilson 95% intervals) and boundary change against the delay, with/without RTC."""
    fig, (success, change) = plt.subplots(1, 2, figsize=(10, 4))
    for rtc, colour, shift in ((False, "tab:gray", -0.06), (True, "tab:blue", 0.06)):
        chosen = [r for r in runs if r["rtc"] == rtc]
        delays = [r["delay"] + shift for r in chosen]
        rates = [r["success_rate"] for r in chosen]
        errors = [[r["success_rate"] - r["success_interval"][0] for r in chosen],
                  [r["success_interval"][1] - r["success_rate"] for r in chosen]]
        label = "with RTC" if rtc else "without RTC"
        success.errorbar(delays, rates, yerr=errors, fmt="o-", capsize=4, color=colour, label=label)
        change.plot(delays, [r["boundary_change"] for r in chosen], "o-", color=colour, label=f"{label}: at joins")
        change.plot(delays, [r["within_chunk_change"] for r in chosen], "x:", color=colour,
                    label=f"{label}: within chunks")
    success.set_ylim(0, 1.05)
    success.set_xlabel("inference delay (control steps)")
    success.set_ylabel("success rate (Wilson 95%)")
    success.legend()
    change.set_xlabel("inference delay (control steps)")
    change.set_ylabel("mean |a_t - a_(t-1)|")
    change.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="directory saved by GeoVLAPolicy.save_pretrained")
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 2, 3])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--task", default="reach", choices=TASKS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--batch-size", type=int, default=10, help="envs stepped together")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per episode")
    parser.add_argument("--max-guidance-weight", type=float, default=RTCConfig.max_guidance_weight)
    parser.add_argument("--schedule", default=RTCConfig.prefix_attention_schedule.value,
                        choices=[s.value for s in RTCAttentionSchedule],
                        help="RTC's prefix weights: LINEAR (LeRobot's default) blends the leftovers past the "
                             "delay into the new chunk; ZEROS guides only the first `delay` actions")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/rtc"))
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = GeoVLAPolicy.from_pretrained(args.policy, device="cpu")
    policy.config.rtc_config = RTCConfig(execution_horizon=policy.config.chunk_size,
                                         max_guidance_weight=args.max_guidance_weight,
                                         prefix_attention_schedule=RTCAttentionSchedule(args.schedule))
    policy.init_rtc_processor()
    runs = run(policy, args.delays, args.episodes, args.seed, args.task, args.batch_size, args.max_steps)
    results = {"policy": str(args.policy), "task": args.task, "episodes": args.episodes, "seed": args.seed,
               "execute_steps": policy.config.n_action_steps, "chunk_size": policy.config.chunk_size,
               "max_guidance_weight": args.max_guidance_weight, "schedule": args.schedule, "runs": runs,
               "plot": str(plot(runs, args.out / "rtc.png"))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {args.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
