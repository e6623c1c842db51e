"""Running LeRobot's commands as child processes, their output streamed to a log file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class CommandFailed(RuntimeError):
    """A LeRobot command exited with an error; the message ends with the tail of its log."""


def child_env() -> dict[str, str]:
    """This process's environment, offline, headless, unbuffered, with the project importable."""
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def lerobot_command(command: str, runner_args: list[str] | None) -> list[str]:
    """The start of a ``lerobot-train`` / ``lerobot-eval`` command line (``command`` ``train`` /
    ``eval``): the installed executable, or ``benchmarks.lerobot_runner`` with ``runner_args``."""
    if runner_args is None:
        return [str(BIN / f"lerobot-{command}")]
    return [sys.executable, "-m", "benchmarks.lerobot_runner", command, *runner_args, "--"]


def run_logged(command: list[str], log_path: Path, on_line: Callable[[str], None] | None = None,
               header: str | None = None) -> None:
    """Run ``command``, appending its output (stdout and stderr) to ``log_path`` and passing each
    line to ``on_line`` as it arrives. Raises :class:`CommandFailed` on a non-zero exit; an
    interrupt (Ctrl-C, or SIGTERM turned into one) stops the child too."""
    tail: deque[str] = deque(maxlen=40)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n=== {header or ''} $ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", env=child_env(), cwd=log_path.parent)
        try:
            for line in process.stdout:  # text mode turns tqdm's carriage returns into line ends
                log.write(line)
                log.flush()
                tail.append(line)
                if on_line is not None:
                    on_line(line)
            code = process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    if code != 0:
        raise CommandFailed(f"{Path(command[0]).name} {' '.join(command[1:3])} ... exited with {code} "
                            f"(full log: {log_path}):\n{''.join(tail)}")
