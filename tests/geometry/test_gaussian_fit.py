"""Fitting: Gaussians initialised from the voxelized ground-truth depth of the built-in task
reproduce the camera images better after a few optimisation steps."""

import gymnasium as gym
import torch

import envs
from geometry.gaussians.fitting import fit_gaussians, gaussians_of, init_from_voxels
from geometry.gaussians.render import GaussianRenderer
from geometry.training import observation_to_frame
from geometry.voxel import VoxelizationModule, make_voxel_config

CAMERAS = ("front", "left")


def test_render_l1_falls_when_fitting_voxel_gaussians():
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=64, geometry=True)
    obs, _ = env.reset(seed=0)
    env.close()
    f = {k: v[None, None] for k, v in observation_to_frame(obs, CAMERAS).items()}  # [1, 1, V, ...]
    V = len(CAMERAS)
    vox = VoxelizationModule(8, 8, make_voxel_config("tiny", target_voxels=500))
    grid = vox(torch.zeros(1, 1, V, 64, 8), (8, 8), f["depth"], f["intrinsics"], f["extrinsics"],
               pixel_mask=f["valid"], images=f["images"])
    assert 400 <= int(grid.valid.sum()) <= 500
    # the initial Gaussians already resemble the images: the voxels carry the pixels' colours
    raw, offset = init_from_voxels(grid)
    first = GaussianRenderer()(gaussians_of(raw, offset, grid), f["intrinsics"], f["extrinsics"], (64, 64))
    assert (first["images"] - f["images"]).abs().mean() < 0.5 * f["images"].mean()
    assert first["alpha"][f["valid"]].mean() > 0.8
    losses, _, _ = fit_gaussians(grid, f["images"], f["intrinsics"], f["extrinsics"], steps=8, lr=0.01)
    assert losses[-1] < 0.85 * losses[0]
