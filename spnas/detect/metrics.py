"""Detection metrics: COCO AP family (pycocotools), VOC AP50, and ECP log-average miss rate.

- :func:`coco_evaluate` runs pycocotools' ``COCOeval`` on results in COCO format; the twelve
  ``stats`` come back by name (``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, …).
- :func:`voc_ap` / :func:`voc_eval`: VOC AP at IoU 0.5, either ``"area"`` (VOC2010 and later: the
  area under the monotone precision envelope) or ``"11point"`` (VOC2007). Difficult objects are
  ignored: matching one is neither a true nor a false positive. Boxes are continuous (no +1).
- :func:`lamr`: the ECP/Caltech log-average miss rate: miss rate sampled at 9 FPPI points
  log-spaced in [1e-2, 1], IoU 0.5, ground truth outside the subset (height, occlusion) or
  flagged ignore becomes an ignore region, and a detection is ignored when it lies in one
  (intersection over the detection's area >= 0.5). Subsets: :data:`ECP_SUBSETS`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "COCO_STAT_NAMES",
    "coco_evaluate",
    "detections_to_coco",
    "voc_ap",
    "voc_eval",
    "lamr",
    "ECP_SUBSETS",
    "Subset",
]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def detections_to_coco(
    outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int], label_to_cat: dict[int, int]
) -> list[dict]:
    """Model outputs (``boxes`` xyxy, ``scores``, contiguous ``labels``) as COCO result dicts."""
    results = []
    for out, img_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().to("cpu", torch.float64)
        scores = out["scores"].detach().to("cpu", torch.float64).tolist()
        labels = out["labels"].detach().to("cpu").tolist()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        for b, s, lab in zip(xywh, scores, labels):
            results.append({"image_id": int(img_id), "category_id": int(label_to_cat[int(lab)]), "bbox": b, "score": s})
    return results


def coco_evaluate(coco_gt: COCO, results: list[dict], *, image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCO box metrics of ``results`` against ``coco_gt``.

    With no detections every stat is 0, except -1 where the ground truth has nothing to find
    (pycocotools' convention; its ``loadRes`` refuses an empty list, so an empty index stands in).
    """
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


# ------------------------------------------------------------------------------------------- VOC
def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def voc_ap(recall: np.ndarray, precision: np.ndarray, method: str = "area") -> float:
    """AP from a precision/recall curve: ``"area"`` (VOC2010+) or ``"11point"`` (VOC2007)."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if method == "11point":
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]))
    if method != "area":
        raise ValueError(f"VOC AP method: expected 'area' or '11point', got {method!r}")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def voc_eval(
    gts: dict[int, dict[str, np.ndarray]],
    dets: dict[int, dict[str, np.ndarray]],
    *,
    iou_thresh: float = 0.5,
    method: str = "area",
) -> dict[str, float | dict[int, float]]:
    """VOC mAP over classes that have (non-difficult) ground truth.

    ``gts[image_id] = {"boxes": (N, 4) xyxy, "labels": (N,), "difficult": (N,) bool}`` and
    ``dets[image_id] = {"boxes", "scores", "labels"}``. Ties in score keep their input order.
    """
    classes = sorted({int(c) for g in gts.values() for c, d in zip(g["labels"], g.get("difficult", np.zeros(len(g["labels"]), bool))) if not d})
    per_class: dict[int, float] = {}
    for c in classes:
        n_pos = 0
        gt_c = {}
        for img, g in gts.items():
            m = np.asarray(g["labels"]) == c
            diff = np.asarray(g.get("difficult", np.zeros(len(g["labels"]), bool)), bool)[m]
            gt_c[img] = (np.asarray(g["boxes"], float).reshape(-1, 4)[m], diff, np.zeros(m.sum(), bool))
            n_pos += int((~diff).sum())
        entries = []
        for img, d in dets.items():
            m = np.asarray(d["labels"]) == c
            for b, s in zip(np.asarray(d["boxes"], float).reshape(-1, 4)[m], np.asarray(d["scores"], float)[m]):
                entries.append((s, img, b))
        order = sorted(range(len(entries)), key=lambda i: -entries[i][0])  # stable: ties keep input order
        tp, fp = [], []
        for i in order:
            _, img, b = entries[i]
            boxes, diff, used = gt_c.get(img, (np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0, bool)))
            if len(boxes):
                ious = _iou(b, boxes)
                j = int(ious.argmax())
                if ious[j] >= iou_thresh:
                    if diff[j]:
                        continue  # a difficult object: ignored
                    if not used[j]:
                        used[j] = True
                        tp.append(1)
                        fp.append(0)
                        continue
            tp.append(0)
            fp.append(1)
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        recall = tp_c / max(n_pos, 1)
        precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(float).eps)
        per_class[c] = voc_ap(recall, precision, method) if len(tp) else 0.0
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"AP50": mean, "per_class": per_class}


# ------------------------------------------------------------------------------------------- ECP
@dataclass(frozen=True)
class Subset:
    """Ground truth counts in a subset when its height and occlusion lie in these ranges."""

    min_height: float
    max_height: float
    min_occlusion: float
    max_occlusion: float

    def contains(self, height: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
        return (height >= self.min_height) & (height < self.max_height) & (occlusion >= self.min_occlusion) & (occlusion < self.max_occlusion)


ECP_SUBSETS = {
    "reasonable": Subset(40, np.inf, 0.0, 0.4),
    "small": Subset(30, 60, 0.0, 0.4),
    "occluded": Subset(40, np.inf, 0.4, 0.8),
    "all": Subset(20, np.inf, 0.0, np.inf),
}
FPPI_POINTS = np.logspace(-2, 0, 9)


def lamr(
    gts: dict[int, dict[str, np.ndarray]],
    dets: dict[int, dict[str, np.ndarray]],
    *,
    subset: str | Subset = "reasonable",
    iou_thresh: float = 0.5,
    ignore_thresh: float = 0.5,
) -> dict[str, float | np.ndarray]:
    """Log-average miss rate of one class (pedestrians, say) as the ECP benchmark defines it.

    ``gts[image] = {"boxes": xyxy, "occlusion": (N,) in [0, 1] (default 0), "ignore": (N,) bool}``,
    ``dets[image] = {"boxes", "scores"}``; every image to count must be a key of ``gts`` (it may
    hold no boxes). Returns ``{"lamr", "miss_rates" (at the 9 FPPI points), "fppi", "mr"}``.
    """
    sub = ECP_SUBSETS[subset] if isinstance(subset, str) else subset
    scored = []  # (score, is_tp) over all non-ignored detections
    n_gt = 0
    for img, g in gts.items():
        boxes = np.asarray(g.get("boxes", np.zeros((0, 4))), float).reshape(-1, 4)
        h = boxes[:, 3] - boxes[:, 1]
        occ = np.asarray(g.get("occlusion", np.zeros(len(boxes))), float)
        ign = np.asarray(g.get("ignore", np.zeros(len(boxes), bool)), bool) | ~sub.contains(h, occ)
        n_gt += int((~ign).sum())
        d = dets.get(img, {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)})
        db = np.asarray(d["boxes"], float).reshape(-1, 4)
        ds = np.asarray(d["scores"], float)
        used = np.zeros(len(boxes), bool)
        for k in sorted(range(len(ds)), key=lambda i: -ds[i]):
            b = db[k]
            if len(boxes):
                ious = _iou(b, boxes)
                cand = np.where(~ign & ~used & (ious >= iou_thresh))[0]
                if len(cand):
                    j = cand[np.argmax(ious[cand])]
                    used[j] = True
                    scored.append((ds[k], True))
                    continue
                if ign.any():
                    ib = boxes[ign]
                    ix = np.clip(np.minimum(b[2], ib[:, 2]) - np.maximum(b[0], ib[:, 0]), 0, None)
                    iy = np.clip(np.minimum(b[3], ib[:, 3]) - np.maximum(b[1], ib[:, 1]), 0, None)
                    area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-12)
                    if ((ix * iy) / area >= ignore_thresh).any():
                        continue  # inside an ignore region: neither true nor false positive
            scored.append((ds[k], False))
    n_img = max(len(gts), 1)
    if n_gt == 0:
        return {"lamr": float("nan"), "miss_rates": np.full(9, np.nan), "fppi": np.zeros(0), "mr": np.zeros(0)}
    scored.sort(key=lambda t: -t[0])
    tp = np.cumsum([t for _, t in scored]) if scored else np.zeros(0)
    fp = np.cumsum([not t for _, t in scored]) if scored else np.zeros(0)
    mr = 1.0 - tp / n_gt
    fppi = fp / n_img
    miss = np.ones(len(FPPI_POINTS))
    for i, ref in enumerate(FPPI_POINTS):
        idx = np.where(fppi <= ref)[0]
        if len(idx):
            miss[i] = mr[idx[-1]]
    value = float(np.exp(np.mean(np.log(np.maximum(miss, 1e-10)))))
    return {"lamr": value, "miss_rates": miss, "fppi": fppi, "mr": mr}
