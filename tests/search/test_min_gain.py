"""Issue 25, item 4: the measured seed spread decides, not only reports (``search.min_gain: auto``)."""

from __future__ import annotations

import pytest

from spnas.errors import ConfigError
from tests.search.fake import FakeEvaluator
from tests.search.test_loop import config, run


def deeper(arch) -> float:
    """Architectures that differ by far less than the seed noise below: a deeper net is 1e-4 better."""
    return 1e-4 * len(arch.main_chain())


def decided(evs, kind):
    return [e for e in evs if e["event"] == kind and e.get("rule") != "start"]


def test_min_gain_auto_lets_the_measured_noise_decide(tmp_path):
    search = {"noise_seeds": 4, "max_generations": 3, "n_stuck": 100}
    _, fixed, _ = run(tmp_path, "fixed", evaluator=FakeEvaluator(deeper, per_epoch=0.0, noise=0.01), search={**search, "min_gain": 0.0})
    assert decided(fixed, "accepted"), "with min_gain 0 a 1e-4 gain is accepted: the test would show nothing"
    _, auto, _ = run(tmp_path, "auto", evaluator=FakeEvaluator(deeper, per_epoch=0.0, noise=0.01), search=search)  # the default
    noise = next(e for e in auto if e["event"] == "noise")
    assert noise["min_gain"] == pytest.approx(2.0 * noise["std"]) and noise["min_gain"] > 1e-3
    assert not decided(auto, "accepted")
    assert all(e["metric"] - e["baseline_metric"] <= noise["min_gain"] for e in decided(auto, "rejected"))
    # resumed, the bar is the same (the noise runs come from the journal)
    _, again, ev = run(tmp_path, "auto", evaluator=FakeEvaluator(deeper, per_epoch=0.0, noise=0.01), resume=True,
                       search={**search, "min_gain": "auto"})  # the default, spelled out: the same config
    assert ev.calls == [] and again == auto


def test_min_gain_auto_refuses_a_single_noise_run():
    """One noise run has no spread; none means no bar (nothing was measured). A saved config (min_gain: auto
    spelled out) loads again."""
    with pytest.raises(ConfigError, match=r"min_gain: auto sets the bar from the spread of the noise runs, and one run has none"):
        config(search={"min_gain": "auto", "noise_seeds": 1})
    assert config(search={"min_gain": 0.01}).search.min_gain == 0.01
    assert config(search={"noise_seeds": 0}).search.min_gain == config(search={"min_gain": "auto", "noise_seeds": 0}).search.min_gain == "auto"


def test_without_noise_runs_the_default_decides_as_min_gain_zero(tmp_path):
    search = {"max_generations": 3, "n_stuck": 100}
    _, default, _ = run(tmp_path, "default", evaluator=FakeEvaluator(deeper, per_epoch=0.0, noise=0.01), search=search)
    _, zero, _ = run(tmp_path, "zero", evaluator=FakeEvaluator(deeper, per_epoch=0.0, noise=0.01), search={**search, "min_gain": 0.0})
    strip = lambda evs: [{k: v for k, v in e.items() if k != "time"} for e in evs if e["event"] not in ("start", "done")]  # noqa: E731
    assert strip(default) == strip(zero) and decided(default, "accepted")


def test_the_summary_says_which_net_to_take(tmp_path):
    """Issue 27, item 5 (part): best/ and best/top/ never disagree without a word."""
    import json

    summary, _, _ = run(tmp_path, "run", search={"noise_seeds": 2, "max_generations": 3}, parallel={"enabled": True, "max_candidates": 2})
    on_disk = json.loads((tmp_path / "run" / "best" / "summary.json").read_text())
    top_dirs = sorted(p.name for p in (tmp_path / "run" / "best" / "top").iterdir())
    assert [f"{t['rank']}_{t['id']}" for t in on_disk["top"]] == top_dirs
    assert summary["best_id"] in summary["choice"]
    if summary["top"][0]["id"] != summary["best_id"]:
        assert summary["choice"].startswith("take best/") and summary["top"][0]["id"] in summary["choice"]
    else:
        assert "also the highest metric" in summary["choice"]
