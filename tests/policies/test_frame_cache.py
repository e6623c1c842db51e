import gymnasium as gym
import pytest
import torch

import envs
from envs.recording import open_dataset, record_demos
from policies.frame_cache import FrameCache


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache") / "reach"
    env = gym.make(envs.TABLETOP_ID, task="reach", image_size=16, geometry=True)
    record_demos(env, envs.make_expert(env), root, num_episodes=3, progress=False)
    env.close()
    return root


def test_samples_equal_lerobot_getitem_with_deltas(root):
    deltas = {"observation.state": [-1, 0], "observation.images.front": [-1, 0],
              "observation.depth.wrist": [-1, 0], "action": list(range(6))}
    fps = open_dataset(root).fps
    reference = open_dataset(root, delta_timestamps={k: [d / fps for d in v] for k, v in deltas.items()})
    cache = FrameCache(open_dataset(root), deltas, progress=False)
    assert len(cache) == len(reference)
    episode_ends = torch.nonzero(torch.diff(cache.tensors["episode_index"])).flatten().tolist()
    for index in sorted({0, 1, len(cache) - 1, *episode_ends, *(e + 1 for e in episode_ends)}):
        expected, got = reference[index], cache[index]
        assert expected["task"] == got["task"]
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, got[key]), (index, key)
    # The padding flags really fire at episode edges.
    assert cache[0]["observation.state_is_pad"].tolist() == [True, False]
    assert cache[len(cache) - 1]["action_is_pad"][-1]


def test_rejects_datasets_opened_with_deltas(root):
    with pytest.raises(ValueError, match="without delta_timestamps"):
        FrameCache(open_dataset(root, delta_timestamps={"action": [0.0, 0.05]}), {"action": [0, 1]})
