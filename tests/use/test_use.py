"""From search to use: a self-describing best/, load_detector, predict on image files, export, train from a run, init.

One real search (tests/use/use.yaml: real training, its best net detects something) feeds every test."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spnas
from spnas.detect.data import SHAPE_CLASSES, decode_image_file, load_coco
from spnas.detect.infer import compare_detections, export_detector, run_exported
from spnas.detect.metrics import coco_evaluate

pytestmark = pytest.mark.slow  # a real search as fixture, then predict/export/train on it: minutes (in .ci/run)

CONFIG = Path(__file__).with_name("use.yaml")
ROOT = Path(__file__).resolve().parents[2]


def spnas_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "spnas.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("use") / "run"
    p = spnas_cli("search", CONFIG, "--out", out, "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def best_event(run):
    events = [json.loads(ln) for ln in (run / "journal.jsonl").read_text().splitlines()]
    best = json.loads((run / "best" / "summary.json").read_text())["best_id"]
    return next(e for e in events if e["event"] == "evaluated" and e["id"] == best)


def val_split(run):
    js = sorted((run / "data").glob("val-*.json"))
    assert len(js) == 1
    ds = load_coco(js[0])
    return js[0], ds, [ds.image_dir / ds.coco.imgs[i]["file_name"] for i in ds.image_ids]


def test_predict_on_image_files_reproduces_the_journaled_metric(run, tmp_path):
    ev = best_event(run)
    assert ev["metric"] > 0.05  # a net that detects something: the equality below is not 0 == 0
    val_json, ds, files = val_split(run)
    p = spnas_cli("predict", run, *files, "--coco", val_json, "--out", tmp_path / "preds.json")
    assert p.returncode == 0, p.stderr[-2000:]
    results = json.loads((tmp_path / "preds.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score", "file_name"} <= set(results[0])
    got = coco_evaluate(ds.coco, results, image_ids=ds.image_ids)
    assert got["AP50"] == ev["metric"]  # exactly: same pixels, same batches, same weights
    for k in ("AP", "AP50", "AP75", "APs", "APm", "AR100"):
        assert round(got[k], 6) == ev["metrics"][k], k


def test_best_is_self_describing_and_loads_in_one_line(run):
    meta = json.loads((run / "best" / "detector.json").read_text())
    assert meta["classes"] == list(SHAPE_CLASSES)
    assert [(c["label"], c["category_id"], c["name"]) for c in meta["categories"]] == [(i + 1, i + 1, n) for i, n in enumerate(SHAPE_CLASSES)]
    assert meta["head"] == "cascade" and meta["options"]["min_size"] == 64 and meta["options"]["fpn_channels"] == 32
    assert meta["input"]["image_mean"] == [0.485, 0.456, 0.406] and meta["eval_batch_size"] == 4
    assert meta["code"] == json.loads((run / "best" / "summary.json").read_text())["best_code"]
    assert meta["metric"]["name"] == "AP50" and meta["metric"]["value"] == round(best_event(run)["metric"], 6)
    for where in (run, run / "best"):
        model = spnas.load_detector(where)
        assert not model.training and model.spnas_meta["classes"] == list(SHAPE_CLASSES)
    out = spnas.predict(model, [torch.rand(3, 64, 80)], score_thresh=0.0)
    assert set(out[0]) == {"boxes", "labels", "scores"} and out[0]["boxes"].shape[1] == 4


def test_load_detector_names_what_is_missing(tmp_path):
    from spnas.errors import ConfigError

    with pytest.raises(ConfigError, match="not a run directory"):
        spnas.load_detector(tmp_path)
    p = spnas_cli("predict", tmp_path, tmp_path, "--out", tmp_path / "x.json")
    assert p.returncode == 2 and "not a run directory" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_eager(run, tmp_path, fmt):
    """The whole detector exported: on the validation images and an image of another size, the same detections."""
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    model = spnas.load_detector(run)
    path = export_detector(model, tmp_path / ("det.onnx" if fmt == "onnx" else "det.pt"), format=fmt)
    _, _, files = val_split(run)
    images = [decode_image_file(f).float() / 255 for f in files] + [torch.rand(3, 48, 96, generator=torch.Generator().manual_seed(1))]
    worst_box = worst_score = 0.0
    for img in images:
        with torch.no_grad():
            ref = model([img])[0]
        c = compare_detections(ref, run_exported(path, img))
        assert c["same_count"] and c["labels_equal"], c
        worst_box, worst_score = max(worst_box, c["max_box_diff"]), max(worst_score, c["max_score_diff"])
    tol = (1e-3, 1e-5) if fmt == "onnx" else (1e-4, 1e-6)
    assert worst_box <= tol[0] and worst_score <= tol[1], (worst_box, worst_score)
    print(f"{fmt}: max |Δ| boxes {worst_box:.2e} px, scores {worst_score:.2e} over {len(images)} images")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_of_a_parallel_net_with_multiscale_training(tmp_path, fmt):
    """Subnets (fuse + resize-add), five stages and a multi-scale training transform export too."""
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    from spnas.detect import build_detector
    from spnas.ir import parse

    torch.manual_seed(0)
    model = build_detector(parse("BB(1,d1,d1,d1,d)(1,0,2,0,0)", seed=0), 3, "cascade", preset="lean", min_size=96, max_size=96,
                           train_scales=(0.8, 1.2)).eval()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # subnets' fuses start at zero, which would hide them
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        elif isinstance(m, torch.nn.Linear) and ("cls_score" in name or "bbox_pred" in name):
            m.weight.data.normal_(0, 0.5)  # spread scores: freshly initialised heads tie them, and ties have no order
    path = export_detector(model, tmp_path / ("p.onnx" if fmt == "onnx" else "p.pt"), format=fmt)
    img = torch.rand(3, 80, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model([img])[0]
    c = compare_detections(ref, run_exported(path, img))
    assert c["same_count"] and c["labels_equal"] and c["count"][0] > 0, c
    # ONNX Runtime's convolutions round differently; the spread box weights (x500 a fresh head's) carry it to the boxes
    tol = (1e-2, 1e-5) if fmt == "onnx" else (1e-4, 1e-6)
    assert c["max_box_diff"] <= tol[0] and c["max_score_diff"] <= tol[1], c
    print(f"{fmt}, parallel net: max |Δ| boxes {c['max_box_diff']:.2e} px, scores {c['max_score_diff']:.2e}")


def test_train_takes_a_run_directory(run, tmp_path):
    out = tmp_path / "trained"
    p = spnas_cli("train", run, "--scheme", "fast", "--epochs", "1", "--out", out)
    assert p.returncode == 0, p.stderr[-2000:]
    meta, best = (json.loads((d / "detector.json").read_text()) for d in (out, run / "best"))
    assert meta["head"] == best["head"] and meta["options"] == best["options"] and meta["classes"] == best["classes"]
    assert meta["source"]["data"] == best["source"]["data"] and meta["code"] == best["code"]
    model = spnas.load_detector(out)
    assert model.spnas_meta["source"]["trained_from"] == str(run)


def test_init_writes_a_config_that_validates(tmp_path):
    from spnas.search.config import load_config

    p = spnas_cli("init", tmp_path / "exp")
    assert p.returncode == 0, p.stderr
    cfg = load_config(tmp_path / "exp" / "start.yaml")
    assert cfg.to_dict() == load_config(ROOT / "spnas" / "configs" / "quickstart.yaml").to_dict()
    again = spnas_cli("init", tmp_path / "exp")
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    for ex in ("paper", "coco_gpu"):
        assert spnas_cli("init", tmp_path / ex, "--example", ex).returncode == 0
        assert "start:" in (tmp_path / ex / "start.yaml").read_text()


def test_one_flag_one_meaning():
    a = spnas_cli("show", "BB(1,d1,d1,d1)", "--image-size", "96", "--json")
    b = subprocess.run([sys.executable, "-m", "spnas.ir", "show", "BB(1,d1,d1,d1)", "--size", "96", "96", "--json"], cwd=ROOT,
                       capture_output=True, text=True)
    assert a.returncode == b.returncode == 0 and json.loads(a.stdout) == json.loads(b.stdout)
    assert json.loads(a.stdout)["size"] == [96, 96]
    h = spnas_cli("search", "--help").stdout
    assert "config" in h and "--ir" in h  # `spnas search start.yaml`, and `python -m spnas.search --ir start.yaml` still works
