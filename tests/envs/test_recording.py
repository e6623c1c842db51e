import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import lerobot.datasets.dataset_metadata as lerobot_metadata
import numpy as np
import pytest
import torch

import envs
from envs.recording import open_dataset, record_demos
from envs.recording_journal import JOURNAL_DIR, EmptyDatasetError
from envs.tabletop.scene import CAMERAS

REPO_ROOT = Path(__file__).resolve().parents[2]
# Half a step of the depth stream's log code over MuJoCo's range (ln(1000) / 4095 / 2), rounded up.
DEPTH_VIDEO_MAX_RELATIVE_ERROR = 8.5e-4


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
    assert not (tmp_path / "ds" / JOURNAL_DIR).exists()
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


def _assert_first_two_episodes_kept(root, env) -> None:
    """The dataset at ``root`` holds exactly ``env``'s first two recorded episodes."""
    dataset = open_dataset(root)
    assert dataset.num_episodes == 2
    assert len(dataset) == sum(len(e) for e in env.episodes[:2])
    last = dataset[len(dataset) - 1]
    assert last["episode_index"].item() == 1
    np.testing.assert_array_equal(last["action"].numpy(), env.episodes[1][-1][1])


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_recording_keeps_saved_episodes_readable(tmp_path, error):
    env = _make_env(fail_at=(2, 4), error=error)
    with pytest.raises(error):
        record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=5, progress=False)
    env.close()
    _assert_first_two_episodes_kept(tmp_path / "ds", env)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_while_saving_an_episode_drops_only_that_episode(tmp_path, monkeypatch, error):
    """LeRobot has already written the third episode's data and counted it in info.json when
    writing its statistics fails: the recording must fall back to the two episodes before."""
    saves = []

    def write_stats_failing_on_the_third_episode(stats, root):
        saves.append(root)
        if len(saves) == 3:
            raise error("injected failure")
        write_stats(stats, root)

    write_stats = lerobot_metadata.write_stats
    monkeypatch.setattr(lerobot_metadata, "write_stats", write_stats_failing_on_the_third_episode)
    env = _make_env()
    with pytest.raises(error):
        record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=5, progress=False)
    env.close()
    _assert_first_two_episodes_kept(tmp_path / "ds", env)
    assert not (tmp_path / "ds" / JOURNAL_DIR).exists()


def test_opening_a_folder_without_episodes_fails_clearly(tmp_path):
    env = _make_env(fail_at=(0, 2))
    with pytest.raises(RuntimeError, match="injected failure"):
        record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=2, progress=False)
    env.close()
    with pytest.raises(EmptyDatasetError, match="holds no episodes"):
        open_dataset(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="is not a LeRobot dataset"):
        open_dataset(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


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


def test_depth_video_reads_back_as_float32_metres(tmp_path):
    env = _make_env()
    record_demos(env, envs.make_expert(env), tmp_path / "ds", num_episodes=1, seed=1, depth_video=True, progress=False)
    env.close()
    dataset = open_dataset(tmp_path / "ds")
    depth_keys = {f"observation.depth.{c}" for c in CAMERAS}
    assert set(dataset.meta.depth_keys) == depth_keys and depth_keys <= set(dataset.meta.video_keys)
    recorded = env.episodes[0]
    assert len(dataset) == len(recorded)
    for index, (obs, _, _) in enumerate(recorded):
        item = dataset[index]
        for cam in CAMERAS:
            depth, exact = item[f"observation.depth.{cam}"], torch.from_numpy(obs["depth"][cam])
            assert depth.dtype == torch.float32 and depth.shape == exact.shape, cam
            relative = ((depth - exact).abs() / exact).max().item()
            assert relative < DEPTH_VIDEO_MAX_RELATIVE_ERROR, (index, cam, relative)

    key = "observation.depth.front"
    window = open_dataset(tmp_path / "ds", delta_timestamps={key: [-0.05, 0.0]})[1][key]
    assert window.shape == (2, *recorded[0][0]["depth"]["front"].shape)
    for depth, (obs, _, _) in zip(window, recorded[:2]):
        exact = torch.from_numpy(obs["depth"]["front"])
        torch.testing.assert_close(depth, exact, rtol=DEPTH_VIDEO_MAX_RELATIVE_ERROR, atol=0)


# A recording process that pauses (and says so by creating <dataset>.ready) either at step 2 of
# episode STOP ("episode") or while LeRobot rewrites meta/info.json for episode STOP, having
# written half of it ("save"), the worst moment for a kill: data, episode-metadata and info
# files of that episode are all half-written.
RECORDER = """
import json, sys, time
from pathlib import Path
import gymnasium as gym
import lerobot.datasets.dataset_metadata as metadata
import envs
from envs.recording import record_demos

root, stop, where = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def pause():
    root.with_suffix(".ready").touch()
    time.sleep(600)

write_info = metadata.write_info

def write_half_of_info_then_pause(info, local_dir):
    if where == "save" and info.total_episodes == stop + 1:
        text = json.dumps(info.to_dict())
        (local_dir / "meta" / "info.json").write_text(text[: len(text) // 2])
        pause()
    write_info(info, local_dir)

metadata.write_info = write_half_of_info_then_pause

class PausingEnv(gym.Wrapper):
    episode = -1

    def reset(self, **kwargs):
        self.episode, self.steps = self.episode + 1, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        if where == "episode" and (self.episode, self.steps) == (stop, 2):
            pause()
        self.steps += 1
        return self.env.step(action)

env = PausingEnv(gym.make(envs.TABLETOP_ID, task="reach", image_size=32, geometry=True))
record_demos(env, envs.make_expert(env), root, num_episodes=stop + 2, progress=False)
"""


def _start_recorder(tmp_path: Path, stop: int, where: str) -> subprocess.Popen:
    """Start RECORDER on ``tmp_path / "ds"`` and return once it has paused."""
    script, log = tmp_path / "recorder.py", tmp_path / "recorder.log"
    script.write_text(RECORDER)
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "ds"), str(stop), where],
            cwd=REPO_ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    deadline = time.monotonic() + 300
    while not (tmp_path / "ds.ready").exists():
        assert process.poll() is None, f"the recorder exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the recorder did not reach its pause point in 300 s"
        time.sleep(0.1)
    return process


@pytest.fixture(scope="module")
def first_three_episodes(tmp_path_factory) -> torch.Tensor:
    """Actions of episodes 0-2 (seeds 0-2) of an uninterrupted recording."""
    root = tmp_path_factory.mktemp("reference") / "ds"
    env = _make_env()
    record_demos(env, envs.make_expert(env), root, num_episodes=3, progress=False)
    env.close()
    dataset = open_dataset(root)
    return torch.stack([dataset[i]["action"] for i in range(len(dataset))])


@pytest.mark.parametrize("where", ["episode", "save"])
def test_sigkill_loses_only_the_episode_in_progress(tmp_path, where, first_three_episodes):
    root = tmp_path / "ds"
    process = _start_recorder(tmp_path, stop=3, where=where)
    try:
        with pytest.raises(RuntimeError, match="still being recorded"):
            open_dataset(root)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    if where == "save":  # the kill left a half-written info.json behind
        with pytest.raises(json.JSONDecodeError):
            json.loads((root / "meta" / "info.json").read_text())
    else:  # and here the staging images of the episode in progress
        assert any((root / "images").rglob("*.png"))

    dataset = open_dataset(root)
    assert dataset.num_episodes == 3
    actions = torch.stack([dataset[i]["action"] for i in range(len(dataset))])
    assert torch.equal(actions, first_three_episodes)
    assert not (root / JOURNAL_DIR).exists() and not (root / "images").exists()
    assert open_dataset(root).num_episodes == 3  # opening again changes nothing


def test_sigterm_mid_episode_finalises_the_saved_episodes(tmp_path, first_three_episodes):
    root = tmp_path / "ds"
    process = _start_recorder(tmp_path, stop=3, where="episode")
    process.terminate()
    process.wait(timeout=120)
    assert process.returncode not in (0, -signal.SIGTERM)  # it handled SIGTERM, then re-raised
    assert not (root / JOURNAL_DIR).exists()  # finalised by the recorder itself
    dataset = open_dataset(root)
    assert dataset.num_episodes == 3
    assert torch.equal(torch.stack([dataset[i]["action"] for i in range(len(dataset))]), first_three_episodes)


def test_sigkill_before_the_first_episode_reports_an_empty_dataset(tmp_path):
    process = _start_recorder(tmp_path, stop=0, where="episode")
    process.kill()
    process.wait()
    with pytest.raises(EmptyDatasetError, match="holds no episodes"):
        open_dataset(tmp_path / "ds")
