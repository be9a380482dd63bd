"""Candidates packed for workers without the run directory (Ray's object-store transport), without Ray."""

from __future__ import annotations

import shutil
from pathlib import Path

from spnas.ir import parse, save
from spnas.detect.detector import resolve_options
from spnas.detect.train import FAST
from spnas.search.evaluator import HEAD_FILE, pack_request, run_portable, unpack_result
from spnas.search.records import DetectorSpec, EvalRequest, EvalResult, Outcome

ROOT = Path(__file__).resolve().parents[2]
SEEN: dict = {}


def copying_evaluate(req):
    """Stands in for training: records what the worker saw, copies input to trained, writes a head."""
    d = Path(req.dir)
    SEEN.update(dir=d, parent_head=Path(req.parent_head).read_bytes(), plugins=list(req.plugins), data=req.data)
    shutil.copytree(d / "input", d / "trained")
    (d / HEAD_FILE).write_bytes(b"head")
    return {"id": req.id, "status": "ok", "metric": 0.5}  # the wire form: an evaluation function may return a dict


def _request(tmp_path, data):
    run = tmp_path / "run"
    d = run / "candidates" / "g001c0"
    save(parse("BB(1,d1)"), d / "input")
    head = run / "candidates" / "start" / HEAD_FILE
    head.parent.mkdir(parents=True)
    head.write_bytes(b"parent head")
    return EvalRequest(id="g001c0", dir=str(d), parent_head=str(head), data=data, detector=DetectorSpec("faster", resolve_options("lean")),
                       train=FAST, metric="AP", plugins=(str(ROOT / "examples/morphisms/squeeze_excite.py"),))


def test_a_packed_candidate_runs_in_the_workers_scratch_and_comes_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SPNAS_SCRATCH", str(tmp_path / "node"))
    gen = {"train": {"n_images": 2, "size": 32, "seed": 0}, "val": {"n_images": 1, "size": 32, "seed": 1}}
    req = _request(tmp_path, {"format": "shapes", "train": {"json": "/driver/only/train.json"}, "val": {"json": "/driver/only/val.json"},
                              "generate": gen})
    payload = pack_request(req)
    res = run_portable(copying_evaluate, req, payload)
    scratch = tmp_path / "node" / "spnas-worker"
    assert scratch in SEEN["dir"].parents and tmp_path / "run" not in SEEN["dir"].parents  # the worker never used the run directory
    assert SEEN["parent_head"] == b"parent head"
    assert Path(SEEN["plugins"][0]).read_text() == (ROOT / "examples/morphisms/squeeze_excite.py").read_text()
    assert scratch in Path(SEEN["data"]["train"]["json"]).parents and Path(SEEN["data"]["train"]["json"]).is_file()
    assert not [p for p in scratch.iterdir() if p.name.startswith("g001c0")]  # its scratch is cleaned
    out = unpack_result(req, res)
    assert out == EvalResult("g001c0", Outcome.OK, metric=0.5)
    d = Path(req.dir)
    assert (d / "trained" / "weights.safetensors").read_bytes() == (d / "input" / "weights.safetensors").read_bytes()
    assert (d / HEAD_FILE).read_bytes() == b"head"


def test_data_a_node_cannot_read_is_the_machines_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("SPNAS_SCRATCH", str(tmp_path / "node"))
    req = _request(tmp_path, {"format": "coco", "train": {"json": "/nope/train.json"}, "val": {"json": "/nope/val.json"}})
    res, files = run_portable(copying_evaluate, req, pack_request(req))
    assert res.outcome is Outcome.MACHINE and not files
    assert "data.train.json: /nope/train.json is not readable on this node" in res.reason
    assert "every node needs the data at the same path" in res.reason
