import pytest
import torch

from envs.recording import open_dataset
from policies.frame_cache import FrameCache


def test_samples_equal_lerobot_getitem_with_deltas(dataset_root):
    root = dataset_root
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


def test_rejects_datasets_opened_with_deltas(dataset_root):
    with pytest.raises(ValueError, match="without delta_timestamps"):
        FrameCache(open_dataset(dataset_root, delta_timestamps={"action": [0.0, 0.05]}), {"action": [0, 1]})
