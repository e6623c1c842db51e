"""One cell's evaluation: ``lerobot-eval`` of the trained policy on the suite's held-out seeds."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.budgets import Budget
from benchmarks.processes import lerobot_command, run_logged


def evaluate_cell(policy_dir: Path, runner_args: list[str] | None, env_args: list[str], budget: Budget, seed: int,
                  cell_dir: Path, device: str) -> dict[str, Any]:
    """Run ``budget.eval_episodes`` episodes with seeds ``seed, seed + 1, ...`` (``lerobot-eval``
    seeds episode ``i`` with ``--seed + i``) and return the successes, episodes, seeds and wall-clock.
    A stopped evaluation is run again from the start."""
    eval_dir, log_path = cell_dir / "eval", cell_dir / "eval.log"
    shutil.rmtree(eval_dir, ignore_errors=True)
    command = [*lerobot_command("eval", runner_args), f"--policy.path={policy_dir}", *env_args,
               f"--eval.n_episodes={budget.eval_episodes}",
               f"--eval.batch_size={min(budget.eval_batch_size, budget.eval_episodes)}",
               "--eval.use_async_envs=false", f"--policy.device={device}", f"--seed={seed}",
               f"--output_dir={eval_dir}"]
    start = time.monotonic()
    run_logged(command, log_path, header="evaluation")
    elapsed = time.monotonic() - start
    info = json.loads((eval_dir / "eval_info.json").read_text())
    successes = [bool(s) for task in info["per_task"] for s in task["metrics"]["successes"]]
    if len(successes) != budget.eval_episodes:
        raise RuntimeError(f"lerobot-eval ran {len(successes)} episodes, not {budget.eval_episodes} "
                           f"({eval_dir / 'eval_info.json'})")
    return {
        "successes": sum(successes),
        "episodes": len(successes),
        "eval_seeds": list(range(seed, seed + len(successes))),
        "eval_wall_s": round(elapsed, 3),
        "eval_command": command,
    }
