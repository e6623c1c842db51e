"""Run ``lerobot-train`` or ``lerobot-eval`` in this process, with pi0's size table swapped.

    python -m benchmarks.lerobot_runner train --pi0-sizes tiny \
        --tokenizer google/paligemma-3b-pt-224=DIR -- --policy.type=pi0 --dataset.root=... ...

Everything after ``--`` goes to LeRobot's own entry point (``lerobot.scripts.lerobot_train:main``
or ``lerobot.scripts.lerobot_eval:main``) unchanged; the options before it open
:func:`benchmarks.pi0_sizes.pi0_sizes` and :func:`benchmarks.pi0_sizes.redirected_tokenizers`
around the call.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from benchmarks.pi0_sizes import pi0_sizes, redirected_tokenizers


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The runner's options and the LeRobot arguments after ``--``."""
    if "--" not in argv:
        raise SystemExit("usage: python -m benchmarks.lerobot_runner {train,eval} [options] -- LEROBOT_ARGS")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lerobot_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "eval"])
    parser.add_argument("--pi0-sizes", default=None, help="build pi0 at these sizes (benchmarks.pi0_sizes.SIZES)")
    parser.add_argument("--tokenizer", action="append", default=[], metavar="NAME=DIR",
                        help="load tokenizer NAME from the local directory DIR (repeatable)")
    args = parser.parse_args(argv[:split])
    for item in args.tokenizer:
        if "=" not in item:
            parser.error(f"--tokenizer takes NAME=DIR, got {item!r}")
    return args, argv[split + 1:]


def main(argv: list[str] | None = None) -> None:
    args, lerobot_args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "train":
        from lerobot.scripts.lerobot_train import main as lerobot_main
    else:
        from lerobot.scripts.lerobot_eval import main as lerobot_main
    redirects = {name: Path(directory) for name, directory in (item.split("=", 1) for item in args.tokenizer)}
    sys.argv = [f"lerobot-{args.command}", *lerobot_args]  # LeRobot's parser reads sys.argv
    with contextlib.ExitStack() as stack:
        if args.pi0_sizes:
            stack.enter_context(pi0_sizes(args.pi0_sizes))
        if redirects:
            stack.enter_context(redirected_tokenizers(redirects))
        lerobot_main()


if __name__ == "__main__":
    main()
