"""The benchmark suite: ACT, Diffusion Policy, SmolVLA, pi0 (LeRobot 0.6.1, unmodified) and geovla
``tiny``, each trained by ``lerobot-train`` and evaluated by ``lerobot-eval`` on every task of a
suite, with the same demonstrations, optimiser-step budget, images, cameras and held-out seeds.

For each task the scripted demonstrations are recorded once (``envs.recording.record_demos``,
a LeRobotDataset under ``OUT/datasets/``). Each cell (a policy and what it is trained on) is
trained for the same number of steps at the same batch size (its wall-clock and its training
curve are kept), then evaluated on seeds 100000, 100001, ... (recording uses seeds from 0).
``builtin`` trains one policy per task; ``metaworld`` one policy per LeRobot policy on the
merged demonstrations of all the run's tasks (``mt5``: reach, push, pick-place, drawer-open,
peg-insert-side by default; ``--tasks`` chooses among the MT10 tasks), evaluated on each task.
``OUT`` receives ``results.json`` (a row per task and policy: steps, train wall-clock, steps
reached in the time the fastest policy trained on the same data needed, successes, episodes,
Wilson 95% interval, evaluation seeds; for a multi-task suite also a pooled mean row),
``results.md`` (the table) and ``success.png`` (the plot). How each policy is built:
``benchmarks/policy_specs.py``.

A stopped run (Ctrl-C, SIGTERM, a crash, a kill) continues where it was when the same command is
run again: finished cells, per-task evaluations and recorded datasets are kept
(``OUT/state.json``, written atomically), a training resumes from its last checkpoint
(``lerobot-train --resume``), a half-done recording, merge or evaluation is redone.

``--quick`` runs the whole pipeline at toy sizes (3 demonstrations, 2 steps, 2 episodes of 8
steps, 32-px images), as the tests do:

    python scripts/benchmark.py --suite builtin --quick --out outputs/benchmark_quick

The full built-in run: both tasks, 5 policies, 1000 demonstrations per task, 2000 steps at batch
16, 100 evaluation episodes per cell. On the 2-core CPU it takes about 8 hours (more while other
jobs share the cores): per task about 10-20 minutes of recording, then per cell 2000 steps at the
measured (one thread) 0.38 s (SmolVLA), 0.57 s (ACT), 0.72 s (pi0), 0.85 s (Diffusion Policy) and 2.3-2.4 s
(geovla, with two trainings sharing the cores; 0.6-0.7 s of it LeRobot's loader, which decodes
every column of an action chunk's 10 rows, docs/performance.md) per step on 1000 demonstrations, i.e. 13 to 80 minutes, and about 1.5 (reach) to
2.5 (pick) minutes of evaluation for geovla.
Start it in the background:

    nohup nice -n 10 env OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 MUJOCO_GL=egl .venv/bin/python scripts/benchmark.py \\
        --suite builtin --out outputs/benchmark_builtin --demos 1000 --steps 2000 --batch-size 16 \\
        --eval-episodes 100 > outputs/benchmark_builtin.log 2>&1 &

(these are the defaults without ``--quick``; rerun the same command to continue a stopped run).
Tasks can run side by side, one folder each (``--tasks reach --out outputs/builtin_reach``, ...),
and be gathered into one table with ``--merge``:

    .venv/bin/python scripts/benchmark.py --suite builtin --out docs/results/builtin \\
        --merge outputs/builtin_reach outputs/builtin_pick

Equal wall-clock: the fastest of the five policies on a task sets the time, and the table gives
the steps every policy had reached in it. ``--equal-time`` then trains each slower policy again,
from scratch, for those steps (LeRobot scales a cosine schedule to the shorter run) and evaluates
it on the same seeds; with ``--policies geovla`` on a finished run's folder it adds geovla's
result at equal time and retrains nothing else:

    .venv/bin/python scripts/benchmark.py --suite builtin --tasks reach --policies geovla --equal-time \
        --out outputs/builtin_reach

The state file alone carries a run to another machine or folder: copied into a new ``--out``, its
finished cells are kept, and the datasets and checkpoints it lists but the folder lacks are made
again (a recording from the same seeds, checked to give the same episodes and frames).

The full MetaWorld run (``benchmarks.budgets.METAWORLD_FULL``): 100 demonstrations of each of the
5 tasks from MetaWorld's scripted experts (64-px images from corner2, topview and gripperPOV,
about 25-70 ms a frame to record), one policy per LeRobot policy trained 2000 steps at batch 16
on all 500, 50 episodes of at most 200 steps per task:

    nohup nice -n 10 env OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 MUJOCO_GL=egl .venv/bin/python scripts/benchmark.py \\
        --suite metaworld --out outputs/benchmark_metaworld > outputs/benchmark_metaworld.log 2>&1 &
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package sits beside scripts/

from benchmarks.budgets import QUICK  # noqa: E402
from benchmarks.harness import RunConfig, merge_runs, run_benchmark  # noqa: E402
from benchmarks.policy_specs import SPECS  # noqa: E402
from benchmarks.report import RESULTS_JSON, RESULTS_MD, RESULTS_PNG  # noqa: E402
from benchmarks.suites import SUITES, get_suite  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="builtin", choices=sorted(SUITES))
    p.add_argument("--out", type=Path, required=True, help="output folder (a stopped run in it is continued)")
    p.add_argument("--quick", action="store_true", help="the whole pipeline at toy sizes (CI)")
    p.add_argument("--tasks", nargs="+", default=None, help="a subset of the suite's tasks (default: all)")
    p.add_argument("--policies", nargs="+", default=None, choices=list(SPECS),
                   help="policies and geovla ablations (default: the five policies)")
    budget = p.add_argument_group("budget (defaults: the full run, or the toy sizes with --quick)")
    budget.add_argument("--demos", type=int, default=None, help="demonstrations per task")
    budget.add_argument("--steps", type=int, default=None, help="optimiser steps of every policy")
    budget.add_argument("--batch-size", type=int, default=None)
    budget.add_argument("--eval-episodes", type=int, default=None, help="episodes per cell")
    budget.add_argument("--eval-batch-size", type=int, default=None)
    budget.add_argument("--image-size", type=int, default=None)
    budget.add_argument("--episode-length", type=int, default=None, help="evaluation episode limit")
    budget.add_argument("--save-freq", type=int, default=None, help="checkpoint every N steps")
    budget.add_argument("--log-freq", type=int, default=None, help="training log line every N steps")
    p.add_argument("--device", default="cpu", help="torch device of training and evaluation")
    p.add_argument("--num-workers", type=int, default=0, help="lerobot-train data-loading workers")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--equal-time", action="store_true",
                   help="after the cells, train each policy slower than the fastest of the five again for the "
                        "steps it had reached in the fastest's training time, and evaluate it")
    p.add_argument("--merge", nargs="+", type=Path, default=None, metavar="RUN",
                   help="add the finished cells of these run folders (same suite and budget) to --out "
                        "and write its reports, running nothing")
    return p.parse_args(argv)


def _stop_on_sigterm() -> None:
    """SIGTERM stops the run like Ctrl-C: the running LeRobot command is stopped too."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    base = QUICK if args.quick else get_suite(args.suite).full_budget
    budget = base.override(demos=args.demos, steps=args.steps, batch_size=args.batch_size,
                           eval_episodes=args.eval_episodes, eval_batch_size=args.eval_batch_size,
                           image_size=args.image_size, episode_length=args.episode_length,
                           save_freq=args.save_freq, log_freq=args.log_freq)
    config = RunConfig(suite=args.suite, out=args.out, budget=budget, tasks=args.tasks, policies=args.policies,
                       device=args.device, num_workers=args.num_workers, progress=not args.no_progress,
                       equal_time=args.equal_time)
    if args.merge:
        results = merge_runs(config, args.merge)
        print((args.out / RESULTS_MD).read_text())
        return results
    _stop_on_sigterm()
    try:
        results = run_benchmark(config)
    except KeyboardInterrupt:
        print(f"\nstopped; run the same command again to continue ({args.out / 'state.json'})", file=sys.stderr)
        raise SystemExit(130) from None
    print((args.out / RESULTS_MD).read_text())
    print(f"results: {args.out / RESULTS_JSON}\ntable:   {args.out / RESULTS_MD}\nplot:    {args.out / RESULTS_PNG}")
    return results


if __name__ == "__main__":
    main()
