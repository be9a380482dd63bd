"""The lineage and trajectory read back from a journal (the golden hill-climbing journal: a fair
search with a kept parent, two reignites and a parallel level), and ``spnas show RUN --lineage``."""

import json
import shutil
from pathlib import Path

import pytest

from spnas.errors import ConfigError
from spnas.search.journal import read_events
from spnas.search.lineage import lineage, lineage_figure, lineage_text, trajectory_figure

GOLDEN = Path(__file__).with_name("golden") / "hill_climbing.jsonl"


@pytest.fixture
def events():
    return read_events(GOLDEN)


def test_the_lineage_is_the_nets_the_search_carried_on(events):
    steps = lineage(events)
    by_id = {s.id: s for s in steps}
    accepted = [e for e in events if e["event"] == "accepted" and e.get("rule") != "start"]
    kept = [e["kept"] for e in events if e["event"] == "rejected"]
    reignited = [e["id"] for e in events if e["event"] == "reignited"]
    assert set(by_id) == {"start"} | {e["id"] for e in accepted} | set(kept) | set(reignited)
    for e in accepted:  # each accepted net says what was decided: its gain over the net it beat
        s = by_id[e["id"]]
        assert (s.how, s.baseline, s.gain, s.metric) == ("accepted", e["baseline"], e["gain"], pytest.approx(e["metric"], abs=1e-6))
    assert by_id["g003p"].how == "continued" and by_id["g003p"].lost[0] == "g003c0"
    # the tree: a serial chain, then the parallel level's nets as siblings under the serial result
    assert [s.parent for s in steps[:4]] == [None, "start", "g001c0", "g002c0"]
    assert by_id["r1"].parent == "g003p" and by_id["g004c0"].parent == "r1"
    assert by_id["p000"].parent == by_id["p001"].parent == "r2" and by_id["p000"].depth == by_id["p001"].depth == 1
    assert by_id["r2"].final and not by_id["r1"].final
    done = next(e for e in events if e["event"] == "done")
    assert [s.id for s in steps if s.result] == [done["id"]] and not any(s.top for s in steps)


def test_the_text_shows_codes_morphisms_metrics_gains(events):
    text = lineage_text(events)
    lines = text.splitlines()
    row = {ln.split()[0].strip("├└─ "): ln for ln in lines[2:] if ln.split()}
    row.update({ln.split()[1]: ln for ln in lines[2:] if ln.startswith(("├", "└"))})
    assert "BB(1,1,1,11)" in row["g001c0"] and "expand@b3" in row["g001c0"] and "+0.0100 over g001p (0.0460)" in row["g001c0"]
    assert "kept: its best child g003c0" in row["g003p"]
    assert "add_subnet@1,1,2,2,3,3" in row["p000"]  # a run of one rule, its sites joined
    assert row["p001"].startswith("└─ p001") and row["p000"].startswith("├─ p000")
    assert row["p001"].endswith("<- best/ (the run's result)")


def test_best_top_differs_from_the_result_is_said(events):
    """A net measured higher once (another training length) but not carried on: both marked, and said."""
    events = [dict(e) for e in events]
    lost = next(e for e in events if e["event"] == "evaluated" and e["id"] == "g003c1")
    lost["metric"] = 0.5
    assert "best/top/1 is g003c1, a net the search did not carry on" in lineage_text(events)
    lost["metric"] = 0.0
    first = next(e for e in events if e["event"] == "evaluated" and e["id"] == "g002c0")
    first["metric"] = 0.9  # the first trained instance of its architecture: the hall of fame's entry for it
    steps = {s.id: s for s in lineage(events)}
    assert steps["g002c0"].top and not steps["g002c0"].result and steps["p001"].result
    assert "<- best/top/1" in lineage_text(events)
    r1 = next(e for e in events if e["event"] == "evaluated" and e["id"] == "r1")
    first["metric"], r1["metric"] = 0.05, 0.9  # r1 is g002c0's architecture again: it does not replace the entry
    assert not any(s.top for s in lineage(events))


def test_the_marks_agree_with_the_summary(tmp_path):
    """best/ and best/top/1 as the lineage marks them are those the search wrote (summary.json)."""
    from tests.search.fake import FakeEvaluator
    from tests.search.test_loop import config

    from spnas.search import Search

    d = {"search": {"noise_seeds": 2, "n_stuck": 2, "max_generations": 3}, "parallel": {"enabled": True, "max_candidates": 2}}
    summary = Search(config(**d), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False).run()
    steps = lineage(read_events(tmp_path / "run" / "journal.jsonl"), train_epochs=3, start_epochs=3)
    assert [s.id for s in steps if s.result] == [summary["best_id"]]
    top = [s.id for s in steps if s.top]
    assert top == ([] if summary["top"][0]["id"] == summary["best_id"] else [summary["top"][0]["id"]])
    assert steps[0].epochs == 3 and all(s.epochs is not None and s.epochs > 3 for s in steps[1:])


def test_a_miss_rate_ranks_lower_first(events):
    events = [dict(e) for e in events]
    for e in events:
        if e["event"] == "evaluated":
            e["metric"] = {"r1": 0.1, "p001": 0.5, "g003c1": 0.95}.get(e["id"], 0.9)
    assert [s.id for s in lineage(events, "LAMR") if s.top] == ["r1"]
    assert not any(s.top for s in lineage(events, "AP"))  # AP: g003c1 is highest, a net not carried on
    assert "best/top/1 is g003c1" in lineage_text(events, "AP")


def test_the_figures_draw_the_decisions(events, tmp_path):
    fig = trajectory_figure(events)
    ax = fig.axes[0]
    bars = [ln for ln in ax.lines if ln.get_color() == "tab:green"]
    accepted = [e for e in events if e["event"] == "accepted" and e.get("rule") != "start"]
    assert sorted(tuple(ln.get_ydata()) for ln in bars) == sorted((e["baseline_metric"], e["metric"]) for e in accepted)
    result = next(ln for ln in ax.lines if ln.get_label().startswith("the search's result"))
    assert result.get_ydata()[-1] == pytest.approx(next(e for e in events if e["event"] == "done")["best_metric"])
    top = next(ln for ln in ax.lines if ln.get_label().startswith("highest metric"))
    assert list(top.get_ydata()) == sorted(top.get_ydata())  # a running maximum
    fig = lineage_figure(events)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "start  BB(1,1,1,1)" and labels[-1] == "  p001  BB(111,111,1,11)(2,2,2,2)"


def test_spnas_show_lineage(tmp_path, capsys):
    from spnas.cli import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(GOLDEN, run / "journal.jsonl")
    assert main(["show", str(run), "--lineage"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("lineage of the search (AP, higher is better)")
    for name in ("lineage", "trajectory"):
        assert (run / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (run / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert main(["show", str(run), "--lineage", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows][:2] == ["start", "g001c0"] and rows[1]["gain"] == 0.01
    assert main(["show", str(tmp_path), "--lineage"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"spnas: error: {tmp_path}: --lineage needs a run directory (one with journal.jsonl)"


def test_read_events_never_writes(tmp_path):
    path = tmp_path / "journal.jsonl"
    raw = GOLDEN.read_bytes()
    path.write_bytes(raw + b'{"event": "evalu')  # a run killed mid-write, or still writing
    before = path.stat().st_mtime_ns
    assert len(read_events(path)) == raw.count(b"\n")
    assert path.read_bytes().endswith(b'{"event": "evalu') and path.stat().st_mtime_ns == before
    lines = raw.split(b"\n")
    lines[3] = b"{not json"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ConfigError, match=r"journal.jsonl: line 4 is damaged"):
        read_events(path)
