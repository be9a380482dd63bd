"""``spnas audit RUN``: full trainings of a finished tiny search's nets, in real worker processes; killed and resumed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spnas.search.audit import plan
from tests.procs import kill_group
from tests.search.test_search import ROOT, run_search

AUDIT = ["--top", "2", "--epochs", "1", "--seeds", "0", "1"]


def audit_cmd(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spnas.cli", "audit", str(run), *AUDIT, *extra]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    run_search(out)
    return out


def finished(run: Path) -> dict[str, tuple[int, str]]:
    return {p.parent.name: (p.stat().st_mtime_ns, p.read_text()) for p in (run / "audit").glob("*/metrics.json")}


@pytest.mark.slow  # it needs a finished tiny search (the fixture the audit test shares): .ci/run runs both
def test_the_plan_takes_the_start_the_found_net_and_the_best_others(tiny_run):
    p = plan(tiny_run, top=2)
    ids = [n["id"] for n in p["nets"]]
    summary = json.loads((tiny_run / "best" / "summary.json").read_text())
    assert ids[0] == "start" and summary["best_id"] in ids and len(ids) == len(set(ids))
    assert len(ids) == 2 + 1 + (summary["best_id"] != "start")  # --top 2 others, the start, the found net
    codes = [n["code"] for n in p["nets"]]
    assert len(set(codes)) == len(codes)  # distinct architectures
    start = p["nets"][0]
    assert start["line_epochs"] == 1 and all(n["line_epochs"] >= 2 for n in p["nets"][1:])  # every other net trained beyond the start


@pytest.mark.slow  # about 2 minutes on 2 cores: .ci/run runs it
def test_audit_killed_midway_resumes_and_trains_nothing_twice(tiny_run):
    proc = subprocess.Popen(audit_cmd(tiny_run), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not finished(tiny_run) and proc.poll() is None:
        time.sleep(0.2)
    kill_group(proc.pid)  # and wait: a worker inside a write finishes it after killpg returns
    proc.wait()
    before = finished(tiny_run)
    assert before, "no full training finished before the kill"
    p = subprocess.run(audit_cmd(tiny_run), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    after = finished(tiny_run)
    assert {k: after[k] for k in before} == before  # what finished before the kill was not trained again
    total = len(after)
    assert f"({len(before)} cached)" in p.stderr and f"{total} full trainings" in p.stderr
    # the table, the verdict, one JSON line
    lines = p.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["id", "role", "code"]
    out = json.loads(lines[-1])
    assert out["epochs"] == 1 and out["seeds"] == [0, 1]
    r = out["ranking"]
    assert r["n"] == len(out["nets"]) and (r["tau"] is None or -1 <= r["tau"] <= 1)
    for n in out["nets"]:
        full = json.loads((tiny_run / "audit" / f"{n['id']}_e1_s0" / "metrics.json").read_text())
        assert n["full_mean"] == pytest.approx((full["metric"] + json.loads((tiny_run / "audit" / f"{n['id']}_e1_s1" / "metrics.json").read_text())["metric"]) / 2)
    eb = out["equal_budget"]
    assert eb["verdict"] in lines[-2]
    summary = json.loads((tiny_run / "best" / "summary.json").read_text())
    if summary["best_id"] != "start":  # the control trained the found net's extra epochs too
        best = next(n for n in out["nets"] if n["id"] == summary["best_id"])
        assert eb["start_epochs"] == 1 + best["line_epochs"] - 1
        assert (tiny_run / "audit" / f"start_e{eb['start_epochs']}_s0" / "metrics.json").is_file()
    assert summary["audit"]["verdict"] == eb["verdict"] and summary["audit"]["nets"] == len(out["nets"])
    from PIL import Image

    im = Image.open(tiny_run / "audit" / "audit.png")
    assert im.size[0] > 600 and len(np.unique(np.asarray(im.convert("L")))) > 20  # a drawn figure, not a blank canvas
    assert (tiny_run / "audit" / "audit.pdf").stat().st_size > 1000
    # a third run trains nothing at all
    again = subprocess.run(audit_cmd(tiny_run), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and f"({total} cached)" in again.stderr and finished(tiny_run) == after


def test_audit_refuses_what_is_not_a_finished_run(tmp_path):
    p = subprocess.run([sys.executable, "-m", "spnas.cli", "audit", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no journal.jsonl" in p.stderr and len(p.stderr.strip().splitlines()) == 1
