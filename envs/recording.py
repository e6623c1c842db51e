"""Recording scripted demonstrations of the built-in task to a local LeRobotDataset (v3.0).

Every dataset in this project is opened with the PyAV video backend: a new machine has no system
FFmpeg libraries, which LeRobot's default (torchcodec) needs, while PyAV ships its own.

Depth is stored either as a float32 array feature (exact, the default) or as LeRobot's native
12-bit depth video stream (``depth_video=True``, lossless HEVC of log-quantised depth, see
:func:`depth_video_encoder`); :func:`open_dataset` returns both as float32 metres ``[H, W]``.

A recording survives being killed, even by SIGKILL, with every episode saved before the kill:
each episode goes to its own data, episode-metadata and video files, closed when the episode is
saved, and a journal in ``<root>/.recording/`` keeps a commit record of the saved episodes
(``envs.recording_journal``). :func:`open_dataset` rolls a killed recording back to that record.
"""

from __future__ import annotations

import json
import signal
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import datasets
import gymnasium as gym
import mujoco
import numpy as np
from lerobot.configs import DepthEncoderConfig
from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.datasets.utils import INFO_PATH
from tqdm.auto import tqdm

from envs.recording_journal import ONE_EPISODE_PER_FILE_MB, EmptyDatasetError, RecordingJournal, recover_recording

VIDEO_BACKEND = "pyav"
STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_opening"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]
DEPTH_PREFIX = "observation.depth."
DEFAULT_ROBOT_TYPE = "geovla_floating_gripper"  # the built-in task's, for envs that name none


class RecordableEnv(Protocol):
    """What recording reads from an env's ``unwrapped`` (``TabletopEnv``, ``MetaWorldEnv``).

    ``metadata["render_fps"]`` is the control rate, stored as the dataset's fps; an optional
    ``robot_type`` attribute names the robot (default :data:`DEFAULT_ROBOT_TYPE`).
    """

    model: mujoco.MjModel
    metadata: dict[str, Any]
    task: str
    height: int
    width: int
    cameras: tuple[str, ...]
    geometry: bool


class RecordedDataset(LeRobotDataset):
    """A LeRobotDataset whose native depth streams read back like float32 depth features.

    LeRobot decodes a depth video to ``[1, H, W]`` (``[T, 1, H, W]`` for several timestamps)
    in the unit ``depth_output_unit``; this returns float32 metres ``[H, W]`` (``[T, H, W]``
    for a key with delta timestamps), the layout of the float32 feature, so that training code
    reads both storages alike.
    """

    def __getitem__(self, idx: int | slice) -> dict | list[dict]:
        item = super().__getitem__(idx)
        if isinstance(idx, slice):  # LeRobot builds a slice from self[i], converted already
            return item
        for key in self.meta.depth_keys:
            if key in self.meta.video_keys:
                height, width = self.meta.features[key]["shape"][:2]
                timed = self.delta_timestamps is not None and key in self.delta_timestamps
                item[key] = item[key].reshape(-1, height, width) if timed else item[key].reshape(height, width)
        return item


def open_dataset(root: str | Path, repo_id: str | None = None, **kwargs: Any) -> RecordedDataset:
    """Open a local LeRobotDataset with the project's video backend, depth in metres.

    A recording that was killed is first rolled back to its last saved episode
    (:func:`recover_recording`). Raises ``FileNotFoundError`` when ``root`` holds no dataset
    and :class:`EmptyDatasetError` when it holds no episode, instead of LeRobot's attempt to
    download the missing files from the Hub.
    """
    root = Path(root)
    _make_readable(root)
    return RecordedDataset(
        repo_id or f"local/{root.name}", root=root, video_backend=VIDEO_BACKEND, depth_output_unit="m", **kwargs
    )


def open_metadata(root: str | Path, repo_id: str | None = None) -> LeRobotDatasetMetadata:
    """The metadata of a local dataset, after the same recovery and checks as :func:`open_dataset`."""
    root = Path(root)
    _make_readable(root)
    return LeRobotDatasetMetadata(repo_id or f"local/{root.name}", root=root)


def _make_readable(root: Path) -> None:
    """Roll a killed recording back (:func:`recover_recording`), then check ``root`` holds episodes."""
    recover_recording(root)
    info_path = root / INFO_PATH
    if not info_path.is_file():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset: {info_path} is missing")
    if json.loads(info_path.read_text())["total_episodes"] == 0:
        raise EmptyDatasetError(f"{root} holds no episodes ('total_episodes' is 0 in {info_path})")


def depth_video_encoder(env: RecordableEnv) -> DepthEncoderConfig:
    """LeRobot's native depth stream (12-bit codes, lossless HEVC) fitted to MuJoCo's depth range.

    MuJoCo renders depth in ``[znear, zfar] * extent`` of the model (0.041-40.95 m here; pixels
    that see nothing read the far value). A logarithmic code over exactly that range steps by a
    constant ``ln(far / near) / 4095`` = 0.17 % of the depth, so the error is at most 0.085 % of
    the depth (0.34 mm at 0.4 m), and background pixels keep their far value, beyond every
    valid-depth cut-off of the geometry code. LeRobot's default range (0.01-10 m with a 3.5 m
    shift) would step 1.3 mm at 0.4 m and clip the background to 10 m.
    """
    extent = env.model.stat.extent
    return DepthEncoderConfig(
        depth_min=env.model.vis.map.znear * extent,
        depth_max=env.model.vis.map.zfar * extent,
        shift=0.0,
        use_log=True,
        extra_options={"x265-params": "lossless=1:log-level=error"},  # x265 logs to stderr itself
    )


def tabletop_features(env: RecordableEnv, video: bool, depth_video: bool = False) -> dict[str, dict]:
    """LeRobot feature spec of the built-in task or MetaWorld, geometry ground truth included.

    ``video`` stores the images as mp4 instead of PNG; ``depth_video`` stores depth as LeRobot's
    native depth stream (a ``video`` feature of shape ``(H, W, 1)`` flagged ``is_depth_map``)
    instead of a float32 ``(H, W)`` array.
    """
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
            features[f"{DEPTH_PREFIX}{cam}"] = (
                {
                    "dtype": "video",
                    "shape": (h, w, 1),
                    "names": ["height", "width", "channels"],
                    "info": {"is_depth_map": True},
                }
                if depth_video
                else {"dtype": "float32", "shape": (h, w), "names": ["height", "width"]}
            )
            features[f"observation.intrinsics.{cam}"] = {"dtype": "float32", "shape": (3, 3), "names": None}
            features[f"observation.extrinsics.{cam}"] = {"dtype": "float32", "shape": (3, 4), "names": None}
    return features


def observation_to_frame(
    obs: dict[str, Any], cameras: tuple[str, ...], depth_video: bool = False
) -> dict[str, np.ndarray]:
    """Flatten an env observation into LeRobot feature keys (depth ``(H, W, 1)`` for a depth video)."""
    frame = {"observation.state": np.asarray(obs["agent_pos"], dtype=np.float32)}
    for cam in cameras:
        frame[f"observation.images.{cam}"] = obs["pixels"][cam]
        for key in ("depth", "intrinsics", "extrinsics"):
            if key in obs:
                value = obs[key][cam]
                frame[f"observation.{key}.{cam}"] = value[..., None] if key == "depth" and depth_video else value
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
    depth_video: bool = False,
    only_successes: bool = True,
    max_attempts: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll out ``expert`` in ``env`` and save each episode to a new LeRobotDataset at ``out_dir``.

    Episode ``i`` of the attempts uses seed ``seed + i``. With ``only_successes`` a failed
    episode is discarded (and another seed tried, up to ``max_attempts``). ``video`` stores the
    images as mp4 (lossy) instead of PNG; ``depth_video`` stores depth as LeRobot's native depth
    stream (:func:`depth_video_encoder`) instead of float32 arrays; read it with
    :func:`open_dataset` (LeRobot's own loader returns it as ``[1, H, W]`` millimetres).

    If anything fails or the process is interrupted (SIGINT, SIGTERM) while an episode is being
    recorded or saved, the dataset is finalised and rolled back to the episodes saved before, so
    it stays readable with all of them. If the process is killed outright (SIGKILL, out of
    memory), :func:`open_dataset` does that rollback (:class:`RecordingJournal`).

    Returns a summary: episodes saved, attempts, success rate of the attempts, frames, seeds.
    """
    base: RecordableEnv = env.unwrapped
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new --out directory")
    dataset = LeRobotDataset.create(
        repo_id=repo_id or f"local/{out_dir.name}",
        fps=int(base.metadata["render_fps"]),
        features=tabletop_features(base, video, depth_video),
        root=out_dir,
        robot_type=getattr(base, "robot_type", DEFAULT_ROBOT_TYPE),
        use_videos=video or depth_video,
        video_backend=VIDEO_BACKEND,
        depth_encoder=depth_video_encoder(base) if depth_video else None,
        metadata_buffer_size=1,
        data_files_size_in_mb=ONE_EPISODE_PER_FILE_MB,
        video_files_size_in_mb=ONE_EPISODE_PER_FILE_MB,
    )
    journal = RecordingJournal(dataset)
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
                success = _record_episode(env, expert, dataset, episode_seed, depth_video)
                successes += success
                if success or not only_successes:
                    _save_episode(dataset)
                    journal.commit(dataset)
                    saved_seeds.append(episode_seed)
                    bar.update(1)
                else:
                    dataset.clear_episode_buffer()
                bar.set_postfix(success=f"{successes}/{attempts}")
    finally:
        bar.close()
        dataset.finalize()
        journal.close()
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
        # Encode the episode's videos one after the other: a pool of one process per video, started
        # for every episode, made recording 4 depth streams of 64 px on 2 cores 2.8x slower.
        dataset.save_episode(parallel_encoding=False)


def _record_episode(
    env: gym.Env, expert: Callable[[dict], np.ndarray], dataset: LeRobotDataset, seed: int, depth_video: bool
) -> bool:
    """Buffer one expert episode in ``dataset`` (not saved yet); return whether it succeeded."""
    base: RecordableEnv = env.unwrapped
    obs, info = env.reset(seed=seed)
    while True:
        action = np.asarray(expert(obs), dtype=np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        frame = observation_to_frame(obs, base.cameras, depth_video)
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
