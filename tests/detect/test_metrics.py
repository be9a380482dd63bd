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
from spnas.detect.metrics import (COCO_STAT_NAMES, citypersons_lamr, coco_evaluate, detections_to_coco, ecp_lamr, lower_is_better,
                                  voc_ap, voc_eval)
from spnas.errors import EvalError

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


def _dets(*boxes_scores):
    return {"boxes": _b(*[b for b, _ in boxes_scores]), "scores": np.array([s for _, s in boxes_scores], float),
            "labels": np.ones(len(boxes_scores), int)}


# ------------------------------------------------------------------------------------------- VOC
def test_voc_hand_computed_and_named_by_method():
    dets = {1: _dets(([0, 0, 10, 10], 0.9), ([50, 50, 60, 60], 0.8), ([20, 20, 30, 30], 0.7))}
    assert voc_eval(GT, dets) == {"VOC_AP50": pytest.approx(0.5 * 1 + 0.5 * 2 / 3), "per_class": {1: pytest.approx(0.5 + 0.5 * 2 / 3)}}
    assert voc_eval(GT, dets, method="11point")["VOC07_AP50"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert set(voc_eval(GT, dets, iou_thresh=0.75)) == {"VOC_AP75", "per_class"}  # the IoU is in the name, never 'AP50' at 0.75


def test_voc_boxes_are_inclusive_pixels():
    """A 4x4-px object ([0, 0, 3, 3]: x1 - x0 + 1 = 4 pixels wide) and a 3x3-px detection in its corner.

    Continuous boxes: intersection 2x2 = 4, union 9 + 4 - 4 = 9, IoU 0.44: no match.
    The devkit's pixels: intersection 3x3 = 9, union 16 + 9 - 9 = 16, IoU 0.5625: a match.
    """
    gt = {1: {"boxes": _b([0, 0, 3, 3]), "labels": np.array([1])}}
    assert voc_eval(gt, {1: _dets(([1, 1, 3, 3], 0.9))})["VOC_AP50"] == pytest.approx(1.0)
    # [0,0,2,1] vs [1,0,3,1]: continuous IoU 1/3, pixels 4/8 = 0.5 exactly: the devkit needs more than 0.5
    gt = {1: {"boxes": _b([0, 0, 2, 1]), "labels": np.array([1])}}
    assert voc_eval(gt, {1: _dets(([1, 0, 3, 1], 0.9))})["VOC_AP50"] == 0.0
    # [0,0,9,9] vs [0,0,9,4]: pixels 50/100 = 0.5, not a match; [0,0,9,5]: 60/100, a match
    gt = {1: {"boxes": _b([0, 0, 9, 9]), "labels": np.array([1])}}
    assert voc_eval(gt, {1: _dets(([0, 0, 9, 4], 0.9))})["VOC_AP50"] == 0.0
    assert voc_eval(gt, {1: _dets(([0, 0, 9, 5], 0.9))})["VOC_AP50"] == 1.0


def test_voc07_11_points_are_the_devkits():
    """10 objects, the 3 best detections find 3: recall 0.1, 0.2, 0.3 at precision 1.

    VOC2010+ area: 0.3. VOC2007 11-point: the points 0, 0.1, 0.2 see precision 1; the fourth point is
    3 * 0.1 = 0.30000000000000004 in floating point, above a recall of 3/10, so it sees nothing: 3/11.
    (With exact points 0, 0.1, ..., 1 it would be 4/11.)
    """
    gt = {i: {"boxes": _b([0, 0, 10, 10]), "labels": np.array([1])} for i in range(10)}
    dets = {i: _dets(([0, 0, 10, 10], 0.9 - i / 100)) for i in range(3)}
    assert voc_eval(gt, dets)["VOC_AP50"] == pytest.approx(0.3)
    assert voc_eval(gt, dets, method="11point")["VOC07_AP50"] == pytest.approx(3 / 11)


def test_voc_difficult_ignored():
    dets = {1: _dets(([40, 40, 50, 50], 0.95), ([0, 0, 10, 10], 0.9), ([50, 50, 60, 60], 0.8), ([20, 20, 30, 30], 0.7))}
    assert voc_eval(GT, dets)["VOC_AP50"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_voc_image_without_objects_counts_false_positives():
    gts = {**GT, 2: {"boxes": _b(), "labels": np.array([], int), "difficult": np.array([], bool)}}
    dets = {1: _dets(([0, 0, 10, 10], 0.9), ([50, 50, 60, 60], 0.8), ([20, 20, 30, 30], 0.7)), 2: _dets(([0, 0, 5, 5], 0.85))}
    assert voc_eval(gts, dets)["VOC_AP50"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)


def test_voc_ap_curves():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    with pytest.raises(EvalError, match="expected 'area' or '11point', got 'x'"):
        voc_ap(np.array([1.0]), np.array([1.0]), "x")


# ------------------------------------------------------------------------------------------- LAMR
# One scenario for every convention: image 1 holds pedestrians A, B, C (100 px tall); a finds A
# (score 0.9), b finds B (0.7), and x (0.8) is the detection under test; images 2-4 are empty.
# x a false positive: recall 1/3, 1/3, 2/3 at FPPI 0, 0.25, 0.25: miss rate 2/3 at the 6 points
# below 0.25 and 1/3 at the 3 above:
X_IS_FALSE = math.exp((6 * math.log(2 / 3) + 3 * math.log(1 / 3)) / 9)
X_IS_IGNORED = 1 / 3  # x dropped or on an ignored box: recall 1/3, 2/3 at FPPI 0: miss rate 1/3 everywhere


def _scene(x, extra_gt=None, **fields):
    boxes = [[0, 0, 40, 100], [100, 0, 140, 100], [200, 0, 240, 100]] + ([extra_gt] if extra_gt else [])
    g = {"boxes": _b(*boxes), **{k: np.array(v, float) for k, v in fields.items()}}
    gts = {1: g, 2: {"boxes": _b()}, 3: {"boxes": _b()}, 4: {"boxes": _b()}}
    dets = {1: {"boxes": _b([0, 0, 40, 100], x, [100, 0, 140, 100]), "scores": np.array([0.9, 0.8, 0.7])}}
    return gts, dets


def test_lamr_scene_baseline():
    assert ecp_lamr(*_scene([500, 0, 540, 100]))["lamr"] == pytest.approx(X_IS_FALSE)
    assert citypersons_lamr(*_scene([500, 0, 540, 100]))["lamr"] == pytest.approx(X_IS_FALSE)


def test_lamr_height_margin_on_detections():
    """Detections shorter than the subset's minimum / 1.25 are dropped: ECP reasonable 40 -> 32 (dropped at <= 32), CityPersons 50 -> 40 (kept at >= 40)."""
    assert ecp_lamr(*_scene([500, 0, 520, 32]))["lamr"] == pytest.approx(X_IS_IGNORED)
    assert ecp_lamr(*_scene([500, 0, 520, 33]))["lamr"] == pytest.approx(X_IS_FALSE)
    assert citypersons_lamr(*_scene([500, 0, 520, 39.9]))["lamr"] == pytest.approx(X_IS_IGNORED)
    assert citypersons_lamr(*_scene([500, 0, 520, 40]))["lamr"] == pytest.approx(X_IS_FALSE)
    # and taller than the maximum * 1.25: ECP small (60 -> 75), CityPersons small (75 -> 93.75)
    gts, dets = _scene([500, 0, 520, 75])
    gts[1]["boxes"][:, 3] = 50  # A, B, C 50 px tall: in both 'small' subsets
    dets[1]["boxes"][[0, 2], 3] = 50
    assert ecp_lamr(gts, dets, subset="small")["lamr"] == pytest.approx(X_IS_IGNORED)
    dets[1]["boxes"][1, 3] = 74
    assert ecp_lamr(gts, dets, subset="small")["lamr"] == pytest.approx(X_IS_FALSE)
    dets[1]["boxes"][1, 3] = 93.75
    assert citypersons_lamr(gts, dets, setup="small")["lamr"] == pytest.approx(X_IS_IGNORED)
    dets[1]["boxes"][1, 3] = 93.7
    assert citypersons_lamr(gts, dets, setup="small")["lamr"] == pytest.approx(X_IS_FALSE)


def test_lamr_ecp_all_caps_occlusion_at_80():
    """D (x finds it exactly) tagged occluded>80 is ignored even in ECP 'all'; at 40 it counts (n_gt 4, x a true positive)."""
    gts, dets = _scene([300, 0, 340, 100], extra_gt=[300, 0, 340, 100], occlusion=[0, 0, 0, 80])
    r = ecp_lamr(gts, dets, subset="all")
    assert r["n_gt"] == 3 and r["lamr"] == pytest.approx(X_IS_IGNORED)
    gts[1]["occlusion"][3] = 40
    r = ecp_lamr(gts, dets, subset="all")
    assert r["n_gt"] == 4 and r["lamr"] == pytest.approx(1 - 3 / 4)  # recall 3/4 at FPPI 0
    gts[1]["truncation"] = np.array([0, 0, 0, 80.0])  # truncation has the same cap
    assert ecp_lamr(gts, dets, subset="all")["n_gt"] == 3


def test_lamr_ecp_small_includes_60_px():
    gts, dets = _scene([300, 0, 320, 60], extra_gt=[300, 0, 320, 60])
    gts[1]["boxes"][:3, 3] = 45
    dets[1]["boxes"][[0, 2], 3] = 45
    r = ecp_lamr(gts, dets, subset="small")
    assert r["n_gt"] == 4 and r["lamr"] == pytest.approx(1 / 4)  # D (60 px) counts in 'small'
    gts[1]["boxes"][3, 3] = dets[1]["boxes"][1, 3] = 61
    r = ecp_lamr(gts, dets, subset="small")
    assert r["n_gt"] == 3 and r["lamr"] == pytest.approx(X_IS_IGNORED)  # 61 px: ignored, x on it is neither


def test_lamr_outside_the_subset_ecp_matches_by_iou_citypersons_by_ioa():
    """D lies outside the subset (not occluded in ECP 'occluded'; fully visible in CityPersons 'heavy').

    x is D's top 40%: IoU 0.4, but all of x lies in D (intersection over x's area: 1).
    ECP matches an ignored pedestrian by IoU: x is a false positive. CityPersons matches every
    ignored box by the detection's own area: x is ignored. An ECP crowd region (ignore 2) uses the
    detection's area too.
    """
    x, d = [300, 0, 340, 40], [300, 0, 340, 100]
    gts, dets = _scene(x, extra_gt=d, occlusion=[40, 40, 40, 0])
    assert ecp_lamr(gts, dets, subset="occluded")["lamr"] == pytest.approx(X_IS_FALSE)
    gts[1]["ignore"] = np.array([0, 0, 0, 2])
    assert ecp_lamr(gts, dets, subset="occluded")["lamr"] == pytest.approx(X_IS_IGNORED)
    gts, dets = _scene(x, extra_gt=d, vis_ratio=[0.5, 0.5, 0.5, 1.0])
    assert citypersons_lamr(gts, dets, setup="heavy")["lamr"] == pytest.approx(X_IS_IGNORED)


def test_citypersons_keeps_the_scripts_first_point_quirk():
    """A false positive ranked first: FPPI 0.25 at once. The script reads recall[-1] (the final
    recall, 1) at the points below 0.25, where the ECP toolkit reads nothing (miss rate 1)."""
    gts = {1: {"boxes": _b([0, 0, 40, 100])}, 2: {"boxes": _b()}, 3: {"boxes": _b()}, 4: {"boxes": _b()}}
    dets = {1: {"boxes": _b([500, 0, 540, 100], [0, 0, 40, 100]), "scores": np.array([0.9, 0.8])}}
    assert citypersons_lamr(gts, dets)["lamr"] == 0.0  # miss rate 0 everywhere, not floored
    assert ecp_lamr(gts, dets)["lamr"] == pytest.approx(math.exp((6 * math.log(1) + 3 * math.log(1e-10)) / 9))
    assert citypersons_lamr({1: {"boxes": _b()}}, {})["lamr"] == -1.0  # nobody to find: the script's -1
    assert math.isnan(ecp_lamr({1: {"boxes": _b()}}, {})["lamr"])


def test_lamr_direction():
    assert lower_is_better("LAMR") and lower_is_better("CP_LAMR_heavy") and not lower_is_better("AP") and not lower_is_better("VOC07_AP50")


# ------------------------------------------------------------------------------------------- bad input
GOOD_GT = {1: {"boxes": _b([0, 0, 10, 10]), "labels": np.array([1])}}
BAD_INPUTS = [
    ("a NaN score", GOOD_GT, {1: {"boxes": _b([0, 0, 10, 10]), "scores": np.array([np.nan]), "labels": np.array([1])}}, {},
     r"dets\[1\]: scores\[0\]: not a finite number"),
    ("a NaN box", GOOD_GT, {1: {"boxes": _b([0, np.nan, 10, 10]), "scores": np.array([0.5]), "labels": np.array([1])}}, {},
     r"dets\[1\]: boxes\[0\]: not finite"),
    ("fewer scores than boxes", GOOD_GT, {1: {"boxes": _b([0, 0, 10, 10], [1, 1, 5, 5]), "scores": np.array([0.5]), "labels": np.array([1, 1])}}, {},
     r"dets\[1\]: scores: expected 2 values, got shape \(1,\)"),
    ("a string image id", GOOD_GT, {"1": {"boxes": _b([0, 0, 10, 10]), "scores": np.array([0.5]), "labels": np.array([1])}}, {},
     r"dets\['1'\]: image id not in the ground truth; the ground truth has 1 \(int\), this is a str"),
    ("a negative-size box", {1: {"boxes": _b([10, 0, 0, 10]), "labels": np.array([1])}}, {}, {},
     r"gts\[1\]: boxes\[0\]: x1 < x0 or y1 < y0"),
    ("an IoU threshold of 0", GOOD_GT, {}, {"iou_thresh": 0}, r"iou_thresh: expected a number in \(0, 1\], got 0"),
    ("an IoU threshold of 50", GOOD_GT, {}, {"iou_thresh": 50}, r"iou_thresh: expected a number in \(0, 1\], got 50"),
    ("missing labels", {1: {"boxes": _b([0, 0, 10, 10])}}, {}, {}, r"gts\[1\]: labels: missing"),
    ("a misspelt field", {1: {"boxes": _b([0, 0, 10, 10]), "labels": [1], "dificult": [1]}}, {}, {}, r"gts\[1\]: unknown field 'dificult'"),
    ("boxes of 5 numbers", {1: {"boxes": [[0, 0, 10, 10, 1]], "labels": [1]}}, {}, {}, r"gts\[1\]: boxes: expected shape \(N, 4\)"),
]


@pytest.mark.parametrize("what,gts,dets,kw,says", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_named(what, gts, dets, kw, says):
    with pytest.raises(EvalError, match=says):
        voc_eval(gts, dets, **kw)


@pytest.mark.parametrize("fn", [ecp_lamr, citypersons_lamr])
def test_lamr_bad_input_is_named(fn):
    with pytest.raises(EvalError, match=r"dets\[1\]: scores\[0\]: not a finite number"):
        fn({1: {"boxes": _b([0, 0, 40, 100])}}, {1: {"boxes": _b([0, 0, 40, 100]), "scores": [float("nan")]}})
    with pytest.raises(EvalError, match=r"dets\['1'\]: image id not in the ground truth"):
        fn({1: {"boxes": _b([0, 0, 40, 100])}}, {"1": {"boxes": _b([0, 0, 40, 100]), "scores": [0.5]}})
    with pytest.raises(EvalError, match="expected one of"):
        fn({}, {}, **({"subset": "tiny"} if fn is ecp_lamr else {"setup": "tiny"}))


def _perfect(ds):
    """Detections equal to the ground truth (crowd regions excepted), score falling with the index."""
    outs = []
    for img in ds.image_ids:
        anns = [a for a in ds.coco.imgToAnns.get(img, []) if not a.get("iscrowd")]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]).reshape(-1, 4)
        outs.append({"boxes": boxes, "scores": torch.linspace(0.99, 0.5, len(anns)), "labels": torch.tensor([ds.cat_to_label[a["category_id"]] for a in anns])})
    return outs


def test_every_metric_of_perfect_detections(tmp_path):
    """Through the evaluation path of training: perfect detections give AP 1, VOC AP 1, and miss rates
    at their floor (ECP: 1e-10; CityPersons: 0), on ECP frames and on CityPersons-style COCO."""
    from spnas.detect.data import generate_ecp, generate_shapes, load_coco, load_ecp
    from spnas.detect.train import evaluate_outputs

    ecp = load_ecp(generate_ecp(tmp_path / "ecp", n_frames=6, seed=2))
    m = evaluate_outputs(ecp, _perfect(ecp))
    assert m["AP50"] == pytest.approx(1.0) and m["VOC_AP50"] == pytest.approx(1.0) and m["VOC07_AP50"] == pytest.approx(1.0)
    assert m["LAMR"] == pytest.approx(1e-10) and m["LAMR_all"] == pytest.approx(1e-10)
    jp = generate_shapes(tmp_path / "cp", n_images=6, size=128, seed=0)
    d = json.loads(jp.read_text())
    for a in d["annotations"]:
        a.update(vis_ratio=1.0, height=a["bbox"][3], category_id=1)
    d["categories"] = [{"id": 1, "name": "pedestrian"}]
    jp.write_text(json.dumps(d))
    cp = load_coco(jp)
    assert cp.lamr_protocol == "citypersons"
    d["annotations"][0]["ignore"] = 1  # a CityPersons ignore region: not an object to train on
    jp.write_text(json.dumps(d))
    region = load_coco(jp)
    assert len(region[0][1]["boxes"]) == len([a for a in region.coco.imgToAnns[region.image_ids[0]]]) - 1
    m = evaluate_outputs(cp, _perfect(cp))
    assert m["CP_LAMR"] == 0.0 and m["CP_LAMR_all"] == 0.0 and m["CP_LAMR_heavy"] == -1.0  # nobody is heavily occluded: the script's -1
    assert "LAMR" not in m


def test_a_metric_owns_its_direction():
    import math

    from spnas.detect.metrics import Metric

    for name in ("AP", "AP50", "VOC07_AP50", "AR100"):
        m = Metric(name)
        assert not m.lower_is_better and m.weights == (1.0,) and m.direction == "higher"
        assert m.score(0.4) > m.score(0.3) and m.pick(0.3, 0.4) == 0.4 and m.worst == -math.inf
    for name in ("LAMR", "LAMR_small", "CP_LAMR", "CP_LAMR_heavy"):
        m = Metric(name)
        assert m.lower_is_better and m.weights == (-1.0,) and m.direction == "lower"
        assert m.score(0.3) > m.score(0.4) and m.pick(0.3, 0.4) == 0.3 and m.worst == math.inf
    assert Metric("AP").score(None) == Metric("LAMR").score(float("nan")) == -math.inf  # a failure loses to everything
