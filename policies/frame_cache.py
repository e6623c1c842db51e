"""An in-memory copy of a LeRobotDataset that serves history and action chunks without decoding.

``LeRobotDataset.__getitem__`` with delta timestamps queries the underlying table once per key and
time offset and decodes every array and image again; on a CPU that costs far more than a tiny
model's step. ``FrameCache`` decodes each frame once and indexes the same samples.
"""

from __future__ import annotations

from typing import Any

import torch
from lerobot.datasets import LeRobotDataset
from torch.utils.data import Dataset
from tqdm.auto import tqdm


class FrameCache(Dataset):
    """Samples equal to ``LeRobotDataset.__getitem__`` with ``delta_indices``: for a key with
    offsets ``d``, frames ``clamp(i + d)`` within the episode, and ``<key>_is_pad`` true where
    ``i + d`` falls outside it.

    Args:
        dataset: opened without delta timestamps (each item one frame).
        delta_indices: ``{key: [offsets in frames]}``, e.g. ``{"action": [0, ..., 9]}``.
    """

    def __init__(self, dataset: LeRobotDataset, delta_indices: dict[str, list[int]], progress: bool = True) -> None:
        if dataset.delta_timestamps is not None:
            raise ValueError("FrameCache needs the dataset opened without delta_timestamps")
        items = [dataset[i] for i in tqdm(range(len(dataset)), desc="caching frames", disable=not progress)]
        unknown = sorted(set(delta_indices) - set(items[0]))
        if unknown:
            raise ValueError(f"delta_indices name keys the dataset lacks: {unknown}")
        self.delta_indices = {key: torch.tensor(offsets) for key, offsets in delta_indices.items()}
        self.tensors = {k: torch.stack([item[k] for item in items]) for k, v in items[0].items() if isinstance(v, torch.Tensor)}
        self.tasks = [item["task"] for item in items]
        episodes = self.tensors["episode_index"]
        # Rows of one episode are contiguous; row r belongs to the episode spanning [start[r], end[r]).
        change = torch.ones(len(episodes), dtype=torch.bool)
        change[1:] = episodes[1:] != episodes[:-1]
        starts = torch.nonzero(change).flatten()
        lengths = torch.diff(torch.cat([starts, torch.tensor([len(episodes)])]))
        self.episode_start = torch.repeat_interleave(starts, lengths)
        self.episode_end = self.episode_start + torch.repeat_interleave(lengths, lengths)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, end = self.episode_start[index], self.episode_end[index]
        sample: dict[str, Any] = {key: values[index] for key, values in self.tensors.items()}
        for key, offsets in self.delta_indices.items():
            wanted = index + offsets
            sample[key] = self.tensors[key][wanted.clamp(start, end - 1)]
            sample[f"{key}_is_pad"] = (wanted < start) | (wanted >= end)
        sample["task"] = self.tasks[index]
        return sample
