"""Camera inputs: the dict of images, the seed's stacked format, per-camera masks."""

from __future__ import annotations

from collections.abc import Mapping

import torch

# Channel layout of one camera in the stacked format: SigLIP's copy first, DINOv2's second.
STACKED_CHANNELS_PER_CAMERA = 6


def stack_cameras(images: Mapping[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """A dict of camera images, each [B, 3, H, W] with H = W = image_size → [B, V, 3, H, W] in dict order."""
    if not images:
        raise ValueError("images: need at least one camera, got an empty dict")
    batch = None
    for name, image in images.items():
        if image.ndim != 4 or image.shape[1:] != (3, image_size, image_size):
            raise ValueError(
                f"images[{name!r}] must be [B, 3, {image_size}, {image_size}], got shape {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise ValueError(f"images[{name!r}] must be a float tensor in [0, 1], got dtype {image.dtype}")
        if batch is not None and image.shape[0] != batch:
            raise ValueError(f"images[{name!r}] has batch size {image.shape[0]}, other cameras have {batch}")
        batch = image.shape[0]
    return torch.stack(list(images.values()), dim=1)


def split_stacked(pixel_values: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's stacked format [B, 6·V, H, W] → (SigLIP images, DINOv2 images), each [B, V, 3, H, W].

    Camera v occupies channels 6v .. 6v+5: channels 6v .. 6v+2 go to SigLIP, 6v+3 .. 6v+5 to
    DINOv2 (usually two copies of the same RGB image).
    """
    if pixel_values.ndim != 4 or pixel_values.shape[1] % STACKED_CHANNELS_PER_CAMERA or pixel_values.shape[1] == 0:
        raise ValueError(f"pixel_values must be [B, 6*V, H, W] with V >= 1, got shape {tuple(pixel_values.shape)}")
    if pixel_values.shape[2:] != (image_size, image_size):
        raise ValueError(f"pixel_values must be {image_size}x{image_size} pixels, got shape {tuple(pixel_values.shape)}")
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values must be a float tensor, got dtype {pixel_values.dtype}")
    b, c, h, w = pixel_values.shape
    cameras = pixel_values.reshape(b, c // STACKED_CHANNELS_PER_CAMERA, 2, 3, h, w)
    return cameras[:, :, 0], cameras[:, :, 1]


def camera_mask_tensor(
    camera_mask: Mapping[str, torch.Tensor] | None, names: list[str], batch: int, device: torch.device
) -> torch.Tensor:
    """Per-camera presence {name: [B] bool} → [B, V] bool in the order of `names`; cameras not in
    the mapping (or no mapping) count as present."""
    mask = torch.ones(batch, len(names), dtype=torch.bool, device=device)
    if camera_mask is None:
        return mask
    unknown = sorted(set(camera_mask) - set(names))
    if unknown:
        raise ValueError(f"camera_mask has cameras {unknown} that are not in images {names}")
    for v, name in enumerate(names):
        if name in camera_mask:
            present = camera_mask[name]
            if present.shape != (batch,):
                raise ValueError(f"camera_mask[{name!r}] must be [B] = [{batch}], got shape {tuple(present.shape)}")
            mask[:, v] = present.to(device=device, dtype=torch.bool)
    return mask
