import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.recording import open_dataset, record_demos
from envs.tabletop.scene import CAMERAS


class LoggingEnv(gym.Wrapper):
    """Keeps every (observation, action, instruction) the recorder saw; can fail on purpose."""

    def __init__(self, env, fail_at: tuple[int, int] | None = None, error: type[BaseException] = RuntimeError):
        super().__init__(env)
        self.episodes: list[list[tuple[dict, np.ndarray, str]]] = []
        self.fail_at, self.error = fail_at, error
        self._last_obs = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.episodes.append([])
        self._last_obs = obs
        return obs, info

    def step(self, action):
        episode, step = len(self.episodes) - 1, len(self.episodes[-1])
        if self.fail_at == (episode, step):
            raise self.error("injected failure")
        self.episodes[-1].append((self._last_obs, np.asarray(action).copy(), self.env.unwrapped.instruction))
        result = self.env.step(action)
        self._last_obs = result[0]
        return result


def _make_env(**kwargs):
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=32, geometry=True)
    return LoggingEnv(env, **kwargs)


def test_dataset_round_trip_equals_what_was_recorded(tmp_path):
    env = _make_env()
    summary = record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=2, seed=3, progress=False)
    env.close()
    assert summary["episodes"] == 2 and summary["expert_success_rate"] == 1.0

    dataset = open_dataset(tmp_path / "ds")
    recorded = [step for episode in env.episodes for step in episode]
    assert dataset.num_episodes == 2 and len(dataset) == len(recorded) == summary["frames"]
    assert dataset._video_backend == "pyav"
    for index in range(0, len(dataset), 3):
        item = dataset[index]
        obs, action, instruction = recorded[index]
        assert item["task"] == instruction
        torch.testing.assert_close(item["action"], torch.from_numpy(action), rtol=0, atol=0)
        torch.testing.assert_close(item["observation.state"], torch.from_numpy(obs["agent_pos"]), rtol=0, atol=0)
        for cam in CAMERAS:
            image = (item[f"observation.images.{cam}"].permute(1, 2, 0) * 255).round().to(torch.uint8)
            assert torch.equal(image, torch.from_numpy(obs["pixels"][cam])), cam
            for key in ("depth", "intrinsics", "extrinsics"):
                torch.testing.assert_close(
                    item[f"observation.{key}.{cam}"], torch.from_numpy(obs[key][cam]), rtol=0, atol=0
                )


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_recording_keeps_saved_episodes_readable(tmp_path, error):
    env = _make_env(fail_at=(2, 4), error=error)
    with pytest.raises(error):
        record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=5, progress=False)
    env.close()
    dataset = open_dataset(tmp_path / "ds")
    assert dataset.num_episodes == 2
    assert len(dataset) == sum(len(e) for e in env.episodes[:2])
    last = dataset[len(dataset) - 1]
    assert last["episode_index"].item() == 1
    np.testing.assert_array_equal(last["action"].numpy(), env.episodes[1][-1][1])


def test_refuses_to_overwrite_an_existing_dataset(tmp_path):
    (tmp_path / "ds").mkdir()
    env = _make_env()
    with pytest.raises(FileExistsError, match="already exists"):
        record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=1, progress=False)
    env.close()


def test_video_storage_round_trips_within_codec_error(tmp_path):
    env = _make_env()
    record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=1, seed=1, video=True, progress=False)
    env.close()
    dataset = open_dataset(tmp_path / "ds")
    assert set(dataset.meta.video_keys) == {f"observation.images.{c}" for c in CAMERAS}
    obs = env.episodes[0][2][0]
    decoded = dataset[2]["observation.images.front"].permute(1, 2, 0).numpy()
    error = np.abs(decoded - obs["pixels"]["front"] / 255.0).mean()
    assert error < 0.03
