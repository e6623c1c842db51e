"""The network behind the policy: geometry aggregator + FiLM backbone + deep-fusion LLM/expert.

Everything here works on normalised tensors; LeRobot conventions live in ``modeling_geovla``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from geometry.aggregator import AggregatorOutput
from geometry.losses import geometry_loss
from geometry.model import GeometryModel
from geometry.pretrained import load_vggt_weights
from geometry.pose import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from policies.configuration_geovla import WEIGHT_FILES, GeoVLAConfig
from policies.presets import sub_configs
from policies.spatial_tokens import SpatialTokens
from policies.voxel_tokens import VoxelSpatialTokens
from vla.action_model import DeepFusionActionModel
from vla.backbone.backbone import FiLMDualBackbone
from vla.backbone.language import mean_instruction_embedding
from vla.checks import check_finite, check_instruction_mask, check_token_ids
from vla.flow_matching import Guide
from vla.prefix import Prefix

MAX_VALID_DEPTH = 5.0  # metres; farther pixels (background) carry no depth supervision


def inductor_options(device: torch.device, cpp_wrapper: bool | None = None) -> dict[str, object]:
    """Inductor options of a compiled sampling on ``device``: the C++ wrapper (None: on a CPU
    only) and, on a CPU, kernels built for the current ``torch.get_num_threads()``.

    Inductor writes the thread count into each CPU kernel's OpenMP pragma but leaves it out of its
    cache key, so without the explicit count a graph compiled once under 1 thread runs its kernels
    on 1 thread under any count after a cache hit (and one compiled under 2 oversubscribes a
    1-thread process).
    """
    on_cpu = device.type == "cpu"
    options: dict[str, object] = {"cpp_wrapper": on_cpu if cpp_wrapper is None else cpp_wrapper}
    if on_cpu:
        options["cpp.threads"] = torch.get_num_threads()
    return options


class GeoVLAModel(nn.Module):
    """Camera history + instruction + state → action chunk (flow matching).

    Inputs (normalised): ``images [B, T, V, 3, H, W]`` in [0, 1] (the backbone reads the last
    time step), ``camera_mask [B, V]`` bool, ``instruction_ids`` / ``instruction_mask`` ``[B, L]``,
    ``state [B, Ds]``, ``actions [B, H, A]``; with voxel spatial tokens also ``scene``, the last
    time step's ``{"depth": [B, V, H, W], "intrinsics": [B, V, 3, 3], "extrinsics": [B, V, 3, 4]}``.
    """

    def __init__(self, config: GeoVLAConfig) -> None:
        super().__init__()
        self.config = config
        for name in WEIGHT_FILES:
            path = getattr(config, name)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{name}: no file {path!r} (weights load from local files only)")
        subs = sub_configs(config)
        self.action_model = DeepFusionActionModel(subs.fusion)
        llm_dim = self.action_model.llm_width
        self.backbone = FiLMDualBackbone(replace(subs.backbone, llm_dim=llm_dim))
        self.geometry = GeometryModel(subs.geometry) if subs.geometry is not None else None
        if config.vggt_weights is not None:
            load_vggt_weights(self.geometry, config.vggt_weights, skip_heads=("point_head", "track_head"))
        self.spatial = self.voxels = None
        if config.use_geometry and config.spatial_tokens == "voxel":
            predicted = "predicted" in (config.depth_source, config.camera_source)
            feature_dim = 2 * subs.geometry.embed_dim if config.voxel_features else None
            self.voxels = VoxelSpatialTokens(feature_dim, llm_dim, config.voxel_target,
                                             config.voxel_workspace, origin_camera=config.voxel_origin_index,
                                             allow_empty=predicted)
        elif self.geometry is not None:
            self.spatial = SpatialTokens(2 * subs.geometry.embed_dim, llm_dim, config.spatial_pool)
        self.num_visual_tokens = len(config.camera_keys) * subs.backbone.num_agg_tokens
        self._compiled_sample = None
        self._graph_outputs_recycled = False  # CUDA graphs: a replay overwrites the last one's outputs

    @property
    def tokenizer(self):
        return self.action_model.tokenizer

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (``model.to(torch.bfloat16)`` for bfloat16 inference); float inputs are
        cast to it, while depth, cameras and the flow integration stay in float32."""
        return self.action_model.action_in_proj.weight.dtype

    def embed_prefix(
        self, images: Tensor, camera_mask: Tensor, instruction_ids: Tensor, instruction_mask: Tensor,
        scene: dict[str, Tensor] | None = None, with_heads: bool = False,
    ) -> tuple[Prefix, object | None, dict[str, Tensor] | None]:
        """The LLM prefix ``[visual | spatial | instruction]``, the aggregator output (or None) and,
        ``with_heads``, the geometry heads' predictions on every frame (else None)."""
        B, T, V = images.shape[:3]
        images = images.to(self.dtype)
        embeddings = self.action_model.fusion.llm.get_input_embeddings()
        language = mean_instruction_embedding(embeddings(instruction_ids), instruction_mask)
        current = images[:, -1]  # [B, V, 3, H, W]
        visual = self.backbone.forward_streams(current, current, language, camera_mask)

        spatial = spatial_mask = agg = heads = None
        if self.geometry is not None:
            agg = self.geometry.aggregator(self._geometry_images(images, camera_mask))
            heads = self.geometry.heads(agg, static_cameras=False) if with_heads else None
        if self.voxels is not None:
            scene = self.complete_scene(agg, scene, heads, tuple(images.shape[-2:]))
            spatial, spatial_mask = self.voxels(agg if self.config.voxel_features else None, current,
                                                scene["depth"], scene["intrinsics"], scene["extrinsics"], camera_mask)
        elif self.spatial is not None:
            spatial, spatial_mask = self.spatial(agg, camera_mask)

        # [<image> x visual | <spatial> x spatial | instruction]: the placeholders are explicit, so
        # nothing has to look for them (which a compiled call could not do).
        placeholders = [(self.action_model.image_token_id, self.num_visual_tokens)]
        if spatial is not None:
            placeholders.append((self.action_model.spatial_token_id, spatial.shape[1]))
        slots = torch.cat([torch.full((B, count), token, dtype=instruction_ids.dtype, device=instruction_ids.device)
                           for token, count in placeholders], dim=1)
        input_ids = torch.cat([slots, instruction_ids], dim=1)
        attention = torch.cat([torch.ones_like(slots, dtype=torch.bool), instruction_mask.bool()], dim=1)
        prefix = self.action_model.embed_prefix(
            input_ids, attention, visual.tokens, visual.token_mask, spatial, spatial_mask
        )
        return prefix, agg, heads

    def complete_scene(self, agg: AggregatorOutput | None, scene: dict[str, Tensor] | None,
                       heads: dict[str, Tensor] | None, image_hw: tuple[int, int]) -> dict[str, Tensor]:
        """The current frame's depth ``[B, V, H, W]``, intrinsics ``[B, V, 3, 3]`` and extrinsics
        ``[B, V, 3, 4]`` for the voxel tokens: the observation's ``scene`` where the config takes
        them from it, else the geometry heads' (``heads`` when they were run, detached: the
        voxels read the geometry, the flow loss does not train it)."""
        scene = dict(scene or {})
        if self.config.depth_source == "predicted":
            depth = heads["depth"] if heads is not None else self.geometry.predict_depth(agg)[0]
            scene["depth"] = depth[:, -1].detach().float()
        if self.config.camera_source == "predicted":
            poses = heads["pose_enc"] if heads is not None else self.geometry.predict_cameras(agg)[-1]
            scene["extrinsics"], scene["intrinsics"] = pose_encoding_to_extri_intri(poses[:, -1].detach().float(),
                                                                                   image_hw)
        missing = [name for name in ("depth", "intrinsics", "extrinsics") if name not in scene]
        if missing:
            raise ValueError(f"voxel spatial tokens need the current frame's {missing} (config.scene_fields)")
        return scene

    def compute_loss(
        self,
        images: Tensor,
        camera_mask: Tensor,
        instruction_ids: Tensor,
        instruction_mask: Tensor,
        state: Tensor | None,
        actions: Tensor,
        action_is_pad: Tensor | None = None,
        geometry_targets: dict[str, Tensor] | None = None,
        scene: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss", "flow_matching_loss"[, "geometry_loss", "geometry_<term>"...]}``."""
        weight = self.config.geometry_loss_weight
        supervised = self.geometry is not None and geometry_targets is not None and weight > 0
        prefix, _, predictions = self.embed_prefix(images, camera_mask, instruction_ids, instruction_mask, scene,
                                                   with_heads=supervised)
        losses = self.action_model.compute_loss(prefix, actions, state, action_is_pad)
        losses.pop("loss_per_sample")
        if supervised:
            terms = geometry_loss(predictions, geometry_targets, images, self.geometry.config.patch_size,
                                  log_depth=True)
            losses["geometry_loss"] = terms.pop("total")
            losses["loss"] = losses["loss"] + weight * losses["geometry_loss"]
            losses.update({f"geometry_{name}": value.detach() for name, value in terms.items()})
        return losses

    def _geometry_images(self, images: Tensor, camera_mask: Tensor) -> Tensor:
        """What the aggregator reads: the history in the weights' dtype, missing cameras zeroed."""
        present = camera_mask[:, None, :, None, None, None]
        return torch.where(present, images.to(self.dtype), 0.0)

    def compile_sampling(self, backend: str = "inductor", mode: str | None = None,
                         cpp_wrapper: bool | None = None) -> None:
        """``torch.compile`` all of ``sample_actions`` (geometry, backbone, prefix pass and the
        unrolled flow loop) as one graph; names and ``state_dict`` keys stay as they are.

        One graph lets inductor fuse across module borders and leaves no eager ops between graphs.
        The modules' checks that read tensor values (finite inputs, token ids in the vocabulary,
        placeholder counts) would split it, so they are skipped while compiling; a compiled
        ``sample_actions`` checks its own inputs' values first, eagerly, and fills the caches the
        graph reads (the aggregator's history plan and RoPE tables, the fused expert weights).

        ``backend``/``mode`` go to ``torch.compile`` (``mode="reduce-overhead"``: CUDA graphs on a
        GPU). A CUDA graph's replay overwrites the outputs of the one before, so under CUDA graphs
        the returned chunk and the history the aggregator keeps are copied out after each call.
        ``cpp_wrapper`` (inductor only) calls the kernels from generated C++ rather
        than Python, which removes most of the per-kernel overhead on a CPU; None turns it on for
        CPU weights. CPU kernels are built for the torch thread count at this call
        (``inductor_options``). Shapes are static: a new camera count, history or instruction
        length, or batch size recompiles; a sliding history compiles two variants (with and
        without the reuse of the shared frames' patch features).
        """
        device = self.action_model.action_in_proj.weight.device
        if backend == "inductor":  # the mode as its options (torch.compile takes one or the other)
            options = {**torch._inductor.list_mode_options(mode or "default"), **inductor_options(device, cpp_wrapper)}
            self._compiled_sample = torch.compile(self._sample, backend=backend, options=options, dynamic=False)
            self._graph_outputs_recycled = device.type == "cuda" and bool(options.get("triton.cudagraphs"))
        elif cpp_wrapper:
            raise ValueError(f"cpp_wrapper needs the inductor backend, got {backend=}")
        else:
            self._compiled_sample = torch.compile(self._sample, backend=backend, mode=mode, dynamic=False)
            self._graph_outputs_recycled = device.type == "cuda" and backend == "cudagraphs"

    @torch.no_grad()
    def sample_actions(
        self,
        images: Tensor,
        camera_mask: Tensor,
        instruction_ids: Tensor,
        instruction_mask: Tensor,
        state: Tensor | None,
        noise: Tensor | None = None,
        num_steps: int | None = None,
        scene: dict[str, Tensor] | None = None,
        guide: Guide | None = None,
    ) -> Tensor:
        """Action chunk ``[B, H, A]`` (normalised) by cached Euler integration from noise.

        ``guide`` replaces each flow step's velocity (real-time chunking); a guided call runs
        eagerly, also after :meth:`compile_sampling`."""
        if self._compiled_sample is None or guide is not None:
            return self._sample(images, camera_mask, instruction_ids, instruction_mask, state, noise, num_steps, scene,
                                guide)
        self._check_values(images, instruction_ids, instruction_mask, state, noise)
        self._fill_caches(images, camera_mask)
        actions = self._compiled_sample(images, camera_mask, instruction_ids, instruction_mask, state, noise,
                                        num_steps, scene)
        if not self._graph_outputs_recycled:
            return actions
        if self.geometry is not None:
            self.geometry.aggregator.finish_graph_call()
        return actions.clone()

    def _check_values(self, images: Tensor, instruction_ids: Tensor, instruction_mask: Tensor,
                      state: Tensor | None, noise: Tensor | None) -> None:
        """The value checks that the modules skip inside a compiled call (``vla.checks``)."""
        for name, tensor in (("images", images), ("state", state), ("noise", noise)):
            check_finite(name, tensor)
        vocab = self.action_model.fusion.llm.get_input_embeddings().num_embeddings
        check_token_ids("instruction_ids", instruction_ids, vocab)
        check_instruction_mask("instruction_mask", instruction_mask)

    def _fill_caches(self, images: Tensor, camera_mask: Tensor) -> None:
        """Fill, eagerly, the Python-side caches that a compiled call only reads: one filled inside
        the graph would make the next call, which finds it filled, compile a new graph."""
        if self.geometry is not None:
            self.geometry.aggregator.prepare_compiled_call(self._geometry_images(images, camera_mask))
        fusion = self.action_model.fusion
        if fusion.fuses_expert_weights(images.device):
            fusion.fused_expert_weights()

    def _sample(self, images: Tensor, camera_mask: Tensor, instruction_ids: Tensor, instruction_mask: Tensor,
                state: Tensor | None, noise: Tensor | None, num_steps: int | None,
                scene: dict[str, Tensor] | None, guide: Guide | None = None) -> Tensor:
        prefix, _, _ = self.embed_prefix(images, camera_mask, instruction_ids, instruction_mask, scene)
        return self.action_model.sample_actions(
            prefix, state, num_steps=num_steps or self.config.num_flow_steps, noise=noise,
            action_dim=self.config.action_dim, guide=guide,
        )


def geometry_targets(depth: Tensor, intrinsics: Tensor, extrinsics: Tensor) -> dict[str, Tensor]:
    """Ground truth for the geometry heads from ``depth [B, T, V, H, W]``, ``intrinsics
    [B, T, V, 3, 3]`` and ``extrinsics [B, T, V, 3, 4]`` (OpenCV camera-from-world)."""
    H, W = depth.shape[-2:]
    return {
        "pose_enc": extri_intri_to_pose_encoding(extrinsics, intrinsics, (H, W)),
        "depth": depth,
        "valid": (depth > 0) & (depth < MAX_VALID_DEPTH),
        "intrinsics": intrinsics,
        "extrinsics": extrinsics,
    }
