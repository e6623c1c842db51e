"""Rewrite the benchmark tables in the docs from the committed results.

    python scripts/update_results_docs.py            # after a --merge into docs/results/<suite>
    python scripts/update_results_docs.py --check    # exit 1 if a table is out of date

Every ``docs/results/<suite>/results.json`` fills the tables its suite marks in ``README.md``
and ``docs/results.md`` (``<!-- <suite> summary -->`` ... ``<!-- /<suite> summary -->``; also
``equal time`` and ``ablations``, see ``benchmarks/docs_tables.py``). The prose around them is
left to be written by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package sits beside scripts/

from benchmarks.docs_tables import with_tables  # noqa: E402

DOCS = (ROOT / "README.md", ROOT / "docs" / "results.md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    args = parser.parse_args()
    runs = sorted((ROOT / "docs" / "results").glob("*/results.json"))
    stale = []
    for doc in DOCS:
        text = original = doc.read_text()
        for path in runs:
            text = with_tables(text, path.parent.name, json.loads(path.read_text()))
        if text != original:
            stale.append(doc)
            if not args.check:
                doc.write_text(text)
    verb = "out of date" if args.check else "rewritten"
    print("\n".join(f"{verb}: {doc.relative_to(ROOT)}" for doc in stale) or "every table is up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
