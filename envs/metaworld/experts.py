"""MetaWorld's scripted experts (``metaworld.policies``), which act on the privileged 39-d state."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from envs.metaworld.env import MetaWorldEnv



class MetaWorldExpert:
    """MetaWorld's scripted policy for the env's task, reading the privileged state."""

    def __init__(self, env: MetaWorldEnv) -> None:
        self.env = env
        self.policy = ENV_POLICY_MAP[env.task]()

    def __call__(self, obs: dict) -> np.ndarray:
        with warnings.catch_warnings():  # MetaWorld's policies warn whenever their gains saturate
            warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
            action = self.policy.get_action(self.env.state)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_metaworld_expert(env: gym.Env) -> MetaWorldExpert:
    """MetaWorld's scripted expert for a (possibly wrapped) :class:`MetaWorldEnv`."""
    base = env.unwrapped
    if not isinstance(base, MetaWorldEnv):
        raise ValueError(f"MetaWorld experts need a MetaWorldEnv, got {type(base).__name__}")
    return MetaWorldExpert(base)
