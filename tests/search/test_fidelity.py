"""Issue 25, items 1 and 2, with the formula evaluator: a converged start (``start.train_epochs: auto``)
and multi-fidelity generations (``search.fidelity``, successive halving inside a generation)."""

from __future__ import annotations

import pytest

from spnas.errors import ConfigError
from tests.search.fake import COUNTER, FakeEvaluator
from tests.search.test_loop import Killed, config, of, run

# 4 children a generation, halved at each rung: 4 -> 2 -> 1, the continued parent always in the race
RACE = {"lam": 4, "max_generations": 3, "n_stuck": 100, "fidelity": {"rungs": [1, 1, 2], "eta": 2}}


def line_epochs(out, cid):
    from spnas.ir import load

    return int(load(out / "candidates" / cid / "trained").weights[COUNTER])


def test_each_rung_is_fair_and_the_parent_runs_every_rung(tmp_path):
    summary, evs, ev = run(tmp_path, "race", search=RACE)
    rungs = of(evs, "rung")
    assert [e["rung"] for e in rungs] == [1, 2, 3] * 3
    prop = {e["id"]: e for e in of(evs, "proposed")}
    for e in rungs:
        ids = [c["id"] for c in e["contestants"]]
        parent = f"g{e['generation']:03d}p" + (f".{e['rung']}" if e["rung"] > 1 else "")
        assert parent in ids  # the continued parent is in every rung's race
        # fair: every contestant of a rung trained the rung's epochs with one seed, and its line as long
        assert {prop[i]["epochs"] for i in ids} == {e["epochs"]} == {ev.requests[i].train.epochs for i in ids}
        assert len({ev.requests[i].seed for i in ids}) == 1
        assert len({line_epochs(tmp_path / "race", i) for i in ids}) == 1
        n_children = len(ids) - 1
        assert n_children == {1: 4, 2: 2, 3: 1}[e["rung"]]
        if e["rung"] < 3:
            assert e["promoted"][-1] == parent and len(e["promoted"]) == n_children // 2 + 1
            # the promoted are the rung's best children
            ranked = sorted((c for c in e["contestants"] if c["id"] != parent), key=lambda c: -c["metric"])
            assert e["promoted"][:-1] == [c["id"] for c in ranked[: n_children // 2]]
        else:
            assert e["promoted"] == []
    # the rungs have seeds of their own
    assert len({ev.requests[f"g001p{s}"].seed for s in ("", ".2", ".3")}) == 3
    # decisions are made at the last rung, against the continued parent trained as long
    for e in of(evs, "accepted", rule="fair") + of(evs, "rejected", phase="serial"):
        assert e["id"].endswith(".3") and e["baseline"] == f"g{e['generation']:03d}p.3"
    assert summary["best_id"].endswith(".3") or summary["best_id"] == "start"


def test_the_race_finds_what_the_fixed_scheme_finds_for_less(tmp_path):
    """Deeper is better (the default quality): both schemes accept expand children; the race trains fewer epochs."""
    fixed = {k: v for k, v in RACE.items() if k != "fidelity"}
    s_fixed, e_fixed, _ = run(tmp_path, "fixed", train={"epochs": 4}, search=fixed)
    s_race, e_race, _ = run(tmp_path, "race", train={"epochs": 4}, search=RACE)

    def spent(evs):
        prop = {e["id"]: e for e in of(evs, "proposed")}
        return sum(prop[e["id"]].get("epochs") or 4 for e in of(evs, "evaluated"))

    assert s_race["best_code"] == s_fixed["best_code"]
    assert spent(e_race) <= 0.65 * spent(e_fixed)  # per generation: 5x1 + 3x1 + 2x2 = 12 epochs against 5x4 = 20


def test_a_kill_at_every_rung_resumes_to_the_same_decisions(tmp_path):
    race = {**RACE, "max_generations": 2}
    _, ref, _ = run(tmp_path, "ref", search=race)
    decisions = lambda evs: [(e["event"], e.get("id"), e.get("generation")) for e in evs if e["event"] in ("accepted", "rejected", "best", "stopped", "rung")]
    results = lambda evs: sorted(e["id"] for e in evs if e["event"] in ("evaluated", "failed"))
    # a kill right after each rung's decision, and mid-rung: after the first result of rungs 2 and 3 of generation 2
    mid = [next(e["id"] for e in of(ref, "evaluated") if e["id"].startswith("g002") and e["id"].endswith(f".{k}")) for k in (2, 3)]
    points = [("rung", k) for k in range(1, 7)] + [("evaluated", cid) for cid in mid]
    for n, (kind, key) in enumerate(points):
        seen = []

        def kill(e, kind=kind, key=key):
            if e["event"] == kind:
                seen.append(e)
                if (kind == "rung" and len(seen) == key) or (kind == "evaluated" and e["id"] == key):
                    raise Killed

        first = FakeEvaluator()
        with pytest.raises(Killed):
            run(tmp_path, f"k{n}", first, listeners=(kill,), search=race)
        _, evs, again = run(tmp_path, f"k{n}", FakeEvaluator(), resume=True, search=race)
        assert decisions(evs) == decisions(ref) and results(evs) == results(ref)
        assert not set(first.calls) & set(again.calls)  # nothing trained twice (the kills fall between results)


def test_a_failed_parent_stops_the_race_and_the_bar_falls_back(tmp_path):
    """The continued parent fails at rung 2: no fair comparison is left, so the race ends there and the best
    child of rung 2 faces acc_best, as a generation of the fixed scheme does when its continued parent fails."""
    _, evs, _ = run(tmp_path, "r", FakeEvaluator(fail={"g001p.2": "nan"}), search={**RACE, "max_generations": 1})
    assert [e["rung"] for e in of(evs, "rung")] == [1, 2] and of(evs, "rung")[1]["promoted"] == []
    decision = (of(evs, "accepted", rule="fair") + of(evs, "rejected", phase="serial"))[0]
    assert decision["id"].endswith(".2") and decision["baseline"] == "start"


def test_fidelity_needs_the_fair_rule():
    with pytest.raises(ConfigError, match=r"fidelity: successive halving races the children against the continued parent"):
        config(search={"acceptance": "paper", "fidelity": {"rungs": [1, 2]}})
    with pytest.raises(ConfigError, match=r"rungs"):
        config(search={"fidelity": {"rungs": [3]}})


# ------------------------------------------------------------------------------ the converged start
def flattening(epochs: int) -> float:
    """A learning curve that stops rising after 9 epochs."""
    return 0.01 * min(epochs, 9)


def test_auto_trains_the_start_until_it_stops_improving(tmp_path):
    ev = FakeEvaluator(curve=flattening, noise=0.0)
    summary, evs, _ = run(tmp_path, "conv", ev, start={"train_epochs": "auto", "patience": 2}, search={"max_generations": 1})
    conv = of(evs, "converged")[0]
    # cycles of 3 epochs: 3, 6, 9 rise; 12 and 15 do not: two cycles without a gain, and it stops
    assert [c["epochs"] for c in conv["curve"]] == [3, 6, 9, 12, 15]
    assert [c["id"] for c in conv["curve"]] == ["start", "start2", "start3", "start4", "start5"]
    assert conv["id"] == "start3" and conv["epochs"] == 9 and conv["trained_epochs"] == 15 and "no gain" in conv["reason"]
    assert summary["start_epochs"] == 9 and summary["start_curve"] == conv["curve"]
    # the search grows from the converged start: its children and continued parent descend from start3
    assert {e["parent"] for e in of(evs, "proposed", generation=1)} == {"start3"}
    assert of(evs, "accepted", rule="start")[0]["id"] == "start3"
    assert line_epochs(tmp_path / "conv", "start3") == 9


def test_growing_cycles_double_and_stop_at_the_bound(tmp_path):
    """``cycle_growth: 2``: cycles of 3, 6, 12 epochs (SGDR's doubling), each a proposal with its own epochs;
    the flattening curve gains nothing after 9, so with patience 1 the third cycle ends it; a bound of 20 epochs
    leaves no room for the 12-epoch cycle after 9."""
    ev = FakeEvaluator(curve=flattening, noise=0.0)
    start = {"train_epochs": "auto", "patience": 1, "cycle_growth": 2, "max_epochs": 100}
    summary, evs, _ = run(tmp_path, "grow", ev, start=start, search={"max_generations": 0})
    conv = of(evs, "converged")[0]
    assert [(c["id"], c["epochs"]) for c in conv["curve"]] == [("start", 3), ("start2", 9), ("start3", 21)]
    assert conv["id"] == "start2" and conv["epochs"] == 9 and conv["trained_epochs"] == 21 and "no gain for 1" in conv["reason"]
    assert [ev.requests[c].train.epochs for c in ("start", "start2", "start3")] == [3, 6, 12]
    assert line_epochs(tmp_path / "grow", "start3") == 21 and summary["start_epochs"] == 9
    _, evs, _ = run(tmp_path, "bound", FakeEvaluator(), start={**start, "max_epochs": 20}, search={"max_generations": 0})
    conv = of(evs, "converged")[0]
    assert [c["epochs"] for c in conv["curve"]] == [3, 9] and conv["reason"] == "max_epochs reached"


def test_auto_stops_at_max_epochs_and_resumes_mid_curve(tmp_path):
    kw = dict(start={"train_epochs": "auto", "max_epochs": 12}, search={"max_generations": 1})
    _, ref, _ = run(tmp_path, "ref", FakeEvaluator(), **kw)  # linear: every cycle gains
    conv = of(ref, "converged")[0]
    assert conv["id"] == "start4" and conv["trained_epochs"] == 12 and conv["reason"] == "max_epochs reached"

    def kill(e):
        if e["event"] == "evaluated" and e["id"] == "start3":
            raise Killed

    first = FakeEvaluator()
    with pytest.raises(Killed):
        run(tmp_path, "k", first, listeners=(kill,), **kw)
    _, evs, again = run(tmp_path, "k", FakeEvaluator(), resume=True, **kw)
    assert again.calls[0] == "start4" and "start3" not in again.calls
    assert of(evs, "converged") == of(ref, "converged") and of(evs, "done")[0]["best_id"] == of(ref, "done")[0]["best_id"]


def test_patience_without_auto_is_refused():
    with pytest.raises(ConfigError, match=r"start.patience: only train_epochs: auto trains until convergence"):
        config(start={"patience": 3})
    with pytest.raises(ConfigError, match=r"start.cycle_growth: only train_epochs: auto"):
        config(start={"train_epochs": 4, "cycle_growth": 2})
    with pytest.raises(ConfigError, match=r"start.train_epochs: expected a number of epochs or 'auto'"):
        config(start={"train_epochs": "long"})


def test_a_dumped_config_loads_again():
    """config.yaml holds every field, defaults too: what a run wrote must load (found when patience was refused
    for being present rather than for being changed)."""
    from spnas.search import config_from_dict

    for cfg in (config(), config(start={"train_epochs": "auto", "patience": 3}), config(search={"fidelity": {"rungs": [1, 2]}})):
        assert config_from_dict(cfg.to_dict()) == cfg
