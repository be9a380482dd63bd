"""Detection metrics, each equal to the reference evaluator of its benchmark on the same inputs.

- :func:`coco_evaluate`: pycocotools' ``COCOeval``; the twelve ``stats`` by name (``AP``, ``AP50``,
  ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ...).
- :func:`voc_eval`: the PASCAL VOC devkit's rules as its Python lineage has them (py-faster-rcnn's
  and detectron2's ``voc_eval``): boxes are inclusive pixel boxes (a box ``[x0, y0, x1, y1]`` covers
  ``x1 - x0 + 1`` pixels, so widths and intersections get ``+1``), a detection matches when its
  IoU is strictly greater than the threshold, ``difficult`` objects are neither found nor missed,
  and AP is either VOC2007's 11-point interpolation (``VOC07_AP50``, the paper's VOC2007 test) or
  the area under the precision envelope of VOC2010 and later (``VOC_AP50``); any other IoU is named
  in the key (``VOC_AP75``).
- :func:`ecp_lamr`: the EuroCity Persons benchmark's log-average miss rate (its ECPB toolkit):
  subsets ``reasonable``, ``small``, ``occluded``, ``all`` by height and occlusion/truncation tags;
  ground truth outside the subset (and riders, sitting or behind-glass people) is ignored and
  matched by IoU, crowd regions by the detection's intersection over its own area; detections
  outside the subset's height range (with a 1.25 margin) are dropped.
- :func:`citypersons_lamr`: the CityPersons protocol of ``eval_MR_multisetup.py``: setups
  ``Reasonable``, ``small``, ``heavy``, ``All`` by height and visible ratio; every ignored ground
  truth is matched by intersection over the detection's area.

Every function checks its input and names what is wrong (which image, which field, which index):
NaN scores or boxes, boxes with x1 < x0, arrays of different lengths, detections on an image the
ground truth does not list (``'1'`` is not ``1``), thresholds outside (0, 1].
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spnas.errors import EvalError

__all__ = [
    "COCO_STAT_NAMES",
    "coco_evaluate",
    "detections_to_coco",
    "voc_ap",
    "voc_eval",
    "voc_metric_name",
    "ecp_lamr",
    "citypersons_lamr",
    "ECP_SUBSETS",
    "CITYPERSONS_SETUPS",
    "LAMR_METRICS",
    "lower_is_better",
    "Metric",
]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def detections_to_coco(
    outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int], label_to_cat: dict[int, int]
) -> list[dict]:
    """Model outputs (``boxes`` xyxy, ``scores``, contiguous ``labels``) as COCO result dicts.

    Checked as every metric function checks: one output per image id, ids that are ints, finite
    boxes with x1 >= x0 and y1 >= y0, finite scores, labels that ``label_to_cat`` knows."""
    if len(outputs) != len(image_ids):
        raise EvalError(f"outputs: {len(outputs)} for {len(image_ids)} image ids; expected one per image")
    results = []
    for out, img_id in zip(outputs, image_ids, strict=True):
        where = f"outputs[{img_id!r}]"
        if not (isinstance(img_id, (int, np.integer)) and not isinstance(img_id, bool)):
            raise EvalError(f"{where}: image id: expected an int (COCO's image ids are ints), got {type(img_id).__name__}")
        if not isinstance(out, dict) or any(k not in out for k in ("boxes", "scores", "labels")):
            raise EvalError(f"{where}: expected a dict with boxes, scores and labels")
        boxes = out["boxes"].detach().to("cpu", torch.float64)
        n = len(boxes)
        _boxes(where, boxes.numpy())
        scores = _array(where, "scores", out["scores"].detach().to("cpu", torch.float64).numpy(), n).tolist()
        labels = _array(where, "labels", out["labels"].detach().to("cpu").numpy(), n, np.int64).tolist()
        unknown = [lab for lab in labels if int(lab) not in label_to_cat]
        if unknown:
            raise EvalError(f"{where}: labels[{labels.index(unknown[0])}]: {unknown[0]} is no class of the data (known: {sorted(label_to_cat)})")
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        for b, s, lab in zip(xywh, scores, labels):
            results.append({"image_id": int(img_id), "category_id": int(label_to_cat[int(lab)]), "bbox": b, "score": s})
    return results


def coco_evaluate(coco_gt: COCO, results: list[dict], *, image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCO box metrics of ``results`` against ``coco_gt``.

    With no detections every stat is 0, except -1 where the ground truth has nothing to find
    (pycocotools' convention; its ``loadRes`` refuses an empty list, so an empty index stands in).
    Every result is checked first (see :func:`_check_results`): pycocotools takes a NaN score, a
    negative width or a string image id without a word and returns a wrong number.
    """
    _check_results(coco_gt, results, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            dt = coco_gt.loadRes(results)
        else:
            dt = COCO()
            dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [], "categories": list(coco_gt.dataset["categories"])}
            dt.createIndex()
        ev = COCOeval(coco_gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STAT_NAMES, ev.stats)}


def _check_results(coco_gt: COCO, results: Any, image_ids: Sequence[int] | None) -> None:
    """COCO results as ``loadRes`` reads them: a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
    with ids the ground truth lists, four finite numbers with w, h >= 0 and a finite score."""
    if not isinstance(results, list):
        raise EvalError(f"results: expected a list of detection dicts, got {type(results).__name__}")
    imgs, cats = coco_gt.imgs, coco_gt.cats

    def known(kind: str, v: Any, table: dict) -> None:
        if isinstance(v, bool) or v not in table:
            same = [k for k in table if str(k) == str(v)]
            hint = f"; the ground truth has {same[0]!r} ({type(same[0]).__name__}), this is a {type(v).__name__}" if same else ""
            raise EvalError(f"{where}: {kind} {v!r} is not in the ground truth{hint}")

    for i, r in enumerate(results):
        where = f"results[{i}]"
        if not isinstance(r, dict):
            raise EvalError(f"{where}: expected a dict, got {type(r).__name__}")
        for k in ("image_id", "category_id", "bbox", "score"):
            if k not in r:
                raise EvalError(f"{where}: {k}: missing")
        known("image_id", r["image_id"], imgs)
        known("category_id", r["category_id"], cats)
        b = r["bbox"]
        if not (isinstance(b, (list, tuple)) and len(b) == 4
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in b)):
            raise EvalError(f"{where}: bbox: expected [x, y, w, h] of four finite numbers, got {str(b)[:60]}")
        if b[2] < 0 or b[3] < 0:
            raise EvalError(f"{where}: bbox: negative width or height: {list(b)} (expected [x, y, w, h], not [x0, y0, x1, y1])")
        sc = r["score"]
        if not (isinstance(sc, numbers.Real) and not isinstance(sc, bool) and math.isfinite(sc)):
            raise EvalError(f"{where}: score: expected a finite number, got {sc!r}")
    for v in image_ids or ():
        where = "image_ids"
        known("image id", v, imgs)


@dataclass(frozen=True)
class Metric:
    """A metric by name, and the one place its direction is decided: miss rates (any name with
    ``LAMR``) are minimised, AP and recall maximised. Everything that compares, ranks, plots or
    reports a metric asks this: :meth:`score` turns a value so that higher is better (a failure,
    None or NaN, is ``-inf``), :attr:`weights` are the DEAP fitness weights, :attr:`pick` takes the
    better of two values, :attr:`direction` says it in words."""

    name: str

    @property
    def lower_is_better(self) -> bool:
        return "LAMR" in self.name

    @property
    def direction(self) -> str:
        return "lower" if self.lower_is_better else "higher"

    @property
    def weights(self) -> tuple[float]:
        return (-1.0,) if self.lower_is_better else (1.0,)

    def score(self, value: float | None) -> float:
        if value is None or value != value:
            return -math.inf
        return -float(value) if self.lower_is_better else float(value)

    def pick(self, a: float, b: float) -> float:
        """The better of two values (for a best-so-far)."""
        return min(a, b) if self.lower_is_better else max(a, b)

    @property
    def worst(self) -> float:
        """The start of a best-so-far: beaten by any value."""
        return math.inf if self.lower_is_better else -math.inf


def lower_is_better(metric: str) -> bool:
    """Miss rates (any name with ``LAMR``) are minimised; AP and recall are maximised (:class:`Metric`)."""
    return Metric(metric).lower_is_better


# ------------------------------------------------------------------------------------- input checks
def _threshold(name: str, v: float) -> float:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 1):
        raise EvalError(f"{name}: expected a number in (0, 1], got {v!r}")
    return float(v)


def _no_strings(where: str, field: str, v: Any) -> None:
    """Numbers only: NumPy reads ``"0"`` and ``"no"`` as True and ``"1.5"`` as 1.5, silently."""
    raw = v if isinstance(v, np.ndarray) else np.asarray(v) if hasattr(v, "__array__") else np.asarray(v, dtype=object)
    if raw.dtype.kind in "USO":
        for idx in np.ndindex(raw.shape):
            x = raw[idx]
            if isinstance(x, (str, bytes)) or x is None:
                raise EvalError(f"{where}: {field}[{idx[0] if idx else 0}]: expected a number, got {x!r}")


def _array(where: str, field: str, v: Any, n: int | None, dtype: Any = float) -> np.ndarray:
    try:
        _no_strings(where, field, v)
    except ValueError:  # a ragged list: its shape is reported below
        pass
    if dtype is bool:  # a yes/no field: True/False or 0/1, not some other number
        try:
            raw = np.asarray(v, dtype=float)
        except (TypeError, ValueError) as e:
            raise EvalError(f"{where}: {field}: not numeric ({e})") from None
        odd = raw.ndim == 1 and ~np.isin(raw, (0.0, 1.0))
        if raw.ndim == 1 and odd.any():
            raise EvalError(f"{where}: {field}[{int(np.argmax(odd))}]: expected 0 or 1 (or a bool), got {float(raw[np.argmax(odd)]):g}")
    try:
        a = np.asarray(v, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise EvalError(f"{where}: {field}: not numeric ({e})") from None
    if a.ndim != 1 or (n is not None and len(a) != n):
        raise EvalError(f"{where}: {field}: expected {n if n is not None else 'a list of'} values, got shape {a.shape}")
    if dtype is float and not np.isfinite(a).all():
        raise EvalError(f"{where}: {field}[{int(np.argmin(np.isfinite(a)))}]: not a finite number")
    return a


def _boxes(where: str, v: Any) -> np.ndarray:
    try:
        _no_strings(where, "boxes", v)
        b = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as e:
        raise EvalError(f"{where}: boxes: not numeric ({e})") from None
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise EvalError(f"{where}: boxes: expected shape (N, 4) as [x0, y0, x1, y1], got {b.shape}")
    bad = ~np.isfinite(b).all(1)
    if bad.any():
        raise EvalError(f"{where}: boxes[{int(np.argmax(bad))}]: not finite: {b[np.argmax(bad)].tolist()}")
    neg = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if neg.any():
        raise EvalError(f"{where}: boxes[{int(np.argmax(neg))}]: x1 < x0 or y1 < y0: {b[np.argmax(neg)].tolist()} (expected [x0, y0, x1, y1])")
    return b


def _record(kind: str, img: Any, d: Any, fields: dict[str, Any]) -> dict[str, np.ndarray]:
    """One image's ground truth or detections, checked: ``fields`` maps a field to (dtype, default or None if required)."""
    where = f"{kind}[{img!r}]"
    if not isinstance(d, dict):
        raise EvalError(f"{where}: expected a dict of arrays, got {type(d).__name__}")
    unknown = set(d) - set(fields) - {"boxes"}
    if unknown:
        raise EvalError(f"{where}: unknown field {sorted(unknown)[0]!r}; expected some of {['boxes', *fields]}")
    if "boxes" not in d:
        raise EvalError(f"{where}: boxes: missing")
    out = {"boxes": _boxes(where, d["boxes"])}
    n = len(out["boxes"])
    for f, (dtype, default) in fields.items():
        if f in d:
            out[f] = _array(where, f, d[f], n, dtype)
        elif default is None:
            raise EvalError(f"{where}: {f}: missing")
        else:
            out[f] = np.full(n, default, dtype=dtype)
    return out


def _check_ids(gts: dict, dets: dict) -> None:
    if not isinstance(gts, dict) or not isinstance(dets, dict):
        raise EvalError("ground truth and detections: expected dicts keyed by image id")
    for img in dets:
        if img not in gts:
            same = [g for g in gts if str(g) == str(img)]
            hint = f"; the ground truth has {same[0]!r} ({type(same[0]).__name__}), this is a {type(img).__name__}" if same else ""
            raise EvalError(f"dets[{img!r}]: image id not in the ground truth{hint}")


# ------------------------------------------------------------------------------------------- VOC
def voc_metric_name(method: str = "area", iou_thresh: float = 0.5) -> str:
    """``VOC_AP50`` (area, VOC2010+), ``VOC07_AP50`` (11-point, VOC2007); the IoU is in the name."""
    return f"{'VOC07' if method == '11point' else 'VOC'}_AP{round(iou_thresh * 100):d}"


def voc_ap(recall: np.ndarray, precision: np.ndarray, method: str = "area") -> float:
    """AP from a precision/recall curve: ``"area"`` (VOC2010+) or ``"11point"`` (VOC2007).

    The 11 recall points are ``0, 0.1, ..., 1.0`` computed as the devkit computes them
    (``k * 0.1``: the fourth point is 0.30000000000000004, so a recall of exactly 3/10 misses it).
    """
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if method == "11point":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (precision[recall >= t].max() if (recall >= t).any() else 0.0) / 11.0
        return float(ap)
    if method != "area":
        raise EvalError(f"VOC AP method: expected 'area' or '11point', got {method!r}")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _iou_inclusive(b: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.maximum(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]) + 1.0, 0.0)
    inter = iw * ih
    union = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0) + (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0) - inter
    return inter / union


def voc_eval(
    gts: dict[Any, dict[str, Any]],
    dets: dict[Any, dict[str, Any]],
    *,
    iou_thresh: float = 0.5,
    method: str = "area",
) -> dict[str, Any]:
    """VOC mAP over the classes that have non-difficult ground truth, by the devkit's rules.

    ``gts[image] = {"boxes": (N, 4) [x0, y0, x1, y1] inclusive pixels, "labels": (N,), "difficult": (N,) bool}``
    and ``dets[image] = {"boxes", "scores", "labels"}``. Detections are ranked with
    ``np.argsort(-scores)`` over the detections of a class in image order, as the devkit ranks
    the lines of its result file. Returns ``{voc_metric_name(method, iou_thresh): mAP, "per_class": {label: AP}}``.
    """
    iou_thresh = _threshold("iou_thresh", iou_thresh)
    if method not in ("area", "11point"):
        raise EvalError(f"method: expected 'area' (VOC2010+) or '11point' (VOC2007), got {method!r}")
    _check_ids(gts, dets)
    G = {img: _record("gts", img, g, {"labels": (np.int64, None), "difficult": (bool, False)}) for img, g in gts.items()}
    D = {img: _record("dets", img, d, {"labels": (np.int64, None), "scores": (float, None)}) for img, d in dets.items()}
    classes = sorted({int(c) for g in G.values() for c in g["labels"][~g["difficult"]]})
    per_class: dict[int, float] = {}
    for c in classes:
        gt_c = {img: (g["boxes"][g["labels"] == c], g["difficult"][g["labels"] == c]) for img, g in G.items()}
        npos = sum(int((~difficult).sum()) for _, difficult in gt_c.values())
        found = {img: np.zeros(len(difficult), bool) for img, (_, difficult) in gt_c.items()}
        imgs, conf, boxes = [], [], []
        for img, d in D.items():
            m = d["labels"] == c
            imgs += [img] * int(m.sum())
            conf.append(d["scores"][m])
            boxes.append(d["boxes"][m])
        conf_a = np.concatenate(conf) if conf else np.zeros(0)
        boxes_a = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        order = np.argsort(-conf_a)  # the devkit's own ranking (numpy's default sort)
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for k, i in enumerate(order):
            gt_boxes, difficult = gt_c[imgs[i]]
            ovmax, j = -np.inf, -1
            if len(gt_boxes):
                ious = _iou_inclusive(boxes_a[i], gt_boxes)
                j = int(ious.argmax())
                ovmax = ious[j]
            if ovmax > iou_thresh:
                if not difficult[j]:
                    if not found[imgs[i]][j]:
                        tp[k] = 1.0
                        found[imgs[i]][j] = True
                    else:
                        fp[k] = 1.0
            else:
                fp[k] = 1.0
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        recall = tp_c / float(npos)
        precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
        per_class[c] = voc_ap(recall, precision, method)
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {voc_metric_name(method, iou_thresh): mean, "per_class": per_class}


# ------------------------------------------------------------------------------------------- LAMR
ECP_SUBSETS = ("reasonable", "small", "occluded", "all")
_ECP_MIN_HEIGHT = {"reasonable": 40, "small": 30, "occluded": 40, "all": 20}
_ECP_MAX_OCC = {"reasonable": 40, "small": 40, "occluded": 80, "all": 80}  # occlusion or truncation at or over it: ignored
_ECP_FPPI = np.power(10, np.linspace(-2, 0, 9))

# CityPersons (eval_MR_multisetup.py): (height range, visible-ratio range), both ends inclusive
CITYPERSONS_SETUPS = {
    "Reasonable": ((50, 1e10), (0.65, 1e10)),
    "small": ((50, 75), (0.65, 1e10)),
    "heavy": ((50, 1e10), (0.2, 0.65)),
    "All": ((20, 1e10), (0.2, 1e10)),
}
_CP_FPPI = np.array([0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0000])  # the script's rounded points
EXP_FILTER = 1.25  # detections outside [min_h / 1.25, max_h * 1.25] are dropped (both protocols)

LAMR_METRICS = {
    "LAMR": ("ecp", "reasonable"), "LAMR_small": ("ecp", "small"), "LAMR_occluded": ("ecp", "occluded"), "LAMR_all": ("ecp", "all"),
    "CP_LAMR": ("citypersons", "Reasonable"), "CP_LAMR_small": ("citypersons", "small"),
    "CP_LAMR_heavy": ("citypersons", "heavy"), "CP_LAMR_all": ("citypersons", "All"),
}


def _overlap(det: np.ndarray, gt: np.ndarray, *, over_detection: bool) -> float:
    """Continuous-box IoU of ``det`` and ``gt``, or with ``over_detection`` the intersection over the
    detection's own area (how both toolkits match an ignore region); 0 where they do not overlap."""
    iw = min(det[2], gt[2]) - max(det[0], gt[0])
    ih = min(det[3], gt[3]) - max(det[1], gt[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    det_area = (det[2] - det[0]) * (det[3] - det[1])
    return inter / (det_area if over_detection else det_area + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter)


def _clip(b: np.ndarray, size: tuple[float, float] | None) -> np.ndarray:
    if size is None:
        return b
    w, h = size
    return np.stack([np.clip(b[:, 0], 0, None), np.clip(b[:, 1], 0, None), np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)], 1)


def ecp_lamr(
    gts: dict[Any, dict[str, Any]],
    dets: dict[Any, dict[str, Any]],
    *,
    subset: str = "reasonable",
    sizes: dict[Any, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Log-average miss rate of one class (pedestrians) by the ECP benchmark's rules.

    ``gts[image] = {"boxes", "ignore": (N,) 0 | 1 | 2, "occlusion": (N,) percent, "truncation": (N,) percent}``:
    ``ignore`` 0 is a pedestrian to find, 1 one the benchmark ignores (a rider, a sitting person;
    matched by IoU), 2 a crowd region (matched by the detection's intersection over its own
    area); ``occlusion``/``truncation`` are the numbers of the ECP tags (``occluded>40`` is 40).
    A pedestrian outside ``subset`` becomes ``ignore`` 1. ``dets[image] = {"boxes", "scores"}``.
    ``sizes[image] = (width, height)`` clips boxes to the image, as the toolkit clips to 1920x1024.
    Every image to count must be a key of ``gts``. Returns ``{"lamr", "miss_rates" (at the 9 FPPI
    points), "fppi", "mr", "n_gt"}``; ``lamr`` is NaN when the subset holds no pedestrian.
    """
    if subset not in ECP_SUBSETS:
        raise EvalError(f"subset: expected one of {list(ECP_SUBSETS)}, got {subset!r}")
    _check_ids(gts, dets)
    min_h, max_occ = _ECP_MIN_HEIGHT[subset], _ECP_MAX_OCC[subset]
    scored: list[tuple[float, bool]] = []  # (score, true positive) of every detection not matched to an ignored box
    n_gt = 0
    for img, g0 in gts.items():
        g = _record("gts", img, g0, {"ignore": (np.int64, 0), "occlusion": (float, 0.0), "truncation": (float, 0.0)})
        if not np.isin(g["ignore"], (0, 1, 2)).all():
            raise EvalError(f"gts[{img!r}]: ignore: expected 0, 1 or 2, got {sorted(set(g['ignore'].tolist()) - {0, 1, 2})[0]}")
        size = (sizes or {}).get(img)
        boxes = _clip(g["boxes"], size)
        h = boxes[:, 3] - boxes[:, 1]
        outside = (h < min_h) | (g["occlusion"] >= max_occ) | (g["truncation"] >= max_occ)
        if subset == "small":
            outside |= h > 60
        if subset == "occluded":
            outside |= g["occlusion"] < 40
        ign = np.where((g["ignore"] == 0) & outside, 1, g["ignore"])
        n_gt += int((ign == 0).sum())
        d = _record("dets", img, dets.get(img, {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}), {"scores": (float, None)})
        db = _clip(d["boxes"], size)
        dh = db[:, 3] - db[:, 1]
        keep = dh > min_h / EXP_FILTER
        if subset == "small":
            keep &= dh < 60 * EXP_FILTER
        db, ds = db[keep], d["scores"][keep]
        order_g = np.argsort(ign, kind="stable")  # pedestrians first, then ignored boxes, then crowd regions
        boxes, ign = boxes[order_g], ign[order_g]
        matched = np.zeros(len(boxes), bool)
        for k in sorted(range(len(ds)), key=lambda i: -ds[i]):  # a stable sort: ties keep their order
            b = db[k]
            best, best_j, with_ignore = None, -1, False
            for j in range(len(boxes)):
                if best_j >= 0 and not with_ignore and ign[j]:
                    break  # matched to a pedestrian: ignored boxes cannot take it
                if matched[j]:
                    continue
                iou = _overlap(b, boxes[j], over_detection=ign[j] == 2)
                if iou < 0.5 or (best is not None and iou < best):
                    continue
                best, best_j = iou, j
                with_ignore = bool(ign[j])
            if best_j >= 0 and with_ignore:
                continue  # on an ignored box or region: neither found nor false
            if best_j >= 0:
                matched[best_j] = True
            scored.append((float(ds[k]), best_j >= 0))
    if n_gt == 0:
        return {"lamr": float("nan"), "miss_rates": np.full(9, np.nan), "fppi": np.zeros(0), "mr": np.zeros(0), "n_gt": 0}
    scored.sort(key=lambda t: -t[0])
    tp = np.cumsum([t for _, t in scored]) if scored else np.zeros(0)
    fp = np.cumsum([not t for _, t in scored]) if scored else np.zeros(0)
    recall = tp / n_gt
    fppi = fp / len(gts)
    found = np.zeros(len(_ECP_FPPI))
    for i, ref in enumerate(_ECP_FPPI):
        j = np.flatnonzero(fppi <= ref)
        found[i] = recall[j[-1]] if j.size else 0.0
    miss = 1.0 - found
    return {"lamr": float(np.exp(np.mean(np.log(np.maximum(1e-10, miss))))), "miss_rates": miss, "fppi": fppi, "mr": 1.0 - recall, "n_gt": n_gt}


def citypersons_lamr(
    gts: dict[Any, dict[str, Any]],
    dets: dict[Any, dict[str, Any]],
    *,
    setup: str = "Reasonable",
    max_dets: int = 1000,
) -> dict[str, Any]:
    """Log-average miss rate by the CityPersons script (``eval_MR_multisetup.py``), one setup.

    ``gts[image] = {"boxes", "height": (N,) (default: the box's), "vis_ratio": (N,) (default 1), "ignore": (N,) bool}``;
    a box outside the setup's height or visible-ratio range (ends included) is ignored, and every
    ignored box matches by the detection's intersection over its own area. ``dets[image] = {"boxes", "scores"}``:
    the ``max_dets`` best per image, then those of height in ``[min_h / 1.25, max_h * 1.25)``.
    Images are taken in sorted id order, as the script does; the false positives per image count
    every image in ``gts``. Kept from the reference: an FPPI point below the first detection's
    FPPI reads the final recall (``recall[-1]``), and a miss rate of 0 is not floored. Returns
    ``{"lamr", "miss_rates", "n_gt"}``; ``lamr`` is -1 when the setup holds no person (the script's value).
    """
    if setup not in CITYPERSONS_SETUPS:
        raise EvalError(f"setup: expected one of {list(CITYPERSONS_SETUPS)}, got {setup!r}")
    _check_ids(gts, dets)
    (h_lo, h_hi), (v_lo, v_hi) = CITYPERSONS_SETUPS[setup]
    try:
        images = sorted(gts)
    except TypeError:
        raise EvalError("gts: image ids must be of one comparable type (they are sorted, as the script sorts them)") from None
    all_scores, all_tp, all_ign = [], [], []
    n_gt = 0
    for img in images:
        g = _record("gts", img, gts[img], {"height": (float, np.nan), "vis_ratio": (float, 1.0), "ignore": (bool, False)})
        boxes = g["boxes"]
        height = np.where(np.isnan(g["height"]), boxes[:, 3] - boxes[:, 1], g["height"]) if len(boxes) else g["height"]
        ign = g["ignore"] | (height < h_lo) | (height > h_hi) | (g["vis_ratio"] < v_lo) | (g["vis_ratio"] > v_hi)
        d = _record("dets", img, dets.get(img, {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}), {"scores": (float, None)})
        if not len(boxes) and not len(d["boxes"]):
            continue  # the script skips an image with neither (it still counts in the FPPI)
        order_g = np.argsort(ign.astype(int), kind="mergesort")
        boxes, ign = boxes[order_g], ign[order_g]
        n_gt += int((~ign).sum())
        order = np.argsort(-d["scores"], kind="mergesort")[:max_dets]
        db, ds = d["boxes"][order], d["scores"][order]
        dh = db[:, 3] - db[:, 1]
        keep = (dh >= h_lo / EXP_FILTER) & (dh < h_hi * EXP_FILTER)
        db, ds = db[keep], ds[keep]
        matched = np.zeros(len(boxes), bool)
        for b, s in zip(db, ds):
            best_iou, best_j, best_is_gt = 0.5, -1, False
            for j in range(len(boxes)):
                if matched[j]:
                    continue
                if best_j >= 0 and ign[j]:
                    break
                iou = _overlap(b, boxes[j], over_detection=bool(ign[j]))
                if iou < best_iou:
                    continue
                best_iou, best_j, best_is_gt = iou, j, not ign[j]
            if best_is_gt:
                matched[best_j] = True
            all_scores.append(s)
            all_tp.append(best_is_gt)
            all_ign.append(best_j >= 0 and not best_is_gt)
    if n_gt == 0:
        return {"lamr": -1.0, "miss_rates": np.full(9, np.nan), "n_gt": 0}
    scores = np.asarray(all_scores, float)
    order = np.argsort(-scores, kind="mergesort")
    tp = np.asarray(all_tp, bool)[order]
    ign = np.asarray(all_ign, bool)[order]
    tp, fp = tp[~ign], ~tp[~ign]
    recall = np.cumsum(tp) / n_gt
    fppi = np.cumsum(fp) / len(gts)
    found = np.zeros(len(_CP_FPPI))
    if len(recall):
        idx = np.searchsorted(fppi, _CP_FPPI, side="right") - 1
        found = recall[idx]  # idx -1 reads the last recall, as the script's list indexing does
    miss = 1.0 - found
    with np.errstate(divide="ignore"):
        value = float(np.exp(np.mean(np.log(miss))))
    return {"lamr": value, "miss_rates": miss, "n_gt": n_gt}
