"""The crash journal of a recording: a recording killed at any moment, even by SIGKILL, rolls back to
its last saved episode.

Each episode goes to its own data, episode-metadata and video files (``ONE_EPISODE_PER_FILE_MB``),
closed when the episode is saved, and ``<root>/.recording/`` keeps a commit record of the saved
episodes (:class:`RecordingJournal`); :func:`recover_recording` rolls a killed recording back to it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from lerobot.datasets import LeRobotDataset
from lerobot.datasets.utils import DEFAULT_TASKS_PATH, INFO_PATH, STATS_PATH

JOURNAL_DIR = ".recording"
_JOURNAL_LOCK = "lock"
_JOURNAL_COMMIT = "commit.json"
# Metadata files LeRobot rewrites in place after every episode: the commit record keeps a copy.
_REWRITTEN_FILES = (INFO_PATH, STATS_PATH, DEFAULT_TASKS_PATH)
# A file size limit below any episode's size: LeRobot then starts new data, episode-metadata and
# video files for every episode, so no saved episode's file is ever appended to again.
ONE_EPISODE_PER_FILE_MB = 1e-6

logger = logging.getLogger(__name__)


class EmptyDatasetError(ValueError):
    """The folder holds a dataset without any saved episode (e.g. its recording stopped early)."""


class RecordingJournal:
    """Crash journal of a recording in progress, kept in ``<root>/.recording/``.

    The recording process holds an exclusive lock on ``lock`` for its lifetime; the kernel drops
    it when the process dies, even by SIGKILL, so a journal whose lock is free belongs to a killed
    recording. :meth:`commit`, called at creation and after every saved episode, closes LeRobot's
    open parquet files and atomically replaces ``commit.json``: the size of every file of the
    saved episodes, and a copy of the metadata files LeRobot rewrites in place after each episode
    (info, stats, tasks), which a kill while an episode is being saved can leave half-written.
    Rolling back to the commit deletes every other file and restores those copies.
    """

    def __init__(self, dataset: LeRobotDataset) -> None:
        self.root = Path(dataset.root)
        self.path = self.root / JOURNAL_DIR
        self.path.mkdir()
        self._lock = _try_lock(self.path / _JOURNAL_LOCK)
        self.commit(dataset)

    def commit(self, dataset: LeRobotDataset) -> None:
        """Make the episodes saved in ``dataset`` so far the state a killed recording returns to."""
        dataset.writer.close_writer()
        # LeRobot keeps the episode-metadata file open for the next episode; closing it writes the
        # parquet footer (the next episode starts a new file, see ONE_EPISODE_PER_FILE_MB).
        dataset.meta._close_writer()
        record = {
            "episodes": dataset.meta.total_episodes,
            "files": _dataset_files(self.root),
            "rewritten": {
                name: base64.b64encode((self.root / name).read_bytes()).decode("ascii")
                for name in _REWRITTEN_FILES
                if (self.root / name).is_file()
            },
        }
        _replace_atomically(self.path / _JOURNAL_COMMIT, json.dumps(record).encode())

    def close(self) -> None:
        """End the recording (its dataset finalised): roll back to the last commit, which drops
        whatever an episode or a save cut short by an exception or Ctrl-C left, and remove the
        journal."""
        try:
            _roll_back(self.root)
        finally:
            os.close(self._lock)


def recover_recording(root: str | Path) -> None:
    """Roll a killed recording into ``root`` back to its last saved episode; do nothing otherwise.

    Raises ``RuntimeError`` while the recording process is still running and
    :class:`EmptyDatasetError` when it was killed before its journal's first commit.
    """
    root = Path(root)
    journal = root / JOURNAL_DIR
    if not journal.is_dir():
        return
    lock = _try_lock(journal / _JOURNAL_LOCK)
    if lock is None:
        raise RuntimeError(
            f"{root} is still being recorded by a running process (it holds {journal / _JOURNAL_LOCK}); "
            "open it once the recording has finished"
        )
    try:
        episodes, dropped = _roll_back(root)
    finally:
        os.close(lock)
    logger.warning(
        "the recording into %s was killed: rolled back to its %d saved episodes, deleting %d files of the "
        "episode in progress",
        root,
        episodes,
        len(dropped),
    )


def _roll_back(root: Path) -> tuple[int, list[str]]:
    """Return the dataset at ``root`` to its journal's last commit and remove the journal; return
    the number of episodes kept and the files deleted. Safe to repeat if it is itself killed: the
    journal goes last."""
    journal = root / JOURNAL_DIR
    commit_path = journal / _JOURNAL_COMMIT
    if not commit_path.is_file():
        raise EmptyDatasetError(
            f"the recording into {root} stopped before it saved anything (no {commit_path}); "
            "delete the folder and record again"
        )
    commit = json.loads(commit_path.read_text())
    _check_committed_files(root, commit["files"])
    for name, data in commit["rewritten"].items():
        _replace_atomically(root / name, base64.b64decode(data))
    dropped = sorted(set(_dataset_files(root)) - set(commit["files"]))
    for name in dropped:
        (root / name).unlink()
    _remove_empty_dirs(root)
    shutil.rmtree(journal)
    return commit["episodes"], dropped


def _try_lock(path: Path) -> int | None:
    """Open ``path`` and lock it exclusively; ``None`` if another process holds the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _dataset_files(root: Path) -> dict[str, int]:
    """Size of every file of the dataset at ``root`` by relative POSIX path, the journal excluded.

    Run after every episode over a folder that gains files with each one: ``os.walk`` keeps it at
    milliseconds for thousands of files, where ``Path.rglob`` and ``stat`` took 17 times longer.
    """
    journal = os.path.join(root, JOURNAL_DIR)
    sizes: dict[str, int] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if os.path.join(folder, name) != journal]
        prefix = os.path.relpath(folder, root)
        for name in names:
            sizes[name if prefix == "." else f"{prefix}/{name}"] = os.stat(os.path.join(folder, name)).st_size
    return sizes


def _check_committed_files(root: Path, sizes: dict[str, int]) -> None:
    """Rolling back is only sound if LeRobot never touched a saved episode's file after the commit."""
    changed = [
        name
        for name, size in sizes.items()
        if name not in _REWRITTEN_FILES and (not (root / name).is_file() or (root / name).stat().st_size != size)
    ]
    if changed:
        raise RuntimeError(
            f"cannot roll back the killed recording in {root}: files of its saved episodes are missing or "
            f"changed since they were saved: {changed}"
        )


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill leaves either the old or the new content."""
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove_empty_dirs(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
