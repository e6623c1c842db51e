"""The committed results' tables inside the docs: each table sits between two markers,
``<!-- <suite> <table> -->`` and ``<!-- /<suite> <table> -->``, and is rewritten from the suite's
``results.json`` (``scripts/update_results_docs.py``), so that prose and tables cannot drift."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from benchmarks.report import ablation_table, summary_table

TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "summary": summary_table,
    "equal time": lambda results: summary_table(results, at_equal_time=True),
    "ablations": ablation_table,
}


def _markers(suite: str, table: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {re.escape(suite)} {table} -->\n)(.*?)(<!-- /{re.escape(suite)} {table} -->)", re.S)


def with_tables(text: str, suite: str, results: dict[str, Any]) -> str:
    """``text`` with every marked table of ``suite`` rewritten from ``results``."""
    for table, make in TABLES.items():
        text = _markers(suite, table).sub(lambda match: match.group(1) + make(results) + match.group(3), text)
    return text


def marked_tables(text: str, suite: str) -> list[str]:
    """The names of the tables of ``suite`` that ``text`` marks."""
    return [table for table in TABLES if _markers(suite, table).search(text)]
