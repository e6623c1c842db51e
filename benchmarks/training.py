"""One cell's training: ``lerobot-train`` on the task's dataset, resumed from its last checkpoint
after a stop, with its wall-clock read off the training log as it is written.

The training curve (``train_curve.jsonl`` in the cell folder) holds, for every log line of
LeRobot (one each ``log_freq`` steps), the seconds since the cell's training started and the
step; the last point, ``end``, is the process's exit. A run resumed from the checkpoint of step
``s`` keeps the points up to ``s`` and continues their clock from the time ``s`` was reached (the
steps redone after that checkpoint do not count; the restart's start-up does), so the curve and
the wall-clock are those of one training of ``steps`` steps.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from lerobot.utils.utils import format_big_number

from benchmarks.budgets import Budget
from benchmarks.processes import lerobot_command, run_logged

STEP_LINE = re.compile(r"\bstep:(\S+) smpl:")
PARAMS_LINE = re.compile(r"num_learnable_params=(\d+)")


def checkpoint_step(train_dir: Path) -> int | None:
    """The step of ``train_dir``'s last complete checkpoint (LeRobot points ``last`` at a
    checkpoint only once it is written), or None."""
    path = train_dir / "checkpoints" / "last" / "training_state" / "training_step.json"
    return int(json.loads(path.read_text())["step"]) if path.is_file() else None


def read_curve(path: Path) -> list[dict[str, Any]]:
    """The points of a training curve file (a line cut short by a kill is dropped)."""
    if not path.is_file():
        return []
    points = []
    for line in path.read_text().splitlines():
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return points


def _write_curve(path: Path, points: list[dict[str, Any]]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(point) + "\n" for point in points))
    partial.replace(path)


class _StepClock:
    """Turns LeRobot's training log lines into curve points, appended to the curve file."""

    def __init__(self, curve: Path, log_freq: int, start_step: int, offset: float, attempt: int) -> None:
        self.curve, self.log_freq, self.step = curve, log_freq, start_step
        self.offset, self.attempt, self.start = offset, attempt, time.monotonic()

    def elapsed(self) -> float:
        return self.offset + time.monotonic() - self.start

    def add(self, step: int, end: bool = False) -> None:
        point = {"t": round(self.elapsed(), 3), "step": step, "attempt": self.attempt, **({"end": True} if end else {})}
        with open(self.curve, "a", encoding="utf-8") as file:
            file.write(json.dumps(point) + "\n")

    def on_line(self, line: str) -> None:
        """LeRobot logs ``step:<n>`` at every multiple of ``log_freq`` (``1K`` style past 999), so the
        exact step is the next multiple; it is checked against the printed one."""
        match = STEP_LINE.search(line)
        if match is None:
            return
        step = (self.step // self.log_freq + 1) * self.log_freq
        if format_big_number(step) != match.group(1):
            raise RuntimeError(f"training log says step {match.group(1)} where step {step} was expected: {line!r}")
        self.step = step
        self.add(step)


def train_cell(policy_args: list[str], runner_args: list[str] | None, dataset_root: Path, repo_id: str,
               budget: Budget, cell_dir: Path, device: str, num_workers: int) -> dict[str, Any]:
    """Train one policy for ``budget.steps`` steps (resuming a stopped training of this cell) and
    return its steps, wall-clock, attempts, parameter count, curve and command line."""
    train_dir, curve_path, log_path = cell_dir / "train", cell_dir / "train_curve.jsonl", cell_dir / "train.log"
    prefix = lerobot_command("train", runner_args)
    fresh = [*prefix, *policy_args, f"--dataset.repo_id={repo_id}", f"--dataset.root={dataset_root}",
             "--dataset.video_backend=pyav", f"--steps={budget.steps}", f"--batch_size={budget.batch_size}",
             f"--output_dir={train_dir}", f"--policy.device={device}", "--policy.push_to_hub=false",
             f"--save_freq={budget.save_freq}", f"--log_freq={budget.log_freq}", "--wandb.enable=false",
             f"--num_workers={num_workers}", "--seed=0"]
    start_step = checkpoint_step(train_dir)
    points = [p for p in read_curve(curve_path)
              if start_step is not None and p["step"] <= start_step and not p.get("end")]
    if start_step is None:
        shutil.rmtree(train_dir, ignore_errors=True)
        command = fresh
    else:
        config = train_dir / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
        command = [*prefix, "--resume=true", f"--config_path={config}"]
    _write_curve(curve_path, points)
    attempt = 1 + max((p["attempt"] for p in points), default=0)
    clock = _StepClock(curve_path, budget.log_freq, start_step or 0, points[-1]["t"] if points else 0.0, attempt)
    header = f"attempt {attempt}: " + ("from scratch" if start_step is None else f"resuming from step {start_step}")
    run_logged(command, log_path, clock.on_line, header=header)
    final_step = checkpoint_step(train_dir)
    if final_step != budget.steps:
        raise RuntimeError(f"lerobot-train ended at checkpoint step {final_step}, not {budget.steps} (log: {log_path})")
    clock.add(budget.steps, end=True)
    _keep_last_checkpoint(train_dir)
    curve = read_curve(curve_path)
    params = PARAMS_LINE.findall(log_path.read_text(errors="replace"))
    return {
        "steps": budget.steps,
        "train_wall_s": curve[-1]["t"],
        "train_attempts": attempt,
        "params": int(params[-1]) if params else None,
        "curve": [[p["t"], p["step"]] for p in curve],
        "train_command": fresh,
        "checkpoint": str(train_dir / "checkpoints" / "last" / "pretrained_model"),
    }


def _keep_last_checkpoint(train_dir: Path) -> None:
    """Delete every checkpoint but the last (pi0's carry its 257k-word tables and optimiser state)."""
    checkpoints = train_dir / "checkpoints"
    last = (checkpoints / "last").resolve()
    for path in checkpoints.iterdir():
        if path.name != "last" and path.resolve() != last:
            shutil.rmtree(path)
