"""The committed benchmark results agree with themselves and with the docs: each
``docs/results/<suite>/`` folder's ``results.json`` is what its ``state.json`` gives, its
``results.md`` is that table, and ``docs/results.md`` shows its summary (and its ablation table,
once an ablation ran); the README shows the built-in suite's summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.report import ablation_table, collect, markdown, summary_table
from benchmarks.suites import get_suite

ROOT = Path(__file__).resolve().parents[2]
RUNS = sorted(path.parent for path in (ROOT / "docs" / "results").glob("*/state.json"))


def test_the_results_are_committed():
    assert [run.name for run in RUNS] and all((run / "success.png").is_file() for run in RUNS)


@pytest.mark.parametrize("run", RUNS, ids=[run.name for run in RUNS])
def test_committed_results_match_their_state_and_the_docs(run):
    state = json.loads((run / "state.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert collect(state, get_suite(state["header"]["suite"])) == results
    assert (run / "results.md").read_text() == markdown(results)
    table = summary_table(results)
    assert table in (ROOT / "docs" / "results.md").read_text()
    if run.name == "builtin":  # the README shows the one table of the built-in tasks
        assert table in (ROOT / "README.md").read_text()
    ablations = ablation_table(results)
    if ablations:
        assert ablations in (ROOT / "docs" / "results.md").read_text()
