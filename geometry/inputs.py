"""Input validation and camera-parameter features of the aggregator."""

from __future__ import annotations

import torch

CAMERA_PARAM_DIM = 19


def validate_images(images: torch.Tensor, patch_size: int, max_views: int, max_time_steps: int,
                    check_values: bool = True) -> tuple[torch.Tensor, bool]:
    """Check `images` and return them as `[B, T, V, 3, H, W]` plus whether the input was legacy.

    Legacy `[B, S, 3, H, W]` becomes `[B, S, 1, 3, H, W]` (T = S, V = 1). Raises ValueError on a
    wrong rank, channel count, size that is not a multiple of the patch, T or V above the maxima,
    or non-finite values (with `check_values`; never inside ``torch.compile``).
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() not in (5, 6):
        raise ValueError(
            f"images must be [B, T, V, 3, H, W] or legacy [B, S, 3, H, W]; got rank {images.dim()} "
            f"with shape {tuple(images.shape)}"
        )
    legacy = images.dim() == 5
    if legacy:
        images = images.unsqueeze(2)
    B, T, V, C, H, W = images.shape
    if C != 3:
        raise ValueError(f"images must have 3 channels at dim -3, got shape {tuple(images.shape)}")
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size H={H}, W={W} is not a multiple of patch_size={patch_size}")
    if V > max_views:
        raise ValueError(f"number of views V={V} exceeds max_views={max_views}")
    if T > max_time_steps:
        raise ValueError(f"number of time steps T={T} exceeds max_time_steps={max_time_steps}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    # The finiteness check reads values on the host; a torch.compile'd caller checks its inputs before.
    if (check_values and images.device.type != "meta" and not torch.compiler.is_compiling()
            and not torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    return images, legacy


def validate_camera(name: str, value: torch.Tensor | None, B: int, T: int, V: int, tail: tuple[int, int]) -> None:
    """Check an optional `[B, T, V, *tail]` camera tensor (intrinsics 3x3, extrinsics 3x4)."""
    if value is None:
        return
    expected = (B, T, V, *tail)
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    if value.device.type != "meta" and not torch.isfinite(value).all():
        raise ValueError(f"{name} contain NaN or infinite values")


def camera_param_features(B: int, T: int, V: int, H: int, W: int, intrinsics: torch.Tensor | None = None,
                          extrinsics: torch.Tensor | None = None, device: torch.device | None = None,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Features `[B, T, V, 19]` fed to the camera-parameter embedding.

    Layout: `[view_id / max(V-1, 1), has_intrinsics, fx/W, fy/H, cx/W - 0.5, cy/H - 0.5,
    has_extrinsics, R (9, row-major), t (3)]`; absent cameras leave their fields and flag at 0.
    Example: V=3 without cameras -> the first entries are 0, 0.5, 1 for views 0, 1, 2, rest 0.
    """
    view_id = torch.arange(V, device=device, dtype=dtype) / max(V - 1, 1)
    feats = torch.zeros(B, T, V, CAMERA_PARAM_DIM, device=device, dtype=dtype)
    feats[..., 0] = view_id
    if intrinsics is not None:
        K = intrinsics.to(dtype)
        feats[..., 1] = 1.0
        feats[..., 2] = K[..., 0, 0] / W
        feats[..., 3] = K[..., 1, 1] / H
        feats[..., 4] = K[..., 0, 2] / W - 0.5
        feats[..., 5] = K[..., 1, 2] / H - 0.5
    if extrinsics is not None:
        E = extrinsics.to(dtype)
        feats[..., 6] = 1.0
        feats[..., 7:16] = E[..., :3, :3].reshape(B, T, V, 9)
        feats[..., 16:19] = E[..., :3, 3]
    return feats
