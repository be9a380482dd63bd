"""Issue 28, must-show 3: a search whose DataLoader workers are killed mid-candidate, and which is
itself killed (SIGKILL of its whole process group) at random points and resumed, reaches the same
decisions and best as an undisturbed run. Real worker processes, real loader workers, real kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.procs import kill_group
from tests.search.test_search import ROOT, TINY, journal, run_search, summary

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds loader workers through /proc")]

DRIVER = """
import sys
from spnas.search import Search, load_config
from tests.search.faults import loader_killing_evaluate
Search(load_config(sys.argv[1]), sys.argv[2], resume=sys.argv[3] == "1", evaluate=loader_killing_evaluate, quiet=True).run()
"""


def decisions(out: Path) -> list[tuple]:
    return [(e["event"], e["id"], e.get("metric")) for e in journal(out) if e["event"] in ("accepted", "rejected", "best")]


def test_loader_workers_killed_mid_candidate_and_the_search_killed_at_random_resumes_to_the_same_decisions(tmp_path):
    reference = tmp_path / "reference"
    run_search(reference)
    ref_evaluated = [e["id"] for e in journal(reference) if e["event"] == "evaluated"]
    victims = ref_evaluated[::2]  # every other candidate's first attempt loses its loader worker, the start net's included
    env = {**os.environ, "SPNAS_TEST_LOADER_KILLS": ",".join(victims), "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(int(os.environ.get("SPNAS_TEST_SEED", "5")))
    out = tmp_path / "disturbed"
    total = len(journal(reference))

    def lines() -> int:
        f = out / "journal.jsonl"
        return len(f.read_text().splitlines()) if f.is_file() else 0

    kills = 0
    for _ in range(3):
        resume = "1" if (out / "journal.jsonl").exists() else "0"
        target = int(rng.integers(lines() + 1, max(lines() + 2, total - 1)))
        p = subprocess.Popen([sys.executable, "-c", DRIVER, str(TINY), str(out), resume], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 400
        while p.poll() is None and lines() < target and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(float(rng.uniform(0, 1.5)))
        if p.poll() is None:
            kill_group(p.pid)
            kills += 1
        p.wait()
    assert kills >= 2
    p = subprocess.run([sys.executable, "-c", DRIVER, str(TINY), str(out), "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]

    events = journal(out)
    lost = [e for e in events if e["event"] == "failed"]
    assert lost, "no loader worker was killed: the test tested nothing"
    assert all(e["kind"] == "machine" and e["cause"] == "data loader worker lost" for e in lost), lost
    evaluated = [e["id"] for e in events if e["event"] == "evaluated"]
    assert len(evaluated) == len(set(evaluated)), "a candidate was evaluated twice"
    assert set(evaluated) == set(ref_evaluated), "a candidate was lost or added"
    assert decisions(out) == decisions(reference)
    ref, got = summary(reference), summary(out)
    assert (got["best_id"], got["best_code"], got["best_metric"]) == (ref["best_id"], ref["best_code"], ref["best_metric"])


def test_a_real_corrupt_image_fails_the_start_in_one_line_and_resumes_once_fixed(tmp_path):
    """Issue 28, item 3, end to end: a corrupt training image (non-strict) fails the start net after the
    journal exists; the message names the file and says "fix it and --resume"; with the file mended,
    --resume finishes the search, with the decisions of a run that never met the damage."""
    import yaml

    from spnas.detect.data import generate_shapes

    d = yaml.safe_load(TINY.read_text())
    d["data"]["root"] = str(tmp_path / "data")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d))
    reference = tmp_path / "reference"
    p = subprocess.run([sys.executable, "-m", "spnas.search", "--ir", str(cfg), "--out", str(reference), "--quiet"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    train_json = generate_shapes(tmp_path / "data", n_images=d["data"]["n_train"], size=d["data"]["size"], seed=d["seed"], split="train")
    image = train_json.parent / json.loads(train_json.read_text())["images"][2]["file_name"]
    if not image.is_file():
        image = train_json.parent / "images" / json.loads(train_json.read_text())["images"][2]["file_name"]
    good = image.read_bytes()
    image.write_bytes(good[:40])  # a PNG cut short: a transfer that died

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "spnas.search", "--ir", str(cfg), "--out", str(out), "--quiet"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode != 0 and (out / "journal.jsonl").is_file()
    last = p.stderr.strip().splitlines()[-1]
    assert image.name in last and "fix it and --resume" in last and "Traceback" not in p.stderr, p.stderr[-2000:]
    image.write_bytes(good)
    p = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert decisions(out) == decisions(reference)
