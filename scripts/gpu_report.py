"""Every GPU figure of the project in one command: benchmarks as subprocesses, one JSON report.

Runs, each in its own process (a crash or an out-of-memory in one leaves the others), the
benchmarks of ``perf/`` that need a GPU and checks their figures against the project's targets:

- ``render``: ``compare_gsplat.py`` (CPU rasteriser vs gsplat, 2000 Gaussians, 3 views) and
  ``bench_voxel.py`` (voxelisation, render times, gsplat vs CPU-rasteriser speed ratio);
- ``policy``: ``bench_policy.py`` for ``small`` and ``full`` in bfloat16, eager and compiled with
  CUDA graphs (``--compile-mode reduce-overhead``);
- ``anchors``: ``bench_anchors.py``, LeRobot's pi0, pi05 and smolvla next to geovla small and full
  in bfloat16;
- ``train``: ``bench_train.py`` for ``small`` (full fine-tuning, batch 32, MFU) and ``full``
  (LoRA + gradient checkpointing).

``--out DIR`` receives ``report.json`` (every job's JSON, exit code, wall time and last error
lines, plus a summary of the figures against the targets) and ``report.log`` (the jobs' stderr).
``--quick`` runs every job at toy sizes (``anchors``: the three LeRobot policies with
``bench_anchors.py --toy`` next to geovla tiny), to check the plumbing on any machine in a minute
or two.

    python scripts/gpu_report.py --out outputs/gpu --jobs render
    python scripts/gpu_report.py --out outputs/gpu --jobs policy_small policy_small_compiled anchors train
    python scripts/gpu_report.py --device cpu --quick --out /tmp/gpu_dry_run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

PERF = Path(__file__).resolve().parents[1] / "perf"
TARGETS = {"small_ms": 15.0, "full_ms": 50.0, "small_mfu": 0.35}
ANCHORS = ("pi0", "pi05", "smolvla")  # LeRobot's policies that the anchors job times geovla against


def jobs(device: str, quick: bool) -> dict[str, tuple[str, list[str]]]:
    """name -> (script, arguments); with ``quick`` the arguments are the toy-size ones."""
    policy = ["--device", device, "--dtype", "bfloat16"]
    compiled = ["--compile", "--compile-mode", "reduce-overhead"]
    toy_policy = ["--preset", "tiny", "--image-size", "32", "--warmup", "1", "--calls", "2", "--breakdown-calls", "1"]
    toy_train = ["--preset", "tiny", "--image-size", "32", "--batch", "2", "--warmup", "1", "--steps", "1"]
    table = {
        "gsplat_parity": ("compare_gsplat.py", ["--gaussians", "2000", "--views", "3"],
                          ["--gaussians", "50", "--views", "2", "--sizes", "32", "--seeds", "1"]),
        "voxel": ("bench_voxel.py", ["--device", device], ["--device", device, "--image-size", "32", "--repeats", "1"]),
        "policy_small": ("bench_policy.py", [*policy, "--preset", "small"], [*policy, *toy_policy]),
        "policy_small_compiled": ("bench_policy.py", [*policy, "--preset", "small", *compiled],
                                  [*policy, *toy_policy, "--compile"]),
        "policy_full": ("bench_policy.py", [*policy, "--preset", "full"], [*policy, *toy_policy]),
        "policy_full_compiled": ("bench_policy.py", [*policy, "--preset", "full", *compiled],
                                 [*policy, *toy_policy, "--compile"]),
        "anchors": ("bench_anchors.py", [*policy, "--policies", *ANCHORS, "geovla-small", "geovla-full"],
                    [*policy, "--toy", "--policies", *ANCHORS, "geovla-tiny", "--image-size", "64", "--chunk-size",
                     "10", "--warmup", "1", "--calls", "2"]),
        "train_small": ("bench_train.py", [*policy, "--preset", "small", "--batch", "32"], [*policy, *toy_train]),
        "train_full_lora": ("bench_train.py", [*policy, "--preset", "full", "--batch", "8", "--lora-rank", "16",
                                               "--grad-checkpointing"],
                            [*policy, *toy_train, "--lora-rank", "4", "--grad-checkpointing"]),
    }
    return {name: (script, toy if quick else full) for name, (script, full, toy) in table.items()}


GROUPS = {
    "render": ("gsplat_parity", "voxel"),
    "policy": ("policy_small", "policy_small_compiled", "policy_full", "policy_full_compiled"),
    "anchors": ("anchors",),
    "train": ("train_small", "train_full_lora"),
}
JOB_NAMES = tuple(name for group in GROUPS.values() for name in group)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for report.json and report.log")
    p.add_argument("--jobs", nargs="+", default=list(GROUPS), metavar="JOB",
                   help=f"groups ({', '.join(GROUPS)}) or single jobs ({', '.join(JOB_NAMES)}); default: all")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="toy sizes: checks that every job runs, not its figures")
    p.add_argument("--job-timeout", type=float, default=900.0, help="seconds before a job is stopped")
    args = p.parse_args(argv)
    unknown = [name for name in args.jobs if name not in GROUPS and name not in JOB_NAMES]
    if unknown:
        p.error(f"unknown jobs {unknown}: choose from the groups {list(GROUPS)} or the jobs {list(JOB_NAMES)}")
    return args


def expand(jobs: list[str]) -> list[str]:
    """Groups and job names -> job names in order, each once. ``["train", "voxel"]`` ->
    ``["train_small", "train_full_lora", "voxel"]``."""
    return list(dict.fromkeys(name for job in jobs for name in GROUPS.get(job, (job,))))


def run_job(script: str, arguments: list[str], timeout: float, log: TextIO) -> dict[str, Any]:
    """One benchmark in a subprocess: its JSON (stdout), exit code, seconds and last stderr lines."""
    command = [sys.executable, str(PERF / script), *arguments]
    log.write(f"\n===== {' '.join(command)}\n")
    log.flush()
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=PERF.parent)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as stopped:  # its output so far, as bytes or str
        stdout, stderr = (s.decode() if isinstance(s, bytes) else s or "" for s in (stopped.stdout, stopped.stderr))
        code, stderr = None, stderr + f"\nstopped after {timeout:g} s"
    log.write(stderr)
    log.flush()
    result: dict[str, Any] = {"command": command[1:], "exit_code": code,
                              "seconds": round(time.perf_counter() - start, 1)}
    try:
        result["report"] = json.loads(stdout)
    except json.JSONDecodeError:
        result["error"] = stderr.strip().splitlines()[-5:]
    if code != 0 and "error" not in result:
        result["error"] = stderr.strip().splitlines()[-5:]
    return result


def figure(results: dict[str, Any], job: str, *path: str) -> Any:
    """``results[job]["report"][path...]`` or None where the job did not run or failed."""
    value: Any = results.get(job, {}).get("report")
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are about, and whether each target is met (None: not measured)."""
    summary: dict[str, Any] = {}
    for preset in ("small", "full"):
        eager = figure(results, f"policy_{preset}", "latency_ms", "median")
        compiled = figure(results, f"policy_{preset}_compiled", "latency_ms", "median")
        best = min((v for v in (eager, compiled) if v is not None), default=None)
        summary[f"{preset}_ms"] = {"eager": eager, "compiled": compiled, "best": best,
                                   "target": TARGETS[f"{preset}_ms"],
                                   "met": None if best is None else best <= TARGETS[f"{preset}_ms"]}
    mfu = figure(results, "train_small", "mfu")
    summary["small_mfu"] = {"value": mfu, "target": TARGETS["small_mfu"],
                            "met": None if mfu is None else mfu >= TARGETS["small_mfu"]}
    policies = figure(results, "anchors", "policies") or {}
    summary["anchors_median_ms"] = {name: r.get("median_ms") for name, r in policies.items()}
    summary["speedup_vs_pi0"] = {name: r["speedup_vs_pi0"] for name, r in policies.items()
                                 if name != "pi0" and "speedup_vs_pi0" in r}
    summary["gsplat_within_tolerance"] = figure(results, "gsplat_parity", "within_tolerance")
    voxel_runs = figure(results, "voxel", "runs") or [{}]
    summary["gsplat_speedup"] = ({key: voxel_runs[0][f"gsplat_speedup_{key}"] for key in ("forward", "forward_backward")}
                                 if "gsplat_speedup_forward" in voxel_runs[0] else None)
    summary["failed_jobs"] = sorted(name for name, r in results.items() if r["exit_code"] != 0)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = jobs(args.device, args.quick)
    names = expand(args.jobs)
    results: dict[str, Any] = {}
    with open(args.out / "report.log", "w") as log:
        for i, name in enumerate(names, 1):
            script, arguments = table[name]
            print(f"[{i}/{len(names)}] {name}: {script} {' '.join(arguments)}", file=sys.stderr, flush=True)
            results[name] = run_job(script, arguments, args.job_timeout, log)
            print(f"    exit {results[name]['exit_code']} after {results[name]['seconds']} s", file=sys.stderr)
    report = {"device": args.device, "quick": args.quick, "summary": summarise(results), "jobs": results}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))
    return report


if __name__ == "__main__":
    main()
