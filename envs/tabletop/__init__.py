"""The built-in multi-camera tabletop task."""

from envs.tabletop.env import TabletopEnv, validate_action
from envs.tabletop.expert import InterceptExpert, PickExpert, ReachExpert, make_expert

__all__ = ["TabletopEnv", "validate_action", "ReachExpert", "PickExpert", "InterceptExpert", "make_expert"]
