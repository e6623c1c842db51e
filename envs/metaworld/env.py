"""MetaWorld (a Sawyer arm, 50 tasks) in the observation convention of the built-in task.

:class:`MetaWorldEnv` wraps MetaWorld's own env (its physics, rewards, success test and seeding)
and renders several cameras with depth and camera ground truth. Rendering uses a second,
render-only copy of the MetaWorld model whose high-poly arm meshes are simplified and whose
state follows the simulation every step; :class:`RenderSettings` lists what is turned off and
``perf/bench_metaworld_render.py`` what each setting costs.

Experts are MetaWorld's scripted policies (``metaworld.policies.ENV_POLICY_MAP``), which act on
the privileged 39-d MetaWorld state (:attr:`MetaWorldEnv.state`): :func:`make_metaworld_expert`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.metaworld.rendering import (
    DEFAULT_RENDERING, ROTATED_CAMERAS, RenderSettings, RGBDRenderer, build_render_model, rotate_camera_180,
    rotate_image_180,
)
from envs.metaworld.tasks import MAX_PATH_LENGTH, canonical_task, make_metaworld_sim, task_description
from envs.tabletop.cameras import camera_extrinsics, camera_intrinsics
from envs.tabletop.env import camera_observation_space, validate_action


CAMERAS = ("corner", "corner2", "corner3", "topview", "gripperPOV", "behindGripper")


DEFAULT_CAMERAS = ("corner", "corner2", "corner3", "topview", "gripperPOV")


class MetaWorldEnv(gym.Env):
    """A MetaWorld task with the observation of the built-in task.

    Action ``[4]`` in ``[-1, 1]``: end-effector delta xyz (MetaWorld moves the mocap by 1 cm
    per unit) and gripper effort (-1 open, +1 close). Values out of range are clipped; a NaN/inf
    or wrongly shaped action raises ``ValueError``.

    Observation: ``pixels`` ``{camera: uint8 [H, W, 3]}`` and ``agent_pos`` ``float32 [4]``
    (hand xyz in metres, gripper opening in [0, 1], 1 = open: MetaWorld's first 4 state
    values). With ``geometry=True`` also, per camera: ``depth`` float32 ``[H, W]`` metres along
    the optical axis, ``intrinsics`` ``[3, 3]`` and ``extrinsics`` ``[3, 4]`` (OpenCV
    camera-from-world), all consistent with the upright images of :data:`ROTATED_CAMERAS`.
    Pixels that see no geom show MetaWorld's skybox, more than 50 m away.

    ``reset(seed=s)`` seeds MetaWorld's random object and goal positions: the same seed gives
    the same episode. An episode terminates on MetaWorld's success and is truncated after
    ``max_episode_steps``. The reward is MetaWorld's (0-10).

    Args:
        task: a MetaWorld v3 task, with or without the ``-v3`` suffix (``pick-place``).
        image_size: rendered image size, an int (square) or ``(height, width)``.
        cameras: which of :data:`CAMERAS` to render.
        geometry: add depth and camera parameters to the observation.
        max_episode_steps: truncation limit, at most MetaWorld's 500 (the default).
        render_settings: what the renderer draws (:class:`RenderSettings`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}  # MetaWorld steps 5 x 2.5 ms
    robot_type = "sawyer"

    def __init__(
        self,
        task: str = "pick-place",
        image_size: int | tuple[int, int] = 64,
        cameras: tuple[str, ...] = DEFAULT_CAMERAS,
        geometry: bool = False,
        max_episode_steps: int | None = None,
        render_settings: RenderSettings = DEFAULT_RENDERING,
        render_mode: str | None = "rgb_array",
    ) -> None:
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras:
            raise ValueError(f"cameras must be a non-empty subset of {CAMERAS}, got {cameras}")
        max_episode_steps = max_episode_steps or MAX_PATH_LENGTH
        if not 0 < max_episode_steps <= MAX_PATH_LENGTH:
            raise ValueError(f"max_episode_steps must be in [1, {MAX_PATH_LENGTH}], got {max_episode_steps}")
        self.task = canonical_task(task)
        self.instruction = task_description(self.task)
        self.height, self.width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.cameras = tuple(cameras)
        self.geometry = geometry
        self.max_episode_steps = max_episode_steps
        self.render_settings = render_settings
        self.render_mode = render_mode

        self.sim = make_metaworld_sim(self.task)
        self.model, self.data = self.sim.model, self.sim.data
        self.render_model = build_render_model(
            self.model, self.sim.model_name, render_settings, self.height, self.width
        )
        self.render_data = mujoco.MjData(self.render_model)
        self._renderer: RGBDRenderer | None = None
        self._camera_ids = {c: self.model.camera(c).id for c in self.cameras}
        self._state = np.zeros(self.sim.observation_space.shape)
        self._steps = 0
        self._success = False

        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = camera_observation_space(self.cameras, self.height, self.width, geometry)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.sim.seed(seed)
        self._state, _ = self.sim.reset()
        self._steps = 0
        self._success = False
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = validate_action(action).astype(np.float32)
        self._state, reward, _, _, sim_info = self.sim.step(action)
        self._steps += 1
        self._success = bool(sim_info["success"])
        truncated = self._steps >= self.max_episode_steps and not self._success
        return self._observation(), float(reward), self._success, truncated, self._info()

    def render(self) -> np.ndarray:
        """All cameras side by side, ``uint8 [H, W * n_cameras, 3]``."""
        self._sync_render_data()
        return np.concatenate([self._render_camera(c, depth=False)[0] for c in self.cameras], axis=1)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.sim.close()

    # ------------------------------------------------------------- task state
    @property
    def state(self) -> np.ndarray:
        """MetaWorld's 39-d state of the last step (hand, gripper, objects, previous frame, goal)."""
        return self._state.copy()

    @property
    def task_description(self) -> str:
        """The task's instruction; LeRobot's env processors read this attribute."""
        return self.instruction

    # -------------------------------------------------------------- rendering
    def _sync_render_data(self) -> None:
        """Pose the render-only model like the simulation.

        MetaWorld moves task bodies in the model at reset and writes goal sites straight into
        the data, so both are copied; geoms come from the render model's own kinematics (its
        simplified meshes have their own frames).
        """
        self.render_model.body_pos[:] = self.model.body_pos
        self.render_model.body_quat[:] = self.model.body_quat
        self.render_data.qpos[:] = self.data.qpos
        self.render_data.mocap_pos[:] = self.data.mocap_pos
        self.render_data.mocap_quat[:] = self.data.mocap_quat
        mujoco.mj_kinematics(self.render_model, self.render_data)
        for name in ("site_xpos", "site_xmat", "cam_xpos", "cam_xmat", "light_xpos", "light_xdir"):
            getattr(self.render_data, name)[:] = getattr(self.data, name)

    def _render_camera(self, camera: str, depth: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self._renderer is None:
            settings = self.render_settings
            self._renderer = RGBDRenderer(
                self.render_model, self.height, self.width, settings.shadows, settings.reflections
            )
        rgb, depth_map = self._renderer.render(self.render_data, self._camera_ids[camera], depth)
        if camera in ROTATED_CAMERAS:
            rgb = rotate_image_180(rgb)
            depth_map = None if depth_map is None else rotate_image_180(depth_map)
        return rgb, depth_map

    def _camera_parameters(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        camera_id = self._camera_ids[camera]
        intrinsics = camera_intrinsics(self.model, camera_id, self.height, self.width)
        extrinsics = camera_extrinsics(self.data, camera_id)
        if camera in ROTATED_CAMERAS:
            return rotate_camera_180(intrinsics, extrinsics, self.height, self.width)
        return intrinsics, extrinsics

    def _observation(self) -> dict[str, Any]:
        self._sync_render_data()
        rendered = {c: self._render_camera(c, depth=self.geometry) for c in self.cameras}
        obs: dict[str, Any] = {
            "pixels": {c: rgb for c, (rgb, _) in rendered.items()},
            "agent_pos": self._state[:4].astype(np.float32),
        }
        if self.geometry:
            parameters = {c: self._camera_parameters(c) for c in self.cameras}
            obs["depth"] = {c: depth for c, (_, depth) in rendered.items()}
            obs["intrinsics"] = {c: k for c, (k, _) in parameters.items()}
            obs["extrinsics"] = {c: e for c, (_, e) in parameters.items()}
        return obs

    def _info(self) -> dict[str, Any]:
        return {"is_success": self._success, "instruction": self.instruction, "task": self.task}
