"""The evidence benchmarks and the data benchmark run end to end (``--size smoke``: seconds of training, not a measurement).

Slow (about 4 minutes on 2 cores); `.ci/run` runs them. The tree data comes from the deepforest wheel
(`pip install --no-deps deepforest==2.1.0`); without it these tests skip."""

import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("deepforest") is None,
                                                   reason="the tree data: pip install --no-deps deepforest==2.1.0")]


def bench(script, *args):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("evidence")


def test_the_tree_split_does_not_leak(cache):
    from benchmarks import trees

    split = trees.prepare(cache / "trees")
    rows = {}
    for name, sec in split.items():
        root = ET.parse(sec["xml"]).getroot()
        rows[name] = int(root.findtext("size/height"))
        boxes = [[float(o.find("bndbox").findtext(k)) for k in ("ymin", "ymax")] for o in root.iter("object")]
        assert boxes and all(0 <= y0 < y1 <= rows[name] for y0, y1 in boxes)
    assert trees.TRAIN_ROWS[1] < trees.VAL_ROWS[0] and trees.VAL_ROWS[1] < trees.TEST_ROWS[0]  # gaps between the regions
    assert rows["val"] % 256 == rows["test"] % 256 == trees.TRAIN_ROWS[1] % 256 == 0  # whole tiles: none overlaps another
    assert split["other"]["xml"] != split["test"]["xml"]


@pytest.mark.parametrize("script", ["search_vs_random.py", "searched_nets.py", "ranking.py", "search_ablation.py", "anytime.py"])
def test_evidence_scripts_print_a_table_a_json_line_and_figures(cache, script):
    # anytime: one seed (its 15 final trainings a seed are the group's longest part), shipped to a table as it finishes
    more = ("--seeds", "0", "--ship", "--table", cache / "anytime.json") if script == "anytime.py" else ()
    out = bench(script, "--size", "smoke", "--cache", cache / "smoke", "--figures", cache / "figures", *more)
    assert out["benchmark"] == script[:-3] and out["rows"]
    for f in out["figures"]:
        assert Path(f).is_file() and Path(f).stat().st_size > 5000
    assert {Path(f).suffix for f in out["figures"]} == {".png", ".pdf"}
    assert (cache / "smoke" / "results" / f"{script[:-3]}.md").read_text().startswith("|")
    if script == "ranking.py":
        assert -1 <= out["ci95"][0] <= out["ci95"][1] <= 1 and -1 <= out["kendall_tau"] <= 1
    if script == "search_vs_random.py":
        arms = {r["arm"] for r in out["rows"]}
        assert arms == {"start", "no search", "random", "search"}
        by = {(r["arm"], r["seed"]): r for r in out["rows"]}
        for s in out["seeds"]:  # equal compute: random trains as many epochs as the search, the control as many more
            assert by[("random", s)]["extra_epochs"] == by[("search", s)]["extra_epochs"] == by[("no search", s)]["extra_epochs"]
    if script == "anytime.py":
        arms = ("fixed", "multi-fidelity", "random search", "random sampling", "train longer")
        assert [r["arm"] for r in out["rows"]] == list(arms) * 3 and [r["budget"] for r in out["rows"][::5]] == ["0.33", "0.67", "1.00"]
        for r in out["rows"]:  # every arm has a validation incumbent and a final test metric at every budget, per seed
            assert len(r["_val"]) == len(r["_test"]) == 1 and all(v is not None for v in r["_val"] + r["_test"]), r
        assert out["trained"]["random search"] == out["trained"]["fixed"]  # as many nets as the search trained
        for tag in ("longer_s0", "draw_s0"):  # the single nets' finals start from their curves' backbones at each budget
            saved = sorted((cache / "smoke" / "anytime_curves").glob(f"{tag}_e*/arch/weights.safetensors"))
            assert len(saved) == len({r["epochs"] for r in out["rows"]}), saved
        last = [r for r in out["rows"] if r["budget"] == "1.00"]
        best = {r["arm"]: r["_val"] for r in last}
        for arm in ("fixed", "multi-fidelity", "random search"):  # a best so far never falls: at the end it is the run's best
            assert all(v >= w for v, w in zip(best[arm], [r["_val"] for r in out["rows"] if r["arm"] == arm][0]))
        (m,) = out["mf_reach"]  # the fixed search's best, and when (if ever) the multi-fidelity search reached it
        assert m["seed"] == 0 and m["fixed_best"] == best["fixed"][0] and 0 < m["fixed_epochs"] <= m["fixed_total"]
        assert m["ratio"] is None or m["ratio"] == pytest.approx(m["mf_epochs"] / m["fixed_epochs"], abs=1e-3)
        # every arm began from the converged start (start.train_epochs: auto on the documented start): its learning
        # curve is in the table, its best cycle is the start the seed used, and the searches' configs name it
        table = json.loads((cache / "anytime.json").read_text())
        conv = table["start"]
        assert conv["curve"] and conv["metric"] == max(p["metric"] for p in conv["curve"])
        assert conv["epochs"] == next(p["epochs"] for p in conv["curve"] if p["id"] == conv["id"]) <= conv["trained_epochs"]
        assert conv["reason"] and {k: table["seeds"]["0"]["start"][k] for k in ("id", "epochs", "metric")} == {
            k: conv[k] for k in ("id", "epochs", "metric")}
        # the start itself after the final training: budget 0, and train longer's gain over it at each budget
        start_test = table["seeds"]["0"]["start"]["test"]
        assert [g["gains"] for g in out["start_gain"]] == [[round(f["test"] - start_test, 4)]
                                                         for f in table["seeds"]["0"]["finals"]["train longer"]]
        for arm in ("anytime_fixed", "anytime_mf", "anytime_random"):
            assert (cache / "smoke" / "anytime_start" / "arch").as_posix() in (cache / "smoke" / arm / "s0" / "config.yaml").read_text()
        # each search against each control at each budget, paired by seed (one seed: no spread to judge by)
        assert {(v["budget"], v["search"], v["against"]) for v in out["verdict"]} == {
            (b, s, c) for b in ("0.33", "0.67", "1.00") for s in ("fixed", "multi-fidelity")
            for c in ("random search", "random sampling", "train longer")}
        assert {v["verdict"] for v in out["verdict"]} == {"too few seeds"} and all(v["seeds"] == 1 for v in out["verdict"])
        # the shipped seed, on a machine without the cache: taken from the table, nothing trained, the same report
        assert set(table["seeds"]) == {"0"}
        again = bench(script, "--size", "smoke", "--cache", cache / "elsewhere", "--figures", cache / "figures", *more, "--from-table")
        assert again["rows"] == json.loads(json.dumps(out["rows"])) and again["trained"] == out["trained"]
        assert not any((cache / "elsewhere" / d).exists() for d in ("start", "anytime_converge", "anytime_fixed"))
        # --prune: a shipped seed's trained nets are freed, its journals kept, and the report stays the table's
        pruned = bench(script, "--size", "smoke", "--cache", cache / "smoke", "--figures", cache / "figures", *more, "--from-table", "--prune")
        assert pruned["rows"] == again["rows"]
        for arm in ("anytime_fixed", "anytime_mf", "anytime_random"):
            assert not (cache / "smoke" / arm / "s0" / "candidates").exists() and (cache / "smoke" / arm / "s0" / "journal.jsonl").is_file()
        assert not list((cache / "smoke" / "anytime_curves").glob("*_s0_e*")) and not list((cache / "smoke" / "full").glob("anytime_*s0*"))
        assert (cache / "smoke" / "anytime_start" / "head.safetensors").is_file()  # the shared start stays for the other seeds


def test_data_benchmark(tmp_path):
    out = bench("data.py", "--images", "200", "--size", "64", "--workers", "1", "--root", tmp_path)
    rows = out["rows"]
    assert [r["images"] for r in rows] == [50, 100, 200, 50, 200, 200] and all(r["images_per_s"] > 0 for r in rows)
    assert all(r["peak_rss_mib"] > 50 for r in rows)
