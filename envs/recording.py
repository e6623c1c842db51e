"""Recording scripted demonstrations of the built-in task to a local LeRobotDataset (v3.0).

Every dataset in this project is opened with the PyAV video backend: a new machine has no system
FFmpeg libraries, which LeRobot's default (torchcodec) needs, while PyAV ships its own.
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import gymnasium as gym
import numpy as np
from lerobot.datasets import LeRobotDataset
from tqdm.auto import tqdm

from envs.tabletop.env import CONTROL_DT, TabletopEnv

VIDEO_BACKEND = "pyav"
STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_opening"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]


def open_dataset(root: str | Path, repo_id: str | None = None, **kwargs: Any) -> LeRobotDataset:
    """Open a local LeRobotDataset with the project's video backend."""
    root = Path(root)
    return LeRobotDataset(repo_id or f"local/{root.name}", root=root, video_backend=VIDEO_BACKEND, **kwargs)


def tabletop_features(env: TabletopEnv, video: bool) -> dict[str, dict]:
    """LeRobot feature spec for the built-in task, geometry ground truth included."""
    h, w = env.height, env.width
    features: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": (4,), "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": (4,), "names": ACTION_NAMES},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }
    for cam in env.cameras:
        features[f"observation.images.{cam}"] = {
            "dtype": "video" if video else "image",
            "shape": (h, w, 3),
            "names": ["height", "width", "channels"],
        }
        if env.geometry:
            features[f"observation.depth.{cam}"] = {"dtype": "float32", "shape": (h, w), "names": ["height", "width"]}
            features[f"observation.intrinsics.{cam}"] = {"dtype": "float32", "shape": (3, 3), "names": None}
            features[f"observation.extrinsics.{cam}"] = {"dtype": "float32", "shape": (3, 4), "names": None}
    return features


def observation_to_frame(obs: dict[str, Any], cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Flatten an env observation into LeRobot feature keys."""
    frame = {"observation.state": np.asarray(obs["agent_pos"], dtype=np.float32)}
    for cam in cameras:
        frame[f"observation.images.{cam}"] = obs["pixels"][cam]
        for key in ("depth", "intrinsics", "extrinsics"):
            if key in obs:
                frame[f"observation.{key}.{cam}"] = obs[key][cam]
    return frame


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so that a killed job still closes the dataset cleanly."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def record_demos(
    env: gym.Env,
    expert: Callable[[dict], np.ndarray],
    out_dir: str | Path,
    num_episodes: int,
    seed: int = 0,
    repo_id: str | None = None,
    video: bool = False,
    only_successes: bool = True,
    max_attempts: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll out ``expert`` in ``env`` and save each episode to a new LeRobotDataset at ``out_dir``.

    Episode ``i`` of the attempts uses seed ``seed + i``. With ``only_successes`` a failed
    episode is discarded (and another seed tried, up to ``max_attempts``). If anything fails or
    the process is interrupted mid-episode, the partial episode is dropped and the dataset is
    finalised, so it stays readable with every episode saved so far.

    Returns a summary: episodes saved, attempts, success rate of the attempts, frames, seeds.
    """
    base: TabletopEnv = env.unwrapped
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new --out directory")
    dataset = LeRobotDataset.create(
        repo_id=repo_id or f"local/{out_dir.name}",
        fps=int(round(1 / CONTROL_DT)),
        features=tabletop_features(base, video),
        root=out_dir,
        robot_type="geovla_floating_gripper",
        use_videos=video,
        video_backend=VIDEO_BACKEND,
        metadata_buffer_size=1,
    )
    datasets.disable_progress_bars()
    max_attempts = max_attempts or 2 * num_episodes + 10
    saved_seeds: list[int] = []
    attempts = successes = 0
    bar = tqdm(total=num_episodes, desc=f"recording {base.task}", unit="ep", disable=not progress)
    try:
        with _sigterm_as_interrupt():
            while len(saved_seeds) < num_episodes and attempts < max_attempts:
                episode_seed = seed + attempts
                attempts += 1
                success = _record_episode(env, expert, dataset, episode_seed)
                successes += success
                if success or not only_successes:
                    _save_episode(dataset)
                    saved_seeds.append(episode_seed)
                    bar.update(1)
                else:
                    dataset.clear_episode_buffer()
                bar.set_postfix(success=f"{successes}/{attempts}")
    except BaseException:
        if dataset.has_pending_frames():
            dataset.clear_episode_buffer()
        raise
    finally:
        bar.close()
        dataset.finalize()
    if len(saved_seeds) < num_episodes:
        raise RuntimeError(
            f"only {len(saved_seeds)} of {num_episodes} episodes succeeded in {attempts} attempts; "
            f"the {len(saved_seeds)} saved episodes are in {out_dir}"
        )
    return {
        "episodes": len(saved_seeds),
        "attempts": attempts,
        "expert_success_rate": successes / attempts,
        "frames": dataset.meta.total_frames,
        "seeds": saved_seeds,
        "root": str(out_dir),
    }


def _save_episode(dataset: LeRobotDataset) -> None:
    with warnings.catch_warnings():
        # LeRobot's statistics cast the boolean success flag to uint8 and warn about it each episode.
        warnings.filterwarnings("ignore", message="Converting input from bool", category=RuntimeWarning)
        dataset.save_episode()


def _record_episode(env: gym.Env, expert: Callable[[dict], np.ndarray], dataset: LeRobotDataset, seed: int) -> bool:
    """Buffer one expert episode in ``dataset`` (not saved yet); return whether it succeeded."""
    base: TabletopEnv = env.unwrapped
    obs, info = env.reset(seed=seed)
    while True:
        action = np.asarray(expert(obs), dtype=np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        frame = observation_to_frame(obs, base.cameras)
        frame.update(
            action=action,
            task=info["instruction"],
            **{
                "next.reward": np.array([reward], dtype=np.float32),
                "next.success": np.array([info["is_success"]], dtype=bool),
            },
        )
        dataset.add_frame(frame)
        obs = next_obs
        if terminated or truncated:
            return bool(info["is_success"])
