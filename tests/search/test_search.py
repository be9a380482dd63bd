"""End-to-end search tests on the tiny config, with real worker processes and real files."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spnas.ir import parse
from spnas.search import sample_parallel_code, stage_flops
from tests.procs import kill_group

TINY = Path(__file__).with_name("tiny.yaml")
ROOT = Path(__file__).resolve().parents[2]


def run_search(out, *extra, env=None, check=True):
    cmd = [sys.executable, "-m", "spnas.search", "--ir", str(TINY), "--out", str(out), "--quiet", *extra]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def journal(out):
    events = []
    for line in (Path(out) / "journal.jsonl").read_text().splitlines():
        e = json.loads(line)
        e.pop("time", None)
        e.pop("seconds", None)
        events.append(e)
    return events


def summary(out):
    return json.loads((Path(out) / "best" / "summary.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    run_search(out)
    return out


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_same_seed_same_journal(reference, tmp_path):
    run_search(tmp_path / "again")
    assert journal(tmp_path / "again") == journal(reference)


@pytest.mark.slow  # they share a real search (a minute): in .ci/run
def test_run_directory_layout(reference):
    for p in ("config.yaml", "journal.jsonl", "best/arch/arch.yaml", "best/arch/weights.safetensors", "best/detector.safetensors",
              "best/summary.json", "trajectory.png", "trajectory.pdf", "candidates/start/input/arch.yaml", "candidates/start/metrics.json"):
        assert (reference / p).is_file(), p
    events = journal(reference)
    kinds = {e["event"] for e in events}
    assert {"start", "proposed", "evaluated", "accepted", "generation", "done"} <= kinds
    proposed = [e for e in events if e["event"] == "proposed"]
    for e in proposed:
        assert {"encoding", "parent", "morphisms", "gmacs", "params_m", "fingerprint"} <= set(e)
    for e in events:
        if e["event"] == "evaluated":
            assert len(e["sha256"]) == 64 and e["weights"].startswith("candidates/")
    new = [e for e in proposed if e["role"] in ("start", "child", "parallel")]
    assert len({e["fingerprint"] for e in new}) == len(new)  # no new architecture trained twice
    for e in proposed:  # a continued parent or baseline is its parent's architecture, trained on
        if e["role"] in ("continued", "baseline"):
            assert e["fingerprint"] == next(p["fingerprint"] for p in proposed if p["id"] == e["parent"])
    s = summary(reference)
    assert s["acceptance"] == "fair" and all(a["baseline"].endswith("p") for a in s["accepted"] if a["id"].startswith("g"))


@pytest.mark.slow  # they share a real search (a minute): in .ci/run
def test_trajectory_figure_is_a_real_plot(reference):
    from PIL import Image

    png = Image.open(reference / "trajectory.png")
    assert png.size == (1000, 520) and len(np.unique(np.asarray(png.convert("RGB")).reshape(-1, 3), axis=0)) > 50  # axes, legend, points: not a blank page
    assert (reference / "trajectory.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow  # they share a real search (a minute): in .ci/run
def test_run_directory_stores_each_body_once(reference):
    """Body weights live in trained/ only; best/detector.safetensors is the whole detector, strict-loadable."""
    import torch
    from safetensors.torch import load_file

    from spnas.detect import build_detector
    from spnas.ir import load

    for e in journal(reference):
        if e["event"] == "evaluated":
            d = reference / "candidates" / e["id"]
            head = load_file(str(d / "head.safetensors"))
            assert head and not any(k.startswith("backbone.body.") for k in head)
            assert not (d / "input" / "weights.safetensors").exists()  # dropped once the result is journaled
            assert (d / "input" / "arch.yaml").is_file()
    best = load(reference / "best" / "arch")
    model = build_detector(best, 4, "faster", preset="lean", min_size=64, max_size=64, representation_size=64, fpn_channels=32)
    state = load_file(str(reference / "best" / "detector.safetensors"))
    model.load_state_dict(state, strict=True)
    body = model.backbone.body.state_dict()
    arch_w = {k.replace("/", ".", 1): v for k, v in load_file(str(reference / "best" / "arch" / "weights.safetensors")).items()}
    assert set(arch_w) == set(body) and all(torch.equal(body[k], v) for k, v in arch_w.items())
    head = load_file(str(reference / "candidates" / summary(reference)["best_id"] / "head.safetensors"))
    assert all(torch.equal(state[k], v) for k, v in head.items())


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_resume_after_sigkill_at_random_points(reference, tmp_path):
    rng = np.random.default_rng(int(os.environ.get("SPNAS_TEST_SEED", "1")))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "spnas.search", "--ir", str(TINY), "--out", str(out), "--quiet"]
    total = len(journal(reference))
    kills = 0

    def lines():
        f = out / "journal.jsonl"
        return len(f.read_text().splitlines()) if f.is_file() else 0

    for attempt in range(3):
        args = cmd + (["--resume"] if (out / "journal.jsonl").exists() else [])
        # a random point of the run: once the journal reaches a random length, plus up to 1.5 s more
        target = int(rng.integers(lines() + 1, max(lines() + 2, total - 1)))
        p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 300
        while p.poll() is None and lines() < target and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(float(rng.uniform(0, 1.5)))
        if p.poll() is None:
            kill_group(p.pid)
            kills += 1
        p.wait()
    assert kills >= 2
    run_search(out, "--resume")
    ref, got = summary(reference), summary(out)
    assert (got["best_code"], got["best_metric"]) == (ref["best_code"], ref["best_metric"])
    results = [e for e in journal(out) if e["event"] in ("evaluated", "failed")]
    ids = [e["id"] for e in results]
    assert len(ids) == len(set(ids)), "a candidate was evaluated twice"
    ref_ids = {e["id"] for e in journal(reference) if e["event"] in ("evaluated", "failed")}
    assert set(ids) == ref_ids, "a candidate was lost"


@pytest.mark.slow  # they share a real search (a minute): in .ci/run
def test_resume_refuses_other_config(reference, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    text = TINY.read_text().replace("seed: 3", "seed: 4")
    other = tmp_path / "other.yaml"
    other.write_text(text)
    p = subprocess.run([sys.executable, "-m", "spnas.search", "--ir", str(other), "--out", str(out), "--resume"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "another config" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_failures_are_journaled_and_search_goes_on(tmp_path):
    """Faults come through the evaluator parameter; the workers are real processes, one of them killed."""
    from spnas.search import Search, load_config
    from tests.search.faults import faulty_evaluate

    out = tmp_path / "faulty"
    Search(load_config(TINY), out, evaluate=faulty_evaluate, quiet=True).run()
    events = journal(out)
    failed = {e["id"]: e for e in events if e["event"] == "failed"}
    assert "injected fault" in failed["g001c0"]["reason"] and failed["g001c0"]["kind"] == "candidate"
    assert "non-finite loss" in failed["g001c1"]["reason"] and failed["g001c1"]["cause"] == "diverged"
    # the killed worker is the machine's failure: replaced, the candidate retried at once, and it trains
    assert "worker process died" in failed["g002c0"]["reason"] and failed["g002c0"]["kind"] == "machine"
    assert any(e["event"] == "retried" and e["id"] == "g002c0" for e in events)
    assert any(e["event"] == "evaluated" and e["id"] == "g002c0" for e in events)
    assert (out / "best" / "summary.json").is_file()


@pytest.mark.slow  # they share a real search (a minute): in .ci/run
def test_tensorboard_tags(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(reference / "tb"), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for t in ("candidate/metric", "search/best_so_far", "candidate/gmacs", "candidate/params_m"):
        assert t in tags["scalars"], t
    assert len(acc.Scalars("candidate/metric")) == summary(reference)["candidates"] - summary(reference)["failed"]
    assert any(t.startswith("accepted/encoding") for t in tags["tensors"])
    assert any(t.startswith("summary") for t in tags["tensors"])
    assert "trajectory" in tags["images"]
    hp_runs = [p for p in (reference / "tb").rglob("events.out.tfevents.*")]
    assert any(b"_hparams_" in p.read_bytes() for p in hp_runs)
    assert "flops_per_stage" in tags["images"]
    for stem in ("trajectory", "flops_per_stage"):
        assert (reference / f"{stem}.png").stat().st_size > 5000 and (reference / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow  # they share a real search (a minute): in .ci/run
def test_tensorboard_has_a_run_per_candidate(reference):
    """Per-candidate loss and learning-rate curves, every metric, and an hparams session the HParams dashboard compares."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    evaluated = {e["id"]: e for e in journal(reference) if e["event"] == "evaluated"}
    runs = {p.name: p for p in (reference / "tb" / "candidates").iterdir()}
    assert set(runs) == set(evaluated)
    for cid, ev in evaluated.items():
        acc = EventAccumulator(str(runs[cid]), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()["scalars"]
        assert {"train/loss", "train/lr", "metrics/AP", "metrics/AP50", "metrics/VOC_AP50", "hparam/AP50"} <= set(tags), tags
        loss = acc.Scalars("train/loss")
        assert [s.step for s in loss] == ev["curve"]["iteration"] and len(loss) == ev["iterations"]  # tiny: every iteration
        assert acc.Scalars("metrics/AP50")[0].value == pytest.approx(ev["metrics"]["AP50"], abs=1e-6)
        lr = [s.value for s in acc.Scalars("train/lr")]
        assert max(lr) > 0 and lr == pytest.approx(ev["curve"]["lr"], rel=1e-6)
        hp = acc.SummaryMetadata("_hparams_/session_start_info")
        info = plugin_data_pb2.HParamsPluginData.FromString(hp.plugin_data.content).session_start_info
        assert info.hparams["id"].string_value == cid and info.hparams["code"].string_value
        assert info.hparams["gmacs"].number_value > 0


def test_parallel_sampler_follows_inverse_flops():
    arch = parse("BNB(111,d111,d11111,d11)")
    flops = stage_flops(arch, (224, 224))
    rng = np.random.default_rng(0)
    n = 10_000
    counts = np.zeros(len(flops))
    for _ in range(n):
        c = sample_parallel_code(flops, [0] * len(flops), 3, 1, rng)
        counts += np.array(c)
    assert counts.sum() == n
    inv = np.array([1.0 / f for f in flops])  # every stage, the first included
    expected = n * inv / inv.sum()
    chi2 = (((counts - expected) ** 2) / expected).sum()
    assert chi2 < 16.3, (counts, expected)  # chi-square, 3 degrees of freedom, p = 0.001
    assert sample_parallel_code(flops, [3, 3, 3, 3], 3, 2, rng) == [3, 3, 3, 3]
    assert sample_parallel_code(flops, [0, 3, 3, 3], 3, 2, rng) == [2, 3, 3, 3]


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_reignite_when_stuck(tmp_path):
    # APl of 64-px images is always -1 (no large objects): no child can beat its parent, so the search gets stuck
    cfg = TINY.read_text().replace("metric: AP50", "metric: APl").replace("n_stuck: 2", "n_stuck: 1\n  n_reignite: 1\n  keep_inputs: true")
    cfg = cfg.replace("APl\"", "APl")
    cfg = cfg.replace("enabled: true", "enabled: false") + "reignite: {data: generated, epochs: 1, n_images: 16, image_size: 32, batch_size: 8}\n"
    y = tmp_path / "stuck.yaml"
    y.write_text(cfg)
    p = subprocess.run([sys.executable, "-m", "spnas.search", "--ir", str(y), "--out", str(tmp_path / "run"), "--quiet"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    events = journal(tmp_path / "run")
    reignited = [e for e in events if e["event"] == "reignited"]
    assert len(reignited) == 1 and reignited[0]["id"] == "r1"
    assert any(e["event"] == "evaluated" and e["id"] == "r1" for e in events)
    stopped = [e for e in events if e["event"] == "stopped"]
    assert stopped and "stuck" in stopped[-1]["reason"]
    import torch
    from spnas.ir import load

    before = load(tmp_path / "run" / "candidates" / "r1" / "input")
    after = load(tmp_path / "run" / "candidates" / "r1" / "trained")
    assert not torch.equal(before.weights["b0/conv1.weight"], after.weights["b0/conv1.weight"])  # pre-training moved them


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_ray_backend_matches_local(reference, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    p = run_search(out, "--backend", "ray", env={"RAY_ADDRESS": "", "RAY_DISABLE_USAGE_STATS": "1"}, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert journal(out) == journal(reference)  # the same evaluation function, run as Ray tasks on a local cluster


def test_config_can_name_a_user_rule(tmp_path):
    from spnas.search import Search, load_config

    y = tmp_path / "plug.yaml"
    y.write_text(TINY.read_text().replace("morphisms: [expand, swap, widen, add_stage]",
                                          f"plugins: [{ROOT / 'examples/morphisms/dilate.py'}]\n  morphisms: [expand, dilate]"))
    s = Search(load_config(y), tmp_path / "run")
    assert [m.name for m in s.rules] == ["expand", "dilate"]
    s.journal.close()
    y.write_text(TINY.read_text().replace("morphisms: [expand, swap, widen, add_stage]", "morphisms: [expand, nope]"))
    from spnas.errors import SpnasError

    with pytest.raises(SpnasError, match=r"search.morphisms\[1\]: unknown morphism 'nope'"):
        Search(load_config(y), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()  # nothing written for a config that cannot run


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_resume_retrains_a_candidate_whose_weights_were_damaged(reference, tmp_path):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    w = out / "candidates" / "g001c0" / "trained" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    run_search(out, "--resume")
    evaluated = [e["id"] for e in journal(out) if e["event"] == "evaluated"]
    assert evaluated.count("g001c0") == 2 and all(evaluated.count(i) == 1 for i in set(evaluated) - {"g001c0"})
    assert summary(out)["best_metric"] == summary(reference)["best_metric"]


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_a_stopped_worker_times_out_and_is_retried(tmp_path):
    """SIGSTOP hangs a worker without killing it: the per-candidate timeout ends it, and the candidate runs again."""
    from spnas.search import Search, load_config
    from tests.search.faults import stopping_evaluate

    y = tmp_path / "t.yaml"
    y.write_text(TINY.read_text().replace("  threads: 1", "  threads: 1\n  timeout_s: 20"))
    out = tmp_path / "stopped"
    t0 = time.time()
    Search(load_config(y), out, evaluate=stopping_evaluate, quiet=True).run()
    events = journal(out)
    failed = [e for e in events if e["event"] == "failed"]
    assert [(e["id"], e["kind"]) for e in failed] == [("g001c0", "machine")] and "timed out after 20 s" in failed[0]["reason"]
    assert any(e["event"] == "evaluated" and e["id"] == "g001c0" for e in events)
    assert time.time() - t0 < 300


def test_auto_timeout():
    from spnas.search.runner import auto_timeout

    assert auto_timeout([]) == 6 * 3600  # before any result
    assert auto_timeout([5.0, 12.0]) == 600  # the floor
    assert auto_timeout([100.0, 250.0]) == 2500  # 10x the slowest


@pytest.mark.slow  # real searches: a minute each (in .ci/run)
def test_a_rule_that_brings_its_own_kind_searches_end_to_end(tmp_path):
    """examples/morphisms/squeeze_excite.py: a new node kind and its rule, named from the config; real training in a worker process."""
    plugin = ROOT / "examples/morphisms/squeeze_excite.py"
    y = tmp_path / "se.yaml"
    y.write_text(TINY.read_text().replace("morphisms: [expand, swap, widen, add_stage]", f"plugins: [{plugin}]\n  morphisms: [add_se]")
                 .replace("max_generations: 2", "max_generations: 1").replace("enabled: true", "enabled: false"))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "spnas.search", "--ir", str(y), "--out", str(out), "--quiet"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    events = journal(out)
    se = [e for e in events if e["event"] == "proposed" and any(m["rule"] == "add_se" for m in e["morphisms"])]
    assert se, "no candidate used add_se"
    evaluated = {e["id"]: e for e in events if e["event"] == "evaluated"}
    for e in se:
        assert e["grammar"] == "custom" and e["custom_kinds"] == ["se"] and "[se]" in e["encoding"]
        assert e["id"] in evaluated and evaluated[e["id"]]["metric"] is not None  # trained and measured in the worker
    s = summary(out)
    shown = subprocess.run([sys.executable, "-m", "spnas.ir", "show", str(out / "best" / "arch"), "--json", "--plugin", str(plugin)],
                           cwd=ROOT, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["code"] == s["best_code"]
