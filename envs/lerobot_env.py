"""The built-in task and MetaWorld as LeRobot environments: ``--env.type=geovla_tabletop
--env.task=reach|pick|intercept`` and ``--env.type=geovla_metaworld --env.task=pick-place`` (any v3 task).

Importing this module (the ``lerobot_policy_geovla`` plugin does) registers the configs with
LeRobot, so ``lerobot-eval`` and ``lerobot-train --env.type=...`` run any LeRobot policy on the
tasks: their cameras become ``observation.images.<camera>``, the 4-d state
``observation.state`` and the instruction the batch's ``task``.

LeRobot passes an observation key it does not know on as ``observation.<key>`` when its value is
an array. With ``geometry=true`` the depth and camera parameters are therefore given flat,
``depth.<camera>`` ``[H, W]``, ``intrinsics.<camera>`` ``[3, 3]`` and ``extrinsics.<camera>``
``[3, 4]``, and reach the policy as the ``observation.depth.<camera>`` (etc.) keys a recorded
dataset has.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from envs import LEROBOT_METAWORLD_ID, LEROBOT_TABLETOP_ID
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


def make_lerobot_metaworld(geometry: bool = False, episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
    """:class:`envs.metaworld.MetaWorldEnv` with its geometry fields flat, as :func:`make_lerobot_tabletop`."""
    from envs.metaworld import MetaWorldEnv

    env = MetaWorldEnv(geometry=geometry, max_episode_steps=episode_steps, **kwargs)
    return FlatGeometry(env) if geometry else env


@dataclass
class CameraEnvConfig(EnvConfig):
    """What the project's LeRobot envs share: square images from named cameras, a 4-d state and
    action, depth and camera parameters on request, an episode limit.

    Args:
        task: the task's name.
        image_size: side of the square camera images.
        cameras: which of the env's cameras to render.
        geometry: also give each camera's depth, intrinsics and extrinsics (a geovla policy with
            voxel spatial tokens needs them; other policies ignore them).
        episode_length: steps before truncation (None: the task's own).
    """

    task: str | None = None
    image_size: int = 64
    cameras: list[str] = field(default_factory=list)
    geometry: bool = False
    episode_length: int | None = None
    features: dict[str, PolicyFeature] = field(default_factory=dict)
    features_map: dict[str, str] = field(default_factory=dict)

    @abc.abstractmethod
    def known_cameras(self) -> tuple[str, ...]:
        """The env's camera names."""

    @abc.abstractmethod
    def check_task(self) -> None:
        """Raise ValueError naming ``--env.task`` when the task is not one of the env's."""

    @abc.abstractmethod
    def default_episode_length(self) -> int:
        """The task's own episode limit in steps."""

    def __post_init__(self) -> None:
        self.check_task()
        known = self.known_cameras()
        unknown = [camera for camera in self.cameras if camera not in known]
        if unknown or not self.cameras:
            raise ValueError(f"--env.cameras must be a non-empty subset of {list(known)}, got {self.cameras}")
        if self.image_size < 1:
            raise ValueError(f"--env.image_size must be >= 1, got {self.image_size}")
        if self.episode_length is not None and self.episode_length < 1:
            raise ValueError(f"--env.episode_length must be >= 1, got {self.episode_length}")
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
    def gym_kwargs(self) -> dict[str, Any]:
        steps = self.episode_length or self.default_episode_length()
        return {
            "task": self.task,
            "image_size": self.image_size,
            "cameras": tuple(self.cameras),
            "geometry": self.geometry,
            "episode_steps": steps,
            "max_episode_steps": steps,
        }


@EnvConfig.register_subclass("geovla_tabletop")
@dataclass
class TabletopEnvConfig(CameraEnvConfig):
    """The built-in multi-camera tabletop task for LeRobot's scripts: ``task`` ``reach``,
    ``pick`` or ``intercept``, cameras out of ``front``, ``left``, ``right``, ``wrist``; episodes
    of 50 (reach), 80 (pick) or 60 (intercept) steps unless ``episode_length`` says otherwise
    (see :class:`CameraEnvConfig`)."""

    task: str | None = "reach"
    fps: int = int(round(1 / CONTROL_DT))
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))

    def known_cameras(self) -> tuple[str, ...]:
        return tuple(CAMERAS)

    def check_task(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--env.task must be one of {TASKS}, got {self.task!r}")

    def default_episode_length(self) -> int:
        return DEFAULT_MAX_STEPS[self.task]

    @property
    def gym_id(self) -> str:
        return LEROBOT_TABLETOP_ID


@EnvConfig.register_subclass("geovla_metaworld")
@dataclass
class MetaWorldEnvConfig(CameraEnvConfig):
    """A MetaWorld v3 task (``envs.metaworld``) for LeRobot's scripts: ``task`` with or without
    ``-v3``; cameras out of ``corner``, ``corner2``, ``corner3``, ``topview``, ``gripperPOV``,
    ``behindGripper``; the instruction is LeRobot's description of the task; episodes of
    MetaWorld's 500 steps unless ``episode_length`` says otherwise (see :class:`CameraEnvConfig`)."""

    task: str | None = "pick-place"
    fps: int = 80  # MetaWorld steps 5 x 2.5 ms
    cameras: list[str] = field(default_factory=lambda: ["corner2", "topview", "gripperPOV"])

    def known_cameras(self) -> tuple[str, ...]:
        from envs.metaworld import CAMERAS as METAWORLD_CAMERAS

        return METAWORLD_CAMERAS

    def check_task(self) -> None:
        from envs.metaworld import canonical_task

        try:
            canonical_task(self.task or "")
        except ValueError as error:
            raise ValueError(f"--env.task: {error}") from None

    def default_episode_length(self) -> int:
        from envs.metaworld.tasks import MAX_PATH_LENGTH

        return MAX_PATH_LENGTH

    @property
    def gym_id(self) -> str:
        return LEROBOT_METAWORLD_ID
