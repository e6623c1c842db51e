"""The README's commands work as written: every command of its ``bash`` blocks is run here at toy
size (the flags below replace the README's budget flags), one after another from a folder that
sees the repository's ``scripts/`` and ``configs/``, as a user runs them from a clean clone; its
Python block runs against the demo's policy. The benchmark suite's commands are run at toy size
by ``tests/benchmarks/``."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
# README command (its first words) -> the flags that make it toy-sized, replacing the README's own.
TOY = {
    "make demo": ["--episodes", "3", "--eval-episodes", "2", "--steps", "2"],
    "python scripts/record_demos.py": ["--episodes", "2"],
    "python scripts/train_policy.py": ["steps=2", "batch_size=2", "save_every=2", "log_every=1"],
    "accelerate launch scripts/train_policy.py": ["steps=2", "batch_size=2", "save_every=2", "log_every=1"],
    "lerobot-train": ["--steps=2", "--batch_size=2", "--save_freq=2", "--log_freq=1"],
    "python scripts/eval_policy.py": ["--episodes", "2", "--max-steps", "4", "--videos", "1"],
    "lerobot-eval": ["--eval.n_episodes=2", "--eval.batch_size=2", "--env.episode_length=4"],
    "python scripts/serve_policy.py": ["--port", "0"],  # started, asked for its address, stopped
}
# The checkpoint a README command names after a full training is the toy training's last one.
PATHS = {"step_001800": "step_000002"}
RUN_ELSEWHERE = {"make test": "CI itself", "python scripts/benchmark.py": "tests/benchmarks/"}


def readme_commands(text: str) -> list[str]:
    """The commands of the ``bash`` blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def kind(command: str) -> str:
    matches = [prefix for prefix in [*TOY, *RUN_ELSEWHERE] if command == prefix or command.startswith(prefix + " ")]
    if not matches:
        raise AssertionError(f"README command {command!r} is not run by any test: add it to tests/test_readme.py")
    return matches[0]


def toy(words: list[str], flags: list[str]) -> list[str]:
    """``words`` with each of ``flags`` (``--key value``, ``--key=value`` or ``key=value``) replacing
    the README's value of that key, or appended."""
    words = list(words)
    i = 0
    while i < len(flags):
        flag = flags[i]
        one_word = not flag.startswith("--") or "=" in flag or i + 1 == len(flags) or flags[i + 1].startswith("--")
        key = flag.split("=", 1)[0] if "=" in flag else flag
        value = [flag] if one_word else [flag, flags[i + 1]]
        found = next((j for j, word in enumerate(words) if word == key or word.startswith(key + "=")), None)
        if found is None:
            words += value
        elif "=" in flag:
            words[found] = flag
        else:
            words[found + 1] = flags[i + 1]
        i += 1 if one_word else 2
    return words


def _executable(words: list[str]) -> list[str]:
    """The README's words as this venv runs them (``make demo`` is ``scripts/demo.py``)."""
    if words[:2] == ["make", "demo"]:
        return [sys.executable, "scripts/demo.py", *words[2:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return [str(BIN / words[0]), *words[1:]]


def test_every_readme_command_is_run_by_a_test():
    commands = readme_commands(README)
    assert len(commands) >= 10
    assert {kind(command) for command in commands} == {*TOY, *RUN_ELSEWHERE}
    assert "scripts/demo.py" in (ROOT / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]


def test_toy_flags_replace_the_readme_values():
    words = "python x.py --episodes 100 --out o steps=5 --a.b=1".split()
    assert toy(words, ["--episodes", "2", "steps=2", "--a.b=3", "--new=1", "--flag"]) == \
        "python x.py --episodes 2 --out o steps=2 --a.b=3 --new=1 --flag".split()


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    for folder in ("scripts", "configs"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    return tmp_path


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def test_readme_commands_run_at_toy_size(workdir):
    for command in readme_commands(README):
        prefix = kind(command)
        if prefix in RUN_ELSEWHERE:
            continue
        for full, small in PATHS.items():
            command = command.replace(full, small)
        words = toy(shlex.split(command), TOY[prefix])
        if prefix == "python scripts/serve_policy.py":
            _serve_once(workdir, words)
            continue
        done = subprocess.run(_executable(words), cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(words)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert (workdir / "outputs" / "demo" / "policy" / "model.safetensors").is_file()
    for name in ("pick", "pick_accelerate"):
        assert (workdir / "outputs" / "train" / name / "checkpoints" / "step_000002" / "pretrained_model").is_dir()
    assert (workdir / "outputs" / "lerobot" / "pick" / "checkpoints" / "000002").is_dir()

    for block in python_blocks(README):
        done = subprocess.run([sys.executable, "-c", block + "\nprint(actions.shape)"], cwd=workdir, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.strip().splitlines()[-1] == "(10, 4)"


def _serve_once(workdir: Path, words: list[str]) -> None:
    """Start the server, read the address it prints when it listens, stop it."""
    process = subprocess.Popen(_executable(words), cwd=workdir, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = iter(process.stdout.readline, "")
        ready = next(json.loads(line) for line in lines if line.startswith("{"))
        assert ready["port"] > 0 and ready["policy"] == "outputs/demo/policy"
    finally:
        process.terminate()
        process.wait(timeout=60)
