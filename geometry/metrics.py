"""Evaluation metrics: relative pose AUC, median-scaled depth errors, Chamfer distances."""

from __future__ import annotations

import math

import torch


def rotation_angle_deg(R_pred: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) between rotations `[..., 3, 3]`."""
    cos = ((R_pred.transpose(-1, -2) @ R_gt).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def translation_angle_deg(t_pred: torch.Tensor, t_gt: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Angle (degrees) between translation directions `[..., 3]`, up to sign (min(e, 180 - e))."""
    cos = (t_pred * t_gt).sum(-1) / (t_pred.norm(dim=-1) * t_gt.norm(dim=-1)).clamp_min(eps)
    err = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
    return torch.minimum(err, 180.0 - err)


def _homogeneous(extrinsics: torch.Tensor) -> torch.Tensor:
    bottom = extrinsics.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(extrinsics.shape[:-2] + (1, 4))
    return torch.cat([extrinsics, bottom], dim=-2)


def relative_pose_errors(extr_pred: torch.Tensor, extr_gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation-direction errors (degrees) of every ordered pair i < j of
    cameras `[N, 3, 4]` (camera-from-world), each `[N*(N-1)/2]`."""
    i, j = torch.triu_indices(extr_pred.shape[0], extr_pred.shape[0], offset=1)
    Tp, Tg = _homogeneous(extr_pred), _homogeneous(extr_gt)
    rel_p = Tp[j] @ torch.linalg.inv(Tp[i])
    rel_g = Tg[j] @ torch.linalg.inv(Tg[i])
    r_err = rotation_angle_deg(rel_p[:, :3, :3], rel_g[:, :3, :3])
    t_err = translation_angle_deg(rel_p[:, :3, 3], rel_g[:, :3, 3])
    return r_err, t_err


def pose_auc(r_err: torch.Tensor, t_err: torch.Tensor, max_threshold: int = 30) -> float:
    """AUC (in [0, 1]) of the accuracy curve of max(rotation, translation) error over thresholds
    1..max_threshold degrees in 1-degree bins. Example: all errors 0 -> 1.0; all above 30 -> 0.0;
    all exactly 15.5 -> 15/30 = 0.5."""
    err = torch.maximum(r_err, t_err).flatten()
    hist = torch.histc(err.clamp_max(float(max_threshold) + 1), bins=max_threshold + 1, min=0, max=max_threshold + 1)
    acc = torch.cumsum(hist[:max_threshold], dim=0) / err.numel()
    return float(acc.mean())


def median_scaled_depth_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    """AbsRel and delta < 1.25 of depth maps `[N, H, W]`, each map scaled by median(gt)/median(pred)."""
    valid = gt > 0 if valid is None else valid
    abs_rel, delta = [], []
    for p, g, v in zip(pred, gt, valid):
        p, g = p[v], g[v]
        if g.numel() == 0:
            continue
        p = p * (g.median() / p.median().clamp_min(1e-8))
        abs_rel.append(((p - g).abs() / g).mean())
        delta.append((torch.maximum(p / g, g / p.clamp_min(1e-8)) < 1.25).float().mean())
    if not abs_rel:
        return {"abs_rel": math.nan, "delta_1.25": math.nan}
    return {"abs_rel": float(torch.stack(abs_rel).mean()), "delta_1.25": float(torch.stack(delta).mean())}


def _nearest_distance(src: torch.Tensor, dst: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([torch.cdist(src[k:k + chunk], dst).min(dim=1).values for k in range(0, src.shape[0], chunk)])


def chamfer_metrics(pred_points: torch.Tensor, gt_points: torch.Tensor) -> dict[str, float]:
    """Accuracy (mean distance pred -> nearest gt), completeness (gt -> nearest pred) and their
    mean, for point sets `[N, 3]`, `[M, 3]`."""
    acc = float(_nearest_distance(pred_points, gt_points).mean())
    comp = float(_nearest_distance(gt_points, pred_points).mean())
    return {"accuracy": acc, "completeness": comp, "chamfer": (acc + comp) / 2}
