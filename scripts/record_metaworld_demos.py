"""Record MetaWorld's scripted experts to one LeRobotDataset per task; print a timed summary as JSON.

    MUJOCO_GL=egl python scripts/record_metaworld_demos.py --tasks pick-place peg-insert-side \\
        --episodes 10 --out outputs/datasets/metaworld

Task ``t`` goes to ``<out>/<t>``, with depth and camera ground truth unless ``--no-geometry``.
Episode ``i`` uses seed ``--seed + i``. With ``--keep-failures`` every episode is kept, so the
success rate is the expert's on exactly ``--episodes`` seeds; without it a failed episode is
dropped and the next seed tried.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from envs.metaworld import DEFAULT_CAMERAS, MT10_TASKS, MetaWorldEnv, canonical_task, make_metaworld_expert
from envs.recording import record_demos


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(MT10_TASKS), help="MetaWorld v3 tasks (default MT10)")
    parser.add_argument("--episodes", type=int, default=10, help="demonstrations per task")
    parser.add_argument("--out", required=True, help="new directory; each task gets a dataset in a subfolder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed + i")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cameras", nargs="+", default=list(DEFAULT_CAMERAS))
    parser.add_argument("--max-episode-steps", type=int, default=None, help="default: MetaWorld's 500")
    parser.add_argument("--no-geometry", action="store_true", help="skip depth and camera ground truth")
    parser.add_argument("--video", action="store_true", help="store images as mp4 (lossy) instead of PNG")
    parser.add_argument("--depth-video", action="store_true", help="store depth as LeRobot's 12-bit depth video")
    parser.add_argument("--keep-failures", action="store_true", help="keep failed episodes too (exact seeds)")
    return parser.parse_args()


def record_task(task: str, args: argparse.Namespace) -> dict:
    """Record ``args.episodes`` demonstrations of ``task``; the summary of ``record_demos`` plus timings."""
    env = MetaWorldEnv(
        task,
        image_size=args.image_size,
        cameras=tuple(args.cameras),
        geometry=not args.no_geometry,
        max_episode_steps=args.max_episode_steps,
    )
    start = time.perf_counter()
    try:
        summary = record_demos(
            env,
            make_metaworld_expert(env),
            Path(args.out) / task,
            args.episodes,
            seed=args.seed,
            video=args.video,
            depth_video=args.depth_video,
            only_successes=not args.keep_failures,
        )
    finally:
        env.close()
    seconds = time.perf_counter() - start
    summary.update(
        mean_episode_steps=round(summary["frames"] / summary["episodes"], 1),
        seconds=round(seconds, 1),
        seconds_per_demo=round(seconds / summary["episodes"], 2),
        ms_per_frame=round(1000 * seconds / summary["frames"], 1),
    )
    return summary


def main() -> None:
    args = parse_args()
    tasks = [canonical_task(t) for t in args.tasks]  # fail on a typo before recording anything
    results = {task: record_task(task, args) for task in tasks}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
