"""Action chunks executed as an asynchronous robot executes them: a chunk arrives ``delay``
control steps after the observation it was predicted from.

A robot does not stop while the policy computes. With an inference delay of ``d`` steps, the chunk
predicted from the observation of step ``k`` is ready at step ``k + d``; steps ``k .. k + d - 1``
run the rest of the chunk in flight, and the new chunk takes over at its own index ``d`` (its
first ``d`` actions belong to steps that have already run). Without real-time chunking the new
chunk knows nothing of those ``d`` actions, so the motion can jump where it takes over; with it,
the policy is given them (``prev_chunk_left_over``, ``inference_delay``) and starts on them.

Schedule, for ``execute`` steps per chunk: the first chunk runs from its index 0 (the robot waits
for it); afterwards a chunk is requested every ``execute`` steps, with the chunk in flight at its
index ``execute``. Every index used stays below the chunk size when ``execute + delay <= H``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from policies.modeling_geovla import GeoVLAPolicy


class DelayedChunkExecutor:
    """Next action of a batch of robots that run in lock step, under a simulated inference delay.

    Args:
        policy: a ``GeoVLAPolicy`` (reset at every episode start, as for ``select_action``).
        delay: control steps between an observation and the chunk predicted from it (``d``).
        rtc: give the policy the actions in flight (real-time chunking); needs
            ``policy.config.rtc_config`` enabled.
        execute: steps each chunk runs before the next is requested (default ``n_action_steps``).
    """

    def __init__(self, policy: GeoVLAPolicy, delay: int, rtc: bool = False, execute: int | None = None) -> None:
        config = policy.config
        self.execute = execute or config.n_action_steps
        if delay < 0 or self.execute < 1 or self.execute + delay > config.chunk_size:
            raise ValueError(
                f"need delay >= 0, execute >= 1 and execute + delay <= chunk_size ({config.chunk_size}); "
                f"got delay={delay}, execute={self.execute}"
            )
        if rtc and (config.rtc_config is None or not config.rtc_config.enabled):
            raise ValueError("rtc=True needs policy.config.rtc_config enabled (e.g. RTCConfig())")
        self.policy, self.delay, self.rtc = policy, delay, rtc
        self.reset()

    def reset(self) -> None:
        """Forget the chunks (call with ``policy.reset()`` at episode start)."""
        self._chunk: Tensor | None = None
        self._index = 0
        self._since_request = 0
        self._pending: Tensor | None = None
        self._countdown = 0
        self.switched = False

    def act(self, batch: dict[str, Any], noise: Tensor | None = None) -> Tensor:
        """Normalised action ``[B, A]`` for this step from a preprocessed single-frame batch;
        ``noise`` is used when a chunk is requested. ``switched`` tells whether this step's action
        comes from a chunk that took over at this step (a chunk boundary)."""
        if self._chunk is None:
            self._chunk = self.policy.predict_action_chunk(batch, noise=noise)
        elif self._since_request == self.execute:
            self._request(batch, noise)
        else:
            self.policy.observe_batch(batch)
        self.switched = self._pending is not None and self._countdown == 0
        if self.switched:
            self._chunk, self._index, self._pending = self._pending, self.delay, None
        action = self._chunk[:, self._index]
        self._index += 1
        self._since_request += 1
        self._countdown -= 1
        return action

    def _request(self, batch: dict[str, Any], noise: Tensor | None) -> None:
        rtc: dict[str, Any] = {}
        if self.rtc:
            rtc = {"inference_delay": self.delay, "prev_chunk_left_over": self._chunk[:, self._index:]}
        self._pending = self.policy.predict_action_chunk(batch, noise=noise, **rtc)
        self._countdown = self.delay
        self._since_request = 0


def action_changes(actions: list[np.ndarray], switched: list[bool]) -> dict[str, list[float]]:
    """Size of the change of the executed action ``|a_t - a_(t-1)|`` (L2, per step) where a new chunk
    took over (``boundary``) and elsewhere (``within``), from one robot's executed actions."""
    changes: dict[str, list[float]] = {"boundary": [], "within": []}
    for previous, current, switch in zip(actions, actions[1:], switched[1:]):
        changes["boundary" if switch else "within"].append(float(np.linalg.norm(current - previous)))
    return changes
