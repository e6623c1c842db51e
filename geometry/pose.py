"""Pose encoding `[t (3), quaternion xyzw (4), fov_h, fov_w]` <-> OpenCV extrinsics/intrinsics."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Quaternions `[..., 4]` (xyzw, need not be unit) -> rotation matrices `[..., 3, 3]`."""
    x, y, z, w = quat.unbind(-1)
    two_s = 2.0 / (quat * quat).sum(-1)
    rows = (
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(quat.shape[:-1] + (3, 3))


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `[..., 3, 3]` -> unit quaternions `[..., 4]` (xyzw, w >= 0).

    Each of the four classic formulas divides by 2|q_i| for one component i; the one with the
    largest |q_i| is taken for numerical stability.
    """
    m = R.reshape(R.shape[:-2] + (9,)).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    q_abs = torch.sqrt(torch.stack([
        1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22,
    ], dim=-1).clamp_min(0.0))  # 2|w|, 2|x|, 2|y|, 2|z|
    candidates = torch.stack([  # rows in wxyz order, each = 2|q_i| * q * sign(q_i)
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)
    candidates = candidates / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(dim=-1)
    wxyz = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    wxyz = F.normalize(wxyz, dim=-1)
    wxyz = torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)
    return torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)


def extri_intri_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                                 image_size_hw: tuple[int, int]) -> torch.Tensor:
    """`[..., 3, 4]` camera-from-world and `[..., 3, 3]` intrinsics -> pose encoding `[..., 9]`."""
    H, W = image_size_hw
    quat = matrix_to_quaternion(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((H / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2) / intrinsics[..., 0, 0])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)


def pose_encoding_to_extri_intri(pose_encoding: torch.Tensor, image_size_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose encoding `[..., 9]` -> extrinsics `[..., 3, 4]`, intrinsics `[..., 3, 3]`.

    The principal point is the image centre (W/2, H/2); focal lengths follow from the FoVs.
    """
    H, W = image_size_hw
    t, quat, fov_h, fov_w = pose_encoding.split([3, 4, 1, 1], dim=-1)
    extrinsics = torch.cat([quaternion_to_matrix(quat), t[..., None]], dim=-1)
    fy = (H / 2) / torch.tan(fov_h[..., 0] / 2)
    fx = (W / 2) / torch.tan(fov_w[..., 0] / 2)
    K = torch.zeros(pose_encoding.shape[:-1] + (3, 3), dtype=pose_encoding.dtype, device=pose_encoding.device)
    K[..., 0, 0], K[..., 1, 1] = fx, fy
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = W / 2, H / 2, 1.0
    return extrinsics, K
