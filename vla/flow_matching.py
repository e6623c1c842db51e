"""Flow matching on action chunks: time sampling, time embedding, loss and the Euler sampler.

Convention (pi0): ``t = 1`` is pure noise, ``t = 0`` the data. The path is
``x_t = t * eps + (1 - t) * a`` and the model regresses its velocity ``d x_t / d t = eps - a``.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

TIME_SCALE = 0.999
TIME_OFFSET = 0.001


def sample_time(batch: int, alpha: float = 1.5, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """``t ~ Beta(alpha, 1) * 0.999 + 0.001``, so ``t`` is never exactly 0.

    Beta(alpha, 1) has CDF ``x ** alpha``; inverting it, ``u ** (1 / alpha)`` with uniform ``u``
    is a sample, which keeps the draw reproducible with a ``generator``. ``alpha > 1`` puts more
    mass near ``t = 1`` (the noisy end), as in pi0.

    Returns:
        ``[batch]`` float32.
    """
    if alpha <= 0:
        raise ValueError(f"time alpha must be > 0, got {alpha}")
    u = torch.rand(batch, generator=generator, device=device)
    return u.pow(1.0 / alpha) * TIME_SCALE + TIME_OFFSET


def interpolate(actions: Tensor, noise: Tensor, time: Tensor) -> tuple[Tensor, Tensor]:
    """Point on the path and its target velocity.

    Args:
        actions: ``[B, H, A]`` clean actions ``a``.
        noise: ``[B, H, A]`` ``eps``.
        time: ``[B]``.

    Returns:
        ``(x_t [B, H, A], target [B, H, A])`` with ``x_t = t eps + (1 - t) a`` and
        ``target = eps - a``.
    """
    t = time[:, None, None].to(actions.dtype)
    return t * noise + (1 - t) * actions, noise - actions


def sinusoidal_time_embedding(time: Tensor, width: int, min_period: float = 4e-3,
                              max_period: float = 4.0) -> Tensor:
    """Sine/cosine features of ``t`` at periods spaced geometrically from min to max period.

    Args:
        time: ``[B]`` in ``[0, 1]``.
        width: even feature width ``W``.

    Returns:
        ``[B, W]`` float32: ``[sin(2 pi t / p_i), cos(2 pi t / p_i)]`` for ``W / 2`` periods.
    """
    if width % 2:
        raise ValueError(f"time embedding width must be even, got {width}")
    fraction = torch.linspace(0.0, 1.0, width // 2, device=time.device, dtype=torch.float64)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * time.double()[:, None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1).float()


class TimeTokenEncoder(nn.Module):
    """Turns ``t`` into one suffix token: sinusoidal features -> Linear -> SiLU -> Linear."""

    def __init__(self, width: int, min_period: float = 4e-3, max_period: float = 4.0):
        super().__init__()
        self.width = width
        self.min_period = min_period
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, time: Tensor) -> Tensor:
        """``time [B]`` -> time token ``[B, 1, width]``."""
        features = sinusoidal_time_embedding(time, self.width, self.min_period, self.max_period)
        weight = self.mlp[0].weight
        return self.mlp(features.to(device=weight.device, dtype=weight.dtype))[:, None]


def masked_velocity_loss(pred: Tensor, target: Tensor, action_is_pad: Tensor | None,
                         action_dim: int) -> tuple[Tensor, Tensor]:
    """Mean squared error over the real action dims of the non-padded chunk steps.

    Args:
        pred, target: ``[B, H, A_max]``.
        action_is_pad: ``[B, H]`` bool (True = padded step) or None.
        action_dim: number of real action dims ``A <= A_max``; the rest are padding.

    Returns:
        ``(loss scalar, per-sample loss [B])``; a sample with no real step contributes 0.
    """
    real_dims = torch.arange(pred.shape[-1], device=pred.device) < action_dim
    weight = real_dims.float().expand(pred.shape)
    if action_is_pad is not None:
        weight = weight * (~action_is_pad.bool())[..., None]
    sq = (pred.float() - target.float()).square() * weight
    per_sample = sq.sum(dim=(1, 2)) / weight.sum(dim=(1, 2)).clamp(min=1.0)
    return sq.sum() / weight.sum().clamp(min=1.0), per_sample


Guide = Callable[[Tensor, float, Callable[[Tensor], Tensor]], Tensor]


def euler_sample(velocity: Callable[[Tensor, Tensor], Tensor], noise: Tensor,
                 num_steps: int, guide: Guide | None = None) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` from ``t = 1`` (``x = noise``) to ``t = 0``.

    Step ``i`` evaluates at ``t_i = 1 - i / num_steps`` and moves by ``dt = -1 / num_steps``;
    times come from the step index, so no float drift adds or drops a step.

    Args:
        velocity: ``(x_t [B, H, A], t [B]) -> v [B, H, A]``.
        noise: ``[B, H, A]`` ``x_1``.
        num_steps: number of Euler steps (>= 1).
        guide: ``(x_t, t, v_fn) -> v`` replaces each step's velocity, given the step's
            ``v_fn(x) = velocity(x, t)``: e.g. real-time chunking's guidance towards the actions
            already committed (``lerobot.policies.rtc.RTCProcessor.denoise_step``).

    Returns:
        ``x_0`` ``[B, H, A]``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = -1.0 / num_steps
    x = noise
    for step in range(num_steps):
        time = 1.0 - step / num_steps
        t = torch.full((x.shape[0],), time, device=x.device)
        if guide is None:
            v = velocity(x, t)
        else:
            v = guide(x, time, lambda y, t=t: velocity(y, t))
        x = x + dt * v
    return x
