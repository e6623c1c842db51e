"""Real-time chunking's guidance of the flow sampler, through LeRobot's ``RTCProcessor``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from lerobot.policies.rtc.modeling_rtc import RTCProcessor
from torch import Tensor

from vla.flow_matching import Guide


def rtc_guide(processor: RTCProcessor, left_over: Tensor, delay: int | None, horizon: int | None, batch: int,
              action_dim: int, device: torch.device) -> Guide:
    """The ``guide`` of ``vla.flow_matching.euler_sample`` that steers a new chunk of ``batch`` rows
    onto ``left_over``, the previous chunk's actions not yet executed (``[T, action_dim]`` or
    ``[batch, T, action_dim]``, normalised), of which the first ``delay`` run while it is computed.

    Raises ``ValueError`` naming a wrong shape, a non-finite leftover or a negative delay.
    """
    given = torch.as_tensor(left_over)
    left_over = given.unsqueeze(0) if given.dim() == 2 else given
    if left_over.dim() != 3 or left_over.shape[0] not in (1, batch) or left_over.shape[1] < 1 \
            or left_over.shape[2] != action_dim:
        raise ValueError(
            f"prev_chunk_left_over must be [T, {action_dim}] or [{batch}, T, {action_dim}] with T >= 1, "
            f"got {tuple(given.shape)}"
        )
    if not torch.isfinite(left_over).all():
        raise ValueError("prev_chunk_left_over holds NaN or inf")
    delay = 0 if delay is None else int(delay)
    if delay < 0:
        raise ValueError(f"inference_delay must be >= 0, got {delay}")
    left_over = left_over.to(device=device, dtype=torch.float32).expand(batch, -1, -1)

    def guide(x: Tensor, time: float, velocity: Callable[[Tensor], Tensor]) -> Tensor:
        def no_grad_velocity(y: Tensor) -> Tensor:
            # RTC's correction needs no gradient through the model (only through x_1 = x - t v).
            with torch.no_grad():
                return velocity(y)

        return processor.denoise_step(x, left_over, delay, time, no_grad_velocity, horizon)

    return guide
