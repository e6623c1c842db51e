"""The state file that makes a benchmark run resumable: recorded datasets and finished cells.

It is rewritten atomically (a new file renamed over the old one), so a run killed at any moment
leaves either the previous state or the new one. A folder holds one run: its header (suite,
budget, device) must match the command that continues it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


class StateMismatch(ValueError):
    """The output folder holds a run with another suite, budget or device."""


def load_state(out: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The state in ``out`` (a new one if there is none), checked to belong to ``header``'s run."""
    path = out / STATE_FILE
    if not path.is_file():
        return {"header": header, "datasets": {}, "cells": {}}
    state = json.loads(path.read_text())
    if state.get("header") != header:
        raise StateMismatch(f"{out} holds a run of {state.get('header')}, not of {header}; "
                            "continue it with its own options or choose a new --out")
    return state


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``out/state.json`` atomically."""
    write_json_atomic(out / STATE_FILE, state)


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file renamed over it."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One state with the recorded datasets and the finished cells of ``states``, runs of one
    suite, budget and device (e.g. tasks run side by side in separate folders). A dataset or a
    finished cell found in several must be the same recording or the same result."""
    header = states[0]["header"]
    merged: dict[str, Any] = {"header": header, "datasets": {}, "cells": {}}
    for state in states:
        if state["header"] != header:
            raise StateMismatch(f"cannot merge a run of {state['header']} with one of {header}")
        for name, dataset in state["datasets"].items():
            known = merged["datasets"].setdefault(name, dataset)
            if _recording(known) != _recording(dataset):
                raise StateMismatch(f"dataset {name!r} differs between the runs: {_recording(known)} "
                                    f"vs {_recording(dataset)}")
        for key, cell in state["cells"].items():
            if cell.get("status") != "done":
                continue
            known = merged["cells"].setdefault(key, dict(cell))
            if known["evals"] != cell["evals"] or known["train"]["steps"] != cell["train"]["steps"]:
                raise StateMismatch(f"cell {key!r} was finished in two runs with different results")
            _merge_equal_time(key, known, cell)
    return merged


def _merge_equal_time(key: str, known: dict[str, Any], cell: dict[str, Any]) -> None:
    """Keep a cell's finished equal-time retraining from the first run that has one; two for the
    same steps must agree (the report shows one only while its steps are the current equal time)."""
    retrained = cell.get("equal_time")
    if not retrained or retrained["status"] != "done":
        return
    kept = known.get("equal_time")
    if kept and kept["status"] == "done" and kept["steps"] == retrained["steps"] and kept["evals"] != retrained["evals"]:
        raise StateMismatch(f"cell {key!r} was retrained for equal time in two runs with different results")
    if not kept or kept["status"] != "done":
        known["equal_time"] = retrained


def _recording(dataset: dict[str, Any]) -> dict[str, Any]:
    """What identifies a recording wherever it sits on disk."""
    return {key: value for key, value in dataset.items() if key not in ("root", "without_geometry")}
