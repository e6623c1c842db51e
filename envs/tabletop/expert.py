"""Scripted experts with privileged access to the simulator state."""

from __future__ import annotations

import numpy as np

from envs.tabletop.env import CONTROL_DT, MAX_TRANSLATION, TabletopEnv

HOVER_HEIGHT = 0.1  # end-effector height for moving across the table
LIFT_TARGET = 0.16
ALIGN_TOLERANCE = 0.008
GRASP_DISTANCE = 0.012
CLOSED_ON_OBJECT = 0.7  # gripper opening below this with the object between the fingers = grasped
APPROACH_LIFT = 0.06  # reach: the highest the aim point sits above the target


def _toward(current: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Delta action (in [-1, 1]) that moves ``current`` toward ``goal`` as fast as allowed."""
    return np.clip((goal - current) / MAX_TRANSLATION, -1.0, 1.0)


def _cone_step(ee: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A step at ``target`` down a 45-degree cone (aiming above it by the horizontal distance
    left, capped): the hand meets the object from above instead of pushing it sideways. The
    step keeps its direction (scaled, not clipped per axis)."""
    lift = min(APPROACH_LIFT, float(np.linalg.norm(target[:2] - ee[:2])))
    step = (target + np.array([0.0, 0.0, lift]) - ee) / MAX_TRANSLATION
    return step / max(1.0, float(np.abs(step).max()))


class ReachExpert:
    """Move in a straight line at the target object with the gripper open.

    A straight line (rather than hover-then-descend) makes the action a smooth function of where
    the target is, with no phase switch that hinges on millimetre alignment: what a learned
    policy sees in 32-px images can be imitated. The step keeps the direction to the target
    (it is scaled, not clipped per axis), so no action dimension sits at its limit nearly all
    the time, which mean/std normalisation would turn into rare 30-sigma outliers.
    """

    def __init__(self, env: TabletopEnv) -> None:
        self.env = env

    def __call__(self, obs: dict) -> np.ndarray:
        return np.array([*_cone_step(obs["agent_pos"][:3], self.env.target_position()), -1.0], dtype=np.float32)


class InterceptExpert:
    """Reach for where the sliding target will be when the hand can get there.

    The aim is the target's position ``k`` steps ahead (``TabletopEnv.target_position_in``,
    bounces included) for the fewest steps ``k`` in which the hand, moving at most
    ``MAX_TRANSLATION`` per axis and step, covers the way there (the cone's extra height
    included); as the hand closes in, ``k`` falls to 0 and the aim to the target itself.
    """

    def __init__(self, env: TabletopEnv, horizon: int = 80) -> None:
        self.env = env
        self.horizon = horizon

    def __call__(self, obs: dict) -> np.ndarray:
        ee = obs["agent_pos"][:3]
        for k in range(self.horizon):
            aim = self.env.target_position_in(k * CONTROL_DT)
            lift = min(APPROACH_LIFT, float(np.linalg.norm(aim[:2] - ee[:2])))
            if np.abs(aim + np.array([0.0, 0.0, lift]) - ee).max() <= k * MAX_TRANSLATION:
                break
        return np.array([*_cone_step(ee, aim), -1.0], dtype=np.float32)


class PickExpert:
    """Hover over the target, descend with the gripper open, close on it, lift it.

    Stateless: the phase is read from the state, so the expert recovers from a slipped grasp.
    """

    def __init__(self, env: TabletopEnv) -> None:
        self.env = env

    def __call__(self, obs: dict) -> np.ndarray:
        ee, opening = obs["agent_pos"][:3], float(obs["agent_pos"][3])
        target = self.env.target_position()
        near = np.linalg.norm(ee - target) < GRASP_DISTANCE
        if near and opening < CLOSED_ON_OBJECT:
            return np.array([*_toward(ee, np.array([*target[:2], LIFT_TARGET])), 1.0], dtype=np.float32)
        if near:
            return np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)
        return np.array([*_toward(ee, _hover_then_descend(ee, target)), -1.0], dtype=np.float32)


def _hover_then_descend(ee: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Goal point: above the target while not aligned in xy, the target itself once aligned."""
    if np.linalg.norm(ee[:2] - target[:2]) > ALIGN_TOLERANCE:
        return np.array([target[0], target[1], HOVER_HEIGHT])
    return target


def make_expert(env) -> ReachExpert | PickExpert | InterceptExpert:
    """The scripted expert for the env's task family (accepts a wrapped env)."""
    base = env.unwrapped
    if not isinstance(base, TabletopEnv):
        raise ValueError(f"scripted experts need a TabletopEnv, got {type(base).__name__}")
    return {"reach": ReachExpert, "pick": PickExpert, "intercept": InterceptExpert}[base.task](base)
