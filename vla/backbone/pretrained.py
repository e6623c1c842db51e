"""Loading pretrained timm ViT weights from a local file (never from the network)."""

from __future__ import annotations

from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

# Wrappers training scripts put around a state dict.
_NESTING_KEYS = ("state_dict", "model", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch pickle (`.pth`, `.pt`, `.bin`), on CPU.

    A dict nested under "state_dict" / "model" / "module" and a "module." key prefix (DDP) are
    unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist (pretrained weights are only read from local files)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in _NESTING_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_vit_weights(vit: VisionTransformer, path: str | Path) -> None:
    """Load a checkpoint into a complete (unpruned) timm ViT, strictly.

    The state dict goes through timm's own `checkpoint_filter_fn`, which converts original DINOv2 /
    open_clip / big_vision key layouts and resamples the positional embedding and patch-embedding
    kernel when the checkpoint was trained at another image or patch size (DINOv2 at 518 px loads
    into a 224 px model). Classifier weights the model does not have (`head.*` when built with
    `num_classes=0`) are dropped; any other missing, unexpected or differently shaped key raises
    ValueError.
    """
    state = checkpoint_filter_fn(read_state_dict(path), vit)
    if isinstance(vit.head, torch.nn.Identity):
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    own = vit.state_dict()
    wrong_shape = {
        k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape
    }
    if wrong_shape:
        raise ValueError(f"weights file {str(path)!r}: shapes (file, model) differ for {wrong_shape}")
    result = vit.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights file {str(path)!r} does not match the model: missing keys {result.missing_keys}, "
            f"unexpected keys {result.unexpected_keys}"
        )
