"""Voxel spatial tokens: the current frame's pixels, lifted to 3D with depth and cameras, as LLM tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from geometry.aggregator import AggregatorOutput
from geometry.layers import Mlp
from geometry.voxel import VoxelConfig, VoxelGrid, voxelize_pixels
from policies.configuration_geovla import workspace_box
from vla.backbone.projector import StreamProjector


def fourier_features(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """``[..., D]`` in about [-1, 1] → ``[..., D * (1 + 2 * frequencies)]``: x, sin and cos of
    ``pi * 2**k * x`` for k < frequencies."""
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=x.device, dtype=x.dtype)
    angles = (x[..., None] * scales).flatten(-2)
    return torch.cat([x, angles.sin(), angles.cos()], dim=-1)


class VoxelSpatialTokens(nn.Module):
    """Voxel tokens of the current time step (the "voxel tokens" option of the policy spec).

    Every pixel of every present camera at the last time step is back-projected with its depth
    and camera (OpenCV camera-from-world extrinsics); pixels outside the workspace box are
    dropped; the rest are scattered into voxels of one size per sample, about ``target_voxels``
    of them (geometry/voxel). A token is ``proj(patch feature) + MLP(Fourier(xyz)) + MLP(rgb)``:
    the aggregator's last-layer feature of the pixels' patches (the projection starts at zero),
    their mean position, and their mean colour. The position is the world position normalised
    to the workspace box (``origin_camera=None``: a token says where in the workspace it is, in
    the frame of the robot state), or the offset from the optical centre of camera
    ``origin_camera`` in world axes, scaled like the box (on a gripper camera: where a surface is
    relative to the gripper).

    The voxelization and positions are computed in float32 whatever the weights' dtype or an
    autocast; the three embeddings run in the weights' dtype (bfloat16 inference).

    Without an ``aggregator_dim`` (None) the tokens are ``MLP(Fourier(xyz)) + MLP(rgb)`` only,
    what the sensor alone gives, and ``forward`` takes no aggregator output.

    A sample none of whose pixels lands in the workspace raises ValueError (wrong depth units,
    cameras or box), or with ``allow_empty`` gets no token: depth and cameras predicted by a
    geometry model still learning can put every pixel elsewhere.

    Output ``[B, N, D_llm]`` with a mask ``[B, N]`` (False on padding), N the largest voxel count
    of the batch.
    """

    def __init__(self, aggregator_dim: int | None, llm_dim: int, target_voxels: int,
                 workspace: tuple[float, float, float, float, float, float], frequencies: int = 6,
                 origin_camera: int | None = None, allow_empty: bool = False) -> None:
        super().__init__()
        self.allow_empty = allow_empty
        self.workspace = workspace_box(workspace)  # not a buffer: it stays float32 under .to(dtype)
        self.voxel_config = VoxelConfig(target_voxels=target_voxels, voxel_size_mode="count")
        self.frequencies = frequencies
        self.origin_camera = origin_camera
        self.feature_proj = None
        if aggregator_dim is not None:
            self.feature_proj = StreamProjector(aggregator_dim, llm_dim)
            # A from-scratch aggregator's features are large and carry no scene content yet; starting
            # their projection at zero keeps position and colour readable until the features learn.
            nn.init.zeros_(self.feature_proj.net[-1].weight)
            nn.init.zeros_(self.feature_proj.net[-1].bias)
        self.xyz_embed = Mlp(3 * (1 + 2 * frequencies), llm_dim, llm_dim)
        self.rgb_embed = Mlp(3, llm_dim, llm_dim)

    def forward(self, agg: AggregatorOutput | None, images: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                extrinsics: torch.Tensor, camera_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images ``[B, V, 3, H, W]`` in [0, 1], depth ``[B, V, H, W]`` (metres along the optical
        axis), intrinsics ``[B, V, 3, 3]``, extrinsics ``[B, V, 3, 4]``, all of the last time
        step; camera_mask ``[B, V]`` (False: the camera is missing and adds no voxel)."""
        V = images.shape[1]
        if self.origin_camera is not None and not bool(camera_mask[:, self.origin_camera].all()):
            missing = torch.nonzero(~camera_mask[:, self.origin_camera]).flatten().tolist()
            raise ValueError(f"the voxel origin camera (index {self.origin_camera}) is missing in samples {missing}")
        if self.feature_proj is None:  # no features: a 0-wide one on a single patch
            features, grid = images.new_zeros(images.shape[0], V, 1, 0), (1, 1)
        else:
            features, grid = agg.layers[max(agg.layers)][:, -V:, agg.patch_start_idx:], agg.grid  # the last step
        depth, intrinsics, extrinsics = depth.float(), intrinsics.float(), extrinsics.float()
        with torch.autocast(depth.device.type, enabled=False):  # unprojection in float32 under autocast too
            voxels = self.lift(features.float(), grid, images.float(), depth, intrinsics, extrinsics, camera_mask)
            unit = self.positions(voxels.xyz[:, 0], extrinsics)
        dtype = self.rgb_embed.fc1.weight.dtype
        tokens = (self.xyz_embed(fourier_features(unit, self.frequencies).to(dtype))
                  + self.rgb_embed((2 * voxels.rgb[:, 0] - 1).to(dtype)))
        if self.feature_proj is not None:
            tokens = tokens + self.feature_proj(voxels.features[:, 0].to(dtype))
        valid = voxels.valid[:, 0]
        return tokens * valid[..., None], valid

    def positions(self, xyz: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
        """World points ``[B, N, 3]`` → the token positions ``[B, N, 3]`` (about [-1, 1] in the
        box; offsets from the origin camera span up to [-2, 2]); extrinsics ``[B, V, 3, 4]``."""
        low, high = self.bounds(xyz.device)
        extent = high - low
        if self.origin_camera is None:
            return 2 * (xyz - low) / extent - 1
        rotation, translation = extrinsics[:, self.origin_camera, :, :3], extrinsics[:, self.origin_camera, :, 3]
        centre = -(rotation.transpose(-1, -2) @ translation[..., None]).squeeze(-1)  # camera centre in the world
        return 2 * (xyz - centre[:, None]) / extent

    def bounds(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The workspace's low and high corners ``[3]`` (float32)."""
        corners = torch.tensor(self.workspace, device=device)
        return corners[:3], corners[3:]

    def lift(self, features: torch.Tensor, grid: tuple[int, int], images: torch.Tensor, depth: torch.Tensor,
             intrinsics: torch.Tensor, extrinsics: torch.Tensor, camera_mask: torch.Tensor) -> VoxelGrid:
        """The voxels (one time step) of the workspace pixels of the present cameras; features
        ``[B, V, P, C]`` on the patch ``grid``, the rest as in :meth:`forward`."""
        pixel_mask = camera_mask[:, None, :, None, None].expand(-1, 1, -1, *depth.shape[-2:])
        return voxelize_pixels(features[:, None], grid, depth[:, None], intrinsics[:, None], extrinsics[:, None],
                               self.voxel_config, pixel_mask=pixel_mask, images=images[:, None],
                               bounds=self.bounds(depth.device), allow_empty=self.allow_empty)
