"""Equal wall-clock: per training group, the fastest policy's training time, the steps every
policy had reached in it, and each slower policy's result when trained for only those steps.

LeRobot 0.6.1 has no wall-clock budget, so equal time is read off the training curves. A policy
slower than the fastest is then trained again from scratch (``scripts/benchmark.py
--equal-time``) for the steps its full training had reached when the fastest finished, and
evaluated on the same seeds. LeRobot scales a cosine schedule's warm-up and decay to a run
shorter than its decay steps, so the shorter run is the recipe given that time, not a
checkpoint taken halfway down a longer schedule.
"""

from __future__ import annotations

from typing import Any

from policies.intervals import wilson_interval

from benchmarks.policy_specs import POLICIES


def success_fields(successes: int, episodes: int) -> dict[str, Any]:
    """Successes, episodes, rate and Wilson 95% interval, as every row of the report gives them."""
    low, high = wilson_interval(successes, episodes)
    return {"successes": successes, "episodes": episodes, "success_rate": successes / episodes,
            "wilson95": [round(low, 4), round(high, 4)]}


def steps_within(curve: list[list[float]], seconds: float) -> int:
    """The last step a training curve (``[seconds, step]`` points) had reached by ``seconds``."""
    return max((int(step) for t, step in curve if t <= seconds), default=0)


def equal_time(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per training group, the fastest policy's training wall-clock and the steps every policy
    and ablation had reached in that time. The fastest is chosen among the five policies when any
    of them ran, so that adding a faster ablation leaves the policies' comparison as it was."""
    table = {}
    for group in dict.fromkeys(cell["group"] for cell in cells):
        of_group = {cell["policy"]: cell for cell in cells if cell["group"] == group}
        reference = [cell for name, cell in of_group.items() if name in POLICIES] or list(of_group.values())
        seconds = min(cell["train_wall_s"] for cell in reference)
        table[group] = {"seconds": seconds,
                        "steps": {name: steps_within(cell["curve"], seconds) for name, cell in of_group.items()}}
    return table


def retraining_steps(cell: dict[str, Any], steps_in_time: int) -> int | None:
    """The steps a finished cell must be trained again for to give its equal-time result: None
    when its full training ended within the time (the full result is the equal-time one) or
    when not one logged step was reached in it (there is nothing to train)."""
    return steps_in_time if 0 < steps_in_time < cell["train"]["steps"] else None


def result_at_equal_time(cell: dict[str, Any], tasks: list[str], steps_in_time: int) -> dict[str, Any] | None:
    """A finished cell's success on ``tasks`` (pooled) at equal time: its own result when its
    training ended within the time, the retrained run's when that is done for these steps, else
    None."""
    if steps_in_time >= cell["train"]["steps"]:
        source, steps, train_s = cell, cell["train"]["steps"], cell["train"]["train_wall_s"]
    else:
        retrained = cell.get("equal_time")
        if not retrained or retrained["status"] != "done" or retrained["steps"] != steps_in_time:
            return None
        source, steps, train_s = retrained, retrained["steps"], retrained["train"]["train_wall_s"]
    return {"steps": steps, "train_wall_s": train_s,
            **success_fields(sum(source["evals"][task]["successes"] for task in tasks),
                             sum(source["evals"][task]["episodes"] for task in tasks))}
