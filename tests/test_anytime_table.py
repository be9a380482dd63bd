"""The anytime study's shipped tables read back: the README's table is what the records give, and each record
is whole and consistent (curves never fall, budgets rise). ``anytime_trees_quick_start30.json``: the first
try, from a 30-epoch start that was not converged (seed 0); ``anytime_trees_quick.json``: the study from the
converged start (``start.train_epochs: auto``), whose learning curve the table holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import anytime
from benchmarks.evidence import markdown_table

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "benchmarks" / "tables"
STUDIES = [("anytime_trees_quick_start30.json", "anytime_start30")]


def shown(readme: str, name: str) -> str | None:
    """The README's table between ``<!-- evidence:NAME -->`` and its end (None where there is none)."""
    m = re.search(rf"<!-- evidence:{name} -->\n(.*?)<!-- /evidence:{name} -->", readme, re.S)
    return m.group(1).strip() if m else None


def table_rows(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in anytime.rows_of(records)]


@pytest.mark.parametrize("name,block", STUDIES)
def test_the_shipped_seeds_are_whole_and_the_readme_shows_them(name, block):
    table = json.loads((TABLES / name).read_text())
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
    readme = (ROOT / "README.md").read_text()
    assert shown(readme, block) == markdown_table(table_rows(records)).strip()
    for m in anytime.reach(records):  # the README's multi-fidelity figure is the table's
        assert f"after {m['mf_epochs']} epochs against the fixed search's {m['fixed_epochs']}" in readme.replace("\n", " ")


def test_the_converged_start_and_the_seeds_so_far_are_the_readmes():
    """The study from the converged start: its learning curve (cycles doubling from the fast scheme's 2 epochs,
    the best cycle the start) is the table's and the README's; the README counts the seeds the table holds,
    and once there are any, its table, its verdict and its multi-fidelity figure are theirs."""
    table = json.loads((TABLES / "anytime_trees_quick.json").read_text())
    conv, readme = table["start"], (ROOT / "README.md").read_text()
    flat = readme.replace("\n", " ")
    epochs = [p["epochs"] for p in conv["curve"]]
    assert [b - a for a, b in zip([0] + epochs, epochs)] == [2 * 2 ** i for i in range(len(epochs))]  # 2, 4, 8, ...
    assert conv["metric"] == max(p["metric"] for p in conv["curve"]) and conv["trained_epochs"] == epochs[-1]
    assert ", ".join(f"{p['metric']:.3f}" for p in conv["curve"]) in flat and f"30 + {conv['epochs']} epochs" in flat
    records = [table["seeds"][k] for k in sorted(table["seeds"], key=int)]
    assert re.search(rf"\*\*Measured( so far)?: {len(records)} of the 5 seeds\*\*", flat)
    for r in records:  # every seed began from this start
        assert {k: r["start"][k] for k in ("id", "epochs", "metric")} == {k: conv[k] for k in ("id", "epochs", "metric")}
    if records:
        for name, rows in (("anytime", table_rows(records)), ("anytime_verdict", anytime.verdict(records)),
                           ("anytime_seeds", anytime.per_seed(records))):
            assert shown(readme, name) == markdown_table(rows).strip(), name


def test_each_seeds_row_is_its_record():
    """The per-seed table's cells are the record's numbers: the full budget's finals, train longer minus the
    start, and the multi-fidelity search's epochs to the fixed search's best (read off the curves here)."""
    table = json.loads((TABLES / "anytime_trees_quick.json").read_text())
    for k, r in table["seeds"].items():
        row = anytime.per_seed([r])[0]
        assert row["seed"] == int(k) and float(row["fixed"]) == pytest.approx(r["finals"]["fixed"][-1]["test"], abs=5e-4)
        assert float(row["train longer - start"]) == pytest.approx(r["finals"]["train longer"][-1]["test"] - r["start"]["test"], abs=5e-4)
        target = r["curves"]["fixed"][-1]["best"]
        first = lambda arm: next((p["epochs"] for p in r["curves"][arm] if p["best"] >= target), None)  # noqa: E731
        got = first("multi-fidelity")
        assert row["multi-fidelity to the fixed best"].startswith(f"{got} / {first('fixed')} epochs" if got is not None else "never")
