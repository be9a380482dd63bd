"""The search loop's decisions, with a formula-driven evaluator (no training): seconds, not minutes.

The fake evaluator (tests/search/fake.py) gives each candidate quality(arch) + per_epoch * (epochs
its line has trained) + a seed's noise, so the tests can tell a rule that measures the architecture
from one that rewards extra training.
"""

from __future__ import annotations

import json

import pytest

from spnas.errors import SpnasError
from spnas.search import Search, config_from_dict
from tests.search.fake import COUNTER, FakeEvaluator, flat

BASE = {
    "start": {"code": "BB(1,1,1,1)"},
    "data": {"n_train": 2, "n_val": 1, "size": 32},
    "detector": {"head": "faster", "options": {"min_size": 64, "max_size": 64}},
    "train": {"epochs": 3},
    "search": {"metric": "AP", "lam": 2, "morphisms": ["expand", "swap"], "mutations": [1, 1], "n_stuck": 4, "n_reignite": 0,
               "max_generations": 4, "min_blocks": 4, "max_blocks": 9, "max_shift": 1},
    "parallel": {"enabled": False, "K": 2, "n_stuck_p": 2, "max_candidates": 4},
    "workers": {"backend": "inline"},
    "seed": 0,
}


def config(**changes):
    d = json.loads(json.dumps(BASE))
    for section, values in changes.items():
        if isinstance(values, dict):
            d[section] = {**d.get(section, {}), **values}
        else:
            d[section] = values
    return config_from_dict(d)


def run(tmp_path, name="run", evaluator=None, resume=False, listeners=(), **changes):
    ev = evaluator or FakeEvaluator()
    s = Search(config(**changes), tmp_path / name, evaluate=ev, quiet=True, resume=resume, listeners=listeners, tensorboard=False)
    return s.run(), events(tmp_path / name), ev


def events(out):
    out_ = []
    for line in (out / "journal.jsonl").read_text().splitlines():
        e = json.loads(line)
        e.pop("time", None)
        e.pop("seconds", None)
        out_.append(e)
    return out_


def of(evs, kind, **match):
    return [e for e in evs if e["event"] == kind and all(e.get(k) == v for k, v in match.items())]


def test_fair_rule_accepts_no_child_whose_gain_is_only_training(tmp_path):
    """Architecture does not matter (flat quality); training does. Fair: nothing accepted. Paper: training passes as progress."""
    _, fair, _ = run(tmp_path, "fair", FakeEvaluator(flat))
    assert of(fair, "accepted", rule="fair") == []
    rejected = of(fair, "rejected", phase="serial")
    assert rejected and all(e["kept"] == f"g{e['generation']:03d}p" for e in rejected)  # the continued parent carries on
    _, paper, _ = run(tmp_path, "paper", FakeEvaluator(flat), search={"acceptance": "paper"})
    accepted = of(paper, "accepted", rule="paper")
    assert accepted, "the paper's rule should mistake 3 more epochs for a better architecture"
    assert all(e["baseline"] != f"g{e['generation']:03d}p" for e in accepted)


def test_fair_rule_compares_with_the_continued_parent_only(tmp_path):
    summary, evs, _ = run(tmp_path)  # deeper is better: expand children win
    accepted = of(evs, "accepted", rule="fair")
    assert accepted
    for e in accepted:
        assert e["baseline"] == f"g{e['generation']:03d}p"
        base = of(evs, "evaluated", id=e["baseline"])[0]
        assert e["baseline_metric"] == pytest.approx(base["metric"], abs=1e-6) and e["gain"] == pytest.approx(e["metric"] - base["metric"], abs=1e-6)
        assert base["epochs_trained"] == of(evs, "evaluated", id=e["id"])[0]["epochs_trained"]  # equal training
    assert summary["acceptance"] == "fair" and [a["id"] for a in summary["accepted"]] == [e["id"] for e in accepted]


def test_continued_parent_becomes_the_parent_when_no_child_wins(tmp_path):
    _, evs, _ = run(tmp_path, evaluator=FakeEvaluator(flat))
    g1 = of(evs, "rejected", generation=1, phase="serial")[0]
    assert g1["kept"] == "g001p"
    for e in of(evs, "proposed", generation=2):
        assert e["parent"] == "g001p"
    # its training is kept: generation 2 starts from 3 (start) + 3 (g001p) epochs and adds 3 more
    assert of(evs, "evaluated", id="g002p")[0]["epochs_trained"] == 9


def test_min_gain_demands_more(tmp_path):
    _, evs, _ = run(tmp_path, search={"min_gain": 0.02})  # an expand adds 0.01
    assert of(evs, "accepted", rule="fair") == []


def test_noise_seeds_measure_the_spread_and_gains_stand_beside_it(tmp_path):
    summary, evs, ev = run(tmp_path, search={"noise_seeds": 3})
    noise = of(evs, "noise")[0]
    assert noise["seeds"] == 3 and len(noise["metrics"]) == 3 and noise["std"] > 0
    assert {"n1", "n2", "n3"} <= set(ev.calls)
    assert all(of(evs, "proposed", id=n)[0]["parent"] == "start" for n in ("n1", "n2", "n3"))
    assert all(e["noise_std"] == noise["std"] for e in of(evs, "accepted", rule="fair"))
    assert summary["noise_std"] == noise["std"]


def test_n_stuck_counts_tries(tmp_path):
    # lam 2, n_stuck 3: stuck after the second rejected generation (4 tries), not after 3 generations
    _, evs, _ = run(tmp_path, evaluator=FakeEvaluator(flat), search={"n_stuck": 3, "max_generations": 10})
    stop = of(evs, "stopped", phase="serial")[0]
    assert stop["generation"] == 2 and stop["reason"] == "stuck for 4 tries"


def test_reignite_keeps_the_bar_at_acc_best_paper(tmp_path):
    """Algorithm 1: after a reignite the children must beat acc_best, not the reignited net's (lower) metric."""
    # swaps only: every child is exactly as good as its parent (no noise, no gain from training), the reignite costs 0.05
    ev = FakeEvaluator(per_epoch=0.0, noise=0.0, reignite_cost=0.05)
    _, evs, _ = run(tmp_path, evaluator=ev, start={"code": "BB(11,11,1,1)"},
                    search={"acceptance": "paper", "n_stuck": 2, "n_reignite": 1, "max_generations": 6, "morphisms": ["swap"], "max_blocks": 6})
    r = of(evs, "reignited")[0]
    before = [e for e in of(evs, "best") if e["generation"] <= r["generation"]][-1]
    assert r["metric"] < before["metric"]  # the reignite lowered the detection metric
    later = [e for e in of(evs, "rejected", phase="serial") if e["generation"] > r["generation"]]
    assert later and all(e["baseline"] == before["id"] for e in later)  # the bar: acc_best's holder, not r1
    assert all(e["id"] != r["id"] for e in of(evs, "best"))  # r1 never became the best


def test_reignite_line_must_beat_acc_best_fair(tmp_path):
    ev = FakeEvaluator(flat, per_epoch=0.001, reignite_cost=0.05)
    summary, evs, _ = run(tmp_path, evaluator=ev, search={"n_stuck": 2, "n_reignite": 1, "max_generations": 5})
    r = of(evs, "reignited")[0]
    assert r["metric"] is not None
    bests = of(evs, "best")
    assert r["id"] not in [e["id"] for e in bests]
    assert all(e["generation"] <= r["generation"] for e in bests)  # the reignited line never beat acc_best
    assert summary["best_id"] == bests[-1]["id"]
    assert of(evs, "proposed", generation=r["generation"] + 1, role="continued")[0]["parent"] == r["id"]  # yet the search went on from it


def test_final_reignite_ends_the_serial_level(tmp_path):
    _, evs, _ = run(tmp_path, search={"final_reignite": True, "max_generations": 1}, parallel={"enabled": True, "max_candidates": 1})
    r = of(evs, "reignited")[0]
    assert r["final"] is True
    assert of(evs, "proposed", id="pbase")[0]["parent"] == r["id"]


def test_parallel_baseline_is_the_serial_net_trained_on(tmp_path):
    summary, evs, _ = run(tmp_path, search={"max_generations": 1}, parallel={"enabled": True, "max_candidates": 3, "n_stuck_p": 3})
    serial_best = [e for e in of(evs, "best") if e["phase"] == "serial"][-1]["id"]
    base = of(evs, "proposed", id="pbase")[0]
    assert base["role"] == "baseline" and base["parent"] == serial_best
    decisions = of(evs, "accepted", phase="parallel") + of(evs, "rejected", phase="parallel")
    assert decisions and decisions[0]["baseline"] == "pbase"
    for e in of(evs, "evaluated", phase="parallel"):
        assert e["epochs_trained"] == of(evs, "evaluated", id="pbase")[0]["epochs_trained"]


def test_n_stuck_p_counts_tries(tmp_path):
    _, evs, _ = run(tmp_path, evaluator=FakeEvaluator(flat), search={"max_generations": 1},
                    parallel={"enabled": True, "max_candidates": 10, "n_stuck_p": 3})
    assert len(of(evs, "proposed", role="parallel")) == 3
    assert of(evs, "stopped", phase="parallel")[0]["reason"] == "stuck for 3 tries"


def test_same_seed_same_journal(tmp_path):
    kw = dict(search={"noise_seeds": 2}, parallel={"enabled": True, "max_candidates": 2})
    _, a, _ = run(tmp_path, "a", **kw)
    _, b, _ = run(tmp_path, "b", **kw)
    assert a == b
    _, c, _ = run(tmp_path, "c", seed=1, **kw)
    assert a != c


def test_failures_are_journaled_and_the_search_goes_on(tmp_path):
    ev = FakeEvaluator(fail={"g001c0": "raise", "g001c1": "nan"})
    summary, evs, _ = run(tmp_path, evaluator=ev)
    failed = {e["id"]: e["reason"] for e in of(evs, "failed")}
    assert "injected fault" in failed["g001c0"] and "non-finite" in failed["g001c1"]
    assert summary["failed"] == 2 and of(evs, "done")


class Killed(BaseException):
    """A kill: not an Exception, so nothing in the search catches it."""


KW = dict(search={"noise_seeds": 2, "n_stuck": 2, "n_reignite": 1}, parallel={"enabled": True, "max_candidates": 2})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("loop")
    summary, evs, _ = run(out, **KW)
    return summary, evs


def test_reference_run_has_every_event_type(reference):
    kinds = {e["event"] for e in reference[1]}
    assert {"start", "proposed", "evaluated", "accepted", "rejected", "best", "noise", "generation", "reignited", "done"} <= kinds


@pytest.mark.parametrize("kind", ["start", "proposed", "evaluated", "accepted", "rejected", "best", "noise", "generation", "reignited", "stopped", "done"])
def test_kill_at_every_event_type_then_resume(kind, reference, tmp_path):
    ref_summary, ref_events = reference
    n = sum(1 for e in ref_events if e["event"] == kind)
    assert n, kind
    for k in sorted({1, (n + 1) // 2, n}):  # the first, a middle and the last event of that type
        seen = []

        def kill(ev, k=k):
            if ev["event"] == kind:
                seen.append(ev)
                if len(seen) == k:
                    raise Killed

        ev = FakeEvaluator()
        with pytest.raises(Killed):
            run(tmp_path, f"k{k}", ev, listeners=(kill,), **KW)
        summary, evs, ev2 = run(tmp_path, f"k{k}", FakeEvaluator(), resume=True, **KW)
        assert {x: summary[x] for x in ("best_id", "best_code", "best_metric")} == {x: ref_summary[x] for x in ("best_id", "best_code", "best_metric")}
        results = [e["id"] for e in evs if e["event"] in ("evaluated", "failed")]
        assert sorted(results) == sorted(e["id"] for e in ref_events if e["event"] in ("evaluated", "failed"))  # none lost, none twice
        assert not set(ev.calls) & set(ev2.calls) - set(ev.calls[-1:])  # only the in-flight one may run again
        decisions = [(e["event"], e.get("id"), e.get("generation"), e.get("phase")) for e in evs if e["event"] in ("accepted", "rejected", "best", "stopped")]
        ref_decisions = [(e["event"], e.get("id"), e.get("generation"), e.get("phase")) for e in ref_events if e["event"] in ("accepted", "rejected", "best", "stopped")]
        assert decisions == ref_decisions


def test_counter_is_what_the_fake_trains(tmp_path):
    """The fake's training counter lives in the weights the search hands on (so the tests above measure lineage)."""
    from spnas.ir import load

    run(tmp_path)
    assert int(load(tmp_path / "run" / "candidates" / "g001p" / "trained").weights[COUNTER]) == 6


# ------------------------------------------------------------------------------ nothing journaled is lost
def test_damaged_journal_line_is_named_and_nothing_is_dropped(tmp_path):
    from spnas.errors import ConfigError

    run(tmp_path)
    j = tmp_path / "run" / "journal.jsonl"
    lines = j.read_text().splitlines(keepends=True)
    lines[5] = lines[5][:20] + "\n"  # damage in the middle
    j.write_text("".join(lines))
    before = j.read_bytes()
    with pytest.raises(ConfigError, match=r"journal.jsonl: line 6 is damaged .*line\(s\) after it are kept"):
        run(tmp_path, resume=True)
    assert j.read_bytes() == before  # nothing truncated


def test_torn_last_line_is_cut_and_resume_finishes(tmp_path):
    ref, ref_events, _ = run(tmp_path, "ref")
    run(tmp_path)
    j = tmp_path / "run" / "journal.jsonl"
    text = j.read_text()
    cut = text.rstrip("\n").rfind("\n") + 1
    j.write_text(text[: cut + 17])  # the last event half written, as a kill leaves it
    summary, evs, _ = run(tmp_path, resume=True)
    assert summary["best_id"] == ref["best_id"] and [e["event"] for e in evs] == [e["event"] for e in ref_events]


def test_one_search_per_run_directory(tmp_path):
    from spnas.errors import ConfigError

    first = Search(config(), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False)
    with pytest.raises(ConfigError, match=r"another search holds this run directory \(pid \d+ on .* since "):
        Search(config(), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False, resume=True)
    first.run()  # the lock is released when the search ends
    Search(config(), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False, resume=True).run()


def test_a_machine_failure_is_retried_at_once_and_never_decides(tmp_path):
    ref, ref_events, _ = run(tmp_path, "ref")
    ev = FakeEvaluator(fail={"g001c0": "disk-once", "g001c1": "nan"})  # a full disk once; a divergence (its own failure)
    summary, evs, _ = run(tmp_path, evaluator=ev)
    failed = [e for e in of(evs, "failed")]
    disk = [e for e in failed if e["id"] == "g001c0"]
    assert len(disk) == 1 and disk[0]["kind"] == "machine" and disk[0]["cause"] == "out of disk"
    assert of(evs, "retried", id="g001c0") and of(evs, "evaluated", id="g001c0")
    assert [e["kind"] for e in failed if e["id"] == "g001c1"] == ["candidate"]
    assert ev.calls.count("g001c0") == 2 and ev.calls.count("g001c1") == 1


def test_a_lasting_machine_failure_stops_the_search_and_resume_goes_on(tmp_path):
    from spnas.errors import SpnasError

    ref, ref_events, _ = run(tmp_path, "ref")
    ev = FakeEvaluator(fail={"g002c1": "disk"})
    with pytest.raises(SpnasError, match=r"the machine failed candidate g002c1 3 times \(out of disk: .*\); nothing journaled is lost"):
        run(tmp_path, evaluator=ev, workers={"backend": "inline", "retries": 2})
    assert ev.calls.count("g002c1") == 3
    summary, evs, ev2 = run(tmp_path, evaluator=FakeEvaluator(), resume=True, workers={"backend": "inline", "retries": 2})
    assert "g002c1" in ev2.calls and "g001c0" not in ev2.calls  # the disk is freed: only what had no result runs
    decisions = [(e["event"], e.get("id"), e.get("generation")) for e in evs if e["event"] in ("accepted", "rejected", "best", "stopped")]
    assert decisions == [(e["event"], e.get("id"), e.get("generation")) for e in ref_events if e["event"] in ("accepted", "rejected", "best", "stopped")]
    assert summary["best_id"] == ref["best_id"]


def test_resume_cleans_partial_writes(tmp_path):
    run(tmp_path)
    out = tmp_path / "run"
    (out / "best.partial" / "arch").mkdir(parents=True)
    tmp = out / "candidates" / "g001c0" / "trained" / "weights.safetensors.tmp"
    tmp.write_bytes(b"x" * 100)
    os_replace = out / "best"
    os_replace.rename(out / "best.old")  # killed between moving the old best aside and moving the new one in
    run(tmp_path, resume=True)
    assert not (out / "best.partial").exists() and not tmp.exists() and not (out / "best.old").exists()
    assert (out / "best" / "summary.json").is_file()


def test_resume_may_change_where_it_runs_not_what_it_decides(tmp_path):
    from spnas.errors import ConfigError

    ref, ref_events, _ = run(tmp_path, "ref")
    with pytest.raises(SpnasError):
        run(tmp_path, evaluator=FakeEvaluator(fail={"g002c1": "disk"}), workers={"backend": "inline", "retries": 0})
    with pytest.raises(ConfigError, match="the run was started with another config"):
        run(tmp_path, resume=True, search={"lam": 3})
    summary, evs, _ = run(tmp_path, resume=True, workers={"backend": "inline", "retries": 5, "timeout_s": 60})
    assert summary["best_id"] == ref["best_id"]
    assert "retries: 5" in (tmp_path / "run" / "config.yaml").read_text()


def test_a_miss_rate_is_minimised_everywhere(tmp_path):
    """metric: LAMR (lower is better). The fake's miss rate falls with depth and with training: the
    fair rule must accept the deeper children (lower than the continued parent), never a higher one."""
    from tests.search.fake import blocks_and_subnets

    from spnas.errors import ConfigError

    with pytest.raises(ConfigError, match="search.metric: LAMR is a miss rate of person data"):  # not on shapes, for real
        config(search={**BASE["search"], "metric": "LAMR"})
    cfg = config()  # the formula evaluator needs no person data: the metric is set past the check
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"metric": "LAMR"})})
    ev = FakeEvaluator(quality=lambda a: 0.9 - blocks_and_subnets(a), per_epoch=-0.001)
    Search(cfg, tmp_path / "run", evaluate=ev, quiet=True, tensorboard=False).run()
    summary, evs = json.loads((tmp_path / "run" / "best" / "summary.json").read_text()), events(tmp_path / "run")
    accepted = [e for e in of(evs, "accepted") if e["rule"] != "start"]
    assert accepted, "no child was accepted"
    for e in accepted:
        assert e["metric"] < e["baseline_metric"] and e["gain"] == pytest.approx(e["baseline_metric"] - e["metric"], abs=1e-6) and e["gain"] > 0
    for e in of(evs, "rejected"):
        assert e["metric"] >= e["baseline_metric"]
    assert summary["lower_is_better"] and summary["improved"] and summary["best_metric"] < summary["start_metric"]
    best = [e["metric"] for e in of(evs, "best")]
    assert best == sorted(best, reverse=True)  # each new best is lower
    top = sorted((tmp_path / "run" / "best" / "top").iterdir())
    ranks = [json.loads((d / "metric.json").read_text())["metric"] for d in top]
    assert ranks == sorted(ranks) and ranks[0] == pytest.approx(summary["best_metric"])  # the hall of fame: lowest first


def test_run_log_has_a_line_per_result_and_decision(tmp_path, capsys):
    """run.log is written as the search goes; with stderr no terminal (here: pytest's capture) it is echoed there too."""
    s = Search(config(), tmp_path / "run", evaluate=FakeEvaluator(), quiet=None, tensorboard=False)
    s.run()
    log = [line.split(" ", 2)[2] for line in (tmp_path / "run" / "run.log").read_text().splitlines()]  # without the time
    evs = events(tmp_path / "run")
    codes = {e["id"]: e["encoding"] for e in of(evs, "proposed")}
    results = [line for line in log if line.startswith("evaluated ")]
    assert len(results) == len(of(evs, "evaluated"))
    for e in of(evs, "evaluated"):
        assert f"evaluated {e['id']} {codes[e['id']]} AP={e['metric']:.4f} " in "\n".join(results) + " "
    for e in [e for e in of(evs, "accepted") if e["rule"] != "start"] + of(evs, "rejected"):
        assert sum(line.startswith(f"{e['event']} {e['id']} AP={e['metric']:.4f} vs {e['baseline']} ") for line in log) == 1
    assert log[0].startswith("search started") and log[-1].startswith("done: best ")
    err = capsys.readouterr().err
    assert "evaluated start BB(1,1,1,1) AP=" in err
    Search(config(), tmp_path / "quiet", evaluate=FakeEvaluator(), quiet=True, tensorboard=False).run()
    assert (tmp_path / "quiet" / "run.log").is_file() and "evaluated" not in capsys.readouterr().err


def test_start_head_reaches_the_start_only_and_is_checked(tmp_path):
    """start.head: the user's detector weights go to the start's request; its children inherit the start's trained
    head as always; a file without detector weights is refused in one line before anything is written."""
    import torch
    from safetensors.torch import save_file

    head = tmp_path / "head.safetensors"
    save_file({"rpn.head.conv.0.0.weight": torch.zeros(1)}, str(head))
    seen = {}
    fake = FakeEvaluator(flat)

    def evaluate(req):
        seen[req.id] = req.parent_head
        return fake(req)

    Search(config(start={"code": "BB(1,1,1,1)", "head": str(head)}, search={"max_generations": 1}), tmp_path / "run",
           evaluate=evaluate, quiet=True, tensorboard=False).run()
    assert seen["start"] == str(head)
    children = [k for k in seen if k.startswith("g001")]
    assert children and all(seen[k] == str(tmp_path / "run" / "candidates" / "start" / "head.safetensors") for k in children)
    bad = tmp_path / "bad.safetensors"
    save_file({"backbone.body.stem.conv.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(SpnasError, match="start.head: .*bad.safetensors: holds no detector weights"):
        Search(config(start={"code": "BB(1,1,1,1)", "head": str(bad)}), tmp_path / "bad", evaluate=evaluate, quiet=True, tensorboard=False)
    assert not (tmp_path / "bad").exists()
