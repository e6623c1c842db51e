"""A task's demonstrations: recorded once, shared by every policy; for a multi-task suite, the
tasks' recordings merged into one dataset.

The recording keeps the suite's geometry features (depth, camera parameters) for the policies
that read them. The other policies get the same episodes without those features, made from the
recording by LeRobot's ``remove_feature`` and checked to hold the same frames, states and
actions: LeRobot's loader queries every ``observation.*`` key of a sample for a policy with
observation time steps (Diffusion Policy, SmolVLA), and 12 unused geometry keys made its data
loading about 2 to 10 times slower.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from benchmarks.budgets import Budget
from benchmarks.suites import Suite

CHECKED_COLUMNS = ("episode_index", "frame_index", "observation.state", "action")


def record(suite: Suite, task: str, budget: Budget, folder: Path, progress: bool) -> dict[str, Any]:
    """Record ``budget.demos`` demonstrations of ``task`` to ``folder/task`` (a half-written folder
    is recorded again) and return where they are and which seeds they used, checked to miss the
    evaluation seeds."""
    root = folder / task
    shutil.rmtree(root, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    summary = suite.record(task, root, budget.demos, budget.image_size, suite.record_seed, progress)
    used = range(suite.record_seed, suite.record_seed + summary["attempts"])
    evaluated = range(suite.eval_seed, suite.eval_seed + budget.eval_episodes)
    if used.start < evaluated.stop and evaluated.start < used.stop:
        raise ValueError(f"recording seeds {used.start}-{used.stop - 1} meet evaluation seeds "
                         f"{evaluated.start}-{evaluated.stop - 1}; record fewer demonstrations")
    return {"root": str(root), "repo_id": f"local/{task}", "episodes": summary["episodes"],
            "frames": summary["frames"], "attempts": summary["attempts"],
            "recording_seeds": [used.start, used.stop - 1]}


def without_geometry(suite: Suite, recorded: dict[str, Any]) -> dict[str, str]:
    """The recorded dataset without the suite's geometry features, next to it (``<task>_rgb``),
    or the recording itself when it has none. Returns its root and repo id."""
    from lerobot.datasets.dataset_tools import remove_feature

    from envs.recording import open_dataset

    source = open_dataset(recorded["root"], recorded["repo_id"])
    geometry = [key for key in source.meta.features if key.startswith(suite.geometry_prefixes)]
    if not geometry:
        return {"root": recorded["root"], "repo_id": recorded["repo_id"]}
    root = Path(recorded["root"] + "_rgb")
    shutil.rmtree(root, ignore_errors=True)
    derived = remove_feature(source, geometry, output_dir=root, repo_id=recorded["repo_id"] + "_rgb")
    for column in CHECKED_COLUMNS:
        if source.hf_dataset.data.column(column).to_pylist() != derived.hf_dataset.data.column(column).to_pylist():
            raise RuntimeError(f"{root} differs from {recorded['root']} in {column!r}")
    return {"root": str(root), "repo_id": recorded["repo_id"] + "_rgb"}


def merge(group: str, recorded: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """The recordings ``recorded`` (entries of :func:`record`) merged by LeRobot's
    ``merge_datasets`` into ``folder/group``, checked to hold all their episodes and frames.

    Each source keeps its own data file: packing them into one (LeRobot's default) concatenates
    pandas frames, which fails on the depth maps' 2-d array columns (``datasets``'
    ``PandasArrayExtensionDtype``)."""
    from lerobot.datasets.dataset_tools import merge_datasets

    from envs.recording import open_dataset

    root = folder / group
    shutil.rmtree(root, ignore_errors=True)
    merged = merge_datasets([open_dataset(entry["root"], entry["repo_id"]) for entry in recorded],
                            output_repo_id=f"local/{group}", output_dir=root, concatenate_data=False)
    episodes, frames = sum(entry["episodes"] for entry in recorded), sum(entry["frames"] for entry in recorded)
    if (merged.meta.total_episodes, merged.meta.total_frames) != (episodes, frames):
        raise RuntimeError(f"{root} holds {merged.meta.total_episodes} episodes and {merged.meta.total_frames} "
                           f"frames, not the {episodes} and {frames} of its sources")
    return {"root": str(root), "repo_id": f"local/{group}", "episodes": episodes, "frames": frames,
            "tasks": [Path(entry["root"]).name for entry in recorded]}
