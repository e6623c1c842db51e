"""Simulation: the built-in tabletop task, wrappers for the LeRobot sims, demo recording.

Importing this package registers ``geovla/Tabletop-v0`` with gymnasium and, unless the caller
chose otherwise, makes MuJoCo render headless through EGL.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

from envs.tabletop import TabletopEnv, make_expert  # noqa: E402

TABLETOP_ID = "geovla/Tabletop-v0"
# Geometry fields flat, for LeRobot's scripts (envs.lerobot_env)
LEROBOT_TABLETOP_ID = "geovla/TabletopLeRobot-v0"
LEROBOT_METAWORLD_ID = "geovla/MetaWorldLeRobot-v0"
if TABLETOP_ID not in gym.registry:
    gym.register(id=TABLETOP_ID, entry_point="envs.tabletop.env:TabletopEnv")
if LEROBOT_TABLETOP_ID not in gym.registry:
    gym.register(id=LEROBOT_TABLETOP_ID, entry_point="envs.lerobot_env:make_lerobot_tabletop")
if LEROBOT_METAWORLD_ID not in gym.registry:
    gym.register(id=LEROBOT_METAWORLD_ID, entry_point="envs.lerobot_env:make_lerobot_metaworld")

__all__ = ["LEROBOT_METAWORLD_ID", "LEROBOT_TABLETOP_ID", "TABLETOP_ID", "TabletopEnv", "make_expert"]
