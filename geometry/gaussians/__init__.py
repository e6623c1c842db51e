"""3D Gaussian path (seed 001): parameters, heads, multi-view fusion, renderer, tracker, losses."""

from geometry.gaussians.params import Gaussians, activate_gaussians, param_dim, sh_basis, sh_to_rgb
from geometry.gaussians.render import GaussianRenderer

__all__ = ["GaussianRenderer", "Gaussians", "activate_gaussians", "param_dim", "sh_basis", "sh_to_rgb"]
