"""Batched evaluation rollouts of a ``GeoVLAPolicy`` in gym envs of the common observation convention.

An env made by ``make_env()`` returns ``{"pixels": {camera: uint8 [H, W, 3]}, "agent_pos": [D]}``
and exposes its instruction as ``task_description`` (the built-in task, ``envs.wrappers``).
Episodes run in waves of ``batch_size`` envs; every control step of a wave is one batched
``select_action`` call, so the observation history advances by one frame per env step as in
training, and a new chunk is predicted every ``n_action_steps`` steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import envs
from envs.tabletop.env import INSTRUCTION_TEMPLATES, TabletopEnv
from envs.wrappers import ALOHA_TASKS, make_aloha, make_pusht
from envs.video import caption_frame, write_mp4
from policies.delayed_chunks import DelayedChunkExecutor, action_changes
from policies.modeling_geovla import GeoVLAPolicy
from policies.robot_observation import CAMERA_FIELDS, robot_observation_to_batch

CAMERA_PREFIX = "observation.images."
VIDEO_HEIGHT = 192  # camera mosaics are upscaled (nearest) to about this height in videos


# Evaluation seeds start here; recorded demonstrations use seeds from 0.
DEFAULT_SEED = 100_000


def env_factory(policy: GeoVLAPolicy, env: str, task: str | None) -> tuple[Callable[[], gym.Env], str]:
    """A constructor of the env at the policy's image size (and cameras), and the task family."""
    config = policy.config
    height, width = config.image_features[config.camera_keys[0]].shape[1:]
    cameras = tuple(key.removeprefix(CAMERA_PREFIX) for key in config.camera_keys)
    if env == "builtin":
        task = task or "reach"
        return (lambda: gym.make(envs.TABLETOP_ID, task=task, image_size=(height, width), cameras=cameras,
                                 geometry=bool(config.scene_fields))), task
    if config.scene_fields:
        raise ValueError(f"the policy needs depth and cameras (spatial_tokens='voxel'), which the {env} env does not give")
    if env == "pusht":
        if height != width:
            raise ValueError(f"PushT renders square images; the policy expects {height}x{width}")
        return (lambda: make_pusht(image_size=height)), "pusht"
    task = task or "insertion"
    if task not in ALOHA_TASKS:
        raise ValueError(f"ALOHA task must be one of {sorted(ALOHA_TASKS)}, got {task!r}")
    return (lambda: make_aloha(task, image_size=(height, width), cameras=cameras)), task


def evaluate_policy(
    policy: GeoVLAPolicy,
    make_env: Callable[[], gym.Env],
    episodes: int,
    seed: int,
    swap_instruction: bool = False,
    max_steps: int | None = None,
    video_dir: str | Path | None = None,
    num_videos: int = 0,
    batch_size: int = 8,
    progress: bool = True,
    delay: int | None = None,
    rtc: bool = False,
) -> dict[str, Any]:
    """Roll the policy out for ``episodes`` episodes; episode ``i`` is reset with seed ``seed + i``.

    ``swap_instruction`` (built-in task only): after reset the target becomes another object of
    the scene (chosen with the episode's seed) and the instruction names it, so success means
    going to the object the swapped instruction names. ``max_steps`` caps an episode below the
    env's own limit. The first ``num_videos`` episodes are written to ``video_dir`` as mp4 (all
    cameras side by side, the instruction as caption). The policy is left in the train/eval
    mode it came in, with an empty action queue and history. The flow-matching noise comes from a
    generator seeded with ``seed``, so a run is repeatable (for the same ``batch_size``) and does
    not touch torch's global random state (a training loop that evaluates keeps its own).

    ``delay`` runs the chunks as an asynchronous robot would, each arriving ``delay`` steps after
    its observation (:class:`policies.delayed_chunks.DelayedChunkExecutor`; ``rtc``: with
    real-time chunking), and adds the mean change of the executed action where a chunk took over
    (``boundary_change``) and within chunks (``within_chunk_change``). None: ``select_action``.

    Returns ``success_rate``, ``mean_reward`` (mean episode return), ``mean_max_reward``,
    ``mean_steps`` and per-episode lists (``seeds``, ``successes``, ``rewards``, ``steps``,
    ``instructions``, ``original_instructions``, ``targets``), ``videos`` and ``eval_s``.
    """
    if episodes < 1 or batch_size < 1:
        raise ValueError(f"episodes and batch_size must be >= 1, got {episodes} and {batch_size}")
    if policy.processors is None:
        raise ValueError("the policy has no processors: load it with GeoVLAPolicy.from_pretrained(dir)")
    if num_videos > 0 and video_dir is None:
        raise ValueError("num_videos > 0 needs a video_dir")
    was_training = policy.training
    policy.eval()
    envs = [make_env() for _ in range(min(batch_size, episodes))]
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    noise = torch.Generator().manual_seed(seed)
    bar = tqdm(total=episodes, desc="evaluating", unit="ep", disable=not progress)
    try:
        for first in range(0, episodes, len(envs)):
            wave = envs[: min(len(envs), episodes - first)]
            seeds = [seed + first + i for i in range(len(wave))]
            recording = [first + i < num_videos for i in range(len(wave))]
            executor = None if delay is None else DelayedChunkExecutor(policy, delay, rtc)
            records += _run_wave(policy, wave, seeds, swap_instruction, max_steps, recording, noise, executor)
            successes = sum(r["success"] for r in records)
            bar.update(len(wave))
            bar.set_postfix(success=f"{successes}/{len(records)}")
    finally:
        bar.close()
        for env in envs:
            env.close()
        policy.reset()
        policy.train(was_training)

    videos = []
    for index, record in enumerate(records[:num_videos]):
        fps = int(record["fps"])
        videos.append(str(write_mp4(record["frames"], Path(video_dir) / f"episode_{index:03d}.mp4", fps)))
    column = lambda name: [r[name] for r in records]  # noqa: E731
    timing = {}
    if delay is not None:
        changes = [action_changes(r["actions"], r["switched"]) for r in records]
        timing = {
            "delay": delay,
            "rtc": rtc,
            "boundary_change": float(np.mean([c for r in changes for c in r["boundary"]])),
            "within_chunk_change": float(np.mean([c for r in changes for c in r["within"]])),
            "boundaries": sum(len(r["boundary"]) for r in changes),
        }
    return {
        "episodes": episodes,
        "seed": seed,
        "swap_instruction": swap_instruction,
        "success_rate": float(np.mean(column("success"))),
        "mean_reward": float(np.mean(column("reward"))),
        "mean_max_reward": float(np.mean(column("max_reward"))),
        "mean_steps": float(np.mean(column("steps"))),
        "seeds": column("seed"),
        "successes": column("success"),
        "rewards": column("reward"),
        "steps": column("steps"),
        "instructions": column("instruction"),
        "original_instructions": column("original_instruction"),
        "targets": column("target"),
        "videos": videos,
        **timing,
        "eval_s": time.perf_counter() - start,
    }


def swap_target(env: gym.Env, seed: int) -> str:
    """Make another object of the built-in task's scene the target and name it in the
    instruction; returns the new instruction. The object is drawn with ``seed``."""
    base = env.unwrapped
    if not isinstance(base, TabletopEnv):
        raise ValueError(f"swapping the instruction needs the built-in tabletop task, got {type(base).__name__}")
    others = [obj for obj in base.objects if obj.name != base.target.name]
    if not others:
        raise ValueError("swapping the instruction needs at least two objects in the scene")
    base.target = others[int(np.random.default_rng(seed).integers(len(others)))]
    base.instruction = INSTRUCTION_TEMPLATES[base.task].format(base.target.name)
    return base.instruction


def camera_map(camera_keys: list[str], env_cameras: list[str]) -> dict[str, str]:
    """Policy camera name (as ``predict_action`` names it) → env camera.

    Cameras match by name (``observation.images.front`` ↔ ``front``); a single-camera policy
    and a single-camera env match whatever their names (LeRobot's PushT key ``observation.image``
    ↔ the wrapper's ``top``).
    """
    names = [key.removeprefix(CAMERA_PREFIX) for key in camera_keys]
    if len(names) == 1 and len(env_cameras) == 1:
        return {names[0]: env_cameras[0]}
    missing = [n for n in names if n not in env_cameras]
    if missing:
        raise ValueError(f"the policy's cameras {missing} are not among the env's cameras {env_cameras}")
    return {name: name for name in names}


def _instruction(env: gym.Env) -> str:
    return str(env.get_wrapper_attr("task_description"))


def _run_wave(
    policy: GeoVLAPolicy,
    envs: list[gym.Env],
    seeds: list[int],
    swap_instruction: bool,
    max_steps: int | None,
    recording: list[bool],
    noise: torch.Generator,
    executor: DelayedChunkExecutor | None = None,
) -> list[dict[str, Any]]:
    """One batched rollout of ``len(envs)`` episodes until every env is done (finished envs
    keep their last observation in the batch so that the policy's history stays aligned); the
    flow noise of each step is drawn from ``noise``. Actions come from ``executor`` when given,
    else from ``select_action``."""
    config = policy.config
    preprocessor, postprocessor = policy.processors
    height, width = config.image_features[config.camera_keys[0]].shape[1:]
    policy.reset()
    act = policy.select_action if executor is None else executor.act
    observations, records = [], []
    for env, episode_seed, record_video in zip(envs, seeds, recording):
        obs, info = env.reset(seed=episode_seed)
        original = _instruction(env)
        instruction = swap_target(env, episode_seed) if swap_instruction else original
        target = env.unwrapped.target.name if hasattr(env.unwrapped, "target") else None
        observations.append(obs)
        records.append({
            "seed": episode_seed, "success": False, "reward": 0.0, "max_reward": float("-inf"), "steps": 0,
            "instruction": instruction, "original_instruction": original, "target": target,
            "done": False, "frames": [] if record_video else None, "actions": [], "switched": [],
            "fps": env.metadata.get("render_fps", 10),
        })
    cameras = camera_map(config.camera_keys, list(observations[0]["pixels"]))
    limit = max_steps or min(_episode_limit(env) for env in envs)

    for record, obs in zip(records, observations):
        _add_frame(record, obs, cameras)
    while not all(r["done"] for r in records):
        batch, _ = robot_observation_to_batch(
            _stack(observations, records, cameras), config.camera_keys, config.state_dim, (height, width),
            config.allow_missing_cameras, config.scene_fields,
        )
        step_noise = torch.randn(len(envs), config.chunk_size, config.max_action_dim, generator=noise)
        with torch.no_grad():
            actions = postprocessor(act(preprocessor(batch), noise=step_noise)).numpy()
        for index, (env, record) in enumerate(zip(envs, records)):
            if record["done"]:
                continue
            record["actions"].append(actions[index])
            record["switched"].append(executor is not None and executor.switched)
            obs, reward, terminated, truncated, info = env.step(actions[index])
            observations[index] = obs
            record["steps"] += 1
            record["reward"] += float(reward)
            record["max_reward"] = max(record["max_reward"], float(reward))
            record["success"] = bool(info.get("is_success", False))
            record["done"] = terminated or truncated or record["success"] or record["steps"] >= limit
            _add_frame(record, obs, cameras)
    return records


def _episode_limit(env: gym.Env) -> int:
    if env.spec is not None and env.spec.max_episode_steps:
        return int(env.spec.max_episode_steps)
    limit = getattr(env.unwrapped, "max_episode_steps", None)
    if limit is None:
        raise ValueError(f"{type(env.unwrapped).__name__} has no episode limit; pass max_steps")
    return int(limit)


def _stack(observations: list[dict], records: list[dict], cameras: dict[str, str]) -> dict[str, Any]:
    """A batched robot observation (see ``policies.robot_observation``) of the wave's envs."""
    batch = {
        "images": {name: np.stack([o["pixels"][cam] for o in observations]) for name, cam in cameras.items()},
        "state": np.stack([np.asarray(o["agent_pos"], dtype=np.float32) for o in observations]),
        "instruction": [r["instruction"] for r in records],
    }
    for field in CAMERA_FIELDS:  # depth and cameras, from envs that render them
        if field in observations[0]:
            batch[field] = {name: np.stack([o[field][cam] for o in observations]) for name, cam in cameras.items()}
    return batch


def _add_frame(record: dict[str, Any], obs: dict[str, Any], cameras: dict[str, str]) -> None:
    """Append all cameras side by side, captioned with the instruction, when recording video."""
    if record["frames"] is None:
        return
    views = [obs["pixels"][cam] for cam in cameras.values()]
    height = min(v.shape[0] for v in views)
    mosaic = np.concatenate([v[:height] for v in views], axis=1)
    scale = max(1, VIDEO_HEIGHT // height)
    record["frames"].append(caption_frame(mosaic, record["instruction"], scale=scale))
