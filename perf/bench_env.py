"""Built-in task timings, printed as JSON: one multi-camera step, and recording N demonstrations.

    python perf/bench_env.py --steps 200 --record-episodes 100
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import gymnasium as gym
import numpy as np

import envs
from envs.recording import record_demos


def time_steps(image_size: int, geometry: bool, steps: int) -> dict:
    """Mean time of a full env step (physics + every camera) and of the rendering alone."""
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=image_size, geometry=geometry)
    base = env.unwrapped
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, 4))
    env.reset(seed=0)
    env.step(np.zeros(4))  # warm-up: renderers are created lazily
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    step_s = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        for cam in base.cameras:
            base.render_camera(cam)
            if geometry:
                base.render_depth(cam)
    render_s = (time.perf_counter() - start) / steps
    env.close()
    return {
        "image_size": image_size,
        "cameras": len(base.cameras),
        "geometry": geometry,
        "step_ms": round(1000 * step_s, 2),
        "render_ms": round(1000 * render_s, 2),
    }


def time_recording(episodes: int, image_size: int) -> dict:
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=image_size, geometry=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = record_demos(env, envs.make_expert(env), f"{tmp}/ds", episodes, progress=False)
        seconds = time.perf_counter() - start
    env.close()
    return {
        "episodes": episodes,
        "frames": summary["frames"],
        "image_size": image_size,
        "seconds": round(seconds, 1),
        "seconds_per_episode": round(seconds / episodes, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--record-episodes", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    results = {
        "step": [time_steps(args.image_size, geometry, args.steps) for geometry in (False, True)],
        "recording": time_recording(args.record_episodes, args.image_size) if args.record_episodes else None,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
