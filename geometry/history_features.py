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
    computes everything).

    Inside ``torch.compile`` the comparison, which reads values, cannot run: there ``plan(images,
    key)``, called eagerly just before the compiled call, takes the decision for the next
    ``features`` call (which then ignores its ``key``). Without a plan a compiled call computes
    every time step.
    """

    def __init__(self) -> None:
        self._images: Tensor | None = None
        self._features: Tensor | None = None
        self._key: tuple | None = None
        self._planned_reuse = False

    def clear(self) -> None:
        self._images = self._features = self._key = None
        self._planned_reuse = False

    def reusable(self, images: Tensor, key: tuple) -> bool:
        previous = self._images
        return (
            previous is not None and key == self._key and previous.shape == images.shape
            and previous.dtype == images.dtype and previous.device == images.device and images.shape[1] > 1
            and torch.equal(previous[:, 1:], images[:, :-1])
        )

    def plan(self, images: Tensor, key: tuple) -> None:
        """Decide, eagerly, whether the next (compiled) ``features`` call reuses the last features;
        the compiled graph sees only this flag (a guard on one bool: two compiled variants)."""
        self._planned_reuse = self.reusable(images, key)
        if not self._planned_reuse:  # nothing stored may outlive a failed call under the new key
            self._images = self._features = None
        self._key = key

    def own_tensors(self) -> None:
        """Keep copies of the stored images and features: stored by a call inside a CUDA graph,
        they are that graph's outputs, which its next replay overwrites."""
        if self._features is not None:
            self._images, self._features = self._images.clone(), self._features.clone()

    def features(self, images: Tensor, compute: Callable[[Tensor], Tensor], key: tuple | None) -> Tensor:
        if torch.is_grad_enabled():
            self.clear()
            return compute(images)
        if torch.compiler.is_compiling():
            reuse, self._planned_reuse = self._planned_reuse, False
        else:
            reuse = self.reusable(images, key)
            self._key = key
        if reuse:
            features = torch.cat([self._features[:, 1:], compute(images[:, -1:])], dim=1)
        else:
            features = compute(images)
        self._images, self._features = images.clone(), features
        return features
