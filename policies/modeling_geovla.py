"""``GeoVLAPolicy``: the LeRobot policy class, and the robot-side ``predict_action`` API."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.rtc.modeling_rtc import RTCProcessor
from lerobot.processor import PolicyProcessorPipeline
from lerobot.utils.constants import (
    ACTION,
    OBS_LANGUAGE_ATTENTION_MASK,
    OBS_LANGUAGE_TOKENS,
    OBS_STATE,
    POLICY_PREPROCESSOR_DEFAULT_NAME,
)

from policies.configuration_geovla import GeoVLAConfig
from policies.geovla_model import GeoVLAModel, geometry_targets
from policies.policy_files import DIRECTORY_LAYOUT, check_policy_directory, is_local, load_processors
from policies.robot_observation import CAMERA_FIELDS, CAMERA_MASK_KEY, robot_observation_to_batch
from policies.rtc_guidance import rtc_guide
from vla.cpu_autocast import float32_attention
from vla.flow_matching import Guide

ACTION_IS_PAD = "action_is_pad"


class GeoVLAPolicy(PreTrainedPolicy):
    """Geometry-grounded VLA policy: multi-camera history + instruction + state → action chunk."""

    config_class = GeoVLAConfig
    name = "geovla"

    def __init__(self, config: GeoVLAConfig, **kwargs: Any) -> None:
        super().__init__(config)
        config.validate_features()
        self.config = config
        self.model = GeoVLAModel(config)
        apply_freeze(self.model, config.freeze, config.film)
        self.processors: tuple[PolicyProcessorPipeline, PolicyProcessorPipeline] | None = None
        self.init_rtc_processor()
        self.reset()

    # ------------------------------------------------------------------ LeRobot API
    def reset(self) -> None:
        """Forget the observation history and the queued actions (call at episode start)."""
        self._history: deque[Tensor] = deque(maxlen=self.config.n_obs_steps)
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)

    def get_optim_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Training loss on a normalised batch with ``action [B, H, A]`` (batch is not modified)."""
        if ACTION not in batch:
            raise ValueError(f"forward needs {ACTION!r} in the batch; got keys {sorted(batch)}")
        images, _ = self._images(batch, history=False)
        actions = batch[ACTION]
        if actions.dim() != 3 or actions.shape[1] != self.config.chunk_size:
            raise ValueError(f"{ACTION!r} must be [B, {self.config.chunk_size}, A], got {tuple(actions.shape)}")
        with float32_attention():  # under a CPU bfloat16 autocast (lerobot-train --policy.use_amp=true)
            losses = self.model.compute_loss(
                images,
                self._camera_mask(batch, images),
                *self._instruction(batch),
                self._state(batch),
                actions,
                batch.get(ACTION_IS_PAD),
                self._geometry_targets(batch, images),
                self._scene(batch, images),
            )
        return losses["loss"], {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Any],
        noise: Tensor | None = None,
        inference_delay: int | None = None,
        prev_chunk_left_over: Tensor | None = None,
        execution_horizon: int | None = None,
    ) -> Tensor:
        """Normalised action chunk ``[B, H, A]``. Single-frame camera inputs ``[B, 3, H, W]`` are
        appended to the policy's observation history; inputs with a time axis are used as is.

        Real-time chunking (with ``config.rtc_config`` enabled): ``prev_chunk_left_over``
        ``[T, A]`` or ``[B, T, A]`` holds the previous chunk's actions not yet executed
        (normalised, step 0 = this observation's step), of which the first ``inference_delay``
        will run while this call computes. Every flow step is guided by LeRobot's
        ``RTCProcessor`` so that the new chunk starts on them: the first ``inference_delay``
        actions follow them, the next ones up to ``execution_horizon`` blend into the new plan.

        A call that raises leaves the history as it was; NaN/inf actions raise a RuntimeError.
        """
        if self.training:  # eval() walks every submodule: 1.5 ms a call on the tiny preset
            self.eval()
        images, history = self._images(batch, history=True)
        chunk = self.model.sample_actions(
            images, self._camera_mask(batch, images), *self._instruction(batch), self._state(batch), noise=noise,
            scene=self._scene(batch, images),
            guide=self._rtc_guide(prev_chunk_left_over, inference_delay, execution_horizon, images.shape[0]),
        )
        self._check_finite_actions(chunk)
        self._commit_history(history)
        return chunk

    def supports_rtc(self) -> bool:
        return True

    def init_rtc_processor(self) -> None:
        """Build the RTC processor from ``config.rtc_config`` (``lerobot-rollout`` sets the config
        on a loaded policy, then calls this)."""
        rtc = self.config.rtc_config
        self.rtc_processor = RTCProcessor(rtc) if rtc is not None else None

    def _rtc_guide(self, left_over: Tensor | None, delay: int | None, horizon: int | None, batch: int) -> Guide | None:
        """The flow-step guidance of real-time chunking, or None when RTC is off or there is no
        previous chunk (as in LeRobot, leftovers are ignored while ``rtc_config.enabled`` is false)."""
        rtc = self.config.rtc_config
        if left_over is None or rtc is None or not rtc.enabled:
            return None
        if self.rtc_processor is None or self.rtc_processor.rtc_config is not rtc:
            self.init_rtc_processor()
        weight = self.model.action_model.action_in_proj.weight
        return rtc_guide(self.rtc_processor, left_over, delay, horizon, batch, self.config.action_dim, weight.device)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], noise: Tensor | None = None) -> Tensor:
        """Next action ``[B, A]``: a new chunk is predicted once the queue of
        ``n_action_steps`` actions is used up. The history advances on every call."""
        if self._action_queue:
            self.observe_batch(batch)  # keep the observation history current
        else:
            chunk = self.predict_action_chunk(batch, noise=noise)
            self._action_queue.extend(chunk[:, : self.config.n_action_steps].transpose(0, 1))
        return self._action_queue.popleft()

    def swap_history(self, history: deque[Tensor] | None = None) -> deque[Tensor]:
        """Make ``history`` (None: a new empty one) the observation history that predictions and
        ``observe`` extend, and return the one it replaces: a server running one policy for
        several robots keeps one history per robot this way."""
        previous = self._history
        self._history = deque(maxlen=self.config.n_obs_steps) if history is None else history
        return previous

    @torch.no_grad()
    def observe_batch(self, batch: dict[str, Any]) -> None:
        """Add a preprocessed single-frame batch's cameras to the history without predicting."""
        self._commit_history(self._images(batch, history=True)[1])

    def _commit_history(self, history: deque[Tensor] | None) -> None:
        """Keep the history a successful call built (None: the call brought its own time axis)."""
        if history is not None:
            self._history = history

    def _check_finite_actions(self, actions: Tensor) -> None:
        """RuntimeError when ``actions`` hold NaN or inf, naming the non-finite weights (the inputs
        were checked before). One reduction over the chunk: cheap next to the model."""
        if bool(torch.isfinite(torch.stack(torch.aminmax(actions))).all()):
            return
        rows = (~torch.isfinite(actions).flatten(1).all(dim=1)).nonzero().flatten().tolist()
        bad = [name for name, value in self.state_dict().items()
               if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        cause = (f"the weights hold NaN/inf: {bad[:5]}{' ...' if len(bad) > 5 else ''} (a diverged training run "
                 "saves such weights: load an earlier checkpoint)" if bad else
                 "the weights are finite, so the inputs overflow the model (check the state and image values, "
                 "and a float16 model's range)")
        raise RuntimeError(f"the policy predicted NaN/inf actions in batch rows {rows}: {cause}. "
                           "These actions must not reach a robot")

    # -------------------------------------------------------------------- robot API
    def attach_processors(self, preprocessor: PolicyProcessorPipeline, postprocessor: PolicyProcessorPipeline) -> None:
        """The normalisation/tokenisation pipelines ``predict_action`` runs (saved with the policy)."""
        self.processors = (preprocessor, postprocessor)

    @torch.no_grad()
    def predict_action(self, observation: dict[str, Any], noise: Tensor | None = None) -> np.ndarray:
        """Action chunk in robot units from a raw observation.

        ``observation = {"images": {camera: uint8 [H, W, 3] or float [3, H, W]}, "state": [D],
        "instruction": str}`` (or everything with a leading batch dimension). Returns
        ``[H, A]`` (``[B, H, A]`` when batched). Each call is one control step of the history;
        between calls, give every control step's observation to :meth:`observe`.
        """
        batch, batched = self._robot_batch(observation)
        chunk = self.predict_action_chunk(batch, noise=noise)
        actions = self.processors[1](chunk).numpy()
        return actions if batched else actions[0]

    @torch.no_grad()
    def observe(self, observation: dict[str, Any]) -> None:
        """Add one control step's cameras to the history without predicting.

        The history of ``n_obs_steps`` frames must hold consecutive control steps, as in
        training; a robot that asks for a chunk only every few steps calls this on the steps
        in between. Same input as :meth:`predict_action`, validated the same way.
        """
        batch, _ = self._robot_batch(observation)
        self.observe_batch(batch)

    def _robot_batch(self, observation: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """A raw robot observation → (preprocessed batch, whether it came batched)."""
        if self.processors is None:
            raise ValueError(
                "predict_action needs the normalisation stats: load the policy with from_pretrained(dir) "
                "from a directory saved with its processors, or call attach_processors(pre, post)"
            )
        height, width = self.config.image_features[self.config.camera_keys[0]].shape[1:]
        batch, batched = robot_observation_to_batch(
            observation, self.config.camera_keys, self.config.state_dim, (height, width),
            self.config.allow_missing_cameras, self.config.scene_fields,
        )
        return self.processors[0](batch), batched

    # ------------------------------------------------------------- save and load
    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Config, weights (``state_dict`` when the caller gathered them, e.g. under FSDP) and the
        processors when attached."""
        super()._save_pretrained(save_directory, state_dict=state_dict)
        if self.processors is not None:
            for pipeline in self.processors:
                pipeline.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls, pretrained_name_or_path: str | Path, *, strict: bool = True, **kwargs: Any
    ) -> "GeoVLAPolicy":
        """Load weights and config; also the processors when the directory holds them.

        ``strict``: every tensor of the policy must be in ``model.safetensors`` and nothing else
        (else a RuntimeError names the missing and unexpected keys); False loads the tensors that
        match and leaves the rest at their random init (LeRobot's default, unfit for acting). A
        local directory is checked first (:func:`check_policy_directory`); a name that is no
        local path but a Hub repo id is downloaded by LeRobot.
        """
        local = is_local(pretrained_name_or_path)
        if local:
            check_policy_directory(pretrained_name_or_path)
        try:
            policy = super().from_pretrained(pretrained_name_or_path, strict=strict, **kwargs)
        except FileNotFoundError as error:  # from the Hub: LeRobot's and huggingface_hub's errors
            if local:
                raise
            raise FileNotFoundError(
                f"{pretrained_name_or_path!r} is no local directory ({Path(pretrained_name_or_path).resolve()} "
                f"does not exist) and no policy on the Hugging Face Hub ({error}). {DIRECTORY_LAYOUT}"
            ) from error
        directory = Path(pretrained_name_or_path)
        if (directory / f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json").exists():
            policy.attach_processors(*load_processors(directory, device=policy.config.device))
        return policy

    @classmethod
    def _load_as_safetensor(cls, model: "GeoVLAPolicy", model_file: str, map_location: str,
                            strict: bool) -> "GeoVLAPolicy":
        """LeRobot's loading, with a mismatch error (missing, unexpected or resized tensors) that says
        what to do."""
        try:
            return super()._load_as_safetensor(model, model_file, map_location, strict)
        except RuntimeError as error:
            if "loading state_dict" not in str(error):
                raise
            raise RuntimeError(
                f"{model_file} does not match the policy its config.json builds: {error}\nThe weights were saved "
                "by another version of the model or with another config (preset, cameras, lora_rank, ...): load "
                "them with the code and config.json they were saved with (from_pretrained(..., strict=False) "
                "leaves the missing tensors at random init, which is unfit for acting)"
            ) from error

    # -------------------------------------------------------------------- inputs
    def _images(self, batch: dict[str, Any], history: bool) -> tuple[Tensor, deque[Tensor] | None]:
        """Camera images ``[B, T, V, 3, h, w]`` at the model's size, and the history the call leaves.

        Inputs with a time axis are used as they are (no history: None). A single frame
        ``[B, 3, H, W]`` per camera is appended to a copy of the rollout history when ``history``
        (padded with copies of the first frame at an episode's start), which the caller keeps once
        the call succeeds, or taken as a one-step history otherwise.
        """
        frames = []
        for key in self.config.camera_keys:
            if key not in batch:
                raise ValueError(f"batch is missing camera {key!r}; got keys {sorted(batch)}")
            frames.append(batch[key])
        if len({frame.shape for frame in frames}) != 1:
            shapes = {key: tuple(frame.shape) for key, frame in zip(self.config.camera_keys, frames)}
            raise ValueError(f"all cameras must have one shape [B, (T,) 3, H, W], got {shapes}")
        stacked = torch.stack(frames, dim=-4)  # [B, (T,) V, 3, H, W]
        pending = None
        if stacked.dim() == 5 and not history:
            stacked = stacked.unsqueeze(1)
        elif stacked.dim() == 5:
            pending = self._next_history(stacked)
            stacked = torch.stack(list(pending), dim=1)
        if stacked.dim() != 6:
            raise ValueError(f"camera images must be [B, 3, H, W] or [B, T, 3, H, W], got {tuple(frames[0].shape)}")
        size = self.config.image_size
        if stacked.shape[-2:] != (size, size):
            B, T, V = stacked.shape[:3]
            resized = F.interpolate(stacked.flatten(0, 2), size=(size, size), mode="bilinear", antialias=True)
            stacked = resized.unflatten(0, (B, T, V))
        return stacked, pending

    def _next_history(self, frame: Tensor) -> deque[Tensor]:
        """A copy of the history with ``frame [B, V, 3, H, W]`` appended (the policy's is unchanged)."""
        history = deque(self._history, maxlen=self.config.n_obs_steps)
        if history and history[-1].shape != frame.shape:
            raise ValueError(
                f"camera frames [B, V, 3, H, W] are {tuple(frame.shape)} but the observation history holds "
                f"{tuple(history[-1].shape)}: the batch size (or image size) changed within an episode. Call "
                "policy.reset() when an episode starts or the number of environments changes"
            )
        if not history:
            history.extend([frame] * self.config.n_obs_steps)
        history.append(frame)
        return history

    def _camera_mask(self, batch: dict[str, Any], images: Tensor) -> Tensor:
        mask = batch.get(CAMERA_MASK_KEY)
        if mask is None:
            return torch.ones(images.shape[0], images.shape[2], dtype=torch.bool, device=images.device)
        return mask.to(device=images.device, dtype=torch.bool)

    def _instruction(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        if OBS_LANGUAGE_TOKENS not in batch:
            raise ValueError(
                f"batch is missing {OBS_LANGUAGE_TOKENS!r}: run the policy's preprocessor, which tokenises 'task'"
            )
        return batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]

    def _state(self, batch: dict[str, Any]) -> Tensor | None:
        if self.config.state_dim is None:
            return None
        state = batch[OBS_STATE]
        return state[:, -1] if state.dim() == 3 else state

    def _geometry_targets(self, batch: dict[str, Any], images: Tensor) -> dict[str, Tensor] | None:
        """Depth/camera ground truth ``[B, T, V, ...]`` when the batch has it for every camera."""
        if self.config.geometry_loss_weight == 0 or self.model.geometry is None:
            return None
        fields, _ = self._camera_fields(batch, images, tuple(CAMERA_FIELDS))
        if fields is None:
            return None
        for name, value in fields.items():
            if value.shape[1] != images.shape[1]:
                raise ValueError(f"{name} ground truth has {value.shape[1]} time steps, images have {images.shape[1]}")
        return geometry_targets(fields["depth"], fields["intrinsics"], fields["extrinsics"])

    def _scene(self, batch: dict[str, Any], images: Tensor) -> dict[str, Tensor] | None:
        """The last time step's observed ``config.scene_fields`` ``[B, V, ...]`` for voxel spatial
        tokens (None without voxel tokens; the geometry heads supply the fields not observed)."""
        if not (self.config.use_geometry and self.config.spatial_tokens == "voxel"):
            return None
        required = self.config.scene_fields
        fields, missing = self._camera_fields(batch, images, required)
        if fields is None:
            raise ValueError(
                f"spatial_tokens='voxel' with depth_source={self.config.depth_source!r} and camera_source="
                f"{self.config.camera_source!r} needs {list(required)} for every camera; the batch lacks {missing} "
                f"(robots: pass observation[{'|'.join(repr(name) for name in required)}] per camera)"
            )
        return {name: value[:, -1] for name, value in fields.items()}

    def _camera_fields(self, batch: dict[str, Any], images: Tensor,
                       names: tuple[str, ...]) -> tuple[dict[str, Tensor] | None, list[str]]:
        """The batch's ``{"depth": [B, T, V, H, W], "intrinsics": [B, T, V, 3, 3], "extrinsics":
        [B, T, V, 3, 4]}`` restricted to ``names`` (T = 1 for single frames), or None and the
        missing keys."""
        cameras = [key.removeprefix("observation.images.") for key in self.config.camera_keys]
        keys = {name: [f"observation.{name}.{cam}" for cam in cameras] for name in names}
        missing = [k for names in keys.values() for k in names if k not in batch]
        if missing:
            return None, missing
        # [B, ...] or [B, T, ...]; depth and cameras both have rank 3 without the time axis.
        fields = {name: torch.stack([batch[k] if batch[k].dim() == 4 else batch[k].unsqueeze(1) for k in names], dim=2)
                  for name, names in keys.items()}
        if "depth" in fields and fields["depth"].shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"depth is {tuple(fields['depth'].shape[-2:])} but the model runs at {tuple(images.shape[-2:])}; "
                f"record the dataset (or render the depth) at image_size={self.config.image_size}"
            )
        return fields, []


def apply_freeze(model: GeoVLAModel, freeze: str, film: bool = True) -> None:
    """Freeze the named parameter groups (see ``GeoVLAConfig.freeze``); aggregation tokens,
    projectors and the router always train, FiLM unless ``film`` is False (it then stays the
    identity it is initialised to)."""
    groups = [] if film else [model.backbone.siglip.films, model.backbone.dinov2.films]
    if freeze in ("vision", "vision_and_llm"):
        groups += [model.backbone.siglip.vit, model.backbone.dinov2.vit]
    if freeze in ("llm", "vision_and_llm"):
        groups.append(model.action_model.fusion.llm)
    for module in groups:
        module.requires_grad_(False)
