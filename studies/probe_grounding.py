"""Does a policy head for the object its instruction names? An open-loop probe of grounding.

    python studies/probe_grounding.py --policy outputs/demo/policy --scenes 40

For each built-in ``reach`` scene (seeds from ``--seed``), the policy predicts chunks at the
first step of the episode; the mean horizontal direction of the first ``--actions`` actions
(averaged over ``--samples`` noise draws) is compared with the direction from the hand to each
object of the scene. Prints JSON, also written to ``--out``: the mean cosine with the direction
to the named object, and how often the named object is the one the policy points at most
(chance: 1 / objects per scene). Unlike closed-loop success this separates "does not know which
object" from "knows but is imprecise", and it is cheap: no episode is rolled out.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402
from policies.robot_observation import CAMERA_FIELDS  # noqa: E402
from policies.rollout import DEFAULT_SEED  # noqa: E402


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-8)


def probe_grounding(policy: Any, scenes: int, seed: int, samples: int = 4, actions: int = 5) -> dict[str, Any]:
    """Cosine between the policy's first moves and the direction to the named object.

    ``policy`` needs ``reset()``, ``predict_action(observation) -> [H, A]`` (xy first) and
    ``config.image_size`` / ``config.camera_keys``.
    """
    cameras = tuple(key.removeprefix("observation.images.") for key in policy.config.camera_keys)
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=policy.config.image_size, cameras=cameras,
                   geometry=bool(getattr(policy.config, "scene_fields", ())))
    scene = env.unwrapped
    cosines, hits, chance = [], 0, []
    try:
        for episode_seed in range(seed, seed + scenes):
            obs, _ = env.reset(seed=episode_seed)
            observation = {"images": obs["pixels"], "state": obs["agent_pos"], "instruction": scene.instruction,
                           **{field: obs[field] for field in CAMERA_FIELDS if field in obs}}
            moves = []
            for _ in range(samples):
                policy.reset()
                moves.append(np.asarray(policy.predict_action(observation))[:actions, :2].mean(axis=0))
            heading = _unit(np.mean(moves, axis=0))
            hand = scene.ee_position()[:2]
            to_object = {obj.name: float(heading @ _unit(scene.object_position(obj)[:2] - hand))
                         for obj in scene.objects}
            cosines.append(to_object[scene.target.name])
            hits += max(to_object, key=to_object.get) == scene.target.name
            chance.append(1 / len(scene.objects))
    finally:
        env.close()
        policy.reset()
    return {
        "scenes": scenes,
        "seed": seed,
        "direction_cosine": round(float(np.mean(cosines)), 4),
        "points_at_named_object": round(hits / scenes, 4),
        "chance": round(float(np.mean(chance)), 4),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="directory saved by GeoVLAPolicy.save_pretrained")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the first scene (0: training seeds)")
    parser.add_argument("--samples", type=int, default=4, help="noise draws averaged per scene")
    parser.add_argument("--actions", type=int, default=5, help="leading actions of the chunk averaged")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from policies.modeling_geovla import GeoVLAPolicy

    policy = GeoVLAPolicy.from_pretrained(args.policy)
    result = probe_grounding(policy, args.scenes, args.seed, args.samples, args.actions)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return result


if __name__ == "__main__":
    main()
