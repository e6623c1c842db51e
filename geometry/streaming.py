"""Streaming inference (seed 002, InfiniteVGGT): one time step at a time with bounded KV caches."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from geometry.layers.kv_cache import CacheGroup, KVCache

if TYPE_CHECKING:
    from geometry.model import GeometryModel

Frame = torch.Tensor | Mapping[str, torch.Tensor]
FrameWriter = Callable[[int, Frame, dict[str, Any]], None]
PER_STEP_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def camera_budget_for(total_budget: int, aggregator_layers: int, camera_layers: int, tokens_per_frame: int,
                      num_views: int) -> int:
    """Default camera-trunk budget: as many time steps per layer as the aggregator keeps on average.

    An aggregator layer keeps `total / (L_agg * V * N)` steps on average; a camera cache holds V
    tokens a step, so the camera group gets `total * L_cam / (L_agg * N)` tokens, at least its
    anchors (`L_cam * V`). Example: total 8400, 9 layers, 8 camera caches, N=21, V=2 -> 356.
    """
    return max(math.ceil(total_budget * camera_layers / (aggregator_layers * tokens_per_frame)), camera_layers * num_views)


class GeometryStream:
    """Feeds a `GeometryModel` one time step at a time, keeping a KV cache per cached layer.

    A step is `[B, V, 3, H, W]` (V views of one time step) or `[B, 3, H, W]` (a legacy single-view
    stream, VGGT's token layout); optional `intrinsics` `[B, V, 3, 3]` / extrinsics `[B, V, 3, 4]`
    (legacy `[B, 3, 3]` / `[B, 3, 4]`). The first step fixes B, V, H, W and the layout; a later step
    that differs raises ValueError before any cache is touched, so the stream stays usable.

    Caches: every global layer, every temporal frame layer (per view) and every camera-trunk
    block of every refinement iteration. `total_budget` bounds the aggregator's cached tokens per
    sample over all its layers, `camera_budget` the camera trunk's (None: derived, see
    `camera_budget_for`); with `total_budget=None` nothing is evicted and the outputs equal the
    model's causal clip forward (`causal_time=True`, per-frame cameras). The first step's tokens
    are the anchors and are never evicted. Cameras are predicted per step (`static_cameras=False`
    semantics). Steps beyond `max_time_steps` reuse the last time embedding
    (`geometry.aggregator.time_indices`).
    """

    def __init__(self, model: GeometryModel, total_budget: int | None = None, camera_budget: int | None = None,
                 rotated_keys: bool = True) -> None:
        if total_budget is not None and total_budget <= 0:
            raise ValueError(f"total_budget={total_budget} must be a positive token count or None")
        if camera_budget is not None and camera_budget <= 0:
            raise ValueError(f"camera_budget={camera_budget} must be a positive token count or None")
        self.model = model
        self.total_budget = total_budget
        self.camera_budget = camera_budget
        self.rotated_keys = rotated_keys
        self.steps = 0
        self.layout: tuple[bool, int, int, int, int] | None = None
        self.groups: list[CacheGroup] = []
        self.caches: dict[str, KVCache] = {}
        self.camera_caches: list[KVCache] = []

    @property
    def cached_tokens(self) -> int:
        """Tokens per sample held by all caches now."""
        return sum(g.tokens for g in self.groups)

    @property
    def cache_bytes(self) -> int:
        """Bytes allocated by all cache buffers now."""
        return sum(g.nbytes for g in self.groups)

    def _layout(self, images: torch.Tensor) -> tuple[bool, int, int, int, int]:
        if not isinstance(images, torch.Tensor) or images.dim() not in (4, 5):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"a stream step's images must be [B, V, 3, H, W] or legacy [B, 3, H, W]; got {shape}")
        legacy = images.dim() == 4
        B, V = images.shape[0], 1 if legacy else images.shape[1]
        return legacy, B, V, images.shape[-2], images.shape[-1]

    def _check_layout(self, layout: tuple[bool, int, int, int, int]) -> None:
        if self.layout is None or layout == self.layout:
            return
        names = ("legacy", "B", "V", "H", "W")
        diff = ", ".join(f"{n}={new} (stream has {old})" for n, new, old in zip(names, layout, self.layout) if new != old)
        raise ValueError(f"stream step {self.steps}: images differ from the stream's first step: {diff}")

    def _start(self, legacy: bool, V: int, H: int, W: int) -> tuple[list[CacheGroup], dict[str, KVCache], list[KVCache]]:
        """Empty caches and budget groups for a stream of V views at H x W (budgets checked)."""
        c = self.model.config
        N = c.patch_start_idx + (H // c.patch_size) * (W // c.patch_size)
        caches = self.model.aggregator.new_caches(V, legacy, self.rotated_keys)
        camera_caches = self.model.camera_head.new_caches(self.rotated_keys)
        camera_budget = self.camera_budget
        if camera_budget is None and self.total_budget is not None:
            camera_budget = camera_budget_for(self.total_budget, len(caches), len(camera_caches), N, V)
        groups = [CacheGroup(list(caches.values()), self.total_budget), CacheGroup(camera_caches, camera_budget)]
        groups[0].check(V * N)
        groups[1].check(V)
        return groups, caches, camera_caches

    @torch.no_grad()
    def step(self, images: torch.Tensor, intrinsics: torch.Tensor | None = None,
             extrinsics: torch.Tensor | None = None) -> dict[str, Any]:
        """One time step -> predictions of that step.

        Multi-view: `pose_enc` `[B, V, 9]` (and `pose_enc_list`), `depth`/`depth_conf`
        `[B, V, H, W]`, `world_points` `[B, V, H, W, 3]`, `world_points_conf` `[B, V, H, W]`,
        `mask_logits` `[B, V*P]` or None. Legacy: the same without the V axis.
        """
        layout = self._layout(images)
        self._check_layout(layout)
        legacy, _, V, H, W = layout
        clip = images.unsqueeze(1)
        lead = (slice(None), None, None) if legacy else (slice(None), None)  # -> [B, 1, V, 3, k]
        intr, extr = (None if x is None else x[lead] for x in (intrinsics, extrinsics))
        if self.layout is None:
            groups, caches, camera_caches = self._start(legacy, V, H, W)
        else:
            groups, caches, camera_caches = self.groups, self.caches, self.camera_caches
        agg = self.model.aggregator(clip, intr, extr, caches=caches, first_step=self.steps)
        out = self.model.heads(agg, camera_caches=camera_caches)
        self.groups, self.caches, self.camera_caches, self.layout = groups, caches, camera_caches, layout
        for group in self.groups:
            group.enforce()
        self.steps += 1
        step = {k: v[:, 0] for k, v in out.items() if k in PER_STEP_KEYS}
        step["pose_enc_list"] = [p[:, 0] for p in out["pose_enc_list"]]
        step["mask_logits"] = out["mask_logits"]
        return step


def stream_model(model: GeometryModel, frames: Iterable[Frame],
                 frame_writer: FrameWriter | None = None) -> list[dict[str, Any]]:
    """Streaming inference over `frames`, one time step each (`[B, V, 3, H, W]` or legacy
    `[B, 3, H, W]`, or a mapping with "images"), with the model config's cache budgets; returns
    the per-step predictions and calls `frame_writer(i, frame, predictions)` after each step."""
    c = model.config
    return run_stream(GeometryStream(model, c.stream_budget, c.stream_camera_budget, c.stream_rotated_keys),
                      frames, frame_writer)


def run_stream(stream: GeometryStream, frames: Iterable[Frame], frame_writer: FrameWriter | None = None) -> list[dict[str, Any]]:
    """Step `stream` through `frames` (tensors, or mappings with "images" and optional
    "intrinsics"/"extrinsics"); calls `frame_writer(i, frame, predictions)` after each step and
    returns the per-step predictions."""
    results = []
    for frame in frames:
        if isinstance(frame, Mapping):
            if "images" not in frame:
                raise ValueError(f"stream frame {stream.steps} is a mapping without 'images' (keys: {sorted(frame)})")
            pred = stream.step(frame["images"], frame.get("intrinsics"), frame.get("extrinsics"))
        else:
            pred = stream.step(frame)
        if frame_writer is not None:
            frame_writer(stream.steps - 1, frame, pred)
        results.append(pred)
    return results


__all__ = ["GeometryStream", "camera_budget_for", "run_stream", "stream_model"]
