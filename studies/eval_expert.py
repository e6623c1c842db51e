"""Success rate of the scripted experts over seeded episodes, printed as JSON.

    python studies/eval_expert.py --episodes 100
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
from tqdm.auto import tqdm

import envs
from envs.tabletop.env import TASKS


def expert_success_rate(task: str, episodes: int, seed: int, image_size: int) -> dict:
    env = gym.make(envs.TABLETOP_ID, task=task, image_size=image_size)
    expert = envs.make_expert(env)
    successes, lengths, failed_seeds = 0, [], []
    for episode_seed in tqdm(range(seed, seed + episodes), desc=f"{task} expert", unit="ep"):
        obs, info = env.reset(seed=episode_seed)
        steps, done = 0, False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            steps, done = steps + 1, terminated or truncated
        successes += info["is_success"]
        lengths.append(steps)
        if not info["is_success"]:
            failed_seeds.append(episode_seed)
    env.close()
    return {
        "success_rate": successes / episodes,
        "episodes": episodes,
        "mean_steps": sum(lengths) / episodes,
        "failed_seeds": failed_seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    args = parser.parse_args()
    results = {task: expert_success_rate(task, args.episodes, args.seed, args.image_size) for task in args.tasks}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
