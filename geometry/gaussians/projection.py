"""EWA projection of 3D Gaussians into a pinhole camera (gsplat's classic model, in PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geometry.pose import quaternion_to_matrix

ALPHA_MIN = 1.0 / 255.0
EXTEND_MAX = 3.33  # std devs covered by a splat's radius; exp(-3.33^2 / 2) ~= 1/255


@dataclass
class Splats:
    """Projected Gaussians of one camera, `[N]` each: means2d `[N, 2]` (pixels), conics `[N, 3]`
    (a, b, c of the inverse 2D covariance [[a, b], [b, c]]), depths, radii `[N, 2]` (half-widths
    of the bounding box along x and y, pixels), visible."""

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    visible: torch.Tensor


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """`R S S R^T` `[N, 3, 3]` from quaternions xyzw `[N, 4]` and std devs `[N, 3]`."""
    M = quaternion_to_matrix(quats) * scales[:, None, :]
    return M @ M.transpose(1, 2)


def project_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                      K: torch.Tensor, E: torch.Tensor, width: int, height: int, near_plane: float = 0.01,
                      eps2d: float = 0.3, radius_clip: float = 0.0) -> Splats:
    """Means `[N, 3]`, K `[3, 3]`, camera-from-world E `[3, 4]` -> `Splats`.

    2D covariance `J W Sigma W^T J^T + eps2d I` with the perspective Jacobian J taken at the mean,
    whose x/z and y/z are clamped to 1.3x the field of view (EWA splatting's guard). The bounding
    box has half-widths `ceil(extend * sigma_x)` and `ceil(extend * sigma_y)` (gsplat 1.5's tight
    box): `extend` is 3.33 std devs, or less where the opacity makes the tail fall below 1/255
    sooner. A splat is visible when it is not nearer than the near plane, its opacity reaches
    1/255, either half-width exceeds `radius_clip`, and its box overlaps the image.
    """
    R, t = E[:, :3], E[:, 3]
    cam = means @ R.T + t
    z = cam[:, 2]
    in_front = z >= near_plane
    zs = torch.where(in_front, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    margin_x, margin_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    tx = zs * torch.clamp(cam[:, 0] / zs, -(cx / fx + margin_x), (width - cx) / fx + margin_x)
    ty = zs * torch.clamp(cam[:, 1] / zs, -(cy / fy + margin_y), (height - cy) / fy + margin_y)
    zero = torch.zeros_like(zs)
    J = torch.stack([torch.stack([fx / zs, zero, -fx * tx / zs ** 2], -1),
                     torch.stack([zero, fy / zs, -fy * ty / zs ** 2], -1)], dim=1)  # [N, 2, 3]
    cov_cam = R @ covariance_3d(quats, scales) @ R.T
    cov2d = J @ cov_cam @ J.transpose(1, 2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    alive = opacities >= ALPHA_MIN
    extend = torch.sqrt(2.0 * torch.log((opacities / ALPHA_MIN).clamp_min(1.0))).clamp_max(EXTEND_MAX)
    radii = torch.ceil(extend[:, None] * torch.sqrt(torch.stack([a, c], dim=-1))).detach()
    means2d = torch.stack([fx * cam[:, 0] / zs + cx, fy * cam[:, 1] / zs + cy], dim=-1)
    m = means2d.detach()
    on_screen = (m + radii > 0).all(-1) & (m[:, 0] - radii[:, 0] < width) & (m[:, 1] - radii[:, 1] < height)
    visible = in_front & alive & (radii > radius_clip).any(-1) & on_screen
    return Splats(means2d, conics, zs, torch.where(visible[:, None], radii, torch.zeros_like(radii)), visible)
