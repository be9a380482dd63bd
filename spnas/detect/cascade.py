"""Cascade R-CNN box heads (Cai & Vasconcelos, CVPR 2018) from torchvision's parts.

A drop-in for torchvision's ``RoIHeads`` in ``GeneralizedRCNN``: ``forward(features, proposals,
image_shapes, targets) -> (detections, losses)``. Each stage has its own two-FC head, a classifier
and a class-agnostic box regressor, its own IoU threshold and box-coder weights. In training,
stage 1 samples proposals (+ ground truth) as Faster R-CNN does; later stages take the previous
stage's regressed boxes, detached, and relabel them at a higher IoU. At test time the class
scores of all stages are averaged and the boxes come from the last stage.

The number of stages is the length of the per-stage lists (keyword-only). Losses are
``loss_classifier_stage{k}`` and ``loss_box_reg_stage{k}``, already scaled by the stage weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, boxes as box_ops

__all__ = ["CascadeRoIHeads", "cascade_box_loss"]


class _AgnosticPredictor(nn.Module):
    """Class scores over ``num_classes`` (background included) and one box delta per RoI."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


def cascade_box_loss(
    class_logits: Tensor, box_regression: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Cross-entropy over classes and smooth-L1 (beta 1/9) on positives, class-agnostic deltas.

    Normalised by the number of sampled RoIs, as torchvision's ``fastrcnn_loss``.
    """
    labels_t = torch.cat(labels, 0)
    targets = torch.cat(regression_targets, 0)
    if labels_t.numel() == 0:  # every box of the stage was empty and dropped: no loss, and no NaN from a mean of nothing
        return class_logits.sum() * 0.0, box_regression.sum() * 0.0
    cls_loss = F.cross_entropy(class_logits, labels_t)
    pos = torch.where(labels_t > 0)[0]
    box_loss = F.smooth_l1_loss(box_regression[pos], targets[pos], beta=1 / 9, reduction="sum")
    return cls_loss, box_loss / max(labels_t.numel(), 1)


class CascadeRoIHeads(nn.Module):
    """Multi-stage box heads; see the module docstring."""

    def __init__(
        self,
        *,
        box_roi_pool: MultiScaleRoIAlign,
        in_channels: int,
        num_classes: int,
        iou_thresholds: Sequence[float] = (0.5, 0.6, 0.7),
        bbox_reg_weights: Sequence[Sequence[float]] = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)),
        stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25),
        representation_size: int = 1024,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        n = len(iou_thresholds)
        if not (len(bbox_reg_weights) == len(stage_loss_weights) == n) or n == 0:
            raise ValueError(
                f"expected equally long per-stage lists, got iou_thresholds={list(iou_thresholds)}, "
                f"bbox_reg_weights={list(bbox_reg_weights)}, stage_loss_weights={list(stage_loss_weights)}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background: expected >= 2, got {num_classes}")
        self.box_roi_pool = box_roi_pool
        res = box_roi_pool.output_size[0] if isinstance(box_roi_pool.output_size, (list, tuple)) else box_roi_pool.output_size
        self.box_heads = nn.ModuleList(TwoMLPHead(in_channels * res * res, representation_size) for _ in range(n))
        self.box_predictors = nn.ModuleList(_AgnosticPredictor(representation_size, num_classes) for _ in range(n))
        self.box_coders = [det_utils.BoxCoder(tuple(float(v) for v in w)) for w in bbox_reg_weights]
        self.proposal_matchers = [det_utils.Matcher(t, t, allow_low_quality_matches=False) for t in iou_thresholds]
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    @property
    def num_stages(self) -> int:
        return len(self.box_heads)

    # ----------------------------------------------------------------------------- training targets
    def _label(self, stage: int, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
        """Labels (0 = background) and regression targets of ``proposals`` at this stage's IoU."""
        labels, reg_targets = [], []
        for props, t in zip(proposals, targets):
            gt_boxes, gt_labels = t["boxes"].to(props.dtype), t["labels"]
            if gt_boxes.numel() == 0 or props.shape[0] == 0:  # no object, or no box left (all dropped as empty)
                labels.append(torch.zeros(props.shape[0], dtype=torch.int64, device=props.device))
                reg_targets.append(torch.zeros_like(props))
                continue
            match = self.proposal_matchers[stage](box_ops.box_iou(gt_boxes, props))
            idx = match.clamp(min=0)
            lab = gt_labels[idx].to(torch.int64)
            lab[match < 0] = 0
            labels.append(lab)
            reg_targets.append(self.box_coders[stage].encode_single(gt_boxes[idx], props))
        return labels, reg_targets

    def _sample(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> list[Tensor]:
        """Stage 1: add the ground truth to the proposals and sample positives/negatives."""
        proposals = [torch.cat([p, t["boxes"].to(p.dtype)]) for p, t in zip(proposals, targets)]
        labels, _ = self._label(0, proposals, targets)
        pos, neg = self.fg_bg_sampler(labels)
        return [p[torch.where(ps | ng)[0]] for p, ps, ng in zip(proposals, pos, neg)]

    # ------------------------------------------------------------------------------------- forward
    def _decode(self, k: int, deltas: Tensor, proposals: list[Tensor], image_shapes: list[tuple[int, int]]) -> list[Tensor]:
        boxes = self.box_coders[k].decode(deltas, proposals).reshape(-1, 4)
        out: list[Tensor] = []
        for b, shape in zip(boxes.split([p.shape[0] for p in proposals]), image_shapes):
            out.append(box_ops.clip_boxes_to_image(b, shape))
        return out

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,  # noqa: UP007 - TorchScript reads typing's Optional
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets should not be None in training mode")
            for t in targets:
                if not t["boxes"].is_floating_point():
                    raise ValueError(f"target boxes must be floating point, got {t['boxes'].dtype}")
            proposals = self._sample([p.detach() for p in proposals], targets)
        # every stage's outputs first; then one branch into the losses or the detections
        stage_proposals: list[list[Tensor]] = []
        stage_logits: list[Tensor] = []
        stage_deltas: list[Tensor] = []
        deltas = torch.empty(0)
        for k, (head, predictor) in enumerate(zip(self.box_heads, self.box_predictors)):
            if k > 0:  # the previous stage's boxes, detached, are this stage's proposals
                proposals = [b.detach() for b in self._decode(k - 1, deltas, proposals, image_shapes)]
                if self.training:  # as detectron2's cascade: a box the regression made empty (after clipping) is dropped;
                    # not at inference, where every stage scores the same boxes
                    proposals = [p[(p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])] for p in proposals]
            logits, deltas = predictor(head(self.box_roi_pool(features, proposals, image_shapes)))
            stage_proposals.append(proposals)
            stage_logits.append(logits)
            stage_deltas.append(deltas)
        losses: dict[str, Tensor] = {}
        if self.training:
            assert targets is not None
            for k in range(len(stage_logits)):
                labels, reg_targets = self._label(k, stage_proposals[k], targets)
                cls_loss, box_loss = cascade_box_loss(stage_logits[k], stage_deltas[k], labels, reg_targets)
                w = self.stage_loss_weights[k]
                losses[f"loss_classifier_stage{k + 1}"] = cls_loss * w
                losses[f"loss_box_reg_stage{k + 1}"] = box_loss * w
            return [], losses
        scores = torch.stack([F.softmax(x, -1) for x in stage_logits]).mean(0)
        boxes = self._decode(len(stage_logits) - 1, deltas, proposals, image_shapes)
        return self._postprocess(scores, boxes), losses

    def _postprocess(self, scores: Tensor, boxes: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per-class score threshold, NMS per class, top-k: torchvision's postprocess, agnostic boxes."""
        results: list[dict[str, Tensor]] = []
        num_classes = scores.shape[-1]
        for s, b in zip(scores.split([x.shape[0] for x in boxes]), boxes):
            s = s[:, 1:]
            labels = torch.arange(1, num_classes, device=s.device).view(1, -1).expand_as(s).reshape(-1)
            bb = b.unsqueeze(1).expand(-1, num_classes - 1, 4).reshape(-1, 4)
            s = s.reshape(-1)
            keep = torch.where(s > self.score_thresh)[0]
            bb, s, labels = bb[keep], s[keep], labels[keep]
            keep = box_ops.remove_small_boxes(bb, min_size=1e-2)
            bb, s, labels = bb[keep], s[keep], labels[keep]
            keep = box_ops.batched_nms(bb, s, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": bb[keep], "labels": labels[keep], "scores": s[keep]})  # torchvision's order (ONNX outputs)
        return results
