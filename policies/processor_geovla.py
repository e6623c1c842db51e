"""Pre- and post-processing pipelines of the geovla policy (LeRobot processor steps)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lerobot.configs.types import NormalizationMode, PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    ObservationProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
    RenameObservationsProcessorStep,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.processor import TransitionKey
from lerobot.utils.constants import (
    OBS_LANGUAGE_ATTENTION_MASK,
    OBS_LANGUAGE_TOKENS,
    POLICY_POSTPROCESSOR_DEFAULT_NAME,
    POLICY_PREPROCESSOR_DEFAULT_NAME,
)

from policies.configuration_geovla import GEOMETRY_KEY_PREFIXES, INSTRUCTION_TRUNCATION, GeoVLAConfig
from vla.pretrained import load_tokenizer
from vla.tokenizer import make_file_free_tokenizer

# Below these spreads a feature is treated as constant: dividing by a near-zero std (or range)
# would turn simulator noise into huge normalised values at inference.
MIN_STD = 1e-2
MIN_RANGE = 2e-2


def guard_stats(stats: dict[str, dict[str, Any]] | None, keys: set[str]) -> dict[str, dict[str, Any]] | None:
    """A copy of the dataset stats of ``keys`` (the normalised features) with ``std`` and
    ``max - min`` floored at ``MIN_STD`` / ``MIN_RANGE``.

    Example: a gripper that never moved has std 0; after guarding its std is 0.01, so a reading
    0.001 off the mean normalises to 0.1, not to 1e5.
    """
    if stats is None:
        return None
    guarded: dict[str, dict[str, Any]] = {}
    for key, entry in stats.items():
        if key not in keys:
            continue
        entry = dict(entry)
        if "std" in entry:
            entry["std"] = _floor(entry["std"], MIN_STD)
        if "min" in entry and "max" in entry:
            low, high = _as_tensor(entry["min"]), _as_tensor(entry["max"])
            pad = (MIN_RANGE - (high - low)).clamp_min(0) / 2
            entry["min"], entry["max"] = low - pad, high + pad
        guarded[key] = entry
    return guarded


def _as_tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), dtype=torch.float32)


def _floor(value: Any, minimum: float) -> torch.Tensor:
    return _as_tensor(value).clamp_min(minimum)


def make_tokenizer(llm_path: str | None, kind: str = "byte"):
    """The instruction tokenizer: the pretrained LLM's (local dir) or the file-free one ``kind``
    names (``byte`` or ``word``)."""
    return load_tokenizer(llm_path) if llm_path else make_file_free_tokenizer(kind)


@ProcessorStepRegistry.register(name="geovla_tokenizer")
@dataclass
class GeoVLATokenizerStep(ObservationProcessorStep):
    """Tokenise ``complementary_data["task"]`` (str or list of str, "" for envs without an
    instruction) into right-padded ``observation.language.tokens`` ``[B, max_length]`` and a
    bool attention mask.

    The text is read as plain text: ``<image>`` or ``<bos>`` typed in an instruction are its
    characters, never the special ids of the prompt. An instruction of more than ``max_length``
    tokens raises a ValueError (``truncation="error"``) or warns and keeps its first
    ``max_length`` tokens (``"warn"``, the default of processors saved before the option existed,
    which were trained on the cut text).
    """

    max_length: int = 64
    llm_path: str | None = None
    tokenizer_kind: str = "byte"
    truncation: str = "warn"
    tokenizer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.truncation not in INSTRUCTION_TRUNCATION:
            raise ValueError(f"truncation must be one of {INSTRUCTION_TRUNCATION}, got {self.truncation!r}")
        self.tokenizer = make_tokenizer(self.llm_path, self.tokenizer_kind)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        complementary = self.transition.get(TransitionKey.COMPLEMENTARY_DATA) or {}
        ids, mask = self.encode(task_texts(complementary.get("task")))
        observation = dict(observation)
        observation[OBS_LANGUAGE_TOKENS] = ids
        observation[OBS_LANGUAGE_ATTENTION_MASK] = mask
        return observation

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[B, max_length]`` and the bool mask of ``texts``, special-token strings read as
        text; an over-long text is reported (``truncation``) and cut."""
        options = {"padding": "max_length", "max_length": self.max_length, "split_special_tokens": True}
        encoded = self.tokenizer(texts, truncation=False, **options)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        if max(lengths) > self.max_length:
            self._report_truncation(texts, lengths)
            encoded = self.tokenizer(texts, truncation=True, **options)
        return torch.tensor(encoded["input_ids"]), torch.tensor(encoded["attention_mask"], dtype=torch.bool)

    def _report_truncation(self, texts: list[str], lengths: list[int]) -> None:
        """Raise or warn (``truncation``) about the texts longer than ``max_length`` tokens."""
        long = {text: length for text, length in zip(texts, lengths) if length > self.max_length}
        message = (
            f"instruction(s) longer than the policy's {self.max_length} tokens (tokenizer_max_length): "
            + "; ".join(f"{text!r} has {length} tokens" for text, length in long.items())
            + f". The policy reads only the first {self.max_length}, which can drop the words that tell tasks "
            "apart. Shorten the instruction, or train with a larger tokenizer_max_length"
        )
        if self.truncation == "error":
            raise ValueError(message + " (instruction_truncation='warn' reads the cut text instead).")
        warnings.warn(message + ".", UserWarning, stacklevel=2)

    def get_config(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "llm_path": self.llm_path, "tokenizer_kind": self.tokenizer_kind,
                "truncation": self.truncation}

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features


def task_texts(task: Any) -> list[str]:
    """The batch's ``task`` as a non-empty list of str ("" allowed: LeRobot gives it for envs without
    instructions, such as PushT; the tokenizer's ``<bos>`` then stands for the instruction)."""
    if task is None:
        raise ValueError("geovla needs the instruction under the batch key 'task' (a str or list of str)")
    texts = [task] if isinstance(task, str) else list(task) if isinstance(task, (list, tuple)) else None
    if texts is None or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"'task' must be a str or a list of str, got {type(task).__name__} {task!r}")
    if not texts:
        raise ValueError("'task' is an empty list: the batch holds no samples; give at least one")
    return texts


def make_geovla_pre_post_processors(
    config: GeoVLAConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[PolicyProcessorPipeline[dict[str, Any], dict[str, Any]], PolicyProcessorPipeline[PolicyAction, PolicyAction]]:
    """Pre: rename, batch, tokenise the task, move to the device, normalise state and action.
    Post: unnormalise the action, move it to the CPU. Stats are guarded (:func:`guard_stats`).
    Depth and camera parameters are never normalised, also when ``config`` is not yet validated."""
    inputs = {k: f for k, f in config.input_features.items() if not k.startswith(GEOMETRY_KEY_PREFIXES)}
    features = {**inputs, **config.output_features}
    stats = guard_stats(dataset_stats, set(features))
    norm_map: dict[str, NormalizationMode] = dict(config.normalization_mapping)
    preprocessor = PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](
        steps=[
            RenameObservationsProcessorStep(rename_map={}),
            AddBatchDimensionProcessorStep(),
            GeoVLATokenizerStep(
                max_length=config.tokenizer_max_length, llm_path=config.llm_path, tokenizer_kind=config.tokenizer,
                truncation=config.instruction_truncation,
            ),
            DeviceProcessorStep(device=config.device),
            NormalizerProcessorStep(features=features, norm_map=norm_map, stats=stats),
        ],
        name=POLICY_PREPROCESSOR_DEFAULT_NAME,
    )
    postprocessor = PolicyProcessorPipeline[PolicyAction, PolicyAction](
        steps=[
            UnnormalizerProcessorStep(features=config.output_features, norm_map=norm_map, stats=stats),
            DeviceProcessorStep(device="cpu"),
        ],
        name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
        to_transition=policy_action_to_transition,
        to_output=transition_to_policy_action,
    )
    return preprocessor, postprocessor
