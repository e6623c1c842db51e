"""Validation of robot-side observations for ``GeoVLAPolicy.predict_action``.

An observation is ``{"images": {camera: image}, "state": vector, "instruction": str}``. An image is
uint8 ``[H, W, 3]`` (numpy or tensor) or float ``[3, H, W]`` in [0, 1]; numpy arrays may have any
strides (``img[..., ::-1]``) and byte order. With a leading batch dimension everything is batched
(``instruction`` then a str or a list of B str). A policy with
voxel spatial tokens also needs, per camera, the fields of its ``config.scene_fields`` out of
``"depth"`` ``{camera: [H, W]}`` (metres along the optical axis), ``"intrinsics"``
``{camera: [3, 3]}`` and ``"extrinsics"`` ``{camera: [3, 4]}`` (OpenCV camera-from-world).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lerobot.utils.constants import OBS_STATE

CAMERA_MASK_KEY = "observation.camera_mask"
REQUIRED_KEYS = ("images", "state", "instruction")
CAMERA_FIELDS = {"depth": (), "intrinsics": (3, 3), "extrinsics": (3, 4)}  # per camera; () = the image size


def robot_observation_to_batch(
    observation: dict[str, Any],
    camera_keys: list[str],
    state_dim: int | None,
    image_size: tuple[int, int],
    allow_missing_cameras: bool,
    scene_fields: tuple[str, ...] = (),
) -> tuple[dict[str, Any], bool]:
    """A LeRobot batch (``observation.images.<cam>`` float ``[B, 3, H, W]``, ``observation.state``
    ``[B, D]``, ``task`` list of B str, ``observation.camera_mask`` ``[B, V]``; for each field
    of ``scene_fields`` (``depth``, ``intrinsics``, ``extrinsics``) also
    ``observation.<field>.<cam>``) and whether the input was batched. Raises ``ValueError``
    naming the offending key, shape, dtype or value."""
    unknown_fields = sorted(set(scene_fields) - set(CAMERA_FIELDS))
    if unknown_fields:
        raise ValueError(f"scene_fields {unknown_fields} are not among {tuple(CAMERA_FIELDS)}")
    if not isinstance(observation, dict):
        raise ValueError(f"observation must be a dict with keys {REQUIRED_KEYS}, got {type(observation).__name__}")
    required = REQUIRED_KEYS + tuple(scene_fields)
    missing = [k for k in required if k not in observation and not (k == "state" and state_dim is None)]
    if missing:
        raise ValueError(f"observation is missing {missing}; it needs {required}")
    images = observation["images"]
    if not isinstance(images, dict) or not images:
        raise ValueError("observation['images'] must be a non-empty dict {camera: image}")
    names = {key.removeprefix("observation.images."): key for key in camera_keys}
    unknown = sorted(set(images) - set(names) - set(camera_keys))
    if unknown:
        raise ValueError(f"unknown cameras {unknown}; the policy was trained with {sorted(names)}")

    converted = {name: _image_tensor(f"images[{name!r}]", image, image_size) for name, image in images.items()}
    batched = next(iter(converted.values())).dim() == 4
    converted = {k: (v if batched else v[None]) for k, v in converted.items()}
    sizes = {k: v.shape[0] for k, v in converted.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all cameras need the same batch size, got {sizes}")
    batch_size = next(iter(sizes.values()))
    if batch_size == 0:
        raise ValueError(f"observation['images'] holds batches of 0 observations {sizes}; give at least one")

    batch: dict[str, Any] = {}
    present = torch.ones(batch_size, len(camera_keys), dtype=torch.bool)
    for index, (name, key) in enumerate(names.items()):
        image = converted.get(name, converted.get(key))
        if image is None:
            if not allow_missing_cameras:
                raise ValueError(
                    f"camera {name!r} is missing from observation['images'] "
                    "(set allow_missing_cameras=True in the config to mask it instead)"
                )
            image = torch.zeros(batch_size, 3, *image_size)
            present[:, index] = False
        batch[key] = image
    batch[CAMERA_MASK_KEY] = present
    batch.update(_camera_fields(observation, scene_fields, names, present, image_size, batched))

    if state_dim is not None:
        batch[OBS_STATE] = _state_tensor(observation["state"], state_dim, batch_size, batched)
    batch["task"] = _instructions(observation["instruction"], batch_size)
    return batch, batched


def _numeric_tensor(name: str, value: Any, expected: str) -> torch.Tensor:
    """``value`` (a tensor, or an array-like of numbers) as a tensor. A numpy array with negative
    strides (``img[..., ::-1]``) or non-native byte order is copied to a contiguous native one."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} must be {expected}, got a ragged {type(value).__name__}: {error}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be {expected}, got {type(value).__name__} {_preview(value)}")
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), order="C", copy=False))


def _preview(value: Any) -> str:
    """A short repr of ``value`` for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _float_tensor(name: str, value: Any, expected: str) -> torch.Tensor:
    """``value`` as a float32 tensor (see :func:`_numeric_tensor`)."""
    return _numeric_tensor(name, value, expected).float()


def _image_tensor(name: str, image: Any, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[(B,) H, W, 3]`` or float ``[(B,) 3, H, W]`` in [0, 1] → float ``[(B,) 3, H, W]``."""
    tensor = _numeric_tensor(name, image, "uint8 [H, W, 3] or float [3, H, W] (optionally batched)")
    if tensor.dim() not in (3, 4):
        raise ValueError(f"{name} must be [H, W, 3] uint8 or [3, H, W] float (optionally batched), got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        if tensor.shape[-1] != 3:
            raise ValueError(f"{name} is uint8, so it must be channels-last [..., H, W, 3], got shape {tuple(tensor.shape)}")
        tensor = tensor.movedim(-1, -3).float() / 255.0
    elif tensor.is_floating_point():
        if tensor.shape[-3] != 3:
            raise ValueError(f"{name} is float, so it must be channels-first [..., 3, H, W], got shape {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or inf")
        if tensor.min() < 0 or tensor.max() > 1:
            raise ValueError(f"{name} is float, so its values must lie in [0, 1], got [{float(tensor.min()):.3g}, {float(tensor.max()):.3g}]")
        tensor = tensor.float()
    else:
        raise ValueError(f"{name} must be uint8 or float, got dtype {tensor.dtype}")
    if tuple(tensor.shape[-2:]) != size:
        raise ValueError(f"{name} must be {size[0]}x{size[1]} pixels, got {tuple(tensor.shape[-2:])}")
    return tensor


def _camera_fields(observation: dict[str, Any], fields: tuple[str, ...], names: dict[str, str],
                   present: torch.Tensor, image_size: tuple[int, int], batched: bool) -> dict[str, torch.Tensor]:
    """``observation.<field>.<cam>`` float tensors with a batch axis for each of ``fields``. A
    missing camera gets zero depth and identity cameras (its pixels are masked out anyway)."""
    out = {}
    batch_size = present.shape[0]
    for field in fields:
        shape, values = CAMERA_FIELDS[field], observation[field]
        if not isinstance(values, dict):
            raise ValueError(f"observation[{field!r}] must be a dict {{camera: array}}, got {type(values).__name__}")
        shape = shape or image_size
        expected = (batch_size, *shape) if batched else shape
        for index, (name, image_key) in enumerate(names.items()):
            key = image_key.replace("observation.images.", f"observation.{field}.", 1)
            if name not in values:
                if bool(present[:, index].any()):
                    raise ValueError(f"observation[{field!r}] has no entry for camera {name!r}")
                filler = torch.zeros(batch_size, *shape) if field == "depth" else torch.eye(3, shape[1]).expand(batch_size, *shape)
                out[key] = filler.clone()
                continue
            tensor = _float_tensor(f"observation[{field!r}][{name!r}]", values[name], f"an array of shape {expected}")
            if tuple(tensor.shape) != tuple(expected):
                raise ValueError(f"observation[{field!r}][{name!r}] must have shape {tuple(expected)}, got {tuple(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"observation[{field!r}][{name!r}] contains NaN or inf")
            out[key] = tensor if batched else tensor[None]
    return out


def _state_tensor(state: Any, state_dim: int, batch_size: int, batched: bool) -> torch.Tensor:
    """The state as float ``[B, D]``; ValueError naming the shape or the bad values."""
    expected = (batch_size, state_dim) if batched else (state_dim,)
    tensor = _float_tensor("observation['state']", state, f"an array of shape {expected}")
    if tuple(tensor.shape) != expected:
        raise ValueError(f"observation['state'] must have shape {expected}, got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"observation['state'] contains NaN or inf: {tensor.tolist()}")
    return tensor if batched else tensor[None]


def _instructions(instruction: Any, batch_size: int) -> list[str]:
    """``batch_size`` instructions from one str or a list/tuple of them (none empty)."""
    if isinstance(instruction, str):
        texts = [instruction] * batch_size
    elif isinstance(instruction, (list, tuple)):
        texts = list(instruction)
    else:
        texts = None
    if texts is None or len(texts) != batch_size or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(
            f"observation['instruction'] must be a non-empty str or a list of {batch_size} non-empty str "
            "(one per observation), "
            f"got {type(instruction).__name__} {_preview(instruction)}"
        )
    return texts
