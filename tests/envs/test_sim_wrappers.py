import numpy as np
import pytest

from envs.wrappers import ALOHA_CAMERAS, make_aloha, make_pusht


def test_pusht_follows_the_common_convention():
    env = make_pusht(image_size=64)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert list(obs["pixels"]) == ["top"] and obs["pixels"]["top"].shape == (64, 64, 3)
    assert obs["agent_pos"].dtype == np.float32 and obs["agent_pos"].shape == (2,)
    moved, *_ = env.step(np.array([100.0, 100.0], dtype=np.float32))
    assert not np.array_equal(moved["agent_pos"], obs["agent_pos"])
    assert "T-shaped" in env.task_description
    env.close()


def test_aloha_renders_every_camera():
    env = make_aloha("insertion", image_size=(48, 64))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert tuple(obs["pixels"]) == ALOHA_CAMERAS
    images = [obs["pixels"][c] for c in ALOHA_CAMERAS]
    assert all(im.shape == (48, 64, 3) and im.dtype == np.uint8 for im in images)
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i].astype(int) - images[j].astype(int)).mean() > 1, (ALOHA_CAMERAS[i], ALOHA_CAMERAS[j])
    assert obs["agent_pos"].shape == (14,) and obs["agent_pos"].dtype == np.float32
    # Turning the left arm's waist moves the left wrist camera, not the right one.
    action = obs["agent_pos"].copy()
    action[0] += 0.5
    for _ in range(10):
        step_obs, reward, terminated, truncated, info = env.step(action)
    assert env.observation_space.contains(step_obs) and "is_success" in info
    change = {c: np.abs(step_obs["pixels"][c].astype(int) - obs["pixels"][c].astype(int)).mean() for c in ALOHA_CAMERAS}
    assert change["left_wrist"] > 3 * max(change["right_wrist"], 0.2), change
    assert env.task_description == "insert the peg into the socket"
    env.close()


def test_aloha_rejects_unknown_cameras_and_tasks():
    with pytest.raises(ValueError, match="not in the MJCF"):
        make_aloha("transfer_cube", image_size=(32, 32), cameras=("top", "ceiling"))
    with pytest.raises(ValueError, match="ALOHA task"):
        make_aloha("folding")
