"""The training path's metrics agree with the reference evaluators (issue 28, item 9).

(a) CityPersons ground truth crossing the image border is evaluated as the CityPersons script
evaluates it (kept, unclipped), and trained on clipped; (b) the ECP miss rates offer the toolkit's
``ignore_other_vru`` both ways, defaulting to the benchmark server's False; (c) ``coco_evaluate``,
``detections_to_coco`` and the yes/no fields check their input as every metric function does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from spnas.detect.data import load_coco, load_ecp, tile_dataset
from spnas.detect.metrics import citypersons_lamr, coco_evaluate, detections_to_coco, ecp_lamr, voc_eval
from spnas.detect.train import person_miss_rates
from spnas.errors import DataError, EvalError


def _citypersons(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (200, 120)).save(tmp_path / "images" / "a.png")
    d = {"images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 120}],
         "categories": [{"id": 1, "name": "pedestrian"}],
         "annotations": [
             {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 30, 80], "area": 2400, "iscrowd": 0, "height": 80, "vis_ratio": 1.0},
             # a person cut by the left border, 12 px outside: the CityPersons script keeps the box as given
             {"id": 2, "image_id": 1, "category_id": 1, "bbox": [-12, 10, 30, 80], "area": 2400, "iscrowd": 0, "height": 80, "vis_ratio": 1.0},
         ]}
    p = tmp_path / "cp.json"
    p.write_text(json.dumps(d))
    return p, d


def test_citypersons_boxes_crossing_the_border_are_evaluated_as_the_script_does(tmp_path):
    p, d = _citypersons(tmp_path)
    ds = load_coco(p, tmp_path / "images")
    assert ds.lamr_protocol == "citypersons" and not ds.problems
    assert ds.coco.anns[2]["bbox"] == [-12, 10, 30, 80]  # kept as given, for evaluation
    assert ds.target(1)["boxes"].tolist() == [[20.0, 10.0, 50.0, 90.0], [0.0, 10.0, 18.0, 90.0]]  # trained on its visible part
    outs = [{"boxes": torch.tensor([[20.0, 10.0, 50.0, 90.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    got = person_miss_rates(ds, outs)
    gts = {1: {"boxes": np.array([[20, 10, 50, 90], [-12, 10, 18, 90]], float), "height": np.array([80.0, 80.0]), "vis_ratio": np.array([1.0, 1.0]),
               "ignore": np.array([False, False])}}
    dets = {1: {"boxes": outs[0]["boxes"].numpy(), "scores": outs[0]["scores"].numpy()}}
    want = citypersons_lamr(gts, dets, setup="Reasonable")
    assert want["n_gt"] == 2 and got["CP_LAMR"] == want["lamr"]
    assert got["CP_LAMR"] > 0.3  # one person of two missed: dropping the border box read 0 here


def test_a_box_wholly_outside_the_image_is_still_a_problem(tmp_path):
    p, d = _citypersons(tmp_path)
    d["annotations"][1]["bbox"] = [-40, 10, 30, 80]
    p.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r"cp.json: id 2: box \[-40, 10, 30, 80\] lies outside the 200x120 image"):
        load_coco(p, tmp_path / "images", strict=True)


def _ecp(tmp_path):
    (tmp_path / "labels" / "val" / "c").mkdir(parents=True)
    (tmp_path / "img" / "val" / "c").mkdir(parents=True)
    Image.new("RGB", (200, 100)).save(tmp_path / "img" / "val" / "c" / "c_0.png")
    kids = [{"identity": "pedestrian", "x0": 10, "y0": 5, "x1": 40, "y1": 85, "tags": []},
            {"identity": "rider", "x0": 100, "y0": 5, "x1": 130, "y1": 85, "tags": []}]
    (tmp_path / "labels" / "val" / "c" / "c_0.json").write_text(json.dumps({"identity": "frame", "imagewidth": 200, "imageheight": 100, "children": kids}))
    return tmp_path / "labels" / "val"


def test_ecp_riders_are_discarded_by_default_and_ignored_on_request(tmp_path):
    labels = _ecp(tmp_path)
    # a pedestrian detection on the rider, scored above the true one
    outs = [{"boxes": torch.tensor([[100.0, 5, 130, 85], [10.0, 5, 40, 85]]), "scores": torch.tensor([0.95, 0.9]), "labels": torch.tensor([1, 1])}]
    dets = {1: {"boxes": outs[0]["boxes"].numpy(), "scores": outs[0]["scores"].numpy()}}
    ped = {"boxes": np.array([[10, 5, 40, 85]], float), "ignore": np.array([0]), "occlusion": np.array([0.0]), "truncation": np.array([0.0])}
    both = {"boxes": np.array([[10, 5, 40, 85], [100, 5, 130, 85]], float), "ignore": np.array([0, 1]),
            "occlusion": np.array([0.0, 0.0]), "truncation": np.array([0.0, 0.0])}
    server = load_ecp(labels)
    assert server.ignore_other_vru is False  # the benchmark server's setting
    got = person_miss_rates(server, outs)["LAMR"]
    assert got == ecp_lamr({1: ped}, dets, subset="reasonable", sizes={1: (200, 100)})["lamr"]
    ignoring = load_ecp(labels, ignore_other_vru=True)
    got_ignore = person_miss_rates(ignoring, outs)["LAMR"]
    assert got_ignore == ecp_lamr({1: both}, dets, subset="reasonable", sizes={1: (200, 100)})["lamr"]
    assert got > got_ignore  # the rider detection is a false positive only when riders are discarded
    assert tile_dataset(ignoring, 64).ignore_other_vru and ignoring.subset([1]).ignore_other_vru  # views keep the setting


def test_the_ecp_setting_travels_from_the_config(tmp_path):
    from spnas.search.config import config_from_dict
    from spnas.search.evaluator import load_datasets
    from spnas.search.runner import resolve_data

    labels = _ecp(tmp_path)
    base = {"format": "ecp", "train": {"labels": str(labels)}, "val": {"labels": str(labels)}}
    cfg = config_from_dict({"data": {**base, "ignore_other_vru": True}})
    req = resolve_data(cfg, tmp_path)
    assert req["ignore_other_vru"] is True and all(ds.ignore_other_vru for ds in load_datasets(req))
    assert "ignore_other_vru" not in resolve_data(config_from_dict({"data": base}), tmp_path)  # older runs' requests unchanged
    with pytest.raises(Exception, match=r"ignore_other_vru: an ECP benchmark setting; format 'voc'"):
        config_from_dict({"data": {"format": "voc", "train": {"xml": "a"}, "val": {"xml": "b"}, "ignore_other_vru": True}})


# ------------------------------------------------------------------------------------------ (c)
def test_coco_evaluate_checks_its_results(tmp_path):
    p, _ = _citypersons(tmp_path)
    gt = load_coco(p, tmp_path / "images").coco
    ok = {"image_id": 1, "category_id": 1, "bbox": [20.0, 10.0, 30.0, 80.0], "score": 0.9}
    assert coco_evaluate(gt, [ok])["AP50"] > 0
    cases = [
        ({**ok, "score": float("nan")}, r"results\[0\]: score: expected a finite number, got nan"),
        ({**ok, "bbox": [20.0, 10.0, -30.0, 80.0]}, r"results\[0\]: bbox: negative width or height"),
        ({**ok, "image_id": "1"}, r"results\[0\]: image_id '1' is not in the ground truth; the ground truth has 1 \(int\), this is a str"),
        ({**ok, "category_id": 7}, r"results\[0\]: category_id 7 is not in the ground truth"),
        ({**ok, "bbox": ["20", 10, 30, 80]}, r"results\[0\]: bbox: expected \[x, y, w, h\] of four finite numbers"),
        ({k: v for k, v in ok.items() if k != "score"}, r"results\[0\]: score: missing"),
    ]
    for bad, says in cases:
        with pytest.raises(EvalError, match=says):
            coco_evaluate(gt, [ok, bad][::-1])
    with pytest.raises(EvalError, match=r"image_ids: image id 5 is not in the ground truth"):
        coco_evaluate(gt, [ok], image_ids=[1, 5])


def test_detections_to_coco_checks_the_model_outputs():
    good = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}
    assert detections_to_coco([good], [3], {1: 7}) == [{"image_id": 3, "category_id": 7, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.5}]
    with pytest.raises(EvalError, match=r"outputs\[3\]: scores\[0\]: not a finite number"):
        detections_to_coco([{**good, "scores": torch.tensor([float("nan")])}], [3], {1: 7})
    with pytest.raises(EvalError, match=r"outputs\[3\]: boxes\[0\]: x1 < x0"):
        detections_to_coco([{**good, "boxes": torch.tensor([[10.0, 0, 0, 10]])}], [3], {1: 7})
    with pytest.raises(EvalError, match=r"outputs\[3\]: labels\[0\]: 2 is no class of the data"):
        detections_to_coco([{**good, "labels": torch.tensor([2])}], [3], {1: 7})
    with pytest.raises(EvalError, match=r"outputs: 1 for 2 image ids"):
        detections_to_coco([good], [3, 4], {1: 7})
    with pytest.raises(EvalError, match=r"outputs\['3'\]: image id: expected an int"):
        detections_to_coco([good], ["3"], {1: 7})


@pytest.mark.parametrize("value", ["0", "no", "false", 2])
def test_yes_no_fields_given_as_strings_are_refused(tmp_path, value):
    box = [[0.0, 0, 10, 10]]
    with pytest.raises(EvalError, match=r"gts\[1\]: difficult\[0\]: expected"):
        voc_eval({1: {"boxes": box, "labels": [1], "difficult": [value]}}, {1: {"boxes": box, "labels": [1], "scores": [0.5]}})
    with pytest.raises(EvalError, match=r"gts\[1\]: ignore\[0\]: expected"):
        citypersons_lamr({1: {"boxes": [[0.0, 0, 40, 100]], "ignore": [value]}}, {})
    p, d = _citypersons(tmp_path)
    d["annotations"][0]["ignore"] = value
    p.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r"annotations\[0\].ignore: expected 0 or 1"):
        load_coco(p, tmp_path / "images")
    d["annotations"][0].pop("ignore")
    d["annotations"][0]["iscrowd"] = value
    p.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r"annotations\[0\].iscrowd: expected 0 or 1"):
        load_coco(p, tmp_path / "images")


def test_numbers_given_as_strings_are_refused():
    with pytest.raises(EvalError, match=r"dets\[1\]: scores\[0\]: expected a number, got '0.5'"):
        voc_eval({1: {"boxes": [[0.0, 0, 10, 10]], "labels": [1]}}, {1: {"boxes": [[0.0, 0, 10, 10]], "labels": [1], "scores": ["0.5"]}})
    with pytest.raises(EvalError, match=r"gts\[1\]: boxes\[0\]: expected a number, got '0'"):
        voc_eval({1: {"boxes": [["0", 0, 10, 10]], "labels": [1]}}, {})
