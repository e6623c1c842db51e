"""3D Gaussian path (seed 001): parameters, heads, multi-view fusion, renderer, tracker, losses."""

from geometry.gaussians.fusion import FusionHead, FusionOutput
from geometry.gaussians.heads import FusedGaussianHead, VoxelGaussianHead
from geometry.gaussians.params import Gaussians, activate_gaussians, param_dim, sh_basis, sh_to_rgb
from geometry.gaussians.render import GaussianRenderer
from geometry.gaussians.tracker import TemporalTracker

__all__ = ["FusedGaussianHead", "FusionHead", "FusionOutput", "GaussianRenderer", "Gaussians", "TemporalTracker",
           "VoxelGaussianHead", "activate_gaussians", "param_dim", "sh_basis", "sh_to_rgb"]
