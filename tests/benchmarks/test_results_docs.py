"""The committed benchmark results agree with themselves and with the docs: each
``docs/results/<suite>/`` folder's ``results.json`` is what its ``state.json`` gives, its
``results.md`` is that table, and ``docs/results.md`` marks its summary, its table at equal time
and (once an ablation ran) its ablation table, each as ``scripts/update_results_docs.py``
writes it; the README shows the built-in suite's summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.docs_tables import marked_tables, with_tables
from benchmarks.report import ablation_table, collect, markdown
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
    docs = {path.name: path.read_text() for path in (ROOT / "README.md", ROOT / "docs" / "results.md")}
    for name, text in docs.items():
        assert with_tables(text, run.name, results) == text, f"{name}: run scripts/update_results_docs.py"
    expected = ["summary", "equal time"] + (["ablations"] if ablation_table(results) else [])
    assert marked_tables(docs["results.md"], run.name) == expected
    assert marked_tables(docs["README.md"], run.name) == (["summary"] if run.name == "builtin" else [])
