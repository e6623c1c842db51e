"""``torch.compile`` of the hot paths of ``predict_action`` (an option; off by default on CPU).

The parts that dominate a call are compiled in place, so module names, ``state_dict`` keys and
the policy code stay as they are: the geometry aggregator, both FiLM ViT streams of the backbone
(``nn.Module.compile``), and the expert's denoising step ``DeepFusionDecoder.forward_suffix``,
which runs once per flow step. Shapes are static (``dynamic=False``): a new camera count,
history length or batch size recompiles once.
"""

from __future__ import annotations

import torch
from torch import nn


def compile_hot_paths(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> None:
    """Compile, in place, the hot paths of a ``policies.geovla_model.GeoVLAModel``-like ``model``
    (attributes ``geometry`` (or None), ``backbone`` with ``siglip``/``dinov2``, and
    ``action_model.fusion``). ``backend``/``mode`` go to ``torch.compile`` (e.g. ``mode=
    "reduce-overhead"`` for CUDA graphs on a GPU)."""
    modules = [model.backbone.siglip, model.backbone.dinov2]
    if getattr(model, "geometry", None) is not None:
        modules.append(model.geometry.aggregator)
    for module in modules:
        module.compile(backend=backend, mode=mode, dynamic=False)
    fusion = model.action_model.fusion
    fusion.forward_suffix = torch.compile(fusion.forward_suffix, backend=backend, mode=mode, dynamic=False)
