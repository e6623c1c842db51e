"""Training losses of the geometry model (camera, depth/points with confidence, gradient,
multi-view reprojection consistency, edge-aware smoothness, dynamic-mask supervision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map


def camera_loss(pose_enc_list: list[torch.Tensor], gt_pose_enc: torch.Tensor, gamma: float = 0.6,
                weight_trans: float = 1.0, weight_rot: float = 1.0, weight_fov: float = 0.5) -> torch.Tensor:
    """L1 on every refinement iteration, iteration i of n weighted `gamma ** (n-1-i)`.

    Encodings are `[..., 9]` (t, quaternion xyzw, fov_h, fov_w). The quaternion term takes the
    smaller of |q - q_gt| and |q + q_gt| (q and -q are the same rotation).
    """
    n = len(pose_enc_list)
    total = gt_pose_enc.new_zeros(())
    for i, pred in enumerate(pose_enc_list):
        trans = (pred[..., :3] - gt_pose_enc[..., :3]).abs().mean()
        q, q_gt = pred[..., 3:7], gt_pose_enc[..., 3:7]
        rot = torch.minimum((q - q_gt).abs().sum(-1), (q + q_gt).abs().sum(-1)).mean() / 4
        fov = (pred[..., 7:] - gt_pose_enc[..., 7:]).abs().mean()
        total = total + gamma ** (n - 1 - i) * (weight_trans * trans + weight_rot * rot + weight_fov * fov)
    return total


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    valid = valid.to(x.dtype)
    return (x * valid).sum() / valid.sum().clamp_min(1.0)


def confidence_loss(pred: torch.Tensor, gt: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor,
                    alpha: float = 0.2) -> torch.Tensor:
    """`conf * |pred - gt| - alpha * log(conf)` averaged over valid pixels.

    `pred`/`gt` are `[..., H, W]` (depth) or `[..., H, W, 3]` (points, Euclidean error); `conf`
    and `valid` are `[..., H, W]`.
    """
    err = (pred - gt).abs() if pred.shape == conf.shape else (pred - gt).norm(dim=-1)
    return _masked_mean(conf * err - alpha * torch.log(conf), valid)


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal/vertical finite differences of `pred` and `gt` `[..., H, W(, k)]`,
    where both neighbouring pixels are valid."""
    if pred.dim() == valid.dim():
        pred, gt = pred.unsqueeze(-1), gt.unsqueeze(-1)
    diff = pred - gt
    dx = (diff[..., :, 1:, :] - diff[..., :, :-1, :]).abs().sum(-1)
    dy = (diff[..., 1:, :, :] - diff[..., :-1, :, :]).abs().sum(-1)
    vx = valid[..., :, 1:] & valid[..., :, :-1]
    vy = valid[..., 1:, :] & valid[..., :-1, :]
    return _masked_mean(dx, vx) + _masked_mean(dy, vy)


def unproject_depth(depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Depth `[N, H, W]`, K `[N, 3, 3]`, camera-from-world `[N, 3, 4]` -> world points `[N, H, W, 3]`."""
    N, H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, device=depth.device, dtype=depth.dtype),
                          torch.arange(W, device=depth.device, dtype=depth.dtype), indexing="ij")
    # Points are columns ([N, 3, HW]) here and in project_points: a 3x3 matrix times 3 x HW is a
    # matmul that the BLAS runs about twice as fast as HW x 3 times 3x3.
    pix = torch.stack([u + 0.5, v + 0.5, torch.ones_like(u)]).reshape(1, 3, H * W)
    rays = torch.linalg.inv(intrinsics) @ pix  # [N, 3, HW]
    cam = rays * depth.reshape(N, 1, H * W)
    R, t = extrinsics[:, :, :3], extrinsics[:, :, 3:]
    world = R.transpose(1, 2) @ (cam - t)  # R^T (x - t)
    return world.transpose(1, 2).reshape(N, H, W, 3)


def project_points(points: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points `[N, M, 3]` -> pixel coordinates `[N, M, 2]` and camera depth `[N, M]`."""
    cam = extrinsics[:, :, :3] @ points.transpose(1, 2) + extrinsics[:, :, 3:]  # [N, 3, M]
    z = cam[:, 2]
    uv = intrinsics[:, :2] @ cam
    return (uv / z.clamp_min(1e-6)[:, None]).transpose(1, 2), z


def reprojection_consistency_loss(depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor,
                                  max_rel_error: float = 0.5) -> torch.Tensor:
    """Multi-view consistency of depth maps `[B, T, V, H, W]` under cameras `[B, T, V, 3, 3/4]`.

    Each view's pixels are lifted to the world, projected into every other view of the same time
    step, and the projected depth is compared (relative L1) with that view's depth sampled there.
    Points outside the image, behind the camera, or disagreeing by more than `max_rel_error`
    (likely occluded) are ignored.
    """
    B, T, V, H, W = depth.shape
    if V < 2:
        return depth.new_zeros(())
    d = depth.reshape(B * T, V, H, W)
    K = intrinsics.reshape(B * T, V, 3, 3)
    E = extrinsics.reshape(B * T, V, 3, 4)
    terms, weights = [], []
    for i in range(V):
        world = unproject_depth(d[:, i], K[:, i], E[:, i]).reshape(B * T, H * W, 3)
        for j in range(V):
            if i == j:
                continue
            uv, z = project_points(world, K[:, j], E[:, j])
            grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], dim=-1).unsqueeze(1)
            sampled = F.grid_sample(d[:, j:j + 1], grid, mode="bilinear", align_corners=False).reshape(B * T, H * W)
            rel = (z - sampled).abs() / z.clamp_min(1e-6)
            valid = (grid.abs() < 1).all(-1).reshape(B * T, H * W) & (z > 1e-3) & (rel.detach() < max_rel_error)
            terms.append((rel * valid).sum())
            weights.append(valid.sum())
    return torch.stack(terms).sum() / torch.stack(weights).sum().clamp_min(1)


def smoothness_loss(depth: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised disparity; depth `[..., H, W]`, images `[..., 3, H, W]`."""
    disp = 1.0 / depth.clamp_min(1e-6)
    disp = disp / disp.mean(dim=(-2, -1), keepdim=True)
    gx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    gy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    ix = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(-3)
    iy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(-3)
    return (gx * torch.exp(-ix)).mean() + (gy * torch.exp(-iy)).mean()


def mask_loss(mask_logits: torch.Tensor, dynamic_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """BCE of the dynamic-patch logits `[B, S*P]` against the pixel mask `[B, ..., H, W]`, whose
    per-patch fraction of dynamic pixels is the target."""
    H, W = dynamic_mask.shape[-2:]
    B = dynamic_mask.shape[0]
    frac = F.avg_pool2d(dynamic_mask.reshape(-1, 1, H, W).float(), patch_size)
    return F.binary_cross_entropy_with_logits(mask_logits, frac.reshape(B, -1))


def track_loss(track_list: list[torch.Tensor], gt_tracks: torch.Tensor, gt_visible: torch.Tensor,
               vis: torch.Tensor | None = None, gamma: float = 0.8) -> torch.Tensor:
    """L1 end-point error of every refinement iteration on visible points (iteration i of n
    weighted `gamma ** (n-1-i)`), plus BCE of the visibility `[B, S, N]` when given.
    Tracks are `[B, S, N, 2]` pixels."""
    n = len(track_list)
    total = sum(gamma ** (n - 1 - i) * _masked_mean((pred - gt_tracks).abs().sum(-1), gt_visible)
                for i, pred in enumerate(track_list))
    if vis is not None:
        total = total + F.binary_cross_entropy(vis.clamp(1e-6, 1 - 1e-6), gt_visible.to(vis.dtype))
    return total


def geometry_loss(outputs: dict, gt: dict, images: torch.Tensor | None = None, patch_size: int = 14,
                  weights: dict[str, float] | None = None, log_depth: bool = False) -> dict[str, torch.Tensor]:
    """Weighted sum of the available terms; returns every term and `total`, computed in float32
    (outputs of a bfloat16 autocast are cast up, and autocast is off inside).

    `log_depth=True` applies the confidence and gradient terms to log depth, so that near cameras
    (a wrist camera at a few centimetres) weigh as much as far ones in metric scenes.

    `gt` may hold `pose_enc` (shaped like the prediction), `depth` `[..., H, W]`,
    `world_points` `[..., H, W, 3]`, `valid` `[..., H, W]` bool, `intrinsics`/`extrinsics`
    `[B, T, V, 3, 3/4]` (for reprojection) and `dynamic_mask`.
    """
    device = next(v for v in gt.values() if isinstance(v, torch.Tensor)).device
    with torch.autocast(device.type, enabled=False):
        return _weighted_terms(tree_map(_float32, outputs), gt, images, patch_size, weights, log_depth)


def _float32(x: object) -> object:
    return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _weighted_terms(outputs: dict, gt: dict, images: torch.Tensor | None, patch_size: int,
                    weights: dict[str, float] | None, log_depth: bool) -> dict[str, torch.Tensor]:
    w = {"camera": 1.0, "depth": 1.0, "points": 1.0, "gradient": 1.0, "reproj": 0.5, "smooth": 0.1, "mask": 0.5}
    w.update(weights or {})
    terms: dict[str, torch.Tensor] = {}
    valid = gt.get("valid")
    if "pose_enc" in gt:
        terms["camera"] = camera_loss(outputs["pose_enc_list"], gt["pose_enc"])
    if "depth" in gt:
        v = valid if valid is not None else gt["depth"] > 0
        pred, target = outputs["depth"], gt["depth"]
        if log_depth:
            pred, target = torch.log(pred), torch.log(target.clamp_min(1e-6))
        terms["depth"] = confidence_loss(pred, target, outputs["depth_conf"], v)
        terms["gradient"] = gradient_loss(pred, target, v)
        if "intrinsics" in gt and outputs["depth"].dim() == 5:
            terms["reproj"] = reprojection_consistency_loss(outputs["depth"], gt["intrinsics"], gt["extrinsics"])
        if images is not None:
            terms["smooth"] = smoothness_loss(outputs["depth"], images)
    if "world_points" in gt and "world_points" in outputs:
        v = valid if valid is not None else gt["world_points"].norm(dim=-1) > 0
        terms["points"] = confidence_loss(outputs["world_points"], gt["world_points"], outputs["world_points_conf"], v)
    if "dynamic_mask" in gt and outputs.get("mask_logits") is not None:
        terms["mask"] = mask_loss(outputs["mask_logits"], gt["dynamic_mask"], patch_size)
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms
