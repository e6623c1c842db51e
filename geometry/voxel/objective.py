"""Training objective of the voxel / Gaussian path from `VoxelGaussianModel` outputs."""

from __future__ import annotations

import torch

from geometry.gaussians.losses import (distillation_loss, matched_change, render_l1, static_dynamic_loss,
                                       temporal_consistency_loss)

DEFAULT_WEIGHTS = {"render": 1.0, "teacher_render": 1.0, "distill": 0.1, "temporal": 0.1, "separation": 0.01}


def voxel_path_loss(outputs: dict, images: torch.Tensor, weights: dict[str, float] | None = None,
                    pixel_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Weighted sum of render L1 (student into every camera, teacher into its own), distillation of
    the student towards the view-weighted teacher on matching ids, temporal consistency of static
    voxels, and static/dynamic separation (supervised when the voxels carry a static fraction).
    Returns every term and `total`. images `[B, T, V, 3, H, W]`, pixel_mask `[B, T, V, H, W]`."""
    w = dict(DEFAULT_WEIGHTS)
    w.update(weights or {})
    fusion, voxels = outputs["fusion"], outputs["voxels"]
    gaussians = outputs["gaussians"]
    terms = {}
    if "render" in outputs:
        terms["render"] = render_l1(outputs["render"]["images"], images, pixel_mask)
        terms["teacher_render"] = render_l1(outputs["teacher_render"]["images"], images, pixel_mask)
    terms["distill"] = distillation_loss(outputs["student_params"], fusion.ids, fusion.valid, outputs["teacher_params"],
                                         voxels.ids, fusion.view_weights)
    matches = outputs["matches"]
    terms["temporal"] = temporal_consistency_loss(outputs["student_params"], gaussians.means, matches, fusion.valid,
                                                  fusion.static)
    change, _ = matched_change(outputs["student_params"], matches, fusion.valid)
    target = None
    if voxels.static is not None:
        target = (fusion.static & fusion.valid).to(change.dtype)
    terms["separation"] = static_dynamic_loss(fusion.static_logits, change, fusion.valid, target)
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms
