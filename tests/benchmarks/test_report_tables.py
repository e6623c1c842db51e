"""The benchmark report's tables: equal time is read against the five policies, not against a
faster ablation, and the ablation table compares each variant with geovla on its task."""

from __future__ import annotations

from benchmarks.report import ablation_table, collect, markdown
from benchmarks.suites import get_suite


def _cell(seconds: float, steps: int, successes: int) -> dict:
    curve = [[seconds * k / 4, steps * k // 4] for k in range(1, 5)]
    return {"status": "done",
            "train": {"steps": steps, "train_wall_s": seconds, "params": 1000, "curve": curve},
            "evals": {"pick": {"successes": successes, "episodes": 100}}}


def _results(cells: dict[str, dict]) -> dict:
    header = {"suite": "builtin", "budget": {"demos": 10, "steps": 400, "batch_size": 4, "eval_episodes": 100,
                                             "image_size": 32}, "device": "cpu"}
    state = {"header": header, "datasets": {}, "cells": {f"pick/{name}": cell for name, cell in cells.items()}}
    return collect(state, get_suite("builtin"))


def test_equal_time_is_the_fastest_policy_not_a_faster_ablation():
    results = _results({"act": _cell(200.0, 400, 5), "geovla": _cell(800.0, 400, 30),
                        "geovla-no-geometry": _cell(100.0, 400, 12)})
    assert results["equal_time"]["pick"]["seconds"] == 200.0
    steps = {cell["policy"]: cell["steps_in_equal_time"] for cell in results["cells"]}
    assert steps == {"act": 400, "geovla": 100, "geovla-no-geometry": 400}
    assert "fastest of the five" in markdown(results)


def test_equal_time_among_ablations_alone():
    results = _results({"geovla-no-geometry": _cell(100.0, 400, 12), "geovla-sensor-voxels": _cell(400.0, 400, 20)})
    assert results["equal_time"]["pick"]["seconds"] == 100.0


def test_ablation_table_gives_each_variant_against_geovla():
    results = _results({"act": _cell(200.0, 400, 5), "geovla": _cell(800.0, 400, 30),
                        "geovla-no-geometry": _cell(100.0, 400, 12), "geovla-sensor-voxels": _cell(400.0, 400, 41)})
    rows = [line for line in ablation_table(results).splitlines() if line.startswith("| pick |")]
    assert [row.split(" | ")[1] for row in rows] == ["geovla tiny", "geovla, no geometry",
                                                     "geovla, sensor voxels only"]
    assert rows[0].endswith("| 30/100 (22%-40%) |  |")
    assert rows[1].endswith("| -18 |") and rows[2].endswith("| +11 |")
    assert "| 13.3 min |" in rows[0]


def test_no_ablation_table_without_ablations():
    assert ablation_table(_results({"act": _cell(200.0, 400, 5), "geovla": _cell(800.0, 400, 30)})) == ""
