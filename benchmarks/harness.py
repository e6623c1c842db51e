"""The loop over a run's cells (training group x policy): record once per task, train, evaluate
on each task of the group, report.

A training group is one task (one policy per task) or, for a multi-task suite, all the run's
tasks (``mt<N>``: one policy trained on their merged demonstrations). Every step ends by writing
the state file, so a stopped run, rerun with the same command, skips the datasets, cells and
per-task evaluations that are done, resumes a training from its last checkpoint and redoes a
half-done recording, merge, dataset copy or evaluation. With ``equal_time`` the finished cells
of policies slower than the fastest are then trained again for the steps they had reached in
the fastest's time, resumable the same way.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from benchmarks.budgets import Budget
from benchmarks.datasets import merge, record, without_geometry
from benchmarks.equal_time import retraining_steps
from benchmarks.evaluation import evaluate_cell
from benchmarks.language import write_word_vlm
from benchmarks.policy_specs import BuildContext, PolicySpec, get_policies
from benchmarks.report import collect, write_reports
from benchmarks.state import STATE_FILE, load_state, merge_states, save_state
from benchmarks.suites import Suite, get_suite
from benchmarks.training import train_cell


@dataclass(frozen=True)
class RunConfig:
    """One invocation of the suite (``scripts/benchmark.py``'s options); ``equal_time``: after
    the cells, train each policy slower than the fastest again for the steps it had reached in
    the fastest's training time, and evaluate it (see ``benchmarks.equal_time``)."""

    suite: str
    out: Path
    budget: Budget
    tasks: list[str] | None = None
    policies: list[str] | None = None
    device: str = "cpu"
    num_workers: int = 0
    progress: bool = True
    equal_time: bool = False


def _select_tasks(suite: Suite, tasks: list[str] | None) -> list[str]:
    unknown = sorted(set(tasks or ()) - set(suite.tasks))
    if unknown:
        raise ValueError(f"unknown tasks {unknown} for suite {suite.name!r}; known: {list(suite.tasks)}")
    chosen = tasks or suite.default_tasks or suite.tasks
    return [task for task in suite.tasks if task in chosen]


def training_groups(suite: Suite, tasks: list[str]) -> dict[str, list[str]]:
    """``{group: its tasks}``: one group per task, or one ``mt<N>`` group of all for a multi-task suite."""
    return {f"mt{len(tasks)}": tasks} if suite.multitask else {task: [task] for task in tasks}


def ensure_datasets(config: RunConfig, suite: Suite, state: dict[str, Any], group: str,
                    tasks: list[str]) -> dict[str, Any]:
    """The group's demonstrations: each task recorded the first time, then reused; several tasks
    merged into one dataset; and a copy without geometry. What the state lists but the disk
    lacks (a state carried to another machine or folder) is made again."""
    datasets, folder = state["datasets"], config.out / "datasets"
    if not _present(datasets, group):
        for task in tasks:
            if not _present(datasets, task):
                recorded = record(suite, task, config.budget, folder, config.progress)
                if task in datasets:
                    _check_rerecorded(datasets[task], recorded)
                datasets[task] = recorded
                save_state(config.out, state)
        if not _present(datasets, group):
            datasets[group] = merge(group, [datasets[task] for task in tasks], folder)
            save_state(config.out, state)
    entry = state["datasets"][group]
    if entry.get("tasks", [group]) != tasks:
        raise ValueError(f"{config.out} trained {group} on the tasks {entry['tasks']}, not {tasks}; "
                         "continue it with its own --tasks or choose a new --out")
    if not _present(entry, "without_geometry"):
        entry["without_geometry"] = without_geometry(suite, entry)
        save_state(config.out, state)
    return entry


def _present(entries: dict[str, Any], name: str) -> bool:
    """Whether ``entries[name]`` is a dataset still on disk (a state carried from another
    machine or folder lists datasets that are not)."""
    return name in entries and (Path(entries[name]["root"]) / "meta" / "info.json").is_file()


def _check_rerecorded(listed: dict[str, Any], recorded: dict[str, Any]) -> None:
    """A recording listed in the state but gone from disk is recorded again from the same seeds;
    it must come out the same."""
    differ = [f"{key} {recorded[key]} (listed {listed[key]})" for key in ("episodes", "frames", "attempts",
                                                                        "recording_seeds")
              if listed[key] != recorded[key]]
    if differ:
        raise RuntimeError(f"{recorded['root']}, recorded again, differs from the state's recording: {', '.join(differ)}")


def run_cell(config: RunConfig, suite: Suite, state: dict[str, Any], group: str, tasks: list[str],
             spec: PolicySpec, context: BuildContext, progress: tqdm) -> None:
    """Train (or resume) one policy on a group's demonstrations and evaluate it on each of its
    tasks, saving the state after the training and after each evaluation."""
    cell = state["cells"].setdefault(f"{group}/{spec.name}", {"status": "training"})
    _train_and_evaluate(config, suite, state, group, tasks, spec, context, progress, cell,
                        config.out / "cells" / group / spec.name, config.budget)


def run_equal_time(config: RunConfig, suite: Suite, state: dict[str, Any], group: str, tasks: list[str],
                   spec: PolicySpec, context: BuildContext, progress: tqdm) -> None:
    """Train a finished cell's policy again, from scratch, for the steps it had reached in the
    fastest policy's training time and evaluate it (``cell["equal_time"]``); nothing when its
    training ended within that time. Done again when a faster policy has changed the time."""
    cell = state["cells"][f"{group}/{spec.name}"]
    timing = collect(state, suite)["equal_time"][group]
    steps = retraining_steps(cell, timing["steps"][spec.name])
    if steps is None:
        return
    cell_dir = config.out / "cells" / group / spec.name / "equal_time"
    if cell.get("equal_time", {}).get("steps") != steps:
        shutil.rmtree(cell_dir, ignore_errors=True)
        cell["equal_time"] = {"status": "training", "seconds": timing["seconds"], "steps": steps}
    _train_and_evaluate(config, suite, state, group, tasks, spec, context, progress, cell["equal_time"], cell_dir,
                        config.budget.override(steps=steps))


def _train_and_evaluate(config: RunConfig, suite: Suite, state: dict[str, Any], group: str, tasks: list[str],
                        spec: PolicySpec, context: BuildContext, progress: tqdm, entry: dict[str, Any],
                        cell_dir: Path, budget: Budget) -> None:
    """Train ``entry``'s policy for ``budget.steps`` in ``cell_dir`` unless it is trained, then
    evaluate it on each task not evaluated yet; the state is saved after each."""
    key = f"{group}/{spec.name}" + ("" if budget.steps == config.budget.steps else f" ({budget.steps} steps)")
    cell_dir.mkdir(parents=True, exist_ok=True)
    runner_args = spec.runner_args(context) if spec.runner_args else None
    if entry["status"] == "trained" and not Path(entry["train"]["checkpoint"]).is_dir():
        entry["status"] = "training"  # evaluations are left and the checkpoint is gone: train again
    if entry["status"] == "training":
        progress.set_postfix_str(f"{key}: demonstrations")
        recorded = ensure_datasets(config, suite, state, group, tasks)
        dataset = recorded if spec.reads_geometry else recorded["without_geometry"]
        progress.set_postfix_str(f"{key}: training")
        entry["train"] = train_cell(spec.policy_args(context), runner_args, Path(dataset["root"]),
                                    dataset["repo_id"], budget, cell_dir, config.device, config.num_workers)
        entry["status"] = "trained"
        save_state(config.out, state)
    evaluations = entry.setdefault("evals", {})
    for task in tasks:
        if task in evaluations:
            continue
        progress.set_postfix_str(f"{key}: evaluating {task}")
        eval_dir = cell_dir if len(tasks) == 1 else cell_dir / task
        eval_dir.mkdir(exist_ok=True)
        env_args = suite.eval_env_args(task, budget, spec.evaluates_with_geometry)
        evaluations[task] = evaluate_cell(Path(entry["train"]["checkpoint"]), runner_args, env_args, budget,
                                          suite.eval_seed, eval_dir, config.device)
        save_state(config.out, state)
    entry["status"] = "done"
    save_state(config.out, state)


def run_benchmark(config: RunConfig) -> dict[str, Any]:
    """Run (or continue) every selected cell and write the reports; returns ``results.json``'s content."""
    config = replace(config, out=config.out.resolve())  # LeRobot's commands run in the cell folders
    suite = get_suite(config.suite)
    tasks, specs = _select_tasks(suite, config.tasks), get_policies(config.policies)
    config.out.mkdir(parents=True, exist_ok=True)
    state = load_state(config.out, _header(config))
    save_state(config.out, state)
    context = BuildContext(suite=suite, image_size=config.budget.image_size,
                           vlm_dir=write_word_vlm(config.out / "assets" / "word_vlm", suite.vocabulary,
                                                  config.budget.image_size))
    groups = training_groups(suite, tasks)
    cells = [(group, spec) for group in groups for spec in specs]
    done = [state["cells"].get(f"{group}/{spec.name}", {}).get("status") == "done" for group, spec in cells]
    with tqdm(total=len(cells), initial=sum(done), desc=f"{suite.name} benchmark", unit="cell",
              disable=not config.progress) as progress:
        for (group, spec), finished in zip(cells, done):
            if finished:
                continue
            run_cell(config, suite, state, group, groups[group], spec, context, progress)
            write_reports(config.out, state, suite)
            progress.update(1)
    if config.equal_time:
        with tqdm(total=len(cells), desc=f"{suite.name} at equal time", unit="cell",
                  disable=not config.progress) as progress:
            for group, spec in cells:
                run_equal_time(config, suite, state, group, groups[group], spec, context, progress)
                write_reports(config.out, state, suite)
                progress.update(1)
    return write_reports(config.out, state, suite)


def merge_runs(config: RunConfig, sources: list[Path]) -> dict[str, Any]:
    """Add the recorded datasets and finished cells of the runs in ``sources`` (folders of runs
    with ``config``'s suite, budget and device) to the run in ``config.out`` and write its
    reports; trains and evaluates nothing. Returns ``results.json``'s content."""
    missing = [str(source) for source in sources if not (source / STATE_FILE).is_file()]
    if missing:
        raise FileNotFoundError(f"no {STATE_FILE} in {', '.join(missing)}")
    config.out.mkdir(parents=True, exist_ok=True)
    header = _header(config)
    state = merge_states([load_state(config.out, header), *(load_state(source, header) for source in sources)])
    save_state(config.out, state)
    return write_reports(config.out, state, get_suite(config.suite))


def _header(config: RunConfig) -> dict[str, Any]:
    """What a run's folder must agree on to be continued or merged."""
    return {"suite": config.suite, "budget": config.budget.to_dict(), "device": config.device}
