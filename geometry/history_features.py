"""Reuse of patch features across inference calls whose camera histories overlap.

``predict_action`` runs the aggregator once per control step on a sliding history: the frames of
steps 0..T-2 of a call are the frames of steps 1..T-1 of the call before. Their patch features
(patch embed, then the ViewMixer, which mixes the views of one time step) depend on nothing else,
so only the newest time step needs computing. Time and view embeddings are added afterwards, so
the shift of a frame's time index does not matter here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


def weights_key(tensors: Iterable[Tensor]) -> tuple:
    """Identity and in-place version of every tensor: changes when any weight is replaced or updated."""
    return tuple((t.data_ptr(), t._version) for t in tensors)


class HistoryFeatureCache:
    """The last call's images ``[B, T, V, 3, H, W]`` and patch features ``[B, T, V, P, C]``.

    ``features(images, compute, key)`` returns ``compute(images)``, computing only the last time
    step when the previous call's images shifted by one step equal this call's first T-1 steps
    and the weights (``key``) are unchanged. Used only without gradients (training always
    computes everything) and never inside ``torch.compile``.
    """

    def __init__(self) -> None:
        self._images: Tensor | None = None
        self._features: Tensor | None = None
        self._key: tuple | None = None

    def clear(self) -> None:
        self._images = self._features = self._key = None

    def features(self, images: Tensor, compute: Callable[[Tensor], Tensor], key: tuple) -> Tensor:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            self.clear()
            return compute(images)
        previous = self._images
        reusable = (
            previous is not None and key == self._key and previous.shape == images.shape
            and previous.dtype == images.dtype and previous.device == images.device and images.shape[1] > 1
            and torch.equal(previous[:, 1:], images[:, :-1])
        )
        if reusable:
            features = torch.cat([self._features[:, 1:], compute(images[:, -1:])], dim=1)
        else:
            features = compute(images)
        self._images, self._features, self._key = images.clone(), features, key
        return features
