"""What every policy of a benchmark run gets: demonstrations, optimiser steps, evaluation episodes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Budget:
    """The budget of one run, the same for every policy and task.

    Args:
        demos: scripted demonstrations recorded per task (one dataset per task, shared by all policies).
        steps: optimiser steps of every policy (``lerobot-train --steps``).
        batch_size: training batch size of every policy.
        eval_episodes: evaluation episodes per (task, policy) cell, on the same held-out seeds.
        eval_batch_size: environments stepped together by ``lerobot-eval``.
        image_size: side of the square camera images, recorded and evaluated.
        episode_length: evaluation episode limit in steps (None: the task's own).
        save_freq: checkpoint every this many steps (what a stopped training resumes from).
        log_freq: training log line every this many steps (the wall-clock curve's resolution).
    """

    demos: int
    steps: int
    batch_size: int
    eval_episodes: int
    eval_batch_size: int
    image_size: int
    episode_length: int | None
    save_freq: int
    log_freq: int

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and value < 1:
                raise ValueError(f"budget {field.name} must be >= 1, got {value}")
        if self.save_freq % self.log_freq:
            raise ValueError(f"save_freq ({self.save_freq}) must be a multiple of log_freq ({self.log_freq}), "
                             "so that every checkpoint's step has a time in the training log")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def override(self, **values: Any) -> Budget:
        """A copy with the given fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


# The full built-in run for a 2-core CPU (about 8 hours, see scripts/benchmark.py).
BUILTIN_FULL = Budget(demos=1000, steps=2000, batch_size=16, eval_episodes=100, eval_batch_size=10, image_size=32,
              episode_length=None, save_freq=500, log_freq=50)
# The full MetaWorld run: 100 demonstrations of each of 5 tasks, one policy trained on all of them,
# 50 evaluation episodes per task (250 per policy) of at most 200 steps.
METAWORLD_FULL = Budget(demos=100, steps=2000, batch_size=16, eval_episodes=50, eval_batch_size=10, image_size=64,
                        episode_length=None, save_freq=500, log_freq=50)
# The whole pipeline at toy sizes, for CI.
QUICK = Budget(demos=3, steps=2, batch_size=2, eval_episodes=2, eval_batch_size=2, image_size=32,
               episode_length=8, save_freq=1, log_freq=1)
