"""Strategies as a public seam (issue 24): the default is the paper's hill climbing, random sampling
is a strategy, and one written outside the package runs through the public loop services alone.

The golden journals under ``golden/`` were written by the code before the seam existed (commit
4a87df1, the search's loop with ``_serial``/``_parallel`` as private methods and random sampling as
a subclass in ``benchmarks/evidence.py``), with the formula evaluator; times and seconds removed.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from spnas.search import Candidate, HillClimbing, RandomSampling, Search, Strategy
from tests.search.fake import FakeEvaluator
from tests.search.test_loop import config, events

GOLDEN = Path(__file__).with_name("golden")
ROOT = Path(__file__).resolve().parents[2]
# min_gain 0.0: the golden journals were written when it was the default (now auto: 2 x the noise runs' std)
HILL = {"search": {"noise_seeds": 2, "min_gain": 0.0, "n_stuck": 2, "n_reignite": 1, "max_generations": 6, "final_reignite": True},
        "parallel": {"enabled": True, "max_candidates": 3, "n_stuck_p": 3}}
RAND = {"search": {"mutations": [1, 2], "max_generations": 2}, "parallel": {"enabled": True, "max_candidates": 3}}


def cfg(extra):
    return config(**extra)


def golden(name: str) -> list[dict]:
    return [json.loads(ln) for ln in (GOLDEN / name).read_text().splitlines()]


def test_hill_climbing_writes_the_journal_the_code_before_the_seam_wrote(tmp_path):
    """Noise runs, fair decisions, a reignite, a final reignite and the parallel level: event for event."""
    Search(cfg(HILL), tmp_path / "default", evaluate=FakeEvaluator(), quiet=True, tensorboard=False).run()
    Search(cfg(HILL), tmp_path / "explicit", evaluate=FakeEvaluator(), quiet=True, tensorboard=False, strategy=HillClimbing()).run()
    want = golden("hill_climbing.jsonl")
    assert {e["event"] for e in want} >= {"noise", "reignited", "accepted", "rejected", "best", "done"}
    want[0] = {**want[0], "format": 1}  # the start event now states the journal's format
    assert events(tmp_path / "default") == want
    assert events(tmp_path / "explicit") == want


def test_random_sampling_is_a_strategy_and_draws_what_the_subclass_drew(tmp_path):
    Search(cfg(RAND), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False, strategy=RandomSampling(5)).run()
    got, want = events(tmp_path / "run"), golden("random_sampling.jsonl")
    want[0] = {**want[0], "format": 1}
    assert got[:-1] == want[:-1]  # every proposal, walk and result
    assert got[-1] == {**want[-1], "strategy": "random_sampling", "planned": 5}  # the done event now carries the summary's extras
    assert json.loads((tmp_path / "run" / "best" / "summary.json").read_text())["planned"] == 5


class BestChildOfTheStart:
    """A strategy written outside the package: train the start net, draw ``k`` children of it with
    the search's own mutation, train them, and take the best child if it beats the start by min_gain."""

    def __init__(self, k: int) -> None:
        self.k = k

    def run(self, loop: Search) -> Candidate:
        start = loop.train_start()
        loop.begin(1, "serial")
        kids = [c for i in range(self.k) if (c := loop.mutate(start, f"g001c{i}", 1)) is not None]
        kids = [loop.propose(c) for c in kids]
        loop.evaluate(kids)
        winner = max(kids, key=loop.score)
        if loop.beats(winner, start):
            best = loop.accept(winner, start, 1)
            loop.emit("best", once=True, id=best.id, generation=1, phase="serial", metric=best.metric)
            return best
        return loop.reject(winner, start, 1, kept=start)

    def summary(self) -> dict:
        return {"strategy": "best_child_of_the_start", "children": self.k}


def test_a_strategy_written_outside_the_package_runs_and_resumes_through_the_public_interface(tmp_path):
    strategy = BestChildOfTheStart(3)
    assert isinstance(strategy, Strategy)
    ev = FakeEvaluator()
    summary = Search(cfg({}), tmp_path / "run", evaluate=ev, quiet=True, tensorboard=False, strategy=strategy).run()
    assert ev.calls == ["start", "g001c0", "g001c1", "g001c2"]
    evs = events(tmp_path / "run")
    decided = [e for e in evs if e["event"] in ("accepted", "rejected") and e["id"] != "start"]
    assert len(decided) == 1 and decided[0]["baseline"] == "start"
    metrics = {e["id"]: e["metric"] for e in evs if e["event"] == "evaluated"}
    best_child = max(["g001c0", "g001c1", "g001c2"], key=metrics.get)  # the first of equals, as max() takes it
    assert decided[0]["id"] == best_child
    assert summary["best_id"] == (best_child if decided[0]["event"] == "accepted" else "start")
    assert summary["strategy"] == "best_child_of_the_start" and summary["children"] == 3
    assert (tmp_path / "run" / "best" / "detector.safetensors").is_file()
    # resumed, it replays every decision from the journal and trains nothing
    again = FakeEvaluator()
    resumed = Search(cfg({}), tmp_path / "run", evaluate=again, quiet=True, tensorboard=False, resume=True, strategy=BestChildOfTheStart(3)).run()
    assert again.calls == [] and resumed["best_id"] == summary["best_id"] and events(tmp_path / "run") == evs


def test_benchmarks_use_no_private_method_of_search():
    private = {n for n in vars(Search) if n.startswith("_") and not n.startswith("__")}
    for f in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                assert "Search" not in bases, f"{f.name}: class {node.name} subclasses Search; write a strategy instead"
            if isinstance(node, ast.Attribute) and node.attr in private:
                raise AssertionError(f"{f.name}:{node.lineno}: uses Search's private {node.attr}")


def test_a_journal_from_before_the_format_version_replays_and_a_newer_one_is_refused(tmp_path):
    import pytest

    from spnas.errors import ConfigError
    from spnas.search import Journal
    from spnas.search.journal import FORMAT

    old = tmp_path / "journal.jsonl"
    old.write_text((GOLDEN / "hill_climbing.jsonl").read_text())
    j = Journal(old)
    j.close()
    want = golden("hill_climbing.jsonl")
    assert j.format == 1 and "format" not in want[0] and len(j.events) == len(want)
    assert set(j.results) == {e["id"] for e in want if e["event"] == "evaluated"}
    assert old.read_text() == (GOLDEN / "hill_climbing.jsonl").read_text()  # read, not rewritten
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({**want[0], "format": FORMAT + 1}) + "\n")
    with pytest.raises(ConfigError, match=rf"newer.jsonl: line 1: journal format {FORMAT + 1}, written by a newer spnas"):
        Journal(newer)
