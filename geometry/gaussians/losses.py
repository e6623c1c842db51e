"""Losses of the voxel / Gaussian path: render L1, teacher-student distillation on matching ids,
temporal consistency of static voxels, static/dynamic separation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geometry.gaussians.tracker import match_ids


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    while mask.dim() < x.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(x)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def render_l1(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |rendered - target| over images `[B, T, V, 3, H, W]`, optionally over `mask [B, T, V, H, W]`."""
    if rendered.shape != target.shape:
        raise ValueError(f"rendered {tuple(rendered.shape)} and target {tuple(target.shape)} images differ in shape")
    err = (rendered - target).abs()
    return err.mean() if mask is None else _masked_mean(err, mask.unsqueeze(-3))


def teacher_targets(teacher: torch.Tensor, view_weights: torch.Tensor) -> torch.Tensor:
    """Per-view teacher parameters `[B, T, V, N, P]` -> their view-weighted mean `[B, T, N, P]`
    (weights `[B, T, V, N]` from the fusion; voxels without weight get zeros)."""
    total = view_weights.sum(2).clamp_min(1e-12)
    return (view_weights.unsqueeze(-1) * teacher).sum(2) / total.unsqueeze(-1)


def distillation_loss(student: torch.Tensor, student_ids: torch.Tensor, student_valid: torch.Tensor,
                      teacher: torch.Tensor, teacher_ids: torch.Tensor, view_weights: torch.Tensor) -> torch.Tensor:
    """MSE between student parameters `[B, T, N', P]` and the (detached) view-weighted teacher
    parameters `[B, T, V, N, P]` of the voxel with the same id at the same time step."""
    target = teacher_targets(teacher.detach(), view_weights.detach())
    has_teacher = view_weights.sum(2) > 0
    B, T = student.shape[:2]
    losses, counts = [], []
    for b in range(B):
        for t in range(T):
            idx = match_ids(student_ids[b, t], teacher_ids[b, t], has_teacher[b, t])
            ok = (idx >= 0) & student_valid[b, t]
            diff = student[b, t][ok] - target[b, t][idx[ok]]
            losses.append((diff ** 2).sum())
            counts.append(diff.numel())
    return torch.stack(losses).sum() / max(sum(counts), 1)


def matched_change(values: torch.Tensor, matches: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |values_t - values_s| `[B, T, N]` over the other times s of the tracker's window
    (matches `[B, T, window, N]`), and whether any match exists `[B, T, N]`."""
    B, T, W, N = matches.shape
    half = W // 2
    change = values.new_zeros(B, T, N)
    count = values.new_zeros(B, T, N)
    for k in range(W):
        s_off = k - half
        if s_off == 0:
            continue
        for t in range(max(0, -s_off), min(T, T - s_off)):
            idx = matches[:, t, k]
            ok = (idx >= 0) & valid[:, t]
            other = torch.gather(values[:, t + s_off], 1, idx.clamp_min(0).unsqueeze(-1).expand(-1, -1, values.shape[-1]))
            diff = (values[:, t] - other).abs().mean(-1)
            change[:, t] = change[:, t] + diff * ok
            count[:, t] = count[:, t] + ok
    return change / count.clamp_min(1), count > 0


def temporal_consistency_loss(params: torch.Tensor, means: torch.Tensor, matches: torch.Tensor, valid: torch.Tensor,
                              static: torch.Tensor) -> torch.Tensor:
    """L1 change of the parameters `[B, T, N, P]` and means `[B, T, N, 3]` of static voxels
    (`static [B, T, N]`) between matched ids of neighbouring time steps."""
    change, matched = matched_change(torch.cat([params, means], dim=-1), matches, valid)
    return _masked_mean(change, matched & static & valid)


def static_dynamic_loss(static_logits: torch.Tensor, change: torch.Tensor, valid: torch.Tensor,
                        target: torch.Tensor | None = None, prior: float = 0.1) -> torch.Tensor:
    """Separation of static and dynamic voxels, logits `[B, T, N]`.

    With a target static mask `[B, T, N]`: binary cross-entropy. Without: a voxel called static
    pays for its temporal change `change [B, T, N]` (detached), and calling a voxel dynamic costs
    `prior`, so exactly the voxels that change more than `prior` end up dynamic.
    """
    if target is not None:
        bce = F.binary_cross_entropy_with_logits(static_logits, target.to(static_logits.dtype), reduction="none")
        return _masked_mean(bce, valid)
    p = torch.sigmoid(static_logits)
    return _masked_mean(p * change.detach() + prior * (1 - p), valid)
