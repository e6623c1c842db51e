"""The main job (``make demo``): record, train, evaluate the tiny policy on the built-in task.

1. Record scripted ``reach`` demonstrations (with geometry ground truth) to a LeRobotDataset and
   write a video of the first episodes, all cameras side by side.
2. Train the ``tiny`` policy on them (``configs/demo_reach_tiny.yaml``).
3. Evaluate on 100 held-out seeds (success with its Wilson 95% interval), and again with the instruction swapped to another object of the
   scene (does the policy follow the language?).
4. Print the success rates and where the dataset, videos, plots and checkpoint are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from envs.recording import open_dataset, record_demos
from envs.video import caption_frame, write_mp4
from policies.intervals import wilson_interval
from policies.rollout import DEFAULT_SEED
from policies.train_config import TrainConfig, read_yaml
from policies.training import train

sys.path.insert(0, str(Path(__file__).parent))
from eval_policy import main as evaluate  # noqa: E402

DEMO_CONFIG = Path(__file__).parents[1] / "configs" / "demo_reach_tiny.yaml"


def dataset_video(root: Path, out: Path, episodes: int) -> Path:
    """mp4 of the first ``episodes`` episodes of a dataset, cameras side by side."""
    dataset = open_dataset(root)
    cameras = dataset.meta.camera_keys
    frames = []
    for index in range(len(dataset)):
        item = dataset[index]
        if item["episode_index"].item() >= episodes:
            break
        mosaic = np.concatenate(
            [(item[cam].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for cam in cameras], axis=1
        )
        frames.append(caption_frame(mosaic, f"ep {item['episode_index'].item()}  {item['task']}"))
    return write_mp4(frames, out, fps=dataset.fps)


def interval(results: dict) -> list[float]:
    """Wilson 95% interval of an evaluation's success rate."""
    return [round(bound, 3) for bound in wilson_interval(sum(results["successes"]), results["episodes"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output directory (replaced if it exists)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="training config (YAML)")
    parser.add_argument("--episodes", type=int, default=1000, help="demonstrations to record")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    args = parser.parse_args()

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    values = read_yaml(Path(args.config).read_text())
    values.update(dataset_root=str(out / "dataset"), output_dir=str(out / "train"))
    if args.steps is not None:
        values["steps"] = args.steps
    cfg = TrainConfig.from_dict(values)
    image_size = cfg.policy.get("image_size", 64)
    timings = {}

    start = time.perf_counter()
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=image_size, geometry=True)
    try:
        recorded = record_demos(env, envs.make_expert(env), out / "dataset", args.episodes)
    finally:
        env.close()
    expert_video = dataset_video(out / "dataset", out / "expert_episodes.mp4", episodes=4)
    timings["record_s"] = time.perf_counter() - start

    start = time.perf_counter()
    trained = train(cfg)
    timings["train_s"] = time.perf_counter() - start
    shutil.copytree(trained["final_dir"], out / "policy")

    start = time.perf_counter()
    common = ["--policy", trained["final_dir"], "--env", "builtin", "--episodes", str(args.eval_episodes),
              "--seed", str(DEFAULT_SEED)]
    held_out = evaluate(common + ["--out", str(out / "eval"), "--videos", "4"])
    swapped = evaluate(common + ["--out", str(out / "eval_swapped"), "--videos", "2", "--swap-instruction"])
    timings["eval_s"] = time.perf_counter() - start

    summary = {
        "demonstrations": recorded["episodes"],
        "training_steps": cfg.steps,
        "final_loss": trained["losses"][max(trained["losses"])],
        "success_rate_held_out": held_out["success_rate"],
        "success_interval_held_out": interval(held_out),
        "success_rate_swapped_instruction": swapped["success_rate"],
        "success_interval_swapped_instruction": interval(swapped),
        "eval_episodes": args.eval_episodes,
        **{k: round(v, 1) for k, v in timings.items()},
        "dataset": str(out / "dataset"),
        "expert_video": str(expert_video),
        "policy": str(out / "policy"),
        "eval": str(out / "eval"),
        "eval_swapped": str(out / "eval_swapped"),
        "metrics": str(out / "train" / "metrics.jsonl"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(
        f"\nSuccess on {args.eval_episodes} held-out seeds: {held_out['success_rate']:.0%} "
        f"(95% interval {summary['success_interval_held_out'][0]:.0%}-{summary['success_interval_held_out'][1]:.0%}); "
        f"with the instruction swapped to another object: {swapped['success_rate']:.0%} "
        f"({summary['success_interval_swapped_instruction'][0]:.0%}-"
        f"{summary['success_interval_swapped_instruction'][1]:.0%})\n"
        f"Policy:  {out / 'policy'}\nVideos:  {out / 'eval' / 'videos'}, {expert_video}\n"
        f"Plots:   {out / 'eval' / 'success.png'}, {out / 'eval_swapped' / 'success.png'}"
    )


if __name__ == "__main__":
    main()
