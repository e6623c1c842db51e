"""Voxel path (seed 001): voxelization, Morton ids, voxel-id routing, the two-pass model."""

from geometry.voxel.aggregate import VoxelAggregatorOutput, voxel_aggregate
from geometry.voxel.config import VOXEL_PRESETS, VoxelConfig, make_voxel_config
from geometry.voxel.model import VoxelGaussianModel
from geometry.voxel.morton import cell_ids, id_cells, morton_decode, morton_encode
from geometry.voxel.objective import voxel_path_loss
from geometry.voxel.voxelize import VoxelGrid, VoxelizationModule, voxelize_pixels

__all__ = ["VOXEL_PRESETS", "VoxelAggregatorOutput", "VoxelConfig", "VoxelGaussianModel", "VoxelGrid",
           "VoxelizationModule", "cell_ids", "id_cells", "make_voxel_config", "morton_decode", "morton_encode",
           "voxel_aggregate", "voxel_path_loss", "voxelize_pixels"]
