"""Fit 3D Gaussians initialised from the voxelized ground-truth depth of the built-in task to its
camera images; prints JSON (render L1 / PSNR before and after, voxel count, time) and saves a PNG
with one row per camera: ground truth | initial render | fitted render | |error| x4.

    MUJOCO_GL=egl python studies/fit_gaussians.py --voxels 3000 --steps 150 --out outputs/fit_gaussians.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import envs  # noqa: E402
from geometry.gaussians.fitting import fit_gaussians, gaussians_of, init_from_voxels  # noqa: E402
from geometry.gaussians.render import GaussianRenderer  # noqa: E402
from geometry.training import observation_to_frame  # noqa: E402
from geometry.voxel import VoxelizationModule, make_voxel_config  # noqa: E402


def psnr(l2: float) -> float:
    return 10 * math.log10(1.0 / max(l2, 1e-12))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """`[V, 3, H, W]` in [0, 1] -> `[V, H, W, 3]` uint8."""
    return (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voxels", type=int, default=3000, help="voxel budget (count mode)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cameras", nargs="+", default=["front", "left", "right", "wrist"])
    parser.add_argument("--out", default="outputs/fit_gaussians.png")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=args.image_size, geometry=True)
    obs, _ = env.reset(seed=args.seed)
    env.close()
    f = {k: v[None, None] for k, v in observation_to_frame(obs, args.cameras).items()}
    V, S = len(args.cameras), args.image_size
    grid_hw = (S // 8, S // 8)
    vox = VoxelizationModule(8, 8, make_voxel_config("tiny", target_voxels=args.voxels))
    grid = vox(torch.zeros(1, 1, V, grid_hw[0] * grid_hw[1], 8), grid_hw, f["depth"], f["intrinsics"], f["extrinsics"],
               pixel_mask=f["valid"], images=f["images"])
    renderer = GaussianRenderer()
    with torch.no_grad():
        raw, offset = init_from_voxels(grid)
        initial = renderer(gaussians_of(raw, offset, grid), f["intrinsics"], f["extrinsics"], (S, S))["images"]
    start = time.perf_counter()
    losses, raw, offset = fit_gaussians(grid, f["images"], f["intrinsics"], f["extrinsics"], args.steps, args.lr, renderer)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        fitted = renderer(gaussians_of(raw, offset, grid), f["intrinsics"], f["extrinsics"], (S, S))["images"]
    gt = f["images"]
    rows = [np.concatenate([a, b, c, d], axis=1) for a, b, c, d in zip(
        to_uint8(gt[0, 0]), to_uint8(initial[0, 0]), to_uint8(fitted[0, 0]), to_uint8(4 * (fitted - gt).abs()[0, 0]))]
    picture = np.concatenate(rows, axis=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).resize((picture.shape[1] * 3, picture.shape[0] * 3), Image.NEAREST).save(args.out)
    valid = f["valid"].unsqueeze(3).expand_as(gt)
    print(json.dumps({
        "cameras": args.cameras, "image_size": S, "voxels": int(grid.valid.sum()), "target_voxels": args.voxels,
        "voxel_size_m": float(grid.voxel_size[0]), "steps": args.steps,
        "render_l1_initial": losses[0], "render_l1_final": losses[-1],
        "psnr_initial": psnr(float(((initial - gt) ** 2).mean())), "psnr_final": psnr(float(((fitted - gt) ** 2).mean())),
        "psnr_final_on_depth_valid_pixels": psnr(float(((fitted - gt) ** 2)[valid].mean())),
        "fit_seconds": seconds, "png": args.out,
    }, indent=2))


if __name__ == "__main__":
    main()
