"""MetaWorld (a Sawyer arm, 50 tasks) in the observation convention of the built-in task.

:class:`MetaWorldEnv` wraps MetaWorld's own env (its physics, rewards, success test and seeding)
and renders several cameras with depth and camera ground truth (``rendering``); experts are
MetaWorld's scripted policies (``experts``); task names and descriptions are in ``tasks``.
"""

from envs.metaworld.env import CAMERAS, DEFAULT_CAMERAS, MetaWorldEnv
from envs.metaworld.experts import MetaWorldExpert, make_metaworld_expert
from envs.metaworld.rendering import RenderSettings
from envs.metaworld.tasks import MT10_TASKS, canonical_task, task_description

__all__ = ["CAMERAS", "DEFAULT_CAMERAS", "MT10_TASKS", "MetaWorldEnv", "MetaWorldExpert", "RenderSettings",
           "canonical_task", "make_metaworld_expert", "task_description"]
