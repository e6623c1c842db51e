"""Compare the loss curves of two training runs of ``scripts/train_policy.py`` that differ in
``mixed_precision`` (same config, data and seed): prints one JSON object and plots the curves.

For each loss the run logged, the relative difference of its mean over the last ``--window``
logged steps (``|b - a| / |a|``), and each run's median samples/s. ``--tolerance`` marks a loss
whose difference is within it (``within_tolerance``).

    python scripts/train_policy.py --config configs/demo_reach_tiny.yaml output_dir=outputs/prec/no \
        mixed_precision=no steps=300 policy.geometry_loss_weight=0.1
    python scripts/train_policy.py --config configs/demo_reach_tiny.yaml output_dir=outputs/prec/bf16 \
        mixed_precision=bf16 steps=300 policy.geometry_loss_weight=0.1
    python perf/compare_train_precision.py outputs/prec/no outputs/prec/bf16 --plot outputs/prec/curves.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.figures import save_figure  # noqa: E402

LOSSES = ("loss", "flow_matching_loss", "geometry_loss")


def read_metrics(run: Path) -> list[dict[str, float]]:
    """The logged rows of ``run/metrics.jsonl``."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run} (a scripts/train_policy.py output_dir)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(a: list[dict[str, float]], b: list[dict[str, float]], window: int, tolerance: float) -> dict[str, Any]:
    """Relative differences of the losses' last-``window`` means, and throughput of both runs."""
    if [row["step"] for row in a] != [row["step"] for row in b]:
        raise ValueError("the two runs logged different steps; train both with the same steps and log_every")
    losses = {}
    for name in LOSSES:
        if name not in a[0] or name not in b[0]:
            continue
        mean_a = statistics.fmean(row[name] for row in a[-window:])
        mean_b = statistics.fmean(row[name] for row in b[-window:])
        difference = abs(mean_b - mean_a) / abs(mean_a)
        losses[name] = {"a": round(mean_a, 5), "b": round(mean_b, 5), "relative_difference": round(difference, 4),
                        "within_tolerance": difference <= tolerance}
    return {
        "window_steps": [a[-window:][0]["step"], a[-1]["step"]],
        "tolerance": tolerance,
        "losses": losses,
        "samples_per_s": {"a": round(statistics.median(r["samples_per_s"] for r in a), 2),
                          "b": round(statistics.median(r["samples_per_s"] for r in b), 2)},
    }


def plot(a: list[dict[str, float]], b: list[dict[str, float]], labels: tuple[str, str], path: Path) -> Path:
    names = [n for n in LOSSES if n in a[0] and n in b[0]]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2))
    for ax, name in zip(list(axes) if len(names) > 1 else [axes], names):
        for rows, label in zip((a, b), labels):
            ax.plot([r["step"] for r in rows], [r[name] for r in rows], label=label)
        ax.set_title(name)
        ax.set_xlabel("step")
        if all(r[name] > 0 for r in a + b):  # the confidence-weighted geometry loss can go below zero
            ax.set_yscale("log")
    fig.axes[0].legend()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", type=Path, help="reference run (e.g. mixed_precision=no)")
    p.add_argument("run_b", type=Path, help="compared run (e.g. mixed_precision=bf16)")
    p.add_argument("--window", type=int, default=10, help="logged steps averaged at the end")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest relative difference accepted")
    p.add_argument("--plot", type=Path, default=None, help="write the loss curves here (PNG)")
    args = p.parse_args(argv)
    a, b = read_metrics(args.run_a), read_metrics(args.run_b)
    report = compare(a, b, args.window, args.tolerance)
    if args.plot:
        report["plot"] = str(plot(a, b, (args.run_a.name, args.run_b.name), args.plot))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
