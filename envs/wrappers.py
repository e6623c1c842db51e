"""LeRobot's simulators (gym-pusht, gym-aloha) in the observation convention of the built-in task.

Every env made here returns ``{"pixels": {camera: uint8 [H, W, 3]}, "agent_pos": float32 [D]}``
and exposes its instruction as ``task_description``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ALOHA_CAMERAS = ("top", "angle", "left_wrist", "right_wrist")
ALOHA_TASKS = {
    "insertion": ("gym_aloha/AlohaInsertion-v0", "insert the peg into the socket"),
    "transfer_cube": ("gym_aloha/AlohaTransferCube-v0", "pick up the cube and hand it to the other arm"),
}
PUSHT_INSTRUCTION = "push the T-shaped block onto the T-shaped target"


class PushTObservation(gym.ObservationWrapper):
    """gym-pusht with ``obs_type="pixels_agent_pos"``: its single image becomes camera ``top``."""

    task_description = PUSHT_INSTRUCTION

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        pixels = env.observation_space["pixels"]
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Dict({"top": pixels}),
                "agent_pos": _float32_box(env.observation_space["agent_pos"]),
            }
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return {
            "pixels": {"top": observation["pixels"]},
            "agent_pos": np.asarray(observation["agent_pos"], dtype=np.float32),
        }


class AlohaAllCameras(gym.ObservationWrapper):
    """gym-aloha rendering every camera asked for (default: top, angle, both wrists), not only ``top``."""

    def __init__(self, env: gym.Env, cameras: tuple[str, ...] = ALOHA_CAMERAS, task_description: str = "") -> None:
        super().__init__(env)
        physics = env.unwrapped._env.physics
        available = [physics.model.id2name(i, "camera") for i in range(physics.model.ncam)]
        missing = [c for c in cameras if c not in available]
        if missing:
            raise ValueError(f"ALOHA cameras {missing} are not in the MJCF; available: {available}")
        self.cameras = tuple(cameras)
        self.task_description = task_description
        base = env.unwrapped
        self._height, self._width = base.observation_height, base.observation_width
        image = spaces.Box(0, 255, shape=(self._height, self._width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Dict({c: image for c in self.cameras}),
                "agent_pos": _float32_box(env.observation_space["agent_pos"]),
            }
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        physics = self.env.unwrapped._env.physics
        pixels = {c: physics.render(height=self._height, width=self._width, camera_id=c) for c in self.cameras}
        return {"pixels": pixels, "agent_pos": np.asarray(observation["agent_pos"], dtype=np.float32)}


def make_pusht(image_size: int = 96, **kwargs: Any) -> gym.Env:
    """PushT (2-D pushing, action = target xy of the pusher) with the common observation."""
    import gym_pusht  # noqa: F401  (registers the env)

    env = gym.make(
        "gym_pusht/PushT-v0",
        obs_type="pixels_agent_pos",
        observation_width=image_size,
        observation_height=image_size,
        **kwargs,
    )
    return PushTObservation(env)


def make_aloha(
    task: str = "insertion",
    image_size: tuple[int, int] = (480, 640),
    cameras: tuple[str, ...] = ALOHA_CAMERAS,
    **kwargs: Any,
) -> gym.Env:
    """Bimanual ALOHA (14-d joint action) with every camera, as ``(height, width)`` images."""
    import gym_aloha  # noqa: F401  (registers the envs)

    if task not in ALOHA_TASKS:
        raise ValueError(f"ALOHA task must be one of {sorted(ALOHA_TASKS)}, got {task!r}")
    env_id, instruction = ALOHA_TASKS[task]
    height, width = image_size
    env = gym.make(
        env_id,
        obs_type="pixels_agent_pos",
        observation_height=height,
        observation_width=width,
        disable_env_checker=True,  # gym-aloha's float64 joints do not fit its own float32 space
        **kwargs,
    )
    return AlohaAllCameras(env, cameras=cameras, task_description=instruction)


def _float32_box(space: spaces.Box) -> spaces.Box:
    return spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), shape=space.shape, dtype=np.float32)
