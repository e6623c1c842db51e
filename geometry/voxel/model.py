"""VoxelGaussianModel: the two-pass forward of seed 001 (patch path -> voxels -> Gaussians -> render)."""

from __future__ import annotations

import torch
from torch import nn

from geometry.config import GeometryConfig
from geometry.gaussians.fusion import FusionHead
from geometry.gaussians.heads import FusedGaussianHead, VoxelGaussianHead
from geometry.gaussians.params import activate_gaussians
from geometry.gaussians.render import GaussianRenderer
from geometry.gaussians.tracker import TemporalTracker
from geometry.inputs import validate_camera, validate_images
from geometry.model import GeometryModel
from geometry.pose import pose_encoding_to_extri_intri
from geometry.voxel.aggregate import voxel_aggregate
from geometry.voxel.config import VoxelConfig
from geometry.voxel.morton import id_cells
from geometry.voxel.voxelize import VoxelizationModule


class VoxelGaussianModel(nn.Module):
    """Images `[B, T, V, 3, H, W]` -> voxels, teacher and student Gaussians, renders.

    Pass 1 (no grad) runs the patch path (`self.geometry`) for depth and cameras, unless the batch
    gives them (ground truth); pass 2 runs patch embed -> ViewMixer -> voxelization per time step
    -> the same aggregator's blocks on voxel tokens -> VoxelGaussianHead (teacher, per view),
    FusionHead + FusedGaussianHead (student) -> GaussianRenderer (student Gaussians into every
    camera; each view's teacher Gaussians into its own camera, so the teacher learns from pixels
    and the student from pixels and the teacher).
    """

    def __init__(self, geometry_config: GeometryConfig, voxel_config: VoxelConfig) -> None:
        super().__init__()
        g, v = geometry_config, voxel_config
        self.config, self.voxel_config = g, v
        C = g.embed_dim
        dim_in = C * len(g.aa_order)
        self.geometry = GeometryModel(g)
        self.voxelizer = VoxelizationModule(C, C, v)
        self.teacher_head = VoxelGaussianHead(dim_in, C, hidden=max(C, 64), sh_degree=v.sh_degree)
        self.fusion_head = FusionHead(dim_in, C // 4, v.visibility_threshold, v.confidence_threshold)
        self.student_head = FusedGaussianHead(C // 4, hidden=max(C, 64), sh_degree=v.sh_degree)
        self.renderer = GaussianRenderer(v.backend, v.radius_clip, v.near_plane, v.eps2d, v.tile_size)
        self.tracker = TemporalTracker(v.window)

    @torch.no_grad()
    def first_pass(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Patch path (aggregator, camera and depth heads) without gradients -> depth, confidence `[B, T, V, H, W]`, intrinsics
        `[B, T, V, 3, 3]`, extrinsics `[B, T, V, 3, 4]`."""
        B, T, V, _, H, W = images.shape
        agg = self.geometry.aggregator(images)
        pose_enc = self.geometry.camera_head(agg, static=self.config.static_cameras)[-1]
        depth, depth_conf = self.geometry.depth_head(agg)
        extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (H, W))
        if extrinsics.dim() == 4:  # static cameras: [B, V, ...] -> every time step
            extrinsics = extrinsics.unsqueeze(1).expand(B, T, V, 3, 4)
            intrinsics = intrinsics.unsqueeze(1).expand(B, T, V, 3, 3)
        return {"depth": depth.reshape(B, T, V, H, W), "depth_conf": depth_conf.reshape(B, T, V, H, W),
                "intrinsics": intrinsics, "extrinsics": extrinsics}

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[B, T, V, 3, H, W]` -> patch tokens after the ViewMixer `[B, T, V, P, C]`."""
        agg = self.geometry.aggregator
        B, T, V, _, H, W = images.shape
        frames = (images.reshape(B * T * V, 3, H, W) - agg.mean) / agg.std
        patches = agg.patch_embed(frames)
        patches = patches.reshape(B, T, V, *patches.shape[1:])
        return patches if agg.view_mixer is None else agg.view_mixer(patches)

    def forward(self, images: torch.Tensor, depth: torch.Tensor | None = None, intrinsics: torch.Tensor | None = None,
                extrinsics: torch.Tensor | None = None, depth_conf: torch.Tensor | None = None,
                pixel_mask: torch.Tensor | None = None, static_mask: torch.Tensor | None = None,
                render: bool = True) -> dict:
        """Known `depth` / `depth_conf` / masks `[B, T, V, H, W]` and cameras replace pass 1's
        estimates; `depth_conf` is a score (VGGT's `1 + exp` confidence enters as its log)."""
        c = self.config
        images, legacy = validate_images(images, c.patch_size, c.max_views, c.max_time_steps)
        if legacy:
            raise ValueError("the voxel path needs multi-view input [B, T, V, 3, H, W]")
        B, T, V, _, H, W = images.shape
        validate_camera("intrinsics", intrinsics, B, T, V, (3, 3))
        validate_camera("extrinsics", extrinsics, B, T, V, (3, 4))
        if depth is not None and tuple(depth.shape) != (B, T, V, H, W):
            raise ValueError(f"depth must have shape {(B, T, V, H, W)}, got {tuple(depth.shape)}")
        if depth is None or intrinsics is None or extrinsics is None:
            first = self.first_pass(images)
            if depth is None:
                depth, depth_conf = first["depth"], torch.log(first["depth_conf"])
            intrinsics = first["intrinsics"] if intrinsics is None else intrinsics
            extrinsics = first["extrinsics"] if extrinsics is None else extrinsics
        grid_hw = (H // c.patch_size, W // c.patch_size)
        voxels = self.voxelizer(self.patch_features(images), grid_hw, depth, intrinsics, extrinsics, depth_conf,
                                pixel_mask, images, static_mask)
        agg = voxel_aggregate(self.geometry.aggregator, voxels.tokens, voxels.ids, voxels.valid, V, self.voxel_config.window,
                              output_layers=(c.depth - 1,))
        tokens = agg.layers[c.depth - 1][:, :, agg.patch_start_idx:]  # [B, T, N, 2C]
        size = voxels.voxel_size.view(B, 1, 1)
        teacher_raw, teacher_offset = self.teacher_head(tokens, voxels.view_features, voxels.rgb)
        # visibility: the view saw the voxel; confidence: the view's share of the voxel's
        # softmax-of-confidence pixel weight (the 0.1 threshold drops views adding under 10 %)
        visibility = (voxels.view_count > 0).to(tokens.dtype)
        fusion = self.fusion_head(tokens.unsqueeze(2).expand(B, T, V, *tokens.shape[2:]), voxels.view_weight, visibility,
                                  voxels.ids, voxels.xyz, voxels.valid, voxels.static)
        rgb = self._fused_rgb(voxels, fusion.ids)
        student_raw, student_offset = self.student_head(fusion.features, rgb)
        centres = (id_cells(fusion.ids.clamp_min(0)).to(tokens.dtype) + 0.5) * size.unsqueeze(-1)
        gaussians = activate_gaussians(student_raw, student_offset, centres, size.expand(fusion.ids.shape), fusion.valid,
                                       self.voxel_config.offset_scale)
        out = {"voxels": voxels, "voxel_tokens": tokens, "fusion": fusion, "teacher_params": teacher_raw,
               "student_params": student_raw, "gaussians": gaussians,
               "matches": self.tracker(fusion.ids, fusion.valid), "depth": depth, "intrinsics": intrinsics,
               "extrinsics": extrinsics}
        if render:
            K, E = intrinsics.to(tokens.dtype), extrinsics.to(tokens.dtype)
            out["render"] = self.renderer(gaussians, K, E, (H, W))
            out["teacher_render"] = self._render_teacher(teacher_raw, teacher_offset, voxels, K, E, (H, W))
        return out

    def _render_teacher(self, raw: torch.Tensor, offset: torch.Tensor, voxels, K: torch.Tensor, E: torch.Tensor,
                        image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Each view's teacher Gaussians (of the voxels that view saw) rendered into that view only:
        raw `[B, T, V, N, 83]` -> images `[B, T, V, 3, H, W]` etc."""
        B, T, V, N = raw.shape[:4]
        size = voxels.voxel_size.view(B, 1, 1, 1).expand(B, T, V, N)
        valid = voxels.valid.unsqueeze(2) & (voxels.view_count > 0)
        centres = voxels.centres.unsqueeze(2).expand(B, T, V, N, 3)
        g = activate_gaussians(raw.reshape(B, T * V, N, -1), offset.reshape(B, T * V, N, 3),
                               centres.reshape(B, T * V, N, 3), size.reshape(B, T * V, N), valid.reshape(B, T * V, N),
                               self.voxel_config.offset_scale)
        out = self.renderer(g, K.reshape(B, T * V, 1, 3, 3), E.reshape(B, T * V, 1, 3, 4), image_size)
        return {k: v.reshape(B, T, V, *v.shape[3:]) for k, v in out.items()}

    @staticmethod
    def _fused_rgb(voxels, ids: torch.Tensor) -> torch.Tensor:
        """Colour `[B, T, N', 3]` of each fused id, looked up in the voxel grid (ids are sorted)."""
        pos = torch.searchsorted(voxels.ids.masked_fill(~voxels.valid, torch.iinfo(torch.long).max), ids.clamp_min(0))
        pos = pos.clamp_max(voxels.ids.shape[-1] - 1)
        return torch.gather(voxels.rgb, 2, pos.unsqueeze(-1).expand(*pos.shape, 3))
