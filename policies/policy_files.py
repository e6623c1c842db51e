"""The files of a saved policy: what a policy directory holds, and its processors' loading."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from lerobot.processor import PolicyProcessorPipeline
from lerobot.processor.converters import (
    batch_to_transition,
    policy_action_to_transition,
    transition_to_batch,
    transition_to_policy_action,
)
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from policies.processor_geovla import GeoVLATokenizerStep  # noqa: F401  (registers the step load_processors needs)


POLICY_FILES = ("config.json", SAFETENSORS_SINGLE_FILE)
PROCESSOR_FILES = (f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json", f"{POLICY_POSTPROCESSOR_DEFAULT_NAME}.json")
DIRECTORY_LAYOUT = (
    "A policy directory (policy.save_pretrained(dir), or checkpoints/<step>/pretrained_model of a training "
    f"run) holds {', '.join(POLICY_FILES)} and, for predict_action, {', '.join(PROCESSOR_FILES)} and the "
    "normaliser state files (*.safetensors) they name"
)


def is_local(name: str | Path) -> bool:
    """Whether ``name`` means a local directory: a Path, an existing path, or a str that cannot be a
    Hub repo id (``namespace/name``)."""
    if isinstance(name, Path) or Path(name).exists():
        return True
    try:
        validate_repo_id(str(name))
    except HFValidationError:
        return True
    return False


def check_policy_directory(directory: str | Path) -> None:
    """FileNotFoundError naming what ``directory`` lacks of a saved policy: the config and weights,
    and, when it holds processors, both pipelines and every state file they name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"policy directory {str(directory)!r} does not exist or is not a directory. "
                                f"{DIRECTORY_LAYOUT}")
    missing = [name for name in POLICY_FILES if not (directory / name).is_file()]
    pipelines = [name for name in PROCESSOR_FILES if (directory / name).is_file()]
    if pipelines:
        missing += [name for name in PROCESSOR_FILES if name not in pipelines]
        missing += [name for name in _processor_state_files(directory, pipelines) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"policy directory {str(directory)!r} lacks {missing}. {DIRECTORY_LAYOUT}")


def _processor_state_files(directory: Path, pipelines: list[str]) -> list[str]:
    """The state files (normaliser stats) that the pipeline configs ``pipelines`` name."""
    configs = [json.loads((directory / pipeline).read_text()) for pipeline in pipelines]
    return [step["state_file"] for config in configs for step in config.get("steps", []) if step.get("state_file")]


def load_processors(
    directory: str | Path, device: str | None = None
) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    """The pre/post processors saved next to a policy; ``device`` replaces the device the
    preprocessor moved batches to when it was saved (a policy trained on a GPU, run on a CPU)."""
    directory = str(directory)
    overrides = {"device_processor": {"device": str(device)}} if device else {}
    pre = PolicyProcessorPipeline.from_pretrained(
        directory, config_filename=f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json", overrides=overrides,
        to_transition=batch_to_transition, to_output=transition_to_batch,
    )
    post = PolicyProcessorPipeline.from_pretrained(
        directory, config_filename=f"{POLICY_POSTPROCESSOR_DEFAULT_NAME}.json",
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action,
    )
    return pre, post
