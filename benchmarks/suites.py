"""The task families a benchmark runs on.

A :class:`Suite` says how to record a task's scripted demonstrations, which of their features
are geometry (depth, camera parameters: only a policy that reads them gets a dataset with them),
which ``lerobot-eval`` environment arguments evaluate a policy on it, which words its
instructions use (the word-level tokenizer of SmolVLA and pi0 knows them), which geovla settings
it uses, and whether one policy is trained per task or one over all its tasks. ``builtin`` is
the project's tabletop task (a policy per task), ``metaworld`` MetaWorld through
``envs.metaworld`` (one multi-task policy). Another family is one more function returning a
``Suite``, added to ``SUITES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.rollout import DEFAULT_SEED

from benchmarks.budgets import BUILTIN_FULL, METAWORLD_FULL, Budget

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# record(task, root, episodes, image_size, seed, progress) -> record_demos' summary ("attempts", "seeds", ...)
Recorder = Callable[[str, Path, int, int, int, bool], dict[str, Any]]


@dataclass(frozen=True)
class Suite:
    """A family of tasks: how to record them, evaluate on them and configure geovla for them.

    Args:
        name: ``--suite`` name.
        tasks: task names, in report order.
        record: records ``episodes`` successful scripted demonstrations of a task to a new
            LeRobotDataset at ``root``, attempt ``i`` with seed ``seed + i``.
        eval_env_args: ``lerobot-eval`` environment arguments for a task under a budget, with or
            without the geometry observations.
        geometry_prefixes: key prefixes of the recorded geometry features (none: every policy gets
            the recorded dataset itself).
        vocabulary: every word of the suite's instructions.
        cameras: the cameras recorded and evaluated (every policy gets all of them).
        geovla_config: YAML whose ``policy:`` section gives geovla's settings on this suite.
        full_budget: the budget of a full run (``scripts/benchmark.py`` without ``--quick``).
        record_seed: the first recording seed.
        eval_seed: the first evaluation seed (``lerobot-eval --seed``); evaluation uses
            ``eval_seed .. eval_seed + episodes - 1``, which must not meet a recording seed.
        default_tasks: the tasks run when ``--tasks`` is not given (None: all of ``tasks``).
        multitask: train one policy on the demonstrations of all the run's tasks together and
            evaluate it on each (False: one policy per task).
        anchors: markdown printed under the table (published figures to read it against).
    """

    name: str
    tasks: tuple[str, ...]
    record: Recorder
    eval_env_args: Callable[[str, Budget, bool], list[str]]
    geometry_prefixes: tuple[str, ...]
    vocabulary: tuple[str, ...]
    cameras: tuple[str, ...]
    geovla_config: Path
    full_budget: Budget
    record_seed: int = 0
    eval_seed: int = DEFAULT_SEED
    default_tasks: tuple[str, ...] | None = None
    multitask: bool = False
    anchors: str = ""


def _record_expert(env: Any, expert: Callable[[dict], Any], root: Path, episodes: int, seed: int,
                   progress: bool) -> dict[str, Any]:
    """``episodes`` successful demonstrations of ``expert`` in ``env`` (closed afterwards)."""
    from envs.recording import record_demos

    try:
        return record_demos(env, expert, root, episodes, seed=seed, progress=progress)
    finally:
        env.close()


def _record_tabletop(task: str, root: Path, episodes: int, image_size: int, seed: int,
                     progress: bool) -> dict[str, Any]:
    """Scripted tabletop demonstrations with depth and cameras (geovla's voxel tokens read them)."""
    import gymnasium as gym

    import envs

    env = gym.make(envs.TABLETOP_ID, task=task, image_size=image_size, geometry=True)
    return _record_expert(env, envs.make_expert(env), root, episodes, seed, progress)


def _tabletop_env_args(task: str, budget: Budget, geometry: bool) -> list[str]:
    """``--env.type=geovla_tabletop`` at the budget's image size, with depth and cameras for a
    policy that reads them."""
    args = ["--env.type=geovla_tabletop", f"--env.task={task}", f"--env.image_size={budget.image_size}",
            f"--env.geometry={str(geometry).lower()}"]
    if budget.episode_length is not None:
        args.append(f"--env.episode_length={budget.episode_length}")
    return args


def builtin_suite() -> Suite:
    """The built-in tabletop tasks, four cameras, language-named targets: ``reach`` and ``pick`` by
    default, ``intercept`` (moving objects) when named with ``--tasks``."""
    from envs.tabletop.env import INSTRUCTION_TEMPLATES, TASKS
    from envs.tabletop.scene import CAMERAS, COLOURS, SHAPES

    words = {word for template in INSTRUCTION_TEMPLATES.values() for word in template.format("").split()}
    return Suite(
        name="builtin",
        tasks=tuple(TASKS),
        record=_record_tabletop,
        eval_env_args=_tabletop_env_args,
        geometry_prefixes=("observation.depth.", "observation.intrinsics.", "observation.extrinsics."),
        vocabulary=tuple(sorted(words | set(COLOURS) | set(SHAPES))),
        cameras=tuple(CAMERAS),
        geovla_config=CONFIGS / "demo_reach_tiny.yaml",
        full_budget=BUILTIN_FULL,
        default_tasks=("reach", "pick"),
    )


METAWORLD_CAMERAS = ("corner2", "topview", "gripperPOV")
# MetaWorld's experts take 41-92 steps on reach, push, pick-place and drawer-open, 78-300 on
# peg-insert-side (5 seeds each); LeRobot evaluates MetaWorld with 400-step episodes.
METAWORLD_EPISODE_LENGTH = 200
METAWORLD_ANCHORS = (
    "Published MetaWorld figures, for context only (MT50 averages, other data scales, pretrained models "
    "and GPUs): SmolVLA 57.3%, pi0 47.9% (SmolVLA paper), Evo-1 80.6%."
)


def _record_metaworld(task: str, root: Path, episodes: int, image_size: int, seed: int,
                      progress: bool) -> dict[str, Any]:
    """MetaWorld's scripted experts with depth and cameras, episodes of up to MetaWorld's 500 steps."""
    from envs.metaworld import MetaWorldEnv, make_metaworld_expert

    env = MetaWorldEnv(task, image_size=image_size, cameras=METAWORLD_CAMERAS, geometry=True)
    return _record_expert(env, make_metaworld_expert(env), root, episodes, seed, progress)


def _metaworld_env_args(task: str, budget: Budget, geometry: bool) -> list[str]:
    """``--env.type=geovla_metaworld`` with the suite's cameras, at the budget's image size."""
    return ["--env.type=geovla_metaworld", f"--env.task={task}", f"--env.image_size={budget.image_size}",
            f"--env.cameras=[{','.join(METAWORLD_CAMERAS)}]", f"--env.geometry={str(geometry).lower()}",
            f"--env.episode_length={budget.episode_length or METAWORLD_EPISODE_LENGTH}"]


def metaworld_suite() -> Suite:
    """MetaWorld's MT10 tasks (5 of them by default), one policy trained on all the run's tasks,
    three cameras, LeRobot's task descriptions as instructions."""
    from envs.metaworld import MT10_TASKS, task_description

    tasks = tuple(task.removesuffix("-v3") for task in MT10_TASKS)
    return Suite(
        name="metaworld",
        tasks=tasks,
        record=_record_metaworld,
        eval_env_args=_metaworld_env_args,
        geometry_prefixes=("observation.depth.", "observation.intrinsics.", "observation.extrinsics."),
        vocabulary=tuple(sorted({word for task in tasks for word in task_description(task).split()})),
        cameras=METAWORLD_CAMERAS,
        geovla_config=CONFIGS / "metaworld_tiny.yaml",
        full_budget=METAWORLD_FULL,
        default_tasks=("reach", "push", "pick-place", "drawer-open", "peg-insert-side"),
        multitask=True,
        anchors=METAWORLD_ANCHORS,
    )


SUITES: dict[str, Callable[[], Suite]] = {"builtin": builtin_suite, "metaworld": metaworld_suite}


def get_suite(name: str) -> Suite:
    """The suite called ``name``; a clear error for one that is not (yet) defined."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; defined: {sorted(SUITES)} "
                         "(a new one is a function returning benchmarks.suites.Suite, added to SUITES)")
    return SUITES[name]()
