"""The task families a benchmark runs on.

A :class:`Suite` says how to record a task's scripted demonstrations, which of their features
are geometry (depth, camera parameters: only a policy that reads them gets a dataset with them),
which ``lerobot-eval`` environment arguments evaluate a policy on it, which words its instructions use (the word-level
tokenizer of SmolVLA and pi0 knows them) and which geovla settings it uses. ``builtin`` is the
project's tabletop task; another family (e.g. MetaWorld: ``envs/metaworld`` has the env and its
experts; it needs a LeRobot env config next) is one more function returning a ``Suite``, added to ``SUITES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.rollout import DEFAULT_SEED

from benchmarks.budgets import Budget

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
        record_seed: the first recording seed.
        eval_seed: the first evaluation seed (``lerobot-eval --seed``); evaluation uses
            ``eval_seed .. eval_seed + episodes - 1``, which must not meet a recording seed.
    """

    name: str
    tasks: tuple[str, ...]
    record: Recorder
    eval_env_args: Callable[[str, Budget, bool], list[str]]
    geometry_prefixes: tuple[str, ...]
    vocabulary: tuple[str, ...]
    cameras: tuple[str, ...]
    geovla_config: Path
    record_seed: int = 0
    eval_seed: int = DEFAULT_SEED


def _record_tabletop(task: str, root: Path, episodes: int, image_size: int, seed: int,
                     progress: bool) -> dict[str, Any]:
    """Scripted tabletop demonstrations with depth and cameras (geovla's voxel tokens read them)."""
    import gymnasium as gym

    import envs
    from envs.recording import record_demos

    env = gym.make(envs.TABLETOP_ID, task=task, image_size=image_size, geometry=True)
    try:
        return record_demos(env, envs.make_expert(env), root, episodes, seed=seed, progress=progress)
    finally:
        env.close()


def _tabletop_env_args(task: str, budget: Budget, geometry: bool) -> list[str]:
    """``--env.type=geovla_tabletop`` at the budget's image size, with depth and cameras for a
    policy that reads them."""
    args = ["--env.type=geovla_tabletop", f"--env.task={task}", f"--env.image_size={budget.image_size}",
            f"--env.geometry={str(geometry).lower()}"]
    if budget.episode_length is not None:
        args.append(f"--env.episode_length={budget.episode_length}")
    return args


def builtin_suite() -> Suite:
    """The built-in tabletop task: ``reach`` and ``pick``, four cameras, language-named targets."""
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
    )


SUITES: dict[str, Callable[[], Suite]] = {"builtin": builtin_suite}


def get_suite(name: str) -> Suite:
    """The suite called ``name``; a clear error for one that is not (yet) defined."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; defined: {sorted(SUITES)} "
                         "(a new one is a function returning benchmarks.suites.Suite, added to SUITES)")
    return SUITES[name]()
