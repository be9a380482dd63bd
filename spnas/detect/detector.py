"""``build_detector``: FPN + RPN + Cascade (or Faster) R-CNN on a compiled backbone.

The FPN runs over every stage output (plus a max-pool level when there are fewer than 5); anchor
sizes follow the strides (``anchor_base * stride``) and the RoI pooler's levels follow the stage
outputs, so a net that ``add_stage`` grew just works. Everything else is torchvision's:
``GeneralizedRCNNTransform``, ``RPNHead``/``RegionProposalNetwork``, ``MultiScaleRoIAlign``.

>>> model = build_detector(parse("BB(11,d1,d1,d1)"), num_classes=4, head="cascade", preset="lean")
>>> model.train(); losses = model(images, targets)
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks, resize_boxes
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from spnas.detect.cascade import CascadeRoIHeads
from spnas.detect.compile import Backbone, compile_backbone
from spnas.errors import ConfigError
from spnas.ir import Arch

__all__ = ["DetectorOptions", "PRESETS", "IMAGE_MEAN", "IMAGE_STD", "build_detector", "DetectionBackbone", "MultiScaleTransform",
           "carry_over"]

# The detector's input normalisation (torchvision's, ImageNet statistics); reignite pre-trains with the same.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetectorOptions:
    """Sizes of the detector; ``PRESETS['lean']`` suits small images on a CPU."""

    min_size: int = 800
    max_size: int = 1333
    fpn_channels: int = 256
    anchor_base: int = 8
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    representation_size: int = 1024
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    cascade_iou: tuple[float, ...] = (0.5, 0.6, 0.7)
    cascade_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    # multi-scale training: each training image is resized to (min_size, max_size) x a factor drawn from
    # these (the paper's COCO training uses 0.8-1.2x: [0.8, 0.9, 1.0, 1.1, 1.2]); empty: one scale
    train_scales: tuple[float, ...] = ()
    # normalisation in training: "bn" (each device's batch), "frozen" (torchvision's FrozenBatchNorm2d) or
    # "sync" (statistics over every rank of a data-parallel candidate); see spnas.detect.distributed
    norm: str = "bn"


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "lean": dict(
        min_size=256,
        max_size=256,
        fpn_channels=64,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=128,
        representation_size=256,
    ),
}


def resolve_options(preset: str = "default", **overrides: Any) -> DetectorOptions:
    """Options of ``preset`` with ``overrides``; an unknown name raises ConfigError naming it."""
    if preset not in PRESETS:
        raise ConfigError(f"detector preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    names = {f.name for f in dataclasses.fields(DetectorOptions)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ConfigError(f"detector option {bad[0]!r} is unknown; expected one of {sorted(names)}")
    values = {**PRESETS[preset], **overrides}
    from spnas.detect.distributed import NORMS

    if values.get("norm", "bn") not in NORMS:
        raise ConfigError(f"detector option norm: expected one of {list(NORMS)}, got {values['norm']!r}")
    for k in ("aspect_ratios", "cascade_iou", "cascade_loss_weights", "train_scales"):
        if k in values:
            values[k] = tuple(values[k])
    return DetectorOptions(**values)


class DetectionBackbone(nn.Module):
    """Compiled body + FPN, a drop-in for torchvision's ``BackboneWithFPN``.

    ``out_channels`` is the FPN's; the levels are named as torchvision names them, ``'0'``, ``'1'``, …
    fine to coarse, plus ``'pool'`` (a max-pooled level) below 5 stages, so torchvision's
    ``FasterRCNN(backbone, num_classes)`` and ``MaskRCNN(backbone, num_classes)`` work with their
    default anchors and RoI poolers. ``stage_names`` keeps the body's own names (``res2``, …).
    """

    def __init__(self, body: Backbone, fpn_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.stage_names = list(body.output_shape())
        self.names = [str(i) for i in range(len(self.stage_names))]  # the RoI pooler's levels: the stages, not 'pool'
        self.strides = [s for _, s in body.output_shape().values()]
        extra = LastLevelMaxPool() if len(self.names) < 5 else None
        self.fpn = FeaturePyramidNetwork(body.channels_list, fpn_channels, extra_blocks=extra)
        self.out_channels = fpn_channels
        self.level_strides = self.strides + ([self.strides[-1] * 2] if extra is not None else [])

    def forward(self, x: Tensor) -> Dict[str, Tensor]:  # noqa: UP006 - TorchScript reads typing's Dict
        feats = self.body(x)
        levels: Dict[str, Tensor] = OrderedDict()  # noqa: UP006
        for name, stage in zip(self.names, self.stage_names):
            levels[name] = feats[stage]
        return self.fpn(levels)


class MultiScaleTransform(GeneralizedRCNNTransform):
    """torchvision's ``GeneralizedRCNNTransform`` with multi-scale training: in training, each image is
    resized to ``min_size`` and ``max_size`` both times a factor drawn uniformly from ``train_scales``
    (torch's generator, so a seeded run repeats). torchvision's own ``min_size`` tuple scales only the
    short side, which a ``max_size`` cap undoes on square inputs. In eval mode it is torchvision's.
    """

    def __init__(self, *args: Any, train_scales: tuple[float, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_scales = [float(f) for f in train_scales]
        self.keys: list[int] | None = None  # the images' keys for this step (training sets them): a draw per key
        self.drawn = 0

    @torch.jit.unused  # training only: a scripted (exported) detector never draws a scale
    def _scale(self) -> float:
        """The next image's factor: keyed by its place in the global batch where training set keys (the same
        image draws the same scale on any rank), else from torch's generator."""
        if self.keys is not None and self.drawn < len(self.keys):
            g = torch.Generator().manual_seed(self.keys[self.drawn] % (2**63 - 1))
            self.drawn += 1
            return self.train_scales[int(torch.randint(len(self.train_scales), (1,), generator=g).item())]
        return self.train_scales[int(torch.empty(1).uniform_(0.0, float(len(self.train_scales))).item())]

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        if not (self.training and self.train_scales):
            return super().resize(image, target)
        h, w = image.shape[-2:]
        f = self._scale()
        image, target = _resize_image_and_masks(image, self.min_size[-1] * f, self.max_size * f, target, self.fixed_size)
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target


def build_detector(arch: Arch, num_classes: int, head: str = "cascade", *, preset: str = "default", **options: Any) -> FasterRCNN:
    """A torchvision ``GeneralizedRCNN`` whose backbone is ``arch`` compiled, with an FPN.

    ``num_classes`` counts the object classes (background is added). ``head`` is ``cascade``
    (3-stage Cascade R-CNN) or ``faster``. ``options`` override :class:`DetectorOptions` fields.
    """
    if head not in ("cascade", "faster"):
        raise ConfigError(f"detector head: expected 'cascade' or 'faster', got {head!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes: expected a positive int, got {num_classes!r}")
    o = resolve_options(preset, **options)
    backbone = DetectionBackbone(compile_backbone(arch), o.fpn_channels)
    sizes = tuple((o.anchor_base * s,) for s in backbone.level_strides)
    anchors = AnchorGenerator(sizes, (tuple(o.aspect_ratios),) * len(sizes))
    pool = MultiScaleRoIAlign(featmap_names=backbone.names, output_size=7, sampling_ratio=2)
    model = _faster(backbone, num_classes, anchors, pool, o)
    if head == "cascade":
        model.roi_heads = CascadeRoIHeads(
            box_roi_pool=pool,
            in_channels=o.fpn_channels,
            num_classes=num_classes + 1,
            iou_thresholds=o.cascade_iou,
            stage_loss_weights=o.cascade_loss_weights,
            bbox_reg_weights=[(10.0 * (i + 1), 10.0 * (i + 1), 5.0 * (i + 1), 5.0 * (i + 1)) for i in range(len(o.cascade_iou))],
            representation_size=o.representation_size,
            batch_size_per_image=o.box_batch_size_per_image,
            score_thresh=o.box_score_thresh,
            nms_thresh=o.box_nms_thresh,
            detections_per_img=o.box_detections_per_img,
        )
    if o.train_scales:
        t = model.transform
        model.transform = MultiScaleTransform(t.min_size, t.max_size, t.image_mean, t.image_std, train_scales=o.train_scales)
    if o.norm != "bn":
        from spnas.detect.distributed import set_norm

        set_norm(model, o.norm)
    model.spnas_head = head
    model.spnas_options = o
    return model


def _faster(backbone: DetectionBackbone, num_classes: int, anchors: AnchorGenerator, pool: MultiScaleRoIAlign, o: DetectorOptions) -> FasterRCNN:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    box_head = TwoMLPHead(o.fpn_channels * 7 * 7, o.representation_size)
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=o.min_size,
        max_size=o.max_size,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=o.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=o.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=o.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=o.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=o.rpn_batch_size_per_image,
        box_roi_pool=pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(o.representation_size, num_classes + 1),
        box_batch_size_per_image=o.box_batch_size_per_image,
        box_score_thresh=o.box_score_thresh,
        box_nms_thresh=o.box_nms_thresh,
        box_detections_per_img=o.box_detections_per_img,
    )


def carry_over(parent_state: dict[str, Tensor], model: nn.Module) -> list[str]:
    """Copy a parent detector's FPN and head weights into ``model`` where shapes allow.

    The backbone body is skipped (its weights come from the Arch). An FPN lateral whose input
    channels were replicated by ``widen`` gets its weights split among the replicas, so it computes
    what it did; a lateral of a new stage starts at zero. Returns the keys copied.
    """
    own = model.state_dict()
    copied = []
    with torch.no_grad():
        for k, v in own.items():
            if k.startswith("backbone.body."):
                continue
            p = parent_state.get(k)
            if p is None:
                if k.startswith("backbone.fpn.inner_blocks.") and k.endswith(("weight", "bias")):
                    v.zero_()  # a new level: the lateral starts at zero
                continue
            if p.shape == v.shape:
                v.copy_(p)
                copied.append(k)
            elif k.startswith("backbone.fpn.inner_blocks.") and p.dim() == 4 and v.shape[1] % p.shape[1] == 0:
                reps = v.shape[1] // p.shape[1]
                v.copy_(p.repeat(1, reps, 1, 1) / reps)
                copied.append(k)
    return copied
