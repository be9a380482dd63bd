"""The anytime study's shipped table (benchmarks/tables/anytime_trees_quick.json) read back: the README's
table is what the records give, and each record is whole and consistent (curves never fall, budgets rise)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks import anytime
from benchmarks.evidence import markdown_table

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "tables" / "anytime_trees_quick.json"


def test_the_shipped_seeds_are_whole_and_the_readme_shows_them():
    table = json.loads(TABLE.read_text())
    records = [table["seeds"][k] for k in sorted(table["seeds"], key=int)]
    assert records and table["metric"] == "AP50" and table["settings"]["anytime"]["search"]["max_generations"] == 8
    for r in records:
        assert r["budgets"] == sorted(r["budgets"]) and len(r["budgets"]) == len(anytime.BUDGETS)
        for arm in anytime.ARMS:
            best = [p["best"] for p in r["curves"][arm]]
            assert best and best == sorted(best), arm  # a best so far never falls
            assert all(f is not None and 0 <= f["test"] <= 1 for f in r["finals"][arm]), arm
        # the size: 30+ trained a search. Random search draws as many walks as the search trained after the start
        # (its 2 noise runs counted as walks) and runs its own 2 noise runs: 2 nets past the fixed search's compute,
        # beyond every budget of the table
        assert r["trained"]["random search"] >= r["trained"]["fixed"] >= 30
        assert r["curves"]["random search"][-3]["epochs"] <= r["budgets"][-1]
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in anytime.rows_of(records)]
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- evidence:anytime -->\n(.*?)<!-- /evidence:anytime -->", readme, re.S)
    assert block and block.group(1).strip() == markdown_table(rows).strip()
    for m in anytime.reach(records):  # the README's multi-fidelity figure is the table's
        assert f"after {m['mf_epochs']} epochs against the fixed search's {m['fixed_epochs']}" in readme.replace("\n", " ")
