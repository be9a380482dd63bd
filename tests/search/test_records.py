"""The typed records at the search's seams: one event enum the journal enforces, and the evaluation's
frozen request and result, which survive the journal and the process boundary unchanged."""

from __future__ import annotations

import ast
import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from spnas.detect.detector import resolve_options
from spnas.detect.train import FAST
from spnas.errors import ConfigError
from spnas.search.journal import Journal
from spnas.search.journal import __doc__ as JOURNAL_DOC
from spnas.search.records import DetectorSpec, EvalRequest, EvalResult, Event, Outcome

ROOT = Path(__file__).resolve().parents[2]


def test_every_emit_names_an_event_member():
    """No event kind is spelled as a string where it is written: each emit(...) call passes Event.X."""
    bad = []
    for path in [*(ROOT / "spnas").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("emit", "append", "append_once"):
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value in set(Event):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def test_the_journal_documents_and_writes_only_the_enum(tmp_path):
    assert all(f"``{e.value}``" in JOURNAL_DOC for e in Event)
    j = Journal(tmp_path / "journal.jsonl")
    j.append(Event.START, id=None, seed=0)
    with pytest.raises(ValueError):
        j.append("begun", id=None)  # a kind no replay and no listener knows
    j.close()
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write(json.dumps({"event": "begun", "id": None}) + "\n")
        f.write(json.dumps({"event": "stopped", "id": None, "reason": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"line 2 is damaged \(ValueError: an event of unknown kind 'begun'\); 1 line"):
        Journal(tmp_path / "journal.jsonl")


def _request() -> EvalRequest:
    return EvalRequest(id="g001c0", dir="/run/candidates/g001c0", data={"format": "coco"},
                       detector=DetectorSpec("faster", resolve_options("lean")), train=dataclasses.replace(FAST, seed=7), metric="AP")


def test_a_request_is_frozen_and_crosses_a_process_as_it_is():
    req = _request()
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.id = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(req)) == req
    on = req.on("cuda:1", 4)
    assert (on.device, on.threads, req.device) == ("cuda:1", 4, "cpu") and on.seed == 7
    assert req.detector.build_kwargs()["max_size"] == resolve_options("lean").max_size


def test_a_result_is_the_same_record_after_the_journal(tmp_path):
    ok = EvalResult("g001c0", Outcome.OK, seconds=1.5, metric=0.25, metrics={"AP": 0.25, "AP50": 0.5}, weights="candidates/g001c0/trained/w",
                    sha256="ab", loss=0.7, iterations=12, curve={"lr": [0.1]}, training={"ranks": 1})
    oom = EvalResult.failure("g001c1", Outcome.MACHINE, "CUDA out of memory", "out of memory", 2.0)
    own = EvalResult.failure("g001c2", Outcome.CANDIDATE, "non-finite loss", "diverged", 3.0)
    j = Journal(tmp_path / "journal.jsonl")
    for r in (ok, oom, own):
        j.append(r.event(), id=r.id, phase="serial", **r.event_fields())
    j.close()
    again = Journal(tmp_path / "journal.jsonl")  # replayed from the file
    assert [EvalResult.from_event(again.results[r.id]) for r in (ok, oom, own)] == [ok, oom, own]
    assert again.results["g001c1"]["kind"] == "machine" and again.results["g001c2"]["event"] == Event.FAILED
    assert oom.machine_failure and not own.machine_failure and ok.ok and not own.ok
    assert "loss" not in EvalResult("x", Outcome.OK, metric=0.1, weights="w", sha256="s").event_fields()  # nothing unknown is written as null


def test_the_wire_form_reads_back_and_bad_returns_are_named():
    ok = EvalResult("a", Outcome.OK, metric=0.5, metrics={"AP": 0.5}, weights="w", sha256="s", seconds=1.0)
    assert EvalResult.of(json.loads(json.dumps(ok.as_dict()))) == ok
    assert EvalResult.of({"id": "a", "status": "failed", "reason": "r", "kind": "machine", "cause": "timeout"}).machine_failure
    assert EvalResult.of({"id": "a", "status": "failed", "reason": "r"}).outcome is Outcome.CANDIDATE
    with pytest.raises(TypeError, match="returned float '0.5'; expected an EvalResult"):
        EvalResult.of(0.5)
