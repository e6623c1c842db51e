"""Camera ground truth for MuJoCo cameras in OpenCV conventions.

OpenCV camera frame: x right, y down, z forward (MuJoCo cameras look along their -z with y up).
Pixel convention: continuous image coordinate ``u`` covers ``[0, W)`` and the pixel containing it
is ``floor(u)``, so the principal point of an ideal pinhole is the image centre ``(W/2, H/2)``.
"""

from __future__ import annotations

import mujoco
import numpy as np

# OpenCV axes expressed in MuJoCo camera axes: flip y and z.
_MUJOCO_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])


def camera_intrinsics(model: mujoco.MjModel, camera_id: int, height: int, width: int) -> np.ndarray:
    """Pinhole intrinsics ``K [3, 3]`` (float32) of a MuJoCo camera rendered at ``height x width``.

    MuJoCo's ``fovy`` is the full vertical field of view; pixels are square.
    """
    fovy = np.deg2rad(model.cam_fovy[camera_id])
    focal = 0.5 * height / np.tan(0.5 * fovy)
    return np.array(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32
    )


def camera_extrinsics(data: mujoco.MjData, camera_id: int) -> np.ndarray:
    """Camera-from-world extrinsics ``[R | t]`` of shape ``[3, 4]`` (float32), OpenCV convention.

    Reads the camera pose of the last ``mj_forward``/``mj_step``.
    """
    world_from_mujoco_cam = data.cam_xmat[camera_id].reshape(3, 3)
    world_from_cam = world_from_mujoco_cam @ _MUJOCO_FROM_OPENCV
    rotation = world_from_cam.T
    translation = -rotation @ data.cam_xpos[camera_id]
    return np.concatenate([rotation, translation[:, None]], axis=1).astype(np.float32)


def project_points(points_world: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points ``[N, 3]`` to continuous pixel coordinates ``[N, 2]`` and depths ``[N]``."""
    points_cam = points_world @ extrinsics[:, :3].T + extrinsics[:, 3]
    depth = points_cam[:, 2]
    uv = points_cam @ intrinsics.T
    return uv[:, :2] / uv[:, 2:3], depth


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """Back-project a depth map ``[H, W]`` (metres along the optical axis) to world points ``[H, W, 3]``.

    Each pixel is taken at its centre, ``(i + 0.5, j + 0.5)``.
    """
    height, width = depth.shape
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
    rays = pixels @ np.linalg.inv(intrinsics).T
    points_cam = rays * depth[..., None]
    rotation, translation = extrinsics[:, :3], extrinsics[:, 3]
    return (points_cam - translation) @ rotation
