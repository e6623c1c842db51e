"""Learned scalars kept as one-element vectors."""

from __future__ import annotations

from typing import Any

from torch import nn


def load_scalars_saved_0d(module: nn.Module, *names: str) -> None:
    """Let ``module`` load checkpoints that stored its ``[1]`` parameters ``names`` as 0-d tensors.

    Learned scalars are ``[1]`` tensors (they broadcast like scalars) because FSDP refuses 0-d
    parameters; checkpoints written before stored them 0-d.
    """

    def reshape_0d(owner: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in names:
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == 0:
                state_dict[prefix + name] = value.reshape(1)

    module.register_load_state_dict_pre_hook(reshape_0d)
