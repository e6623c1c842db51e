"""The main job (``make demo``): record expert demonstrations of the built-in task and show them.

Writes a LeRobotDataset of scripted ``reach`` episodes with geometry ground truth, then reads it
back and writes an mp4 of the first episodes, all cameras side by side, captioned with the
instruction. Prints where everything is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from envs.recording import open_dataset, record_demos
from envs.video import caption_frame, write_mp4


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
        caption = f"ep {item['episode_index'].item()}  {item['task']}"
        frames.append(caption_frame(mosaic, caption))
    return write_mp4(frames, out, fps=dataset.fps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output directory (replaced if it exists)")
    parser.add_argument("--task", choices=["reach", "pick"], default="reach")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--video-episodes", type=int, default=4)
    args = parser.parse_args()

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    env = gym.make(envs.TABLETOP_ID, task=args.task, image_size=64, geometry=True)
    start = time.perf_counter()
    try:
        summary = record_demos(env, envs.make_expert(env), out / "dataset", args.episodes)
    finally:
        env.close()
    seconds = time.perf_counter() - start
    video = dataset_video(out / "dataset", out / "expert_episodes.mp4", args.video_episodes)
    print(
        json.dumps(
            {
                "task": args.task,
                "episodes": summary["episodes"],
                "frames": summary["frames"],
                "expert_success_rate": summary["expert_success_rate"],
                "recording_seconds": round(seconds, 1),
                "dataset": str(out / "dataset"),
                "video": str(video),
            },
            indent=2,
        )
    )
    print(f"\nDataset: {out / 'dataset'}  (open with envs.recording.open_dataset)\nVideo:   {video}")


if __name__ == "__main__":
    main()
