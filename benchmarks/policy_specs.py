"""How each policy of the benchmark is built: LeRobot 0.6.1's classes, unmodified, configured from
``lerobot-train`` arguments at widths comparable to geovla ``tiny``, with random initial weights.

Every policy sees the same dataset (all cameras, ``image_size`` px), predicts chunks of 10 actions
and executes 5 before predicting again (Diffusion Policy: a 16-step horizon, as its U-Net needs,
also executing 5), and is trained from scratch:

- ACT: a 128-wide transformer (4 encoder layers, 1 decoder layer as in LeRobot, 4 heads), a
  ResNet-18 without pretrained weights; learning rate 1e-4 for all weights (LeRobot's 1e-5 is
  for fine-tuning an ImageNet backbone). It cannot read the instruction.
- Diffusion Policy: a ResNet-18 without pretrained weights (group norm, as LeRobot requires
  then) shared by the cameras, a U-Net of widths 64-128-256, DDIM with 10 inference steps (the
  flow policies use 10 Euler steps). It cannot read the instruction.
- SmolVLA: on a local SmolVLM as wide and deep as geovla tiny's LLM and SigLIP
  (``benchmarks.language``), all 4 layers used, a 64-wide expert, everything trained (its
  defaults freeze the VLM, meant to be pretrained).
- pi0: PaliGemma's Gemma 128 wide, the expert 64 wide, 4 layers, SigLIP 96 wide
  (``benchmarks.pi0_sizes``), trained and evaluated through ``benchmarks.lerobot_runner``;
  learning rate 1e-4 (LeRobot's 2.5e-5 is openpi's fine-tuning rate). Its parameter count is
  dominated by PaliGemma's fixed 257k-word vocabulary tables, of which the instructions use ~20 rows.
- geovla ``tiny``: the suite's geovla settings (for ``builtin`` the demo's,
  ``configs/demo_reach_tiny.yaml``) as ``--policy.*`` overrides.

The geovla ablations (``ABLATIONS``, run when named with ``--policies``) change one thing each
against geovla ``tiny``: no geometry at all (backbone tokens only), the aggregator's patch
tokens instead of voxel tokens, voxel tokens of the sensor alone (position and colour, no
aggregator), voxel tokens lifted with the depth the geometry model predicts from RGB (its depth
head trained by the geometry loss; evaluated without any depth input), FiLM off, and the
stream router's ``add`` instead of ``moe``, a history of two frames for the aggregator
(``intercept``, whose objects move, needs it), and the geometry losses on the recorded depth and
cameras added to the flow loss (so that the aggregator learns geometry, which its voxel features
then carry).

SmolVLA and pi0 read the instruction through a word-level tokenizer of the suite's words
(``benchmarks.language``); geovla through its own hashed-word tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.pi0_sizes import PALIGEMMA_TOKENIZER
from benchmarks.suites import Suite

CHUNK_SIZE = 10
EXECUTED_STEPS = 5


@dataclass(frozen=True)
class BuildContext:
    """What a policy's arguments depend on: the suite, the image size and the local VLM directory."""

    suite: Suite
    image_size: int
    vlm_dir: Path


@dataclass(frozen=True)
class PolicySpec:
    """One benchmarked policy.

    Args:
        name: cell name (``--policies``).
        label: name in the table and the plot.
        reads_instruction: whether the policy gets the instruction at all.
        reads_geometry: whether it reads depth and camera parameters (then it is trained on the
            dataset with them and evaluated with them; the others get the same demonstrations
            without them, see ``benchmarks.datasets``).
        eval_geometry: whether its evaluation gives depth and cameras (None: ``reads_geometry``;
            False for a policy trained on them that acts on RGB alone).
        policy_args: its ``--policy.*`` arguments for ``lerobot-train``.
        runner_args: options of ``benchmarks.lerobot_runner`` for a policy that LeRobot's commands
            cannot build as they are (None: run ``lerobot-train`` and ``lerobot-eval`` themselves).
        requires: (module, how to install it) pairs the policy needs beyond the project's install.
    """

    name: str
    label: str
    reads_instruction: bool
    reads_geometry: bool
    policy_args: Callable[[BuildContext], list[str]]
    runner_args: Callable[[BuildContext], list[str]] | None = None
    requires: tuple[tuple[str, str], ...] = ()
    eval_geometry: bool | None = None

    @property
    def evaluates_with_geometry(self) -> bool:
        return self.reads_geometry if self.eval_geometry is None else self.eval_geometry


def _chunking(executed_key: str = "n_action_steps") -> list[str]:
    return [f"--policy.chunk_size={CHUNK_SIZE}", f"--policy.{executed_key}={EXECUTED_STEPS}"]


def _act(ctx: BuildContext) -> list[str]:
    return ["--policy.type=act", "--policy.pretrained_backbone_weights=null", "--policy.dim_model=128",
            "--policy.n_heads=4", "--policy.dim_feedforward=256", "--policy.n_encoder_layers=4",
            "--policy.n_decoder_layers=1", "--policy.latent_dim=32", *_chunking(),
            "--policy.optimizer_lr=1e-4", "--policy.optimizer_lr_backbone=1e-4"]


def _diffusion(ctx: BuildContext) -> list[str]:
    return ["--policy.type=diffusion", "--policy.pretrained_backbone_weights=null", "--policy.use_group_norm=true",
            "--policy.use_separate_rgb_encoder_per_camera=false", "--policy.down_dims=[64,128,256]",
            "--policy.horizon=16", f"--policy.n_action_steps={EXECUTED_STEPS}",
            "--policy.noise_scheduler_type=DDIM", "--policy.num_inference_steps=10"]


def _smolvla(ctx: BuildContext) -> list[str]:
    size = ctx.image_size
    return ["--policy.type=smolvla", f"--policy.vlm_model_name={ctx.vlm_dir}", "--policy.load_vlm_weights=false",
            f"--policy.resize_imgs_with_padding=[{size},{size}]", "--policy.num_vlm_layers=4",
            "--policy.expert_width_multiplier=0.5", "--policy.freeze_vision_encoder=false",
            "--policy.train_expert_only=false", *_chunking()]


def _pi0(ctx: BuildContext) -> list[str]:
    size = ctx.image_size
    return ["--policy.type=pi0", f"--policy.image_resolution=[{size},{size}]", "--policy.dtype=float32",
            *_chunking(), "--policy.optimizer_lr=1e-4"]


def _pi0_runner(ctx: BuildContext) -> list[str]:
    return ["--pi0-sizes", "tiny", "--tokenizer", f"{PALIGEMMA_TOKENIZER}={ctx.vlm_dir}"]


def cli_value(value: Any) -> str:
    """A YAML value as LeRobot's command line parses it: lists ``[a,b]``, mappings as JSON."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(cli_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _geovla(ctx: BuildContext, **changes: Any) -> list[str]:
    from policies.train_config import read_yaml

    settings = dict(read_yaml(ctx.suite.geovla_config.read_text())["policy"])
    settings.update(changes, image_size=ctx.image_size)
    return ["--policy.type=geovla", *(f"--policy.{key}={cli_value(value)}" for key, value in settings.items())]


def _geovla_with(**changes: Any) -> Callable[[BuildContext], list[str]]:
    """geovla ``tiny`` on the suite's settings with ``changes``."""
    return lambda ctx: _geovla(ctx, **changes)


POLICIES: dict[str, PolicySpec] = {spec.name: spec for spec in (
    PolicySpec("act", "ACT", reads_instruction=False, reads_geometry=False, policy_args=_act),
    PolicySpec("diffusion", "Diffusion Policy", reads_instruction=False, reads_geometry=False,
               policy_args=_diffusion, requires=(("diffusers", "pip install 'lerobot[diffusion]==0.6.1'"),)),
    PolicySpec("smolvla", "SmolVLA", reads_instruction=True, reads_geometry=False, policy_args=_smolvla),
    PolicySpec("pi0", "pi0", reads_instruction=True, reads_geometry=False, policy_args=_pi0,
               runner_args=_pi0_runner),
    PolicySpec("geovla", "geovla tiny", reads_instruction=True, reads_geometry=True, policy_args=_geovla),
)}
ABLATIONS: dict[str, PolicySpec] = {spec.name: spec for spec in (
    PolicySpec("geovla-no-geometry", "geovla, no geometry", reads_instruction=True, reads_geometry=False,
               policy_args=_geovla_with(use_geometry=False, spatial_tokens="patch")),
    PolicySpec("geovla-patch", "geovla, patch tokens", reads_instruction=True, reads_geometry=False,
               policy_args=_geovla_with(spatial_tokens="patch", geometry_loss_weight=0.0)),
    PolicySpec("geovla-sensor-voxels", "geovla, sensor voxels only", reads_instruction=True, reads_geometry=True,
               policy_args=_geovla_with(voxel_features=False, geometry_loss_weight=0.0)),
    PolicySpec("geovla-rgb", "geovla, predicted depth", reads_instruction=True, reads_geometry=True,
               policy_args=_geovla_with(depth_source="predicted", camera_source="predicted",
                                        geometry_loss_weight=0.1),
               eval_geometry=False),
    PolicySpec("geovla-no-film", "geovla, FiLM off", reads_instruction=True, reads_geometry=True,
               policy_args=_geovla_with(film=False)),
    PolicySpec("geovla-router-add", "geovla, router add", reads_instruction=True, reads_geometry=True,
               policy_args=_geovla_with(router="add")),
    PolicySpec("geovla-history", "geovla, 2-frame history", reads_instruction=True, reads_geometry=True,
               policy_args=_geovla_with(n_obs_steps=2)),
    PolicySpec("geovla-geometry-loss", "geovla, geometry loss", reads_instruction=True, reads_geometry=True,
               policy_args=_geovla_with(geometry_loss_weight=0.1)),
)}
SPECS: dict[str, PolicySpec] = {**POLICIES, **ABLATIONS}


def get_policies(names: list[str] | None) -> list[PolicySpec]:
    """The named policies and ablations (the five policies when ``names`` is None), in ``SPECS``
    order, each checked to have what it requires installed (before hours of other cells run)."""
    unknown = sorted(set(names or ()) - set(SPECS))
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {list(SPECS)}")
    specs = [spec for name, spec in SPECS.items() if name in (names or POLICIES)]
    missing = [f"{spec.label} needs {module} ({install})" for spec in specs for module, install in spec.requires
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ModuleNotFoundError("; ".join(missing) + " (or leave it out with --policies)")
    return specs
