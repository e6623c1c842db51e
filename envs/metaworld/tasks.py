"""MetaWorld's v3 tasks: names, LeRobot's language descriptions, and the simulation set up as LeRobot
sets it up (MT1 task data, new object and goal positions at every seeded reset)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import metaworld
from metaworld.env_dict import ALL_V3_ENVIRONMENTS



# LeRobot moves corner2 closer to the workspace (lerobot/envs/metaworld.py); so does this env, so
# that its corner2 images show what LeRobot's MetaWorld datasets and evaluations show.
LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)


MT10_TASKS = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)


MAX_PATH_LENGTH = 500  # MetaWorld raises once an episode goes past this many steps


def canonical_task(task: str) -> str:
    """MetaWorld's name of a v3 task: ``pick-place`` and ``pick-place-v3`` give ``pick-place-v3``."""
    name = task if task.endswith("-v3") else f"{task}-v3"
    if name not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"unknown MetaWorld task {task!r}; the v3 tasks are {sorted(ALL_V3_ENVIRONMENTS)}")
    return name


@functools.cache
def _task_descriptions() -> dict[str, str]:
    """LeRobot's descriptions, read without importing ``lerobot.envs`` (which imports torch)."""
    spec = importlib.util.find_spec("lerobot")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("lerobot is not installed: its metaworld_config.json holds the task descriptions")
    config = Path(spec.submodule_search_locations[0]) / "envs" / "metaworld_config.json"
    return json.loads(config.read_text())["TASK_DESCRIPTIONS"]


def task_description(task: str) -> str:
    """The language description of a task in LeRobot's ``metaworld_config.json``."""
    name = canonical_task(task)
    descriptions = _task_descriptions()
    if name not in descriptions:
        raise ValueError(f"LeRobot's metaworld_config.json has no description of {name!r}")
    return descriptions[name]


@functools.cache
def _benchmark_task(task: str) -> metaworld.Task:
    """MetaWorld's first MT1 task of ``task``: the task data of the MT benchmarks (goal observed)."""
    return metaworld.MT1(task, seed=0).train_tasks[0]


def make_metaworld_sim(task: str) -> Any:
    """MetaWorld's env for ``task`` (v3 name), drawing object and goal positions from its seed.

    As in LeRobot's MetaWorld env: the MT1 task data, then a new random layout at every reset
    from the env's own RNG (``sim.seed(s)`` makes it repeatable). Corner2 is moved as LeRobot does.
    """
    sim = ALL_V3_ENVIRONMENTS[task]()
    sim.set_task(_benchmark_task(task))
    sim._freeze_rand_vec = False  # MetaWorld's switch for new positions at each reset
    sim.seeded_rand_vec = True
    sim.model.cam_pos[sim.model.camera("corner2").id] = LEROBOT_CORNER2_POS
    return sim
