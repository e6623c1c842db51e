"""The built-in task as a LeRobot environment: ``--env.type=geovla_tabletop --env.task=reach|pick``.

Importing this module (the ``lerobot_policy_geovla`` plugin does) registers the config with
LeRobot, so ``lerobot-eval`` and ``lerobot-train --env.type=geovla_tabletop`` run any LeRobot
policy on the task: its cameras become ``observation.images.<camera>``, the gripper state
``observation.state`` and the instruction the batch's ``task``.

LeRobot passes an observation key it does not know on as ``observation.<key>`` when its value is
an array. With ``geometry=true`` the depth and camera parameters are therefore given flat,
``depth.<camera>`` ``[H, W]``, ``intrinsics.<camera>`` ``[3, 3]`` and ``extrinsics.<camera>``
``[3, 4]``, and reach the policy as the ``observation.depth.<camera>`` (etc.) keys a recorded
dataset has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from envs import LEROBOT_TABLETOP_ID
from envs.tabletop.env import CONTROL_DT, DEFAULT_MAX_STEPS, TASKS, TabletopEnv
from envs.tabletop.scene import CAMERAS
GEOMETRY_FIELDS = ("depth", "intrinsics", "extrinsics")


class FlatGeometry(gym.ObservationWrapper):
    """``{"depth": {camera: array}, ...}`` → ``{"depth.<camera>": array, ...}`` (pixels and state kept)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        nested = env.observation_space
        flat: dict[str, spaces.Space] = {"pixels": nested["pixels"], "agent_pos": nested["agent_pos"]}
        for name in GEOMETRY_FIELDS:
            flat.update({f"{name}.{camera}": space for camera, space in nested[name].items()})
        self.observation_space = spaces.Dict(flat)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        flat = {"pixels": observation["pixels"], "agent_pos": observation["agent_pos"]}
        for name in GEOMETRY_FIELDS:
            flat.update({f"{name}.{camera}": value for camera, value in observation[name].items()})
        return flat


def make_lerobot_tabletop(geometry: bool = False, episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
    """The tabletop env with its geometry fields flat (see :class:`FlatGeometry`). ``gym.make``
    keeps ``max_episode_steps`` for its own time limit, so the env's comes as ``episode_steps``."""
    env = TabletopEnv(geometry=geometry, max_episode_steps=episode_steps, **kwargs)
    return FlatGeometry(env) if geometry else env


@EnvConfig.register_subclass("geovla_tabletop")
@dataclass
class TabletopEnvConfig(EnvConfig):
    """The built-in multi-camera tabletop task for LeRobot's scripts.

    Args:
        task: ``reach`` or ``pick``.
        image_size: side of the square camera images.
        cameras: which of ``front``, ``left``, ``right``, ``wrist`` to render.
        geometry: also give each camera's depth, intrinsics and extrinsics (a geovla policy with
            voxel spatial tokens needs them; other policies ignore them).
        episode_length: steps before truncation (None: the task's, 50 for reach, 80 for pick).
    """

    task: str | None = "reach"
    fps: int = int(round(1 / CONTROL_DT))
    image_size: int = 64
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))
    geometry: bool = False
    episode_length: int | None = None
    features: dict[str, PolicyFeature] = field(default_factory=dict)
    features_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--env.task must be one of {TASKS}, got {self.task!r}")
        unknown = [camera for camera in self.cameras if camera not in CAMERAS]
        if unknown or not self.cameras:
            raise ValueError(f"--env.cameras must be a non-empty subset of {list(CAMERAS)}, got {self.cameras}")
        if self.image_size < 1:
            raise ValueError(f"--env.image_size must be >= 1, got {self.image_size}")
        self.features = {
            ACTION: PolicyFeature(FeatureType.ACTION, (4,)),
            "agent_pos": PolicyFeature(FeatureType.STATE, (4,)),
            **{f"pixels/{cam}": PolicyFeature(FeatureType.VISUAL, (self.image_size, self.image_size, 3))
               for cam in self.cameras},
        }
        self.features_map = {
            ACTION: ACTION,
            "agent_pos": OBS_STATE,
            **{f"pixels/{cam}": f"{OBS_IMAGES}.{cam}" for cam in self.cameras},
        }

    @property
    def package_name(self) -> str:
        return "envs"

    @property
    def gym_id(self) -> str:
        return LEROBOT_TABLETOP_ID

    @property
    def gym_kwargs(self) -> dict[str, Any]:
        steps = self.episode_length or DEFAULT_MAX_STEPS[self.task]
        return {
            "task": self.task,
            "image_size": self.image_size,
            "cameras": tuple(self.cameras),
            "geometry": self.geometry,
            "episode_steps": steps,
            "max_episode_steps": steps,
        }

