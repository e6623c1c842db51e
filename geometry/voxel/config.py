"""Dataclass configuration of the voxel / 3D Gaussian path (seed 001), with presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

VOXEL_SIZE_MODES = ("extent", "count")


@dataclass
class VoxelConfig:
    """Sizes and switches of the voxel path.

    The fields a user most often changes are `target_voxels` and `pixel_stride`.

    Args:
        target_voxels: voxel budget per time step (120000 at `full`).
        voxel_size_mode: "extent" is the seed's `extent / target**(1/3)` (extent = the largest
            side of the clip's bounding box); "count" starts there and rescales the size until the
            busiest time step occupies about `target_voxels` cells (surfaces fill far fewer cells
            than the box, so "extent" undershoots the budget on depth maps).
        pixel_stride: back-project every `pixel_stride`-th pixel in each image direction.
        max_depth: pixels at or beyond this depth (e.g. a far background) are dropped; None keeps all.
        window: time window of the stage-1 same-id routing (3 = t-1, t, t+1).
        sh_degree: spherical-harmonics degree of the Gaussian colours (4 -> 25x3 = 75 numbers).
        offset_scale: Gaussian means lie within `offset_scale * voxel_size` of the voxel centre.
        visibility_threshold / confidence_threshold: FusionHead keeps a view of a voxel when its
            visibility and confidence reach these values.
        radius_clip / near_plane / eps2d / tile_size: renderer settings (gsplat's meanings).
        backend: "auto" (gsplat on CUDA, the PyTorch rasteriser elsewhere), "gsplat" or "torch".
    """

    target_voxels: int = 120000
    voxel_size_mode: str = "extent"
    pixel_stride: int = 1
    max_depth: float | None = None
    window: int = 3
    sh_degree: int = 4
    offset_scale: float = 1.0
    visibility_threshold: float = 0.5
    confidence_threshold: float = 0.1
    radius_clip: float = 0.1
    near_plane: float = 0.01
    eps2d: float = 0.3
    tile_size: int = 16
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.target_voxels < 1:
            raise ValueError(f"target_voxels={self.target_voxels} must be positive")
        if self.voxel_size_mode not in VOXEL_SIZE_MODES:
            raise ValueError(f"voxel_size_mode={self.voxel_size_mode!r} must be one of {VOXEL_SIZE_MODES}")
        if self.pixel_stride < 1:
            raise ValueError(f"pixel_stride={self.pixel_stride} must be >= 1")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window={self.window} must be a positive odd number (centred on t)")
        if not 0 <= self.sh_degree <= 4:
            raise ValueError(f"sh_degree={self.sh_degree} must lie in [0, 4]")
        if self.backend not in ("auto", "gsplat", "torch"):
            raise ValueError(f"backend={self.backend!r} must be 'auto', 'gsplat' or 'torch'")


VOXEL_PRESETS: dict[str, VoxelConfig] = {
    "tiny": VoxelConfig(target_voxels=2048, voxel_size_mode="count", max_depth=5.0),
    "small": VoxelConfig(target_voxels=30000, voxel_size_mode="count", max_depth=20.0),
    "full": VoxelConfig(),
}


def make_voxel_config(preset: str = "tiny", **overrides) -> VoxelConfig:
    """Copy of a named voxel preset with `overrides` applied (validated again)."""
    if preset not in VOXEL_PRESETS:
        raise ValueError(f"unknown voxel preset {preset!r}; choose from {sorted(VOXEL_PRESETS)}")
    return replace(VOXEL_PRESETS[preset], **overrides)
