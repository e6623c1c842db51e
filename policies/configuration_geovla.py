"""Configuration of the geometry-grounded VLA policy (LeRobot type name ``geovla``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from vla.backbone.config import ROUTER_MODES
from vla.tokenizer import TOKENIZERS

PRESETS = ("tiny", "small", "full")
GEOMETRY_KEY_PREFIXES = ("observation.depth.", "observation.intrinsics.", "observation.extrinsics.")
FREEZE_OPTIONS = ("none", "vision", "llm", "vision_and_llm")
SPATIAL_TOKENS = ("patch", "voxel")
DEPTH_SOURCES = ("sensor", "predicted")
CAMERA_SOURCES = ("given", "predicted")
INSTRUCTION_TRUNCATION = ("warn", "error")
WEIGHT_FILES = ("siglip_weights", "dinov2_weights", "vggt_weights")


def workspace_box(values: Sequence[float], name: str = "workspace") -> tuple[float, float, float, float, float, float]:
    """``values`` as a float box ``(x0, y0, z0, x1, y1, z1)``; a clear error unless x1 > x0 etc."""
    box = tuple(float(v) for v in values)
    if len(box) != 6 or any(high <= low for low, high in zip(box[:3], box[3:])):
        raise ValueError(f"{name} must be (x0, y0, z0, x1, y1, z1) with x1 > x0 etc., got {tuple(values)}")
    return box


@PreTrainedConfig.register_subclass("geovla")
@dataclass
class GeoVLAConfig(PreTrainedConfig):
    """Geometry aggregator + FiLM dual-encoder backbone + deep-fusion LLM with a flow-matching expert.

    The fields a user most often changes: ``preset`` (model size), ``chunk_size`` /
    ``n_action_steps`` (how many actions are predicted / executed per call) and ``n_obs_steps``
    (camera history the geometry aggregator sees).

    Args:
        preset: ``tiny`` (CPU), ``small`` (one GPU) or ``full`` (the seeds' sizes); picks the
            geometry, backbone and LLM/expert sub-presets.
        n_obs_steps: history length T of the multi-camera frames fed to the geometry aggregator
            (the backbone sees the current frame only).
        chunk_size: actions per predicted chunk H.
        n_action_steps: actions executed from each chunk before predicting again.
        image_size: side of the square images the model runs at; inputs are resized to it.
            None: the preset's (64 tiny, 224 small/full).
        patch_size: ViT patch side of both backbone streams and of the geometry aggregator.
            None: the preset's (8 tiny; 14/16 small/full, which their pretrained weights need).
            Small images want small patches: at 32 px a 4-px patch keeps an 8 x 8 token grid.
        use_geometry: feed spatial tokens of the geometry aggregator to the LLM.
        spatial_tokens: what the geometry aggregator gives the LLM. ``patch``: per (time, view)
            frame the camera token and the patch tokens pooled to ``spatial_pool x spatial_pool``.
            ``voxel``: the current frame's pixels lifted to 3D with depth and cameras and
            scattered into about ``voxel_target`` voxels inside ``voxel_workspace``, each token
            carrying its patch feature, world position and colour (see ``policies.voxel_tokens``).
            Needs depth and camera parameters per camera as input (an RGB-D camera with known
            intrinsics and extrinsics; the built-in task records and renders them).
        spatial_pool: pooled grid side of the ``patch`` spatial tokens (``1 + spatial_pool**2``
            tokens per frame).
        voxel_target: voxels per sample of the ``voxel`` spatial tokens.
        voxel_workspace: ``(x0, y0, z0, x1, y1, z1)`` box in the world frame of the extrinsics
            (metres); pixels outside it are dropped. The default is the built-in tabletop's.
        voxel_origin: where the ``voxel`` tokens' positions are measured from. None: the
            workspace box (absolute world positions). A camera name (``wrist`` or
            ``observation.images.wrist``): that camera's optical centre at the current step, in
            world axes. On a camera that rides on the gripper a token then says where a surface
            is relative to the gripper, which is the direction a reaching action takes, and
            stays true past the target. The camera must be present in every observation.
        depth_source: the depth the ``voxel`` tokens lift pixels with. ``sensor``: the
            observation's (``observation.depth.<camera>``, an RGB-D camera). ``predicted``: the
            geometry model's depth head on the current frame (metric, as it is trained on
            recorded metric depth through ``geometry_loss_weight`` or loaded pretrained), so
            that plain RGB cameras suffice.
        camera_source: the cameras the ``voxel`` tokens lift pixels with. ``given``: the
            observation's intrinsics and extrinsics. ``predicted``: the geometry model's camera
            head (trained on the recorded cameras, in their world frame).
        voxel_features: the ``voxel`` tokens carry the aggregator's patch features. False: only
            their position and colour, and the aggregator does not run at all unless predicted
            depth or cameras or ``geometry_loss_weight`` need it (the lifted sensor alone).
        geometry_loss_weight: weight of the geometry losses (camera, depth) added to the flow
            matching loss when a batch carries depth and camera ground truth; 0 skips the heads.
        film: language modulates both ViTs (FiLM). False keeps every FiLM at its zero
            initialisation, the identity, and out of training.
        router: how the SigLIP and DINOv2 streams combine: ``moe`` (weights from the
            instruction) or ``add`` (their sum).
        use_state: give the expert a state token.
        max_state_dim / max_action_dim: padded widths of state and action (real dims lead).
        num_flow_steps: Euler steps of the flow-matching sampler at inference.
        flow_samples: flow-matching (noise, time) draws per observation in training. The
            expert runs the draws side by side against one prefix pass, so a few draws cost
            little and give the expert several targets per (expensive) observation.
        tokenizer_max_length: instruction tokens (``<bos>`` included) the policy reads, right-padded.
            64 holds every built-in task's instruction (at most 49 byte tokens, PushT's) and
            every MetaWorld task description (at most 58: "Grasp the puck from one bin and place
            it into another bin"). Checkpoints store their own value.
        instruction_truncation: what a longer instruction does: ``error`` (a ValueError naming it,
            its token count and this limit) or ``warn`` (a warning, then its first
            ``tokenizer_max_length`` tokens are read). A cut instruction can lose the words that
            tell tasks apart ("... of the red cube" and "... of the blue cube" cut alike), so
            the default fails loudly, in training as in acting. The preprocessor saves it;
            processors saved before the option existed warn (they were trained on the cut text).
        tokenizer: file-free tokenizer of an LLM built from scratch: ``byte`` (UTF-8 bytes) or
            ``word`` (hashed words: one token per word, which a small LLM trained from scratch
            grounds faster); ignored with ``llm_path``.
        llm_path: local directory of a pretrained HF decoder + tokenizer; None builds the
            preset's LLM from scratch with the file-free ``tokenizer``.
        siglip_weights, dinov2_weights: local checkpoint files of the two ViTs (timm's key
            format, or one timm's filters convert: original DINOv2, open_clip SigLIP), read when
            the policy is first built.
        vggt_weights: a local VGGT checkpoint (``.pt`` or ``.safetensors``) for the geometry
            aggregator and its camera and depth heads (the point and track heads, which the
            policy does not build, are skipped), read when the policy is first built. VGGT-1B
            fits the ``full`` preset. A saved policy carries all of these in its own weights and
            is saved with these fields empty, so loading it needs none of the files.
        prefix_causal: causal attention inside the prefix (keeps the LLM's language path).
        allow_missing_cameras: ``predict_action`` masks an absent camera instead of failing.
        freeze: parameter groups kept frozen in training: ``none``, ``vision`` (both ViTs),
            ``llm`` (the language model), ``vision_and_llm``.
        lora_rank: peft LoRA rank on the LLM and expert layers (0: full fine-tuning).
        rtc_config: real-time chunking (LeRobot's ``RTCConfig``). When set and enabled,
            ``predict_action_chunk(batch, inference_delay=d, prev_chunk_left_over=...)`` guides
            the new chunk's first ``d`` actions onto the actions still in flight and blends the
            next ones (``lerobot-rollout --inference.type=rtc`` sets it).
    """

    preset: str = "tiny"
    n_obs_steps: int = 2
    chunk_size: int = 10
    n_action_steps: int = 5
    image_size: int | None = None
    patch_size: int | None = None
    use_geometry: bool = True
    spatial_tokens: str = "patch"
    spatial_pool: int = 2
    voxel_target: int = 256
    voxel_workspace: tuple[float, float, float, float, float, float] = (-0.3, -0.3, -0.02, 0.3, 0.3, 0.3)
    voxel_origin: str | None = None
    depth_source: str = "sensor"
    camera_source: str = "given"
    voxel_features: bool = True
    geometry_loss_weight: float = 0.1
    film: bool = True
    router: str = "moe"
    use_state: bool = True
    max_state_dim: int = 8
    max_action_dim: int = 8
    num_flow_steps: int = 10
    flow_samples: int = 1
    tokenizer_max_length: int = 64
    instruction_truncation: str = "error"
    tokenizer: str = "byte"
    llm_path: str | None = None
    siglip_weights: str | None = None
    dinov2_weights: str | None = None
    vggt_weights: str | None = None
    prefix_causal: bool = True
    allow_missing_cameras: bool = False
    freeze: str = "none"
    lora_rank: int = 0
    rtc_config: RTCConfig | None = None

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    optimizer_lr: float = 3e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 0.01
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_steps: int = 100
    scheduler_decay_steps: int = 10_000
    scheduler_decay_lr: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.image_size is None:
            self.image_size = 64 if self.preset == "tiny" else 224
        positive = ("n_obs_steps", "chunk_size", "n_action_steps", "image_size", "spatial_pool", "voxel_target",
                    "max_state_dim", "max_action_dim", "num_flow_steps", "flow_samples",
                    "tokenizer_max_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patch_size is not None and (self.patch_size < 1 or self.image_size % self.patch_size):
            raise ValueError(f"patch_size must divide image_size ({self.image_size}), got {self.patch_size}")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps ({self.n_action_steps}) cannot exceed chunk_size ({self.chunk_size})")
        if self.geometry_loss_weight < 0 or self.lora_rank < 0:
            raise ValueError("geometry_loss_weight and lora_rank must be >= 0")
        if self.spatial_tokens not in SPATIAL_TOKENS:
            raise ValueError(f"spatial_tokens must be one of {SPATIAL_TOKENS}, got {self.spatial_tokens!r}")
        if self.spatial_tokens == "voxel" and not self.use_geometry:
            raise ValueError("spatial_tokens='voxel' needs use_geometry=True (voxel features come from the aggregator)")
        if self.voxel_origin is not None and self.spatial_tokens != "voxel":
            raise ValueError(f"voxel_origin={self.voxel_origin!r} needs spatial_tokens='voxel'")
        for name, choices in (("depth_source", DEPTH_SOURCES), ("camera_source", CAMERA_SOURCES)):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
            if value == "predicted" and self.spatial_tokens != "voxel":
                raise ValueError(f"{name}='predicted' feeds the voxel tokens; it needs spatial_tokens='voxel'")
        if not self.voxel_features and self.spatial_tokens != "voxel":
            raise ValueError("voxel_features=False describes voxel tokens; it needs spatial_tokens='voxel'")
        if self.router not in ROUTER_MODES:
            raise ValueError(f"router must be one of {ROUTER_MODES}, got {self.router!r}")
        if self.vggt_weights is not None and not self.runs_aggregator:
            raise ValueError(f"vggt_weights={self.vggt_weights!r} given, but this configuration builds no "
                             "geometry model (use_geometry=False, or voxel tokens without its features or loss)")
        self.voxel_workspace = workspace_box(self.voxel_workspace, "voxel_workspace")
        if self.instruction_truncation not in INSTRUCTION_TRUNCATION:
            raise ValueError(
                f"instruction_truncation must be one of {INSTRUCTION_TRUNCATION}, got {self.instruction_truncation!r}"
            )
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.freeze not in FREEZE_OPTIONS:
            raise ValueError(f"freeze must be one of {FREEZE_OPTIONS}, got {self.freeze!r}")

    def _save_pretrained(self, save_directory: Path) -> None:
        """Saved with the weight files left out: the saved weights hold what they gave, and the
        machine that loads the policy need not have them."""
        if any(getattr(self, name) is not None for name in WEIGHT_FILES):
            replace(self, **dict.fromkeys(WEIGHT_FILES))._save_pretrained(save_directory)
        else:
            super()._save_pretrained(save_directory)

    # ---------------------------------------------------------------- LeRobot hooks
    @property
    def observation_delta_indices(self) -> list[int] | None:
        # One frame: None, so LeRobot's loader reads each sample's row once instead of querying
        # every observation key apart (about 5x faster with depth and cameras of 4 views).
        return list(range(1 - self.n_obs_steps, 1)) if self.n_obs_steps > 1 else None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            betas=self.optimizer_betas,
            eps=self.optimizer_eps,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            peak_lr=self.optimizer_lr,
            decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
        )

    def validate_features(self) -> None:
        """Keep cameras, the state and the action as model features.

        Depth and camera parameters (``observation.depth.*``, ``.intrinsics.*``, ``.extrinsics.*``)
        are dropped from ``input_features`` so that they are never normalised: they are
        supervision of the geometry heads, and with ``spatial_tokens="voxel"`` an input that
        the policy checks for itself (``scene_fields``).
        """
        self.input_features = {
            key: ft for key, ft in self.input_features.items() if not key.startswith(GEOMETRY_KEY_PREFIXES)
        }
        if not self.image_features:
            raise ValueError("geovla needs at least one camera feature (observation.images.<camera>)")
        if ACTION not in self.output_features:
            raise ValueError(f"geovla needs an {ACTION!r} output feature, got {list(self.output_features)}")
        action_dim = self.output_features[ACTION].shape[0]
        if action_dim > self.max_action_dim:
            raise ValueError(f"action has {action_dim} dims but max_action_dim is {self.max_action_dim}")
        state = self.input_features.get(OBS_STATE)
        if self.use_state:
            if state is None:
                raise ValueError(f"use_state=True needs an {OBS_STATE!r} input feature")
            if state.shape[0] > self.max_state_dim:
                raise ValueError(f"state has {state.shape[0]} dims but max_state_dim is {self.max_state_dim}")
        for key, ft in self.image_features.items():
            if ft.type is not FeatureType.VISUAL or len(ft.shape) != 3 or ft.shape[0] != 3:
                raise ValueError(f"camera feature {key!r} must be VISUAL with shape (3, H, W), got {ft.shape}")
        if self.voxel_origin is not None:
            self._camera_index(self.voxel_origin)

    @property
    def voxel_origin_index(self) -> int | None:
        """Index in :attr:`camera_keys` of the ``voxel_origin`` camera (None: world positions)."""
        return None if self.voxel_origin is None else self._camera_index(self.voxel_origin)

    def _camera_index(self, camera: str) -> int:
        names = [key.removeprefix(f"{OBS_IMAGES}.") for key in self.camera_keys]
        name = camera.removeprefix(f"{OBS_IMAGES}.")
        if name not in names:
            raise ValueError(f"voxel_origin {camera!r} is not one of the cameras {names}")
        return names.index(name)

    @property
    def runs_aggregator(self) -> bool:
        """Whether the geometry model is built and run: for its tokens' features, for predicted
        depth or cameras, or for the geometry loss."""
        if not self.use_geometry:
            return False
        predicted = "predicted" in (self.depth_source, self.camera_source)
        return (self.spatial_tokens == "patch" or self.voxel_features or predicted
                or self.geometry_loss_weight > 0)

    @property
    def scene_fields(self) -> tuple[str, ...]:
        """The per-camera fields besides the image an observation must carry (``depth``,
        ``intrinsics``, ``extrinsics``): those the voxel tokens take from the observation rather
        than from the geometry heads. Empty: plain RGB cameras suffice."""
        if not (self.use_geometry and self.spatial_tokens == "voxel"):
            return ()
        fields = ("depth",) if self.depth_source == "sensor" else ()
        return fields + (("intrinsics", "extrinsics") if self.camera_source == "given" else ())

    @property
    def camera_keys(self) -> list[str]:
        return list(self.image_features)

    @property
    def action_dim(self) -> int:
        return self.output_features[ACTION].shape[0]

    @property
    def state_dim(self) -> int | None:
        state: PolicyFeature | None = self.input_features.get(OBS_STATE)
        return state.shape[0] if state is not None and self.use_state else None
