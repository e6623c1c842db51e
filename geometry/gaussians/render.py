"""GaussianRenderer: Gaussians of each (batch, time) rendered into every camera of that time step.

CUDA tensors go through `gsplat.rasterization` (imported lazily); elsewhere the PyTorch
rasteriser of `projection.py` + `rasterize.py` follows the same rules and gives the same outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from geometry.gaussians.params import Gaussians, sh_to_rgb
from geometry.gaussians.projection import project_gaussians
from geometry.gaussians.rasterize import rasterize_splats

BACKENDS = ("auto", "gsplat", "torch")


class GaussianRenderer(nn.Module):
    """`Gaussians` `[B, T, N]` + cameras `[B, T, V, 3, 3 / 3, 4]` -> dict of
    images `[B, T, V, 3, H, W]`, depth `[B, T, V, H, W]` (expected depth: accumulated z / alpha),
    alpha `[B, T, V, H, W]`, visibility `[B, T, V, N]` bool (the Gaussian's splat is drawn)."""

    def __init__(self, backend: str = "auto", radius_clip: float = 0.1, near_plane: float = 0.01, eps2d: float = 0.3,
                 tile_size: int = 16) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} must be one of {BACKENDS}")
        self.backend = backend
        self.radius_clip, self.near_plane, self.eps2d, self.tile_size = radius_clip, near_plane, eps2d, tile_size

    def forward(self, gaussians: Gaussians, intrinsics: torch.Tensor, extrinsics: torch.Tensor,
                image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        B, T, N = gaussians.opacities.shape
        V = intrinsics.shape[2]
        if tuple(intrinsics.shape) != (B, T, V, 3, 3) or tuple(extrinsics.shape) != (B, T, V, 3, 4):
            raise ValueError(f"intrinsics / extrinsics must be [B, T, V, 3, 3] / [B, T, V, 3, 4] with B={B}, T={T}; "
                             f"got {tuple(intrinsics.shape)} and {tuple(extrinsics.shape)}")
        backend = self.backend
        if backend == "auto":
            backend = "gsplat" if gaussians.means.is_cuda else "torch"
        render = self._render_gsplat if backend == "gsplat" else self._render_torch
        steps = [render(gaussians, b, t, intrinsics[b, t], extrinsics[b, t], image_size) for b in range(B) for t in range(T)]
        out = {k: torch.stack([s[k] for s in steps]) for k in steps[0]}
        out = {k: v.reshape(B, T, *v.shape[1:]) for k, v in out.items()}
        out["depth"] = out["depth"] / out["alpha"].clamp_min(1e-10)
        return out

    def _render_torch(self, g: Gaussians, b: int, t: int, K: torch.Tensor, E: torch.Tensor,
                      image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        H, W = image_size
        opac = g.opacities[b, t] * g.valid[b, t]
        images, depths, alphas, visible = [], [], [], []
        for v in range(K.shape[0]):
            campos = -E[v, :, :3].T @ E[v, :, 3]
            colors = sh_to_rgb(g.sh[b, t], g.means[b, t] - campos)
            splats = project_gaussians(g.means[b, t], g.quats[b, t], g.scales[b, t], opac, K[v], E[v], W, H,
                                       self.near_plane, self.eps2d, self.radius_clip)
            rgb, depth, alpha = rasterize_splats(splats, colors, opac, W, H, self.tile_size)
            images.append(rgb), depths.append(depth), alphas.append(alpha), visible.append(splats.visible)
        return {"images": torch.stack(images), "depth": torch.stack(depths), "alpha": torch.stack(alphas),
                "visibility": torch.stack(visible)}

    def _render_gsplat(self, g: Gaussians, b: int, t: int, K: torch.Tensor, E: torch.Tensor,
                       image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        from gsplat import rasterization  # CUDA only; imported on use

        H, W = image_size
        V = K.shape[0]
        viewmats = torch.eye(4, dtype=E.dtype, device=E.device).repeat(V, 1, 1)
        viewmats[:, :3] = E
        quats_wxyz = torch.roll(g.quats[b, t], 1, dims=-1)
        colors, alphas, meta = rasterization(
            g.means[b, t], quats_wxyz, g.scales[b, t], g.opacities[b, t] * g.valid[b, t], g.sh[b, t], viewmats, K, W, H,
            near_plane=self.near_plane, radius_clip=self.radius_clip, eps2d=self.eps2d, sh_degree=g.sh_degree,
            packed=False, tile_size=self.tile_size, render_mode="RGB+D", rasterize_mode="classic")
        radii = meta["radii"].reshape(V, g.means.shape[2], -1)
        return {"images": colors[..., :3].permute(0, 3, 1, 2), "depth": colors[..., 3], "alpha": alphas[..., 0],
                "visibility": (radii > 0).any(-1)}
