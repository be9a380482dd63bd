"""A real search (real training, real ECP miss rates) on a generated ECP-format set, minimising LAMR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spnas.detect.data import generate_ecp, load_ecp
from spnas.search import Search, config_from_dict

TINY = Path(__file__).with_name("tiny.yaml")


@pytest.mark.slow  # a real search on ECP frames: minutes (in .ci/run)
def test_search_on_ecp_minimises_the_miss_rate(tmp_path):
    tr = generate_ecp(tmp_path / "ecp", n_frames=12, seed=0, split="train")
    va = generate_ecp(tmp_path / "ecp", n_frames=6, seed=1, split="val")
    assert load_ecp(va).lamr_protocol == "ecp"
    d = yaml.safe_load(TINY.read_text())
    d["data"] = {"format": "ecp", "train": {"labels": str(tr)}, "val": {"labels": str(va)}}
    d["detector"]["options"] = {"min_size": 96, "max_size": 160, "representation_size": 64, "fpn_channels": 32}
    d["start"]["train_epochs"] = 40  # a start net that finds some pedestrians, so the miss rates differ
    d["train"].update(epochs=3, base_lr=0.04, grad_clip=10.0, loader_workers=0)
    d["search"].update(metric="LAMR_all", lam=3, n_stuck=6, n_reignite=0, max_generations=3)
    d["workers"] = {"backend": "inline", "threads": 2}
    summary = Search(config_from_dict(d), tmp_path / "run", quiet=True, tensorboard=False).run()

    evs = [json.loads(line) for line in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    metrics = {e["id"]: e["metric"] for e in evs if e["event"] == "evaluated"}
    first = next(e for e in evs if e["event"] == "evaluated")
    assert {"LAMR", "LAMR_small", "LAMR_occluded", "LAMR_all", "VOC_AP50", "VOC07_AP50", "AP"} <= set(first["metrics"])
    assert all(0 <= m <= 1 for m in metrics.values())
    decisions = [e for e in evs if e["event"] in ("accepted", "rejected") and e.get("rule") != "start"]
    assert decisions
    for e in decisions:
        gen_children = [m for i, m in metrics.items() if i.startswith(f"g{e['generation']:03d}c")] if e["phase"] == "serial" else [e["metric"]]
        assert e["metric"] == min(round(m, 6) for m in gen_children)  # the winner of a generation is its lowest miss rate
        if e["event"] == "accepted":
            assert e["metric"] < e["baseline_metric"] and e["gain"] > 0
        else:
            assert e["metric"] >= e["baseline_metric"]
    assert any(e["event"] == "accepted" for e in decisions), "no child beat its continued parent: the run shows no acceptance"
    assert summary["lower_is_better"] and summary["metric"] == "LAMR_all"
    assert summary["best_metric"] == metrics[summary["best_id"]]


def test_a_subset_with_nobody_is_refused_before_the_search(tmp_path):
    import pytest
    from PIL import Image

    from spnas.errors import ConfigError

    for split in ("train", "val"):
        (tmp_path / "labels" / split / "c").mkdir(parents=True)
        (tmp_path / "img" / split / "c").mkdir(parents=True)
        Image.new("RGB", (160, 96)).save(tmp_path / "img" / split / "c" / "c_0.png")
        frame = {"identity": "frame", "children": [{"identity": "pedestrian", "x0": 10, "y0": 5, "x1": 40, "y1": 85, "tags": []}]}
        (tmp_path / "labels" / split / "c" / "c_0.json").write_text(json.dumps(frame))  # one 80-px pedestrian: nobody 'small'
    d = yaml.safe_load(TINY.read_text())
    d["data"] = {"format": "ecp", "train": {"labels": str(tmp_path / "labels" / "train")}, "val": {"labels": str(tmp_path / "labels" / "val")}}
    d["search"]["metric"] = "LAMR_small"
    with pytest.raises(ConfigError, match="search.metric: LAMR_small: the validation split has no person in this subset"):
        Search(config_from_dict(d), tmp_path / "run", quiet=True, tensorboard=False)
    assert not (tmp_path / "run").exists()
    d["search"]["metric"] = "LAMR"
    Search(config_from_dict(d), tmp_path / "run", quiet=True, tensorboard=False)._lock.close()  # 'reasonable' holds it: accepted
