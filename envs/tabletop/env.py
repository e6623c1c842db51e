"""Multi-camera tabletop task: reach, pick or intercept the object named by a language instruction."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.tabletop.cameras import camera_extrinsics, camera_intrinsics
from envs.tabletop.rendering import make_renderer, release_renderers
from envs.tabletop.scene import CAMERAS, SceneObject, apply_layout, load_model, sample_layout

TASKS = ("reach", "pick", "intercept")
INSTRUCTION_TEMPLATES = {"reach": "touch the {}", "pick": "pick up the {}", "intercept": "intercept the {}"}
DEFAULT_MAX_STEPS = {"reach": 50, "pick": 80, "intercept": 60}

CONTROL_DT = 0.05  # seconds per env step (20 Hz)
MAX_TRANSLATION = 0.02  # metres of end-effector motion per unit of action
EE_LOW = np.array([-0.22, -0.22, 0.017])
EE_HIGH = np.array([0.22, 0.22, 0.25])
EE_OFFSET = np.array([0.0, 0.0, 0.215])  # end-effector site minus the hand joints' displacement
GRIPPER_CLOSED = 0.035  # finger travel (metres) when fully closed
REACH_TOLERANCE = 0.03
LIFT_HEIGHT = 0.08  # object centre height (metres above the table) that counts as lifted
# intercept: every object slides in a straight line at this speed (m/s), bouncing off the walls
# of the square of half-side ARENA (metres), which lies inside the gripper's reach.
SLIDE_SPEED = (0.4, 0.5)
ARENA = 0.18


class TabletopEnv(gym.Env):
    """A floating parallel-jaw gripper, a table with a few coloured objects, and an instruction.

    Action ``[4]`` in ``[-1, 1]``: end-effector delta xyz (scaled by ``MAX_TRANSLATION`` metres and
    kept inside the workspace) and a gripper command (-1 fully open, +1 fully closed). Values out
    of range are clipped; a NaN/inf or wrongly shaped action raises ``ValueError``.

    Observation (LeRobot convention): ``pixels`` ``{camera: uint8 [H, W, 3]}``, ``agent_pos``
    ``float32 [4]`` (end-effector xyz in metres, gripper opening in [0, 1], 1 = open). With
    ``geometry=True`` also, per camera: ``depth`` float32 ``[H, W]`` metres along the optical
    axis, ``intrinsics`` ``[3, 3]`` and ``extrinsics`` ``[3, 4]`` (OpenCV camera-from-world).

    Args:
        task: "reach" (move the end effector to the named object), "pick" (grasp it and lift
            its centre above ``LIFT_HEIGHT``) or "intercept" (touch the named object while all
            objects slide over the table, each in a straight line in a random direction at
            ``SLIDE_SPEED``, bouncing off the walls of the ``ARENA``: one frame shows where they
            are, not where they go, and a hand that chases where the target is falls behind it).
        image_size: rendered image size, an int (square) or ``(height, width)``.
        cameras: which of ``front``, ``left``, ``right``, ``wrist`` to render.
        geometry: add depth and camera parameters to the observation.
        num_objects: objects on the table, each of a distinct colour.
        max_episode_steps: truncation limit (defaults per task in ``DEFAULT_MAX_STEPS``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / CONTROL_DT))}

    def __init__(
        self,
        task: str = "reach",
        image_size: int | tuple[int, int] = 64,
        cameras: tuple[str, ...] = CAMERAS,
        geometry: bool = False,
        num_objects: int = 3,
        max_episode_steps: int | None = None,
        render_mode: str | None = "rgb_array",
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras:
            raise ValueError(f"cameras must be a non-empty subset of {CAMERAS}, got {cameras}")
        self.task = task
        self.height, self.width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.cameras = tuple(cameras)
        self.geometry = geometry
        self.num_objects = num_objects
        self.max_episode_steps = max_episode_steps or DEFAULT_MAX_STEPS[task]
        self.render_mode = render_mode

        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self._substeps = int(round(CONTROL_DT / self.model.opt.timestep))
        self._renderer: mujoco.Renderer | None = None
        self._depth_renderer: mujoco.Renderer | None = None
        self._camera_ids = {c: self.model.camera(c).id for c in self.cameras}
        self._ee_site = self.model.site("ee").id
        self._hand_qpos = [self.model.jnt_qposadr[self.model.joint(j).id] for j in ("hand_x", "hand_y", "hand_z")]
        self._finger_qpos = self.model.jnt_qposadr[self.model.joint("finger_left").id]
        self._finger_right_qpos = self.model.jnt_qposadr[self.model.joint("finger_right").id]

        self.objects: list[SceneObject] = []
        self.velocities = np.zeros((0, 2))  # initial xy metres per second of each object (intercept)
        self._start_xy = np.zeros((0, 2))
        self.target: SceneObject | None = None
        self.instruction = ""
        self._steps = 0

        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = camera_observation_space(self.cameras, self.height, self.width, geometry)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.objects, xy = sample_layout(self.np_random, self.num_objects)
        self.velocities = np.zeros((len(self.objects), 2))
        if self.task == "intercept":
            directions = self.np_random.uniform(0, 2 * np.pi, len(self.objects))
            speeds = self.np_random.uniform(*SLIDE_SPEED, len(self.objects))
            self.velocities = speeds[:, None] * np.stack([np.cos(directions), np.sin(directions)], axis=1)
        self._start_xy = xy
        self.target = self.objects[int(self.np_random.integers(len(self.objects)))]
        self.instruction = INSTRUCTION_TEMPLATES[self.task].format(self.target.name)
        apply_layout(self.model, self.data, self.objects, xy)

        start = np.array([*self.np_random.uniform(-0.05, 0.05, size=2), self.np_random.uniform(0.17, 0.21)])
        self.data.qpos[self._hand_qpos] = start - EE_OFFSET
        self.data.ctrl[:3] = start - EE_OFFSET
        self.data.ctrl[3] = 0.0
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = validate_action(action)
        target = np.clip(self.ee_position() + action[:3] * MAX_TRANSLATION, EE_LOW, EE_HIGH)
        self.data.ctrl[:3] = target - EE_OFFSET
        self.data.ctrl[3] = GRIPPER_CLOSED * (action[3] + 1.0) / 2.0
        mujoco.mj_step(self.model, self.data, nstep=self._substeps)
        self._steps += 1
        if self.task == "intercept":
            self._slide_objects()
        success = self.is_success()
        truncated = self._steps >= self.max_episode_steps and not success
        return self._observation(), float(success), success, truncated, self._info()

    def render(self) -> np.ndarray:
        """All cameras side by side, ``uint8 [H, W * n_cameras, 3]``."""
        return np.concatenate([self.render_camera(c) for c in self.cameras], axis=1)

    def close(self) -> None:
        release_renderers(self, self._renderer, self._depth_renderer)
        self._renderer = self._depth_renderer = None

    # ------------------------------------------------------------- task state
    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._ee_site].copy()

    def gripper_opening(self) -> float:
        """1 when fully open, 0 when fully closed."""
        return float(1.0 - self.data.qpos[self._finger_qpos] / GRIPPER_CLOSED)

    def object_position(self, obj: SceneObject) -> np.ndarray:
        return self.data.xpos[self.model.body(obj.slot).id].copy()

    def target_position(self) -> np.ndarray:
        return self.object_position(self.target)

    def target_position_in(self, seconds: float) -> np.ndarray:
        """Where the target will be ``seconds`` from now, unless something stops it (privileged:
        what the ``intercept`` expert aims at)."""
        index = self.objects.index(self.target)
        xy = bounce(self._start_xy[index] + self.velocities[index] * (self._steps * CONTROL_DT + seconds), ARENA)
        return np.array([*xy, self.target_position()[2]])

    def _slide_objects(self) -> None:
        """Put every object where its motion has brought it (kinematic: contacts do not deflect
        it), at rest in the physics."""
        elapsed = self._steps * CONTROL_DT
        for obj, start, velocity in zip(self.objects, self._start_xy, self.velocities):
            joint = self.model.body_jntadr[self.model.body(obj.slot).id]
            qpos, qvel = self.model.jnt_qposadr[joint], self.model.jnt_dofadr[joint]
            self.data.qpos[qpos : qpos + 2] = bounce(start + velocity * elapsed, ARENA)
            self.data.qpos[qpos + 3 : qpos + 7] = (1.0, 0.0, 0.0, 0.0)
            self.data.qvel[qvel : qvel + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def is_success(self) -> bool:
        target = self.target_position()
        if self.task in ("reach", "intercept"):
            return bool(np.linalg.norm(self.ee_position() - target) < REACH_TOLERANCE)
        return bool(target[2] > LIFT_HEIGHT)

    @property
    def task_description(self) -> str:
        """The instruction; LeRobot's env processors read this attribute."""
        return self.instruction

    # -------------------------------------------------------------- rendering
    def render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = make_renderer(self, self.model, self.height, self.width, depth=False)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def render_depth(self, camera: str) -> np.ndarray:
        if self._depth_renderer is None:
            self._depth_renderer = make_renderer(self, self.model, self.height, self.width, depth=True)
        self._depth_renderer.update_scene(self.data, camera=camera)
        return self._depth_renderer.render().astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "pixels": {c: self.render_camera(c) for c in self.cameras},
            "agent_pos": np.array([*self.ee_position(), self.gripper_opening()], dtype=np.float32),
        }
        if self.geometry:
            obs["depth"] = {c: self.render_depth(c) for c in self.cameras}
            obs["intrinsics"] = {
                c: camera_intrinsics(self.model, i, self.height, self.width) for c, i in self._camera_ids.items()
            }
            obs["extrinsics"] = {c: camera_extrinsics(self.data, i) for c, i in self._camera_ids.items()}
        return obs

    def _info(self) -> dict[str, Any]:
        return {
            "is_success": self.is_success(),
            "instruction": self.instruction,
            "target": self.target.name,
            "objects": [o.name for o in self.objects],
        }


def camera_observation_space(cameras: tuple[str, ...], height: int, width: int, geometry: bool) -> spaces.Dict:
    """The observation space of the project's envs: ``pixels`` per camera and the 4-d
    ``agent_pos``; with ``geometry`` also ``depth``, ``intrinsics`` and ``extrinsics`` per camera."""
    per_camera = lambda space: spaces.Dict({c: space for c in cameras})  # noqa: E731
    fields: dict[str, spaces.Space] = {
        "pixels": per_camera(spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)),
        "agent_pos": spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32),
    }
    if geometry:
        fields["depth"] = per_camera(spaces.Box(0.0, np.inf, shape=(height, width), dtype=np.float32))
        fields["intrinsics"] = per_camera(spaces.Box(-np.inf, np.inf, shape=(3, 3), dtype=np.float32))
        fields["extrinsics"] = per_camera(spaces.Box(-np.inf, np.inf, shape=(3, 4), dtype=np.float32))
    return spaces.Dict(fields)


def bounce(xy: np.ndarray, half_side: float) -> np.ndarray:
    """Where straight-line motion to ``xy`` ends up when it reflects off the walls at
    ``+-half_side`` (a triangle wave of the unbounded coordinate)."""
    period = 4 * half_side
    phase = np.mod(xy + half_side, period)
    return np.where(phase < 2 * half_side, phase, period - phase) - half_side


def validate_action(action: Any) -> np.ndarray:
    """Check an action's shape and values; return it as float64 clipped to ``[-1, 1]``."""
    array = np.asarray(action, dtype=np.float64)
    if array.shape != (4,):
        raise ValueError(f"action must have shape (4,) = [dx, dy, dz, gripper], got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"action has non-finite values at indices {np.flatnonzero(bad).tolist()}: {array.tolist()}")
    return np.clip(array, -1.0, 1.0)

