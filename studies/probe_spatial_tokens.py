"""Do the geometry aggregator's tokens know where things are? A linear probe of 3D positions.

    python studies/probe_spatial_tokens.py --policy outputs/demo/policy --scenes 200
    python studies/probe_spatial_tokens.py --policy outputs/demo/policy --random-init   # the control

For each built-in scene (seeds from ``--seed``), the policy's geometry aggregator reads the first
observation; for every object, the last-layer token of the ``--camera`` patch its centre projects
to is paired with the object's world position. A ridge regression fitted on the first
``--train-fraction`` of the scenes predicts the positions of the objects of the others. Two
probes are reported, each with its held-out R² per axis and its mean error in centimetres:

- ``aggregator``: from the tokens;
- ``patch_position``: from where the patch is in the image alone (quadratic in its row and
  column). For a fixed camera over a table this already says much of x and y, so the tokens
  carry 3D knowledge only as far as they beat it, above all in height.

``--random-init`` probes the same architecture with fresh weights: what training added is the
difference. The ridge strength is chosen on a split of the training scenes, never on the
held-out ones. Prints JSON, also written to ``--out``.
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
from envs.tabletop.env import TASKS  # noqa: E402
from policies.modeling_geovla import GeoVLAPolicy  # noqa: E402
from policies.robot_observation import robot_observation_to_batch  # noqa: E402

RIDGE_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_ridge(x: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    """Weights ``[D + 1, K]`` (bias last) of ridge regression on standardised inputs ``x [N, D]``."""
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    penalty = strength * len(x) * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    return np.linalg.solve(design.T @ design + penalty, design.T @ y)


def predict(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1))], axis=1) @ weights


def r_squared(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per output column, 1 - residual / total sum of squares."""
    return 1.0 - ((y - predicted) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0).clip(1e-12)


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Ridge probe with its strength chosen on the last quarter of the training rows."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    split = max(1, int(0.75 * len(x_train)))

    def validation_error(strength: float) -> float:
        weights = fit_ridge(x_train[:split], y_train[:split], strength)
        return float(((predict(weights, x_train[split:]) - y_train[split:]) ** 2).mean())

    strength = min(RIDGE_STRENGTHS, key=validation_error)
    predicted = predict(fit_ridge(x_train, y_train, strength), x_test)
    return {
        "r2_xyz": [round(float(v), 4) for v in r_squared(y_test, predicted)],
        "mean_error_cm": round(float(np.linalg.norm(predicted - y_test, axis=1).mean() * 100), 3),
        "ridge_strength": strength,
    }


def patch_position_features(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Quadratic features ``[N, 5]`` of patch coordinates in [0, 1]."""
    return np.stack([rows, cols, rows * cols, rows ** 2, cols ** 2], axis=1)


@torch.no_grad()
def object_tokens(policy: GeoVLAPolicy, task: str, scenes: int, seed: int, camera: str) -> dict[str, np.ndarray]:
    """Per object of each scene: its aggregator token, patch coordinates, world position and scene index."""
    config = policy.config
    if policy.model.geometry is None:
        raise ValueError("the policy runs no geometry aggregator (use_geometry=False or voxel_features=False)")
    cameras = [key.removeprefix("observation.images.") for key in config.camera_keys]
    if camera not in cameras:
        raise ValueError(f"--camera {camera!r} is not one of the policy's cameras {cameras}")
    height, width = config.image_features[config.camera_keys[0]].shape[1:]
    env = gym.make(envs.TABLETOP_ID, task=task, image_size=(height, width), cameras=tuple(cameras), geometry=True)
    preprocessor = policy.processors[0]
    tokens, patches, positions, scene_ids = [], [], [], []
    try:
        for scene in range(scenes):
            obs, _ = env.reset(seed=seed + scene)
            base = env.unwrapped
            observation = {"images": obs["pixels"], "state": obs["agent_pos"], "instruction": base.instruction,
                           **{name: obs[name] for name in config.scene_fields}}
            batch, _ = robot_observation_to_batch(observation, config.camera_keys, config.state_dim, (height, width),
                                                  config.allow_missing_cameras, config.scene_fields)
            batch = preprocessor(batch)
            images, _ = policy._images(batch, history=False)
            agg = policy.model.geometry.aggregator(policy.model._geometry_images(images, policy._camera_mask(batch, images)))
            view = cameras.index(camera)
            frame = agg.layers[max(agg.layers)][0, -len(cameras) + view, agg.patch_start_idx:]  # [P, C]
            grid_h, grid_w = agg.grid
            intrinsics, extrinsics = obs["intrinsics"][camera], obs["extrinsics"][camera]
            for obj in base.objects:
                world = base.object_position(obj)
                u, v, depth = intrinsics @ (extrinsics[:, :3] @ world + extrinsics[:, 3])
                col, row = u / depth / width, v / depth / height
                if depth <= 0 or not (0 <= row < 1 and 0 <= col < 1):
                    continue  # out of this camera's view
                index = int(row * grid_h) * grid_w + int(col * grid_w)
                tokens.append(frame[index].float().numpy())
                patches.append((row, col))
                positions.append(world)
                scene_ids.append(scene)
    finally:
        env.close()
    patch = np.array(patches)
    return {"tokens": np.stack(tokens), "patch": patch_position_features(patch[:, 0], patch[:, 1]),
            "positions": np.stack(positions), "scenes": np.array(scene_ids)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = GeoVLAPolicy.from_pretrained(args.policy)
    if args.random_init:
        fresh = GeoVLAPolicy(policy.config)
        fresh.attach_processors(*policy.processors)
        policy = fresh
    policy.eval()
    data = object_tokens(policy, args.task, args.scenes, args.seed, args.camera)
    train = data["scenes"] < int(args.train_fraction * args.scenes)
    test = ~train
    if train.sum() < 10 or test.sum() < 5:
        raise ValueError(f"{train.sum()} training and {test.sum()} held-out objects: probe more --scenes")
    y = data["positions"]
    return {
        "policy": str(args.policy),
        "weights": "random init" if args.random_init else "trained",
        "camera": args.camera,
        "scenes": args.scenes,
        "objects": {"train": int(train.sum()), "held_out": int(test.sum())},
        "aggregator": probe(data["tokens"][train], y[train], data["tokens"][test], y[test]),
        "patch_position": probe(data["patch"][train], y[train], data["patch"][test], y[test]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True, help="a saved geovla policy directory")
    parser.add_argument("--task", default="reach", choices=TASKS)
    parser.add_argument("--camera", default="front")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=5000, help="first scene seed (away from training and evaluation)")
    parser.add_argument("--train-fraction", type=float, default=0.7)
    parser.add_argument("--random-init", action="store_true", help="probe the same architecture untrained")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
