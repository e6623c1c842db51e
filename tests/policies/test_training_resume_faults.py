"""Resuming after torn writes: a crash (or a full disk) while a checkpoint or a metrics line was being
written must not stop ``--resume``; the run falls back to the previous complete checkpoint and still
continues the uninterrupted loss curve exactly.

Every test tears a copy of one complete 4-step run (checkpoints at steps 2 and 4) the way a crash
while saving step 4 would have left it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from policies import checkpoints
from policies.checkpoints import (CHECKPOINTS, SIZES_FILE, STATE_FILE, checkpoint_problems, latest_checkpoint,
                                  saved_files, truncate_metrics, write_atomic)
from policies.modeling_geovla import GeoVLAPolicy
from policies.train_config import TrainConfig
from policies.training import train


def _config(root: Path, output: Path) -> TrainConfig:
    """4 steps of 4 samples, checkpoints at steps 2 and 4, every step logged."""
    return TrainConfig(dataset_root=str(root), output_dir=str(output), steps=4, batch_size=4, save_every=2,
                       log_every=1, policy={"image_size": 32})


@pytest.fixture(scope="module")
def complete_run(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, float]]:
    """An uninterrupted run's output directory and losses."""
    output = tmp_path_factory.mktemp("complete") / "run"
    return output, train(_config(dataset_root, output), progress=False)["losses"]


def _copy(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def _step(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"step_{step:06d}"


def _cut(fraction: float) -> Callable[[Path], None]:
    """Truncate a file to ``fraction`` of its size, as a write cut short leaves it."""
    return lambda path: os.truncate(path, int(path.stat().st_size * fraction))


def _tear_last_metrics_line(run: Path) -> None:
    """Cut ``metrics.jsonl``'s last record in half, as a crash while appending it would."""
    path = run / "metrics.jsonl"
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    path.write_text(text[: len(text) - len(last) // 2 - 1])


TEARS = {  # file of the newest checkpoint → (what a torn save did to it, what the warning says)
    "empty state file": (STATE_FILE, _cut(0), f"{STATE_FILE} is empty"),
    "cut state file": (STATE_FILE, _cut(0.5), f"{STATE_FILE} is unreadable"),
    "no state file": (STATE_FILE, Path.unlink, f"{STATE_FILE} is missing"),
    "empty weights": ("pretrained_model/model.safetensors", _cut(0), "pretrained_model/model.safetensors is empty"),
    "cut weights": ("pretrained_model/model.safetensors", _cut(0.5), "pretrained_model/model.safetensors has"),
    "cut accelerate weights": ("accelerate/model.safetensors", _cut(0.9), "accelerate/model.safetensors has"),
    "cut optimiser": ("accelerate/optimizer.bin", _cut(0.5), "accelerate/optimizer.bin has"),
    "empty RNG state": ("accelerate/random_states_0.pkl", _cut(0), "accelerate/random_states_0.pkl is empty"),
    "no scheduler": ("accelerate/scheduler.bin", Path.unlink, "accelerate/scheduler.bin is missing"),
    "empty sizes record": (SIZES_FILE, _cut(0), f"{SIZES_FILE} is empty"),
}


@pytest.mark.parametrize("tear", TEARS)
def test_a_torn_newest_checkpoint_is_skipped_with_a_warning(tear, complete_run, tmp_path, caplog):
    run = _copy(complete_run[0], tmp_path / "run")
    name, damage, message = TEARS[tear]
    damage(_step(run, 4) / name)
    with caplog.at_level(logging.WARNING, logger="policies.checkpoints"):
        assert latest_checkpoint(run) == _step(run, 2)
    assert "step_000004" in caplog.text and message in caplog.text


@pytest.mark.parametrize("tear", ["empty state file", "empty weights"])
def test_resume_after_a_torn_save_continues_the_uninterrupted_run(tear, complete_run, dataset_root, tmp_path,
                                                                  monkeypatch):
    """The fallback resumes from step 2 (also past a torn metrics line) with the uninterrupted
    losses, and saves step 4 again whole: when its state file is written, every other file is
    already complete."""
    complete, losses = complete_run
    run = _copy(complete, tmp_path / "run")
    name, damage, _ = TEARS[tear]
    damage(_step(run, 4) / name)
    _tear_last_metrics_line(run)
    problems_at_commit = []

    def checking_write(path: Path, text: str) -> None:
        if path.name == STATE_FILE:
            problems_at_commit.append(checkpoints.saved_files_problems(path.parent))
        write_atomic(path, text)

    monkeypatch.setattr(checkpoints, "write_atomic", checking_write)
    resumed = train(_config(dataset_root, run), resume=True, progress=False)
    assert problems_at_commit == [[]]
    assert resumed["losses"] == {step: losses[step] for step in (3, 4)}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3, 4]
    assert checkpoint_problems(_step(run, 4)) == []
    assert saved_files(_step(run, 4)) == saved_files(_step(complete, 4))
    assert GeoVLAPolicy.from_pretrained(resumed["final_dir"]).processors is not None


def test_resume_names_every_problem_when_no_checkpoint_is_complete(complete_run, dataset_root, tmp_path):
    run = _copy(complete_run[0], tmp_path / "run")
    (_step(run, 4) / STATE_FILE).write_text("")
    os.truncate(_step(run, 2) / "pretrained_model" / "model.safetensors", 0)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint") as error:
        train(_config(dataset_root, run), resume=True, progress=False)
    assert f"step_000004: {STATE_FILE} is empty" in str(error.value)
    assert "step_000002: pretrained_model/model.safetensors is empty" in str(error.value)


def test_checkpoints_saved_without_recorded_sizes_still_resume(complete_run, tmp_path):
    """Checkpoints from before the sizes were recorded are complete as they are; a cut file in them
    is still found by its format."""
    run = _copy(complete_run[0], tmp_path / "run")
    for step in (2, 4):
        (_step(run, step) / SIZES_FILE).unlink()
    assert latest_checkpoint(run) == _step(run, 4)
    os.truncate(_step(run, 4) / "accelerate" / "optimizer.bin", 1000)
    assert checkpoint_problems(_step(run, 4)) == [
        "accelerate/optimizer.bin is unreadable (File is not a zip file)"]
    assert latest_checkpoint(run) == _step(run, 2)


def test_truncate_metrics_drops_a_torn_last_line_and_the_steps_to_redo(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": step, "loss": 1.0}) + "\n" for step in (1, 2, 3)) + '{"step": 4, "lo')
    with caplog.at_level(logging.WARNING, logger="policies.checkpoints"):
        truncate_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert "torn last line" in caplog.text
    path.write_text('{"step": 1}\n{"st\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not a JSON record"):
        truncate_metrics(path, 2)


def test_an_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / STATE_FILE
    path.write_text('{"step": 2}')

    def fail(descriptor: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, '{"step": 4}')
    assert path.read_text() == '{"step": 2}'
    assert list(tmp_path.iterdir()) == [path]
