"""The benchmark report's tables: equal time is read against the five policies, not against a
faster ablation; a policy's success in equal time is its own result when it trained within the
time, its retrained run's when that ran for the current equal-time steps, else not retrained; the
ablation table compares each variant with geovla on its task."""

from __future__ import annotations

import pytest

from policies.intervals import wilson_interval

from benchmarks.docs_tables import marked_tables, with_tables
from benchmarks.report import ablation_table, collect, markdown, summary_table
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
    assert rows[0].endswith("| 30/100 (22%-40%) |  | 100 | not retrained |")
    assert rows[1].endswith("| -18 | 400 | 12/100 (7%-20%) |") and "| +11 | 200 | not retrained |" in rows[2]
    assert "| 13.3 min |" in rows[0]


def test_no_ablation_table_without_ablations():
    assert ablation_table(_results({"act": _cell(200.0, 400, 5), "geovla": _cell(800.0, 400, 30)})) == ""


def _retrained(steps: int, successes: int) -> dict:
    return {"status": "done", "seconds": 200.0, "steps": steps,
            "train": {"steps": steps, "train_wall_s": 190.0, "params": 1000, "curve": [[190.0, steps]]},
            "evals": {"pick": {"successes": successes, "episodes": 100}}}


def test_success_in_equal_time_is_own_retrained_or_not_run():
    stale = {**_cell(600.0, 400, 20), "equal_time": _retrained(200, 9)}
    results = _results({"act": _cell(200.0, 400, 5), "geovla": {**_cell(800.0, 400, 30), "equal_time": _retrained(100, 14)},
                        "pi0": stale, "smolvla": _cell(400.0, 400, 8)})
    at = {cell["policy"]: cell["at_equal_time"] for cell in results["cells"]}
    assert at["act"]["successes"] == 5 and at["act"]["steps"] == 400  # the fastest: its own full run
    assert at["geovla"]["successes"] == 14 and at["geovla"]["steps"] == 100 and at["geovla"]["train_wall_s"] == 190.0
    assert at["geovla"]["wilson95"] == pytest.approx(list(wilson_interval(14, 100)), abs=1e-4)
    assert at["pi0"] is None  # retrained for 200 steps, but equal time is now 100 steps
    assert at["smolvla"] is None
    table = summary_table(results, ["act", "geovla", "pi0", "smolvla"], at_equal_time=True)
    assert ("| pick | 5% (2%-11%), 400 steps | 14% (9%-22%), 100 steps | not retrained (100 steps) "
            "| not retrained (200 steps) |") in table
    assert "| pick | 5% (2%-11%) | 30% (22%-40%) |" in summary_table(results, ["act", "geovla"])
    rows = {line.split(" | ")[1]: line for line in markdown(results).splitlines() if line.startswith("| pick |")}
    assert rows["geovla tiny"].endswith("| 100 | 14/100 (9%-22%) |")
    assert rows["pi0"].endswith("| 100 | not retrained |")


def test_no_step_in_the_time():
    results = _results({"act": _cell(10.0, 400, 5), "geovla": _cell(800.0, 400, 30)})
    geovla = [cell for cell in results["cells"] if cell["policy"] == "geovla"][0]
    assert geovla["steps_in_equal_time"] == 0 and geovla["at_equal_time"] is None
    assert "| 0 | no step in the time |" in markdown(results)


def test_docs_tables_are_rewritten_between_their_markers_only():
    results = _results({"act": _cell(200.0, 400, 5), "geovla": _cell(800.0, 400, 30)})
    text = ("prose before\n<!-- builtin summary -->\nold table\n<!-- /builtin summary -->\nprose between\n"
            "<!-- metaworld summary -->\nother suite\n<!-- /metaworld summary -->\n"
            "<!-- builtin equal time -->\n<!-- /builtin equal time -->\n")
    written = with_tables(text, "builtin", results)
    assert written == text.replace("old table\n", summary_table(results)).replace(
        "<!-- builtin equal time -->\n", "<!-- builtin equal time -->\n" + summary_table(results, at_equal_time=True))
    assert with_tables(written, "builtin", results) == written
    assert marked_tables(written, "builtin") == ["summary", "equal time"]
    assert marked_tables(written, "metaworld") == ["summary"]
