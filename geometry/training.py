"""Supervised training of the geometry model on recorded frames (depth + camera ground truth).

Frames follow the observation convention of the built-in task: `pixels`, `depth`,
`intrinsics`, `extrinsics` dicts keyed by camera name. Nothing here imports the simulator; the
caller passes an env and an expert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from geometry.losses import geometry_loss, unproject_depth
from geometry.metrics import median_scaled_depth_metrics, pose_auc, relative_pose_errors
from geometry.model import GeometryModel
from geometry.pose import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri


def observation_to_frame(obs: dict, cameras: Sequence[str], max_depth: float = 5.0) -> dict[str, torch.Tensor]:
    """One observation -> `images [V, 3, H, W]` in [0, 1], `depth [V, H, W]`, `valid [V, H, W]`
    (0 < depth < max_depth; the far background is excluded), `intrinsics [V, 3, 3]`,
    `extrinsics [V, 3, 4]`."""
    images = torch.stack([torch.from_numpy(np.asarray(obs["pixels"][c])).permute(2, 0, 1) for c in cameras]).float() / 255
    depth = torch.stack([torch.from_numpy(np.asarray(obs["depth"][c], dtype=np.float32)) for c in cameras])
    return {
        "images": images,
        "depth": depth,
        "valid": (depth > 0) & (depth < max_depth),
        "intrinsics": torch.stack([torch.from_numpy(np.asarray(obs["intrinsics"][c], dtype=np.float32)) for c in cameras]),
        "extrinsics": torch.stack([torch.from_numpy(np.asarray(obs["extrinsics"][c], dtype=np.float32)) for c in cameras]),
    }


def collect_frames(env, expert: Callable, seeds: Sequence[int], steps: int, every: int,
                   cameras: Sequence[str]) -> dict[str, torch.Tensor]:
    """Roll out `expert` for `steps` steps from each seed, keeping every `every`-th observation;
    returns the frames stacked along a leading dim `[F, V, ...]`."""
    frames = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        for step in range(steps):
            if step % every == 0:
                frames.append(observation_to_frame(obs, cameras))
            obs, _, terminated, truncated, _ = env.step(expert(obs))
            if terminated or truncated:
                break
    return {k: torch.stack([f[k] for f in frames]) for k in frames[0]}


def batch_targets(frames: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Frames `[B, V, ...]` -> ground truth for `geometry_loss` with T = 1 and per-frame cameras:
    pose encodings `[B, 1, V, 9]`, depth/valid `[B, 1, V, H, W]`, world points `[B, 1, V, H, W, 3]`."""
    B, V, _, H, W = frames["images"].shape
    K, E = frames["intrinsics"], frames["extrinsics"]
    points = unproject_depth(frames["depth"].flatten(0, 1), K.flatten(0, 1), E.flatten(0, 1)).reshape(B, 1, V, H, W, 3)
    return {
        "pose_enc": extri_intri_to_pose_encoding(E, K, (H, W)).unsqueeze(1),
        "depth": frames["depth"].unsqueeze(1),
        "valid": frames["valid"].unsqueeze(1),
        "world_points": points,
        "intrinsics": K.unsqueeze(1),
        "extrinsics": E.unsqueeze(1),
    }


def training_step(model: GeometryModel, optimizer: torch.optim.Optimizer, frames: dict[str, torch.Tensor],
                  weights: dict[str, float] | None = None) -> dict[str, float]:
    """One optimisation step on frames `[B, V, ...]` (each sample: one time step, V cameras).

    Depth is supervised in log space: the wrist camera sees centimetres, the others metres."""
    model.train()
    images = frames["images"].unsqueeze(1)
    out = model(images, static_cameras=False)
    terms = geometry_loss(out, batch_targets(frames), images, model.config.patch_size, weights, log_depth=True)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def evaluate(model: GeometryModel, frames: dict[str, torch.Tensor], batch_size: int = 8) -> dict[str, float]:
    """Median-scaled depth AbsRel / delta<1.25 and relative pose errors between the cameras of each
    sample: mean max(rotation, translation-direction) error in degrees and AUC@30."""
    model.eval()
    depth_pred, r_errs, t_errs = [], [], []
    H, W = frames["images"].shape[-2:]
    for start in range(0, frames["images"].shape[0], batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in frames.items()}
        out = model(chunk["images"].unsqueeze(1), static_cameras=False)
        depth_pred.append(out["depth"][:, 0])
        extr_pred, _ = pose_encoding_to_extri_intri(out["pose_enc"][:, 0], (H, W))
        for e_pred, e_gt in zip(extr_pred, chunk["extrinsics"]):
            r, t = relative_pose_errors(e_pred, e_gt)
            r_errs.append(r)
            t_errs.append(t)
    depth = torch.cat(depth_pred).flatten(0, 1)
    metrics = median_scaled_depth_metrics(depth, frames["depth"].flatten(0, 1), frames["valid"].flatten(0, 1))
    r, t = torch.cat(r_errs), torch.cat(t_errs)
    metrics["pose_error_deg"] = float(torch.maximum(r, t).mean())
    metrics["pose_auc30"] = pose_auc(r, t)
    return metrics


def train(model: GeometryModel, frames: dict[str, torch.Tensor], steps: int, batch_size: int = 4, lr: float = 3e-4,
          seed: int = 0, log: Callable[[int, dict[str, float]], None] | None = None) -> list[float]:
    """AdamW on random mini-batches of `frames`; returns the total loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    n = frames["images"].shape[0]
    losses = []
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        terms = training_step(model, optimizer, {k: v[idx] for k, v in frames.items()})
        losses.append(terms["total"])
        if log is not None:
            log(step, terms)
    return losses
