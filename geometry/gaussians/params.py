"""3D Gaussian parameters: the 83-number layout, activations and spherical-harmonic colours.

Layout of one Gaussian's raw parameters (83 at SH degree 4): `[opacity (1), scales (3),
quaternion xyzw (4), SH coefficients (25 x 3, coefficient-major)]`. Means are kept apart: voxel
centre + an offset bounded by the voxel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi))
IDENTITY_QUAT = (0.0, 0.0, 0.0, 1.0)


def num_sh(degree: int) -> int:
    """Coefficients per channel of SH degree `degree`: (degree + 1)^2. Example: 4 -> 25."""
    return (degree + 1) ** 2


def param_dim(degree: int = 4) -> int:
    """Raw parameters per Gaussian: 1 + 3 + 4 + 3 (degree+1)^2. Example: 4 -> 83, 0 -> 11."""
    return 8 + 3 * num_sh(degree)


@dataclass
class Gaussians:
    """Activated Gaussians with leading dims `[...]` (e.g. `[B, T]`) and N per set.

    means `[..., N, 3]`, quats `[..., N, 4]` (xyzw, unit), scales `[..., N, 3]` (std devs, metres),
    opacities `[..., N]` in (0, 1), sh `[..., N, K, 3]`, valid `[..., N]` (padding is never drawn).
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor
    valid: torch.Tensor

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[-2]))) - 1


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """Colour in [0, 1] -> the degree-0 coefficient giving it (colour = SH_C0 * c + 0.5, gsplat's rule)."""
    return (rgb - 0.5) / SH_C0


def activate_gaussians(raw: torch.Tensor, offset: torch.Tensor, centres: torch.Tensor, voxel_size: torch.Tensor,
                       valid: torch.Tensor, offset_scale: float = 1.0) -> Gaussians:
    """Raw `[..., N, 83]`, offset `[..., N, 3]`, centres `[..., N, 3]`, voxel_size broadcastable to
    `[..., N]` -> `Gaussians`.

    opacity = sigmoid; scales = voxel_size * sigmoid (at most one voxel); quaternion = normalised
    (raw + identity); means = centre + offset_scale * voxel_size * tanh(offset).
    """
    degree = int(round(math.sqrt((raw.shape[-1] - 8) / 3))) - 1
    if raw.shape[-1] != param_dim(degree):
        raise ValueError(f"raw Gaussian parameters must have 8 + 3(d+1)^2 channels, got {raw.shape[-1]}")
    opacity, scales, quats, sh = raw.split([1, 3, 4, raw.shape[-1] - 8], dim=-1)
    size = voxel_size[..., None]
    quats = F.normalize(quats + quats.new_tensor(IDENTITY_QUAT), dim=-1)
    means = centres + offset_scale * size * torch.tanh(offset)
    return Gaussians(means=means, quats=quats, scales=size * torch.sigmoid(scales), opacities=torch.sigmoid(opacity[..., 0]),
                     sh=sh.reshape(*sh.shape[:-1], num_sh(degree), 3), valid=valid)


def _legendre(z: torch.Tensor, degree: int) -> dict[tuple[int, int], torch.Tensor]:
    """Polynomial part Q_l^m(z) of the associated Legendre functions, P_l^m = (1-z^2)^(m/2) Q_l^m,
    Condon-Shortley phase included. Example: Q_1^0 = z, Q_1^1 = -1, Q_2^0 = (3z^2 - 1) / 2."""
    q: dict[tuple[int, int], torch.Tensor] = {(0, 0): torch.ones_like(z)}
    for m in range(degree + 1):
        if m > 0:
            q[(m, m)] = -(2 * m - 1) * q[(m - 1, m - 1)]
        if m + 1 <= degree:
            q[(m + 1, m)] = (2 * m + 1) * z * q[(m, m)]
        for l in range(m + 2, degree + 1):
            q[(l, m)] = ((2 * l - 1) * z * q[(l - 1, m)] - (l + m - 1) * q[(l - 2, m)]) / (l - m)
    return q


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics `[..., (degree+1)^2]` of unit directions `[..., 3]`, ordered
    l = 0..degree, m = -l..l, with the Condon-Shortley phase (the 3DGS / gsplat convention).

    Built from polynomials only: `(x + iy)^m = A_m + i B_m` carries `sin^m(theta) e^{i m phi}`.
    Example: degree 1 -> `[0.2821, -0.4886 y, 0.4886 z, -0.4886 x]`.
    """
    x, y, z = dirs.unbind(-1)
    q = _legendre(z, degree)
    a, b = [torch.ones_like(x)], [torch.zeros_like(x)]
    for _ in range(degree):
        a, b = a + [x * a[-1] - y * b[-1]], b + [x * b[-1] + y * a[-1]]
    out = []
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            k = abs(m)
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - k) / math.factorial(l + k))
            if m == 0:
                out.append(norm * q[(l, 0)])
            else:
                trig = a[k] if m > 0 else b[k]
                out.append(math.sqrt(2.0) * norm * q[(l, k)] * trig)
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colours `[..., 3]` = max(sum_k Y_k(dir) sh_k + 0.5, 0) for sh `[..., K, 3]`, directions `[..., 3]`
    (need not be unit), gsplat's rule."""
    degree = int(round(math.sqrt(sh.shape[-2]))) - 1
    basis = sh_basis(F.normalize(dirs, dim=-1), degree)
    return ((basis[..., None] * sh).sum(-2) + 0.5).clamp_min(0.0)
