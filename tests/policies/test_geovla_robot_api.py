"""``predict_action`` (robot API): outputs, input validation with clear errors, masked cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from geovla_helpers import CAMERAS, make_policy

from policies.robot_observation import CAMERA_MASK_KEY, robot_observation_to_batch


@pytest.fixture(scope="module")
def policy(dataset_meta):
    return make_policy(dataset_meta)


def _observation(seed: int = 0, cameras=CAMERAS) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {cam: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for cam in cameras},
        "state": np.array([0.02, -0.03, 0.19, 1.0], dtype=np.float32),
        "instruction": "touch the blue cube",
    }


def test_single_and_batched_outputs(policy):
    policy.reset()
    actions = policy.predict_action(_observation())
    assert isinstance(actions, np.ndarray) and actions.shape == (10, 4) and np.isfinite(actions).all()
    obs = _observation()
    batched = {
        "images": {cam: np.stack([img, img]) for cam, img in obs["images"].items()},
        "state": np.stack([obs["state"]] * 2),
        "instruction": ["touch the blue cube", "touch the red ball"],
    }
    policy.reset()
    assert policy.predict_action(batched).shape == (2, 10, 4)
    float_chw = {**obs, "images": {c: torch.from_numpy(i).permute(2, 0, 1).float() / 255 for c, i in obs["images"].items()}}
    policy.reset()
    assert policy.predict_action(float_chw).shape == (10, 4)


def _with(obs: dict, **changes) -> dict:
    obs = {**obs, "images": dict(obs["images"])}
    for key, value in changes.items():
        if key.startswith("image_"):
            obs["images"][key.removeprefix("image_")] = value
        else:
            obs[key] = value
    return obs


BAD_INPUTS = {
    "missing key": (lambda o: {k: v for k, v in o.items() if k != "instruction"}, r"missing \['instruction'\]"),
    "unknown camera": (lambda o: _with(o, image_top=o["images"]["front"]), r"unknown cameras \['top'\]"),
    "wrong image shape": (lambda o: _with(o, image_front=np.zeros((32, 32, 4), np.uint8)), r"images\['front'\].*\[\.\.\., H, W, 3\]"),
    "wrong image size": (lambda o: _with(o, image_left=np.zeros((48, 32, 3), np.uint8)), r"images\['left'\] must be 32x32"),
    "wrong dtype": (lambda o: _with(o, image_front=np.zeros((32, 32, 3), np.int32)), r"images\['front'\] must be uint8 or float.*int32"),
    "float out of range": (lambda o: _with(o, image_wrist=np.full((3, 32, 32), 2.0, np.float32)), r"images\['wrist'\].*\[0, 1\]"),
    "NaN image": (lambda o: _with(o, image_wrist=np.full((3, 32, 32), np.nan, np.float32)), r"images\['wrist'\] contains NaN"),
    "NaN state": (lambda o: _with(o, state=np.array([0.0, np.nan, 0.2, 1.0])), r"state'\] contains NaN"),
    "wrong state length": (lambda o: _with(o, state=np.zeros(3)), r"state'\] must have shape \(4,\)"),
    "missing camera": (lambda o: {**o, "images": {c: i for c, i in o["images"].items() if c != "wrist"}}, r"camera 'wrist' is missing.*allow_missing_cameras"),
    "empty instruction": (lambda o: _with(o, instruction="  "), r"instruction'\] must be a non-empty str"),
    "None instruction": (lambda o: _with(o, instruction=None), r"instruction'\] must be a non-empty str.*got NoneType"),
    "int instruction": (lambda o: _with(o, instruction=5), r"instruction'\] must be a non-empty str.*got int 5"),
    "None image": (lambda o: _with(o, image_left=None), r"images\['left'\] must be uint8 \[H, W, 3\].*got NoneType"),
    "text state": (lambda o: _with(o, state="up"), r"state'\] must be an array of shape \(4,\), got str 'up'"),
    "ragged state": (lambda o: _with(o, state=[[0.1], [0.2, 0.3]]), r"state'\] must be an array of shape \(4,\), got a ragged list"),
    "batch of 0": (lambda o: {"images": {c: i[None][:0] for c, i in o["images"].items()}, "state": np.zeros((0, 4)),
                              "instruction": []}, r"batches of 0 observations.*give at least one"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_invalid_observation_raises_clear_error(policy, case):
    corrupt, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        policy.predict_action(corrupt(_observation()))


def test_missing_camera_is_masked_when_allowed(dataset_meta):
    policy = make_policy(dataset_meta, allow_missing_cameras=True)
    pre, post = policy.processors
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim)
    without_wrist = _observation(cameras=CAMERAS[:3])
    policy.reset()
    masked = policy.predict_action(without_wrist, noise=noise)
    assert masked.shape == (10, 4) and np.isfinite(masked).all()

    def chunk_with_wrist(pixels: np.ndarray, present: bool) -> np.ndarray:
        batch, _ = robot_observation_to_batch(_observation(cameras=CAMERAS), policy.config.camera_keys, 4, (32, 32), True)
        batch["observation.images.wrist"] = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        batch[CAMERA_MASK_KEY][:, CAMERAS.index("wrist")] = present
        for cam in CAMERAS[:3]:  # the same fixed cameras as without_wrist
            batch[f"observation.images.{cam}"] = torch.from_numpy(without_wrist["images"][cam]).permute(2, 0, 1)[None].float() / 255
        policy.reset()
        return post(policy.predict_action_chunk(pre(batch), noise=noise)).numpy()[0]

    rng = np.random.default_rng(5)
    bright, dark = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), np.zeros((32, 32, 3), np.uint8)
    np.testing.assert_allclose(chunk_with_wrist(bright, present=False), masked, atol=1e-5)
    np.testing.assert_allclose(chunk_with_wrist(dark, present=False), masked, atol=1e-5)
    assert not np.allclose(chunk_with_wrist(bright, present=True), chunk_with_wrist(dark, present=True), atol=1e-4)
