"""``studies/probe_grounding.py``: the cosine and the pointing rate, checked on a policy with a
known heading."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from geovla_helpers import load_script

import envs


class _FixedHeading:
    """Always moves along ``heading`` in xy, whatever it sees."""

    def __init__(self, heading: tuple[float, float]) -> None:
        self.heading = np.array([*heading, 0.0, 0.0], np.float32)
        self.config = SimpleNamespace(image_size=32, camera_keys=["observation.images.front"])
        self.seen: list[str] = []

    def reset(self) -> None:
        pass

    def predict_action(self, observation: dict) -> np.ndarray:
        self.seen.append(observation["instruction"])
        return np.tile(self.heading, (10, 1))


@pytest.mark.parametrize("heading", [(1.0, 0.0), (0.0, -1.0)])
def test_probe_matches_a_direct_computation(heading):
    policy = _FixedHeading(heading)
    report = load_script("studies/probe_grounding").probe_grounding(policy, scenes=6, seed=100, samples=2)

    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=32, cameras=("front",))
    scene, cosines, hits = env.unwrapped, [], 0
    for seed in range(100, 106):
        env.reset(seed=seed)
        hand = scene.ee_position()[:2]
        cos = {o.name: float(np.dot(heading, (scene.object_position(o)[:2] - hand)
                                    / np.linalg.norm(scene.object_position(o)[:2] - hand))) for o in scene.objects}
        cosines.append(cos[scene.target.name])
        hits += max(cos, key=cos.get) == scene.target.name
    env.close()
    assert report["direction_cosine"] == pytest.approx(np.mean(cosines), abs=1e-3)
    assert report["points_at_named_object"] == pytest.approx(hits / 6, abs=1e-4)
    assert report["chance"] == pytest.approx(1 / 3, abs=1e-4)
    assert len(policy.seen) == 12 and all(text.startswith("touch the ") for text in policy.seen)
