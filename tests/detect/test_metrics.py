import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from spnas.detect.data import DetectionDataset
from spnas.detect.metrics import COCO_STAT_NAMES, coco_evaluate, detections_to_coco, lamr, voc_ap, voc_eval

FIX = Path(__file__).parents[1] / "fixtures" / "coco_oracle"
PUBLISHED = {
    "instances_val2014_100.json": (
        "instances_val2014_fakebbox100_results.json",
        [0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443, 0.5193996948036719, 0.5013978986347466,
         0.38681277964578054, 0.5936795762842003, 0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982],
    ),
    "fce_gt_dataset.json": ("fce_dt_dataset.json", [0.69472, 0.69472, 0.69472, -1, 0.79208, 0.0, 0.66667, 0.75, 0.75, -1, 0.79167, 0.0]),
}


@pytest.mark.parametrize("gt_file", list(PUBLISHED))
def test_coco_oracle_through_model_output_path(gt_file):
    dt_file, expected = PUBLISHED[gt_file]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(FIX / gt_file))
    ds = DetectionDataset(gt, FIX)  # only its label <-> category mapping is used
    raw = json.loads((FIX / dt_file).read_text())
    outputs, ids = [], sorted({d["image_id"] for d in raw})
    for img in ids:
        dets = [d for d in raw if d["image_id"] == img]
        boxes = torch.tensor([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]] for d in dets], dtype=torch.float64)
        outputs.append({"boxes": boxes, "scores": torch.tensor([d["score"] for d in dets], dtype=torch.float64),
                        "labels": torch.tensor([ds.cat_to_label[d["category_id"]] for d in dets])})
    stats = coco_evaluate(gt, detections_to_coco(outputs, ids, ds.label_to_cat))
    tol = 1e-6 if gt_file.startswith("instances") else 5e-6
    for name, want in zip(COCO_STAT_NAMES, expected):
        assert abs(stats[name] - want) <= tol, (name, stats[name], want)


def test_coco_no_detections():
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(FIX / "fce_gt_dataset.json"))
    want = {k: (-1.0 if v == -1 else 0.0) for k, v in zip(COCO_STAT_NAMES, PUBLISHED["fce_gt_dataset.json"][1])}
    assert coco_evaluate(gt, []) == want


def _b(*xs):
    return np.array(xs, float).reshape(-1, 4)


GT = {1: {"boxes": _b([0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]), "labels": np.array([1, 1, 1]),
          "difficult": np.array([False, False, True])}}


def test_voc_hand_computed():
    dets = {1: {"boxes": _b([0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]), "scores": np.array([0.9, 0.8, 0.7]), "labels": np.array([1, 1, 1])}}
    assert voc_eval(GT, dets)["AP50"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert voc_eval(GT, dets, method="11point")["AP50"] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_voc_difficult_ignored():
    dets = {1: {"boxes": _b([40, 40, 50, 50], [0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]), "scores": np.array([0.95, 0.9, 0.8, 0.7]),
                "labels": np.array([1, 1, 1, 1])}}
    assert voc_eval(GT, dets)["AP50"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_voc_ties_keep_input_order():
    dets = {1: {"boxes": _b([0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]), "scores": np.array([0.9, 0.8, 0.8]), "labels": np.array([1, 1, 1])}}
    assert voc_eval(GT, dets)["AP50"] == pytest.approx(1.0)
    dets[1]["boxes"] = _b([0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30])
    assert voc_eval(GT, dets)["AP50"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_voc_image_without_objects_counts_false_positives():
    gts = {**GT, 2: {"boxes": _b(), "labels": np.array([], int), "difficult": np.array([], bool)}}
    dets = {1: {"boxes": _b([0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]), "scores": np.array([0.9, 0.8, 0.7]), "labels": np.array([1, 1, 1])},
            2: {"boxes": _b([0, 0, 5, 5]), "scores": np.array([0.85]), "labels": np.array([1])}}
    assert voc_eval(gts, dets)["AP50"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)


def test_voc_ap_curves():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="expected 'area' or '11point', got 'x'"):
        voc_ap(np.array([1.0]), np.array([1.0]), "x")


def test_lamr_hand_computed_with_ignore_region():
    gts = {1: {"boxes": _b([0, 0, 20, 50], [100, 0, 120, 50])},
           2: {"boxes": _b([0, 0, 20, 50], [200, 0, 300, 100]), "ignore": np.array([False, True])}}
    dets = {1: {"boxes": _b([0, 0, 20, 50], [300, 300, 320, 350]), "scores": np.array([0.9, 0.8])},
            2: {"boxes": _b([210, 10, 230, 60], [0, 0, 20, 50]), "scores": np.array([0.85, 0.6])}}
    r = lamr(gts, dets)
    want = math.exp((7 * math.log(2 / 3) + 2 * math.log(1 / 3)) / 9)
    assert r["lamr"] == pytest.approx(want)
    assert list(r["miss_rates"]) == pytest.approx([2 / 3] * 7 + [1 / 3] * 2)


def test_lamr_subsets_and_empty_images():
    gts = {1: {"boxes": _b([0, 0, 20, 30])}, 2: {"boxes": _b()}}  # 30 px tall: not 'reasonable', but 'small'
    dets = {1: {"boxes": _b([0, 0, 20, 30])}, 2: {"boxes": _b([5, 5, 25, 45])}}
    dets[1]["scores"], dets[2]["scores"] = np.array([0.9]), np.array([0.5])
    assert math.isnan(lamr(gts, dets, subset="reasonable")["lamr"])  # no ground truth left in the subset
    small = lamr(gts, dets, subset="small")
    assert list(small["fppi"]) == [0.0, 0.5] and list(small["mr"]) == [0.0, 0.0]  # the empty image's FP counts
    gts[1]["occlusion"] = np.array([0.5])
    assert math.isnan(lamr(gts, dets, subset="small")["lamr"])
    assert lamr(gts, {}, subset="all")["lamr"] == pytest.approx(1.0)  # nothing detected: miss rate 1 everywhere
