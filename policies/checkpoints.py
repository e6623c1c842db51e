"""Checkpoints of a training run: saved so that a crash at any point loses at most the steps since
the last complete one, and found again on resume.

A checkpoint is committed by its state file, written atomically after every other file of it is on
disk together with a record of their sizes (``commit_checkpoint``); ``--resume`` skips, with a
warning, a newer checkpoint that a crash or a full disk left torn (``checkpoint_problems``), and
a torn last line of ``metrics.jsonl`` (``truncate_metrics``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors import SafetensorError, safe_open

from policies.train_config import TrainConfig

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.json"
# The byte size of every other file of a checkpoint, recorded when it was saved; checkpoints saved
# before it existed are checked without sizes.
SIZES_FILE = "checkpoint_files.json"
# What resuming and ``GeoVLAPolicy.from_pretrained`` need besides ``accelerate/``'s files.
REQUIRED_FILES = ("pretrained_model/config.json", "pretrained_model/model.safetensors")

log = logging.getLogger(__name__)


def check_resumable(state: dict[str, Any], cfg: TrainConfig, num_processes: int, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint under another global batch: the data order and the noise are
    indexed by sampler batches of ``batch_size``, ``grad_accum × num_processes`` per step, so only
    a run with the same two numbers continues it exactly (whatever the split between the factors).

    Checkpoints written before these numbers were recorded are taken to match.
    """
    saved = (state.get("batch_size", cfg.batch_size), state.get("batches_per_step", cfg.grad_accum * num_processes))
    current = (cfg.batch_size, cfg.grad_accum * num_processes)
    if saved != current:
        raise ValueError(
            f"{checkpoint} was trained with batch_size={saved[0]} and grad_accum × num_processes = {saved[1]}; "
            f"this run has batch_size={current[0]} and {cfg.grad_accum} × {num_processes} = {current[1]}. Resume with "
            f"batch_size={saved[0]} and grad_accum × num_processes = {saved[1]} to continue the run exactly")


def checkpoint_directories(output_dir: Path) -> list[Path]:
    """``output_dir``'s ``checkpoints/step_N`` directories, newest (largest N) first, complete or not."""
    steps = [(int(match[1]), path) for path in (output_dir / CHECKPOINTS).glob("step_*")
             if (match := re.fullmatch(r"step_(\d+)", path.name)) and path.is_dir()]
    return [path for _, path in sorted(steps, reverse=True)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, None if there is none at all.

    A newer checkpoint that a crash or a full disk left torn (``checkpoint_problems``) is skipped
    with a warning naming what is wrong, so the run falls back to the previous complete one; its
    steps are trained again. Raises ``FileNotFoundError`` naming every checkpoint's problems when
    none is complete.
    """
    torn = []
    for directory in checkpoint_directories(output_dir):
        problems = checkpoint_problems(directory)
        if not problems:
            return directory
        log.warning("skipping the torn checkpoint %s (%s); trying an older one", directory,
                    "; ".join(problems))
        torn.append(f"{directory.name}: {'; '.join(problems)}")
    if torn:
        raise FileNotFoundError(
            f"--resume: no complete checkpoint under {output_dir / CHECKPOINTS}: {' | '.join(torn)}. Remove "
            f"{output_dir / CHECKPOINTS} to train from the start")
    return None


def checkpoint_problems(directory: Path) -> list[str]:
    """Why the checkpoint ``directory`` cannot be resumed; empty when it is complete.

    Its state file must parse and name the directory's step (``save_checkpoint`` writes it last),
    and its files must pass ``saved_files_problems``.
    """
    if problem := file_problem(directory / STATE_FILE, None):
        return [f"{STATE_FILE} {problem}"]
    state = json.loads((directory / STATE_FILE).read_bytes())
    step = int(directory.name.removeprefix("step_"))
    if not isinstance(state, dict) or state.get("step") != step:
        return [f"{STATE_FILE} does not record step {step}: {state!r}"]
    return saved_files_problems(directory)


def saved_files_problems(directory: Path) -> list[str]:
    """What is wrong with the files of the checkpoint ``directory`` besides its state file: the
    required weights and ``accelerate/``'s state must exist, and every file (those whose sizes were
    recorded, or all of them in older checkpoints) must pass ``file_problem``."""
    try:
        sizes: dict[str, int | None] | None = recorded_sizes(directory)
    except ValueError as error:
        return [str(error)]
    if sizes is None:
        sizes = dict.fromkeys(saved_files(directory))
    problems = [f"{name} is missing" for name in REQUIRED_FILES if name not in sizes]
    if not any(name.startswith("accelerate/") for name in sizes):
        problems.append("accelerate/ holds no saved training state")
    for name, size in sorted(sizes.items()):
        if problem := file_problem(directory / name, size):
            problems.append(f"{name} {problem}")
    return problems


def recorded_sizes(directory: Path) -> dict[str, int] | None:
    """The file sizes recorded in ``SIZES_FILE`` (``commit_checkpoint``), or None for a checkpoint
    saved before they were recorded."""
    path = directory / SIZES_FILE
    if not path.exists():
        return None
    if problem := file_problem(path, None):
        raise ValueError(f"{SIZES_FILE} {problem}")
    sizes = json.loads(path.read_bytes())
    if not isinstance(sizes, dict) or not all(isinstance(size, int) for size in sizes.values()):
        raise ValueError(f"{SIZES_FILE} does not map file names to sizes: {sizes!r}")
    return sizes


def saved_files(directory: Path) -> list[str]:
    """Paths, relative to the checkpoint ``directory``, of the files its save wrote besides the
    state and sizes files."""
    names = [path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file()]
    return sorted(name for name in names if name not in (STATE_FILE, SIZES_FILE))


def file_problem(path: Path, size: int | None) -> str | None:
    """What is wrong with one checkpoint file (None: nothing): missing, empty, not the ``size``
    recorded when it was saved, or not readable in its format (``check_format``)."""
    if not path.is_file():
        return "is missing"
    actual = path.stat().st_size
    if actual == 0:
        return "is empty"
    if size is not None and actual != size:
        return f"has {actual} bytes, {size} when saved"
    try:
        check_format(path)
    except (OSError, ValueError, SafetensorError, zipfile.BadZipFile) as error:
        return f"is unreadable ({error})"
    return None


def check_format(path: Path) -> None:
    """Raise if a checkpoint file cut short no longer parses. Cheap whatever the file's size: a
    safetensors header must cover the whole file, and ``torch.save``'s files (the optimiser, the
    scheduler, the RNG states) are zip archives whose index is their last bytes."""
    if path.suffix == ".safetensors":
        with safe_open(path, framework="pt") as weights:
            weights.keys()
    elif path.suffix == ".json":
        json.loads(path.read_bytes())
    elif path.suffix in (".bin", ".pkl", ".pt"):
        zipfile.ZipFile(path).close()


def resume_step(checkpoint: Path | None, cfg: TrainConfig, num_processes: int) -> int:
    """The optimiser step the run starts at: 0, or the checkpoint's once ``check_resumable`` has
    accepted it."""
    if checkpoint is None:
        return 0
    state = json.loads((checkpoint / STATE_FILE).read_bytes())
    check_resumable(state, cfg, num_processes, checkpoint)
    return state["step"]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the records a crashed run logged after its last checkpoint (they are redone), and a last
    line that the crash cut short while appending it (warned about). The file is replaced
    atomically, so a crash here loses no record; an unreadable line before the last one is no torn
    write and raises ``ValueError``."""
    if not path.exists():
        return
    lines = path.read_bytes().splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as error:
            if number < len(lines):
                raise ValueError(f"{path} line {number} is not a JSON record ({error}); only the last line "
                                 "can be torn by a crash") from error
            log.warning("dropping the torn last line of %s: %r", path, line[:100])
            continue
        if record["step"] <= last_step:
            kept.append(line.decode() + "\n")
    write_atomic(path, "".join(kept))


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole policy's weights gathered from the FSDP shards (complete on the main process), or
    None outside FSDP, where the unwrapped policy holds them all. Under FSDP this is a collective:
    every process must call it."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    return accelerator.get_state_dict(model)


def save_checkpoint(accelerator: Accelerator, model: torch.nn.Module, output: Path, state: dict[str, int]) -> Path:
    """``checkpoints/step_N/``: the accelerate state (model, optimiser, scheduler, RNGs), ``state``
    (the step and the global batch's layout, see ``check_resumable``), and a ``pretrained_model/``
    that ``GeoVLAPolicy.from_pretrained`` loads. ``model`` is the prepared (wrapped) policy; every
    process calls this.

    A torn save of the same step that a resumed run is redoing is removed first, so that none of its
    files outlives the new save. The state file commits the checkpoint once every process has
    written its files (``commit_checkpoint``).
    """
    directory = output / CHECKPOINTS / f"step_{state['step']:06d}"
    if accelerator.is_main_process and directory.exists():
        shutil.rmtree(directory)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(directory / "accelerate"))
    weights = full_state_dict(accelerator, model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(directory / "pretrained_model", state_dict=weights)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        commit_checkpoint(directory, state)
    accelerator.wait_for_everyone()
    return directory


def commit_checkpoint(directory: Path, state: dict[str, int]) -> None:
    """Make the saved files of ``directory`` durable, record their sizes (``SIZES_FILE``), then write
    the state file: a crash before the state file's atomic replace leaves a checkpoint that resuming
    skips, and one after it leaves a complete checkpoint, whatever the file system wrote out when."""
    fsync_tree(directory)
    sizes = {name: (directory / name).stat().st_size for name in saved_files(directory)}
    write_atomic(directory / SIZES_FILE, json.dumps(sizes, indent=1))
    write_atomic(directory / STATE_FILE, json.dumps(state))


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that a crash leaves either the old or the new file, never a
    torn one: write a temporary file beside it, flush it to disk, rename it over ``path``, and
    make the rename durable."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w") as file:
            file.write(text)
            flush_to_disk(file)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_path(path.parent)


def flush_to_disk(file: IO[str]) -> None:
    """Write an open file's buffered text through to the disk."""
    file.flush()
    os.fsync(file.fileno())


def fsync_tree(directory: Path) -> None:
    """Flush every file and folder under ``directory``, and its own entry in its parent, to disk."""
    for path in [*directory.rglob("*"), directory, directory.parent]:
        fsync_path(path)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
