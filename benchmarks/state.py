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
