"""The run's outputs: ``results.json`` (every finished cell), ``results.md`` (a table) and
``success.png`` (success per task and policy with Wilson 95% intervals)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.equal_time import equal_time, result_at_equal_time, success_fields
from benchmarks.policy_specs import ABLATIONS, POLICIES, SPECS
from benchmarks.state import write_json_atomic
from benchmarks.suites import Suite

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "success.png"


def _row(task: str, group: str, name: str, train: dict[str, Any], successes: int, episodes: int,
         extra: dict[str, Any]) -> dict[str, Any]:
    spec = SPECS[name]
    return {"task": task, "group": group, "policy": name, "label": spec.label,
            "reads_instruction": spec.reads_instruction, **train, **extra, **success_fields(successes, episodes)}


def collect(state: dict[str, Any], suite: Suite) -> dict[str, Any]:
    """``results.json``'s content: a row per evaluated (task, policy) in task and policy order,
    with intervals, and for a policy trained on several tasks a row ``<group> mean`` pooling
    the episodes of all of them once each is evaluated. Each row also gives the steps its policy
    had reached in equal time and its result at equal time (``at_equal_time``, None until the
    retraining for those steps is done)."""
    finished = {}
    for key, cell in state["cells"].items():
        if cell.get("status") == "done":
            group, name = key.rsplit("/", 1)
            finished[(group, name)] = cell
    rows, pooled, sources = [], [], []
    order = {task: index for index, task in enumerate(suite.tasks)}
    groups = sorted({group for group, _ in finished}, key=lambda g: order.get(g, -1))
    for group in groups:
        tasks = sorted({task for (g, _), cell in finished.items() if g == group for task in cell["evals"]},
                       key=order.__getitem__)
        for task in tasks:
            for name in SPECS:
                cell = finished.get((group, name))
                if cell is not None and task in cell["evals"]:
                    evaluation = cell["evals"][task]
                    rows.append(_row(task, group, name, cell["train"], evaluation["successes"],
                                     evaluation["episodes"], evaluation))
                    sources.append((cell, [task]))
        if len(tasks) > 1:
            for name in SPECS:
                cell = finished.get((group, name))
                if cell is not None:
                    evaluations = list(cell["evals"].values())
                    pooled.append(_row(f"{group} mean", group, name, cell["train"],
                                       sum(e["successes"] for e in evaluations),
                                       sum(e["episodes"] for e in evaluations), {"tasks": list(cell["evals"])}))
    sources += [(finished[cell["group"], cell["policy"]], cell["tasks"]) for cell in pooled]
    cells = rows + pooled
    timing = equal_time(cells)
    for cell, (source, tasks) in zip(cells, sources):
        steps = timing[cell["group"]]["steps"][cell["policy"]]
        cell["steps_in_equal_time"] = steps
        cell["at_equal_time"] = result_at_equal_time(source, tasks, steps)
    header = state["header"]
    return {"suite": header["suite"], "budget": header["budget"], "device": header["device"],
            "cameras": list(suite.cameras), "eval_seed": suite.eval_seed, "datasets": state["datasets"],
            "equal_time": timing, "anchors": suite.anchors, "cells": cells}


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def markdown(results: dict[str, Any]) -> str:
    """The table of a run, with its budget and the equal-time figures."""
    budget = results["budget"]
    last_seed = results["eval_seed"] + budget["eval_episodes"] - 1
    lines = [
        f"# Benchmark: `{results['suite']}` suite",
        "",
        f"Every policy: the same {budget['demos']} scripted demonstrations per task, {budget['steps']} optimiser "
        f"steps at batch {budget['batch_size']} (`lerobot-train`), {budget['eval_episodes']} evaluation episodes "
        f"per task (`lerobot-eval`) on seeds {results['eval_seed']}-{last_seed}, "
        f"{budget['image_size']}-px images from the cameras {', '.join(results['cameras'])}; device "
        f"{results['device']}. Success with its Wilson 95% interval.",
        "",
        "| task | policy | reads instruction | parameters | steps | train wall-clock | success | Wilson 95% "
        "| steps in equal time | success in equal time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in results["cells"]:
        low, high = cell["wilson95"]
        params = "" if cell["params"] is None else f"{cell['params'] / 1e6:.1f}M"
        lines.append(
            f"| {cell['task']} | {cell['label']} | {'yes' if cell['reads_instruction'] else 'no'} | {params} "
            f"| {cell['steps']} | {_duration(cell['train_wall_s'])} "
            f"| {cell['successes']}/{cell['episodes']} ({cell['success_rate']:.0%}) | {low:.0%}-{high:.0%} "
            f"| {cell['steps_in_equal_time']} | {_at_equal_time(cell)} |")
    if results["equal_time"]:
        times = ", ".join(f"{group} {_duration(entry['seconds'])}" for group, entry in results["equal_time"].items())
        lines += ["", f"Equal time: the steps each policy had reached when the fastest of the five policies "
                      f"trained on the same demonstrations finished ({times}), read off the training logs "
                      f"(LeRobot 0.6.1 has no wall-clock budget). Success in equal time: a slower policy "
                      f"trained again from scratch for those steps (`scripts/benchmark.py --equal-time`) and "
                      f"evaluated on the same seeds, with its Wilson 95% interval."]
    for group in dict.fromkeys(cell["group"] for cell in results["cells"] if cell["task"] != cell["group"]):
        lines += ["", f"`{group}`: each policy is trained once, on the demonstrations of all these tasks together, "
                      f"and evaluated on each; `{group} mean` pools its episodes over them."]
    if results["anchors"]:
        lines += ["", results["anchors"]]
    return "\n".join(lines) + "\n"


def _by_task_and_policy(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(cell["task"], cell["policy"]): cell for cell in results["cells"]}


def _tasks(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(cell["task"] for cell in results["cells"]))


def _rate(result: dict[str, Any]) -> str:
    low, high = result["wilson95"]
    return f"{result['success_rate']:.0%} ({low:.0%}-{high:.0%})"


def _at_equal_time(cell: dict[str, Any]) -> str:
    result = cell["at_equal_time"]
    if result is None:
        return "not retrained" if cell["steps_in_equal_time"] else "no step in the time"
    low, high = result["wilson95"]
    return f"{result['successes']}/{result['episodes']} ({low:.0%}-{high:.0%})"


def summary_table(results: dict[str, Any], policies: list[str] | None = None, at_equal_time: bool = False) -> str:
    """Success per task (rows) and policy (columns, ``policies`` or the five policies), as
    ``rate (Wilson 95%)``, after the full step budget or, with ``at_equal_time``, at equal
    wall-clock (``not retrained`` with the steps where the retraining is still to run); a cell
    not run yet reads ``not run``."""
    names = policies or list(POLICIES)
    cells = _by_task_and_policy(results)
    lines = ["| task | " + " | ".join(SPECS[name].label for name in names) + " |",
             "|---|" + "---|" * len(names)]
    for task in _tasks(results):
        row = [_summary_entry(cells.get((task, name)), at_equal_time) for name in names]
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _summary_entry(cell: dict[str, Any] | None, at_equal_time: bool) -> str:
    if cell is None:
        return "not run"
    if not at_equal_time:
        return _rate(cell)
    result = cell["at_equal_time"]
    if result is None:
        return f"{_at_equal_time(cell)} ({cell['steps_in_equal_time']} steps)"
    return f"{_rate(result)}, {result['steps']} steps"


def ablation_table(results: dict[str, Any]) -> str:
    """geovla against each of its ablations that ran, per task: steps, training wall-clock,
    success ``rate (Wilson 95%)``, the difference to geovla in points, and the steps and success
    in equal time; empty without any."""
    cells = _by_task_and_policy(results)
    names = [name for name in ABLATIONS if name in {policy for _, policy in cells}]
    if not names:
        return ""
    lines = ["| task | variant | steps | train wall-clock | success | vs geovla | steps in equal time "
             "| success in equal time |", "|---|---|---|---|---|---|---|---|"]
    for task in _tasks(results):
        reference = cells.get((task, "geovla"))
        for name in ["geovla", *names]:
            cell = cells.get((task, name))
            if cell is None:
                continue
            low, high = cell["wilson95"]
            difference = "" if reference is None or name == "geovla" else \
                f"{round(100 * (cell['success_rate'] - reference['success_rate'])):+d}"
            lines.append(f"| {task} | {cell['label']} | {cell['steps']} | {_duration(cell['train_wall_s'])} "
                         f"| {cell['successes']}/{cell['episodes']} ({low:.0%}-{high:.0%}) | {difference} "
                         f"| {cell['steps_in_equal_time']} | {_at_equal_time(cell)} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> Path:
    """Grouped bars: success per task (groups) and policy (bars), Wilson 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = _tasks(results)
    labels = list(dict.fromkeys(cell["label"] for cell in results["cells"]))
    width = 0.8 / max(len(labels), 1)
    figure, axes = plt.subplots(figsize=(3.5 + 0.6 * len(tasks) * len(labels), 4))
    for index, label in enumerate(labels):
        cells = {cell["task"]: cell for cell in results["cells"] if cell["label"] == label}
        xs = [tasks.index(task) + (index - (len(labels) - 1) / 2) * width for task in cells]
        rates = [cell["success_rate"] for cell in cells.values()]
        errors = [[rate - cell["wilson95"][0] for rate, cell in zip(rates, cells.values())],
                  [cell["wilson95"][1] - rate for rate, cell in zip(rates, cells.values())]]
        axes.bar(xs, rates, width, yerr=errors, capsize=3, label=label)
        for x, cell in zip(xs, cells.values()):
            axes.text(x, cell["wilson95"][1] + 0.02, f"{cell['successes']}/{cell['episodes']}", ha="center",
                      fontsize=7)
    axes.set_xticks(range(len(tasks)), tasks)
    axes.set_ylim(0, 1.12)
    axes.set_ylabel("success rate (Wilson 95%)")
    axes.set_title(f"{results['suite']}: {results['budget']['steps']} steps, "
                   f"{results['budget']['eval_episodes']} episodes per task")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_reports(out: Path, state: dict[str, Any], suite: Suite) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``success.png`` for the finished cells."""
    results = collect(state, suite)
    write_json_atomic(out / RESULTS_JSON, results)
    (out / RESULTS_MD).write_text(markdown(results))
    if results["cells"]:
        plot(results, out / RESULTS_PNG)
    return results
