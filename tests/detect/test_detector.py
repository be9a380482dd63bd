import numpy as np
import pytest
import torch

from spnas.detect.cascade import CascadeRoIHeads
from spnas.detect.data import generate_shapes, load_coco
from spnas.detect.detector import build_detector, carry_over
from spnas.detect.train import TrainConfig, evaluate, load_checkpoint, save_checkpoint, train_detector
from spnas.errors import ConfigError
from spnas.ir import parse
from spnas.ops import get_morphism

OPTS = dict(preset="lean", min_size=64, max_size=64, fpn_channels=32, representation_size=64)


def _batch():
    imgs = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0], [30.0, 20.0, 60.0, 60.0]]), "labels": torch.tensor([1, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    return imgs, targets


def test_cascade_losses_and_detached_stages():
    torch.manual_seed(0)
    model = build_detector(parse("BB(1,d1,d1,d1)"), 2, "cascade", **OPTS).train()
    losses = model(*_batch())
    keys = {f"loss_{k}_stage{s}" for k in ("classifier", "box_reg") for s in (1, 2, 3)} | {"loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == keys and all(torch.isfinite(v) for v in losses.values())
    (losses["loss_classifier_stage2"] + losses["loss_box_reg_stage2"]).backward()
    heads = model.roi_heads
    assert heads.box_predictors[0].bbox_pred.weight.grad is None  # stage 1 boxes reach stage 2 detached
    assert heads.box_predictors[1].cls_score.weight.grad is not None


def test_cascade_scores_are_stage_averages():
    torch.manual_seed(0)
    model = build_detector(parse("BB(1,d1,d1,d1)"), 2, "cascade", box_score_thresh=0.0, **OPTS).eval()
    biases = [torch.tensor([0.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 1.0])]
    with torch.no_grad():
        for p, b in zip(model.roi_heads.box_predictors, biases):
            p.cls_score.weight.zero_()
            p.cls_score.bias.copy_(b)
            p.bbox_pred.weight.zero_()
            p.bbox_pred.bias.zero_()
        out = model(_batch()[0])
    avg = torch.stack([torch.softmax(b, 0) for b in biases]).mean(0)
    scores = out[0]["scores"].numpy().astype(float)
    assert len(scores) > 0
    want = np.array([float(avg[1]), float(avg[2])])
    assert np.all(np.min(np.abs(scores[:, None] - want[None]), 1) < 1e-6), (scores, want)
    assert np.any(np.abs(scores - want[0]) < 1e-6) and np.any(np.abs(scores - want[1]) < 1e-6)


def test_cascade_validates_stage_lists():
    from torchvision.ops import MultiScaleRoIAlign

    with pytest.raises(ValueError, match="equally long per-stage lists"):
        CascadeRoIHeads(box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), in_channels=8, num_classes=3, iou_thresholds=(0.5, 0.6))


def test_detector_follows_stage_count():
    arch = get_morphism("add_stage").apply(parse("BB(1,d1,d1,d1)"), "end")
    model = build_detector(arch, 2, "faster", **OPTS)
    assert model.backbone.stage_names == ["res2", "res3", "res4", "res5", "res6"]
    assert model.backbone.names == ["0", "1", "2", "3", "4"]  # torchvision's level names
    assert len(model.rpn.anchor_generator.sizes) == 5  # no extra pool level with 5 stages
    model.eval()
    with torch.no_grad():
        assert len(model(_batch()[0])) == 2
    with pytest.raises(ConfigError, match="detector option 'nope' is unknown"):
        build_detector(arch, 2, nope=1)


def test_carry_over_splits_widened_lateral_and_zeroes_new_level():
    parent_arch = parse("BB(1,d1,d1,d1)")
    parent = build_detector(parent_arch, 2, "faster", **OPTS)
    widened = get_morphism("widen").apply(parent_arch, "b1")  # res2 now has 128 replicated channels
    child = build_detector(widened, 2, "faster", **OPTS)
    copied = carry_over(parent.state_dict(), child)
    assert "roi_heads.box_predictor.cls_score.weight" in copied
    x = torch.rand(1, 3, 64, 64)
    parent.eval(), child.eval()
    with torch.no_grad():
        a = parent.backbone(x)
        b = child.backbone(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    grown = build_detector(get_morphism("add_stage").apply(parent_arch, "end"), 2, "faster", **OPTS)
    carry_over(parent.state_dict(), grown)
    assert grown.backbone.fpn.inner_blocks[4][0].weight.abs().sum() == 0


def test_tiny_end_to_end_train_evaluate_reload(tmp_path):
    train = load_coco(generate_shapes(tmp_path, n_images=16, size=64, seed=0, split="train"))
    val = load_coco(generate_shapes(tmp_path, n_images=4, size=64, seed=1, split="val"))
    torch.manual_seed(0)
    model = build_detector(parse("BB(1,d1,d1,d1)"), train.num_classes, "cascade", **OPTS)
    res = train_detector(model, train, val, TrainConfig(epochs=2, batch_size=4, base_lr=0.16, warmup_iters=2), quiet=True)
    assert res.iterations == 8 and len(res.history) == 2 and "AP" in res.metrics and "VOC_AP50" in res.metrics
    save_checkpoint(model, tmp_path / "ckpt", {"metrics": res.metrics})
    again = build_detector(parse("BB(1,d1,d1,d1)", seed=9), train.num_classes, "cascade", **OPTS)
    state = load_checkpoint(again, tmp_path / "ckpt")
    assert evaluate(again, val) == res.metrics == state["metrics"]


def test_non_finite_loss_stops_with_reason(tmp_path):
    from spnas.errors import EvalError

    train = load_coco(generate_shapes(tmp_path, n_images=4, size=64, seed=0))
    model = build_detector(parse("BB(1,d1,d1,d1)"), train.num_classes, "faster", **OPTS)
    with torch.no_grad():
        next(model.backbone.body.parameters()).fill_(float("nan"))
    with pytest.raises(EvalError, match="non-finite loss at epoch 1, iteration 0"):
        train_detector(model, train, None, TrainConfig(epochs=1, batch_size=2), quiet=True)


def test_reignite_changes_backbone_only():
    from spnas.detect.pretrain import reignite

    arch = parse("BB(1,d1,d1,d1)")
    new = reignite(arch, {"data": "generated", "epochs": 1, "n_images": 32, "image_size": 32, "batch_size": 16})
    assert new.fingerprint() == arch.fingerprint()
    assert not torch.equal(new.weights["b0/conv1.weight"], arch.weights["b0/conv1.weight"])


def test_reignite_on_fashion_mnist():
    from pathlib import Path

    from spnas.detect.pretrain import FASHION_DIRS, ClassifierNet, classification_data, reignite

    if not any(Path(d, "train-images-idx3-ubyte.gz").is_file() for d in FASHION_DIRS):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    ds, n = classification_data("fashion-mnist", n=256, size=32)
    x, y = ds.tensors
    assert n == 10 and x.shape == (256, 3, 32, 32) and set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) == 10
    arch = parse("BB(1,d1,d1,d1)")
    new = reignite(arch, {"data": "fashion-mnist", "epochs": 2, "n_images": 256, "image_size": 32, "batch_size": 32, "lr": 0.05})
    net = ClassifierNet(new, 10)
    # the lifted backbone is the trained one: its features now separate the classes better than chance
    with torch.no_grad():
        feats = torch.nn.functional.adaptive_avg_pool2d(list(net.body(x).values())[-1], 1).flatten(1)
    centroids = torch.stack([feats[y == c].mean(0) for c in range(10)])
    nearest = torch.cdist(feats, centroids).argmin(1)
    assert (nearest == y).float().mean() > 0.3


def test_reignite_normalises_inputs_like_the_detector():
    """Pre-training sees (x - mean) / std with the detector's ImageNet statistics, not raw [0, 1] pixels."""
    import torch

    from spnas.detect.detector import IMAGE_MEAN, IMAGE_STD, build_detector
    from spnas.detect.pretrain import ClassifierNet
    from spnas.ir import parse

    arch = parse("BB(1,d1,d1,d1)")
    net = ClassifierNet(arch, 4).eval()
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = net.body((x - mean) / std)
        want = net.fc(torch.nn.functional.adaptive_avg_pool2d(next(reversed(feats.values())), 1).flatten(1))
        torch.testing.assert_close(net(x), want)
    det = build_detector(arch, 3, "faster", preset="lean")
    assert tuple(det.transform.image_mean) == IMAGE_MEAN and tuple(det.transform.image_std) == IMAGE_STD


def test_torchvisions_detectors_take_the_backbone_with_their_defaults():
    """FPN levels are named '0', '1', … and 'pool' as torchvision's BackboneWithFPN: FasterRCNN / MaskRCNN need no settings."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    from spnas.detect import compile_backbone
    from spnas.detect.detector import DetectionBackbone
    from spnas.ir import parse

    backbone = DetectionBackbone(compile_backbone(parse("BB(1,d1,d1,d1)")), 64)
    with torch.no_grad():
        assert list(backbone.eval()(torch.zeros(1, 3, 64, 64))) == ["0", "1", "2", "3", "pool"]
    images = [torch.rand(3, 96, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1]),
                "masks": torch.zeros(1, 96, 128, dtype=torch.uint8)}]
    targets[0]["masks"][0, 12:70, 10:60] = 1
    for cls in (FasterRCNN, MaskRCNN):
        model = cls(backbone, num_classes=3, min_size=96, max_size=128)
        model.train()
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values()), cls.__name__
        model.eval()
        with torch.no_grad():
            out = model(images)
        assert set(out[0]) >= {"boxes", "scores", "labels"}


def test_cascade_drops_boxes_a_stage_made_empty_in_training_only():
    """Issue 27, item 2: as detectron2's cascade, a box that a stage's regression moves out of the image (empty
    after clipping) is no proposal of the next stage in training; at inference every stage scores the same boxes."""
    torch.manual_seed(0)
    model = build_detector(parse("BB(1,d1,d1,d1)"), 2, "cascade", **OPTS)
    counts: list[int] = []
    model.roi_heads.box_roi_pool.register_forward_pre_hook(lambda m, a: counts.append(sum(len(b) for b in a[1])))
    with torch.no_grad():  # stage 1 shifts every box 1000 widths to the right: all empty once clipped
        p = model.roi_heads.box_predictors[0].bbox_pred
        p.weight.zero_()
        p.bias.copy_(torch.tensor([1000.0, 0.0, 0.0, 0.0]))
    losses = model.train()(*_batch())
    assert counts[0] > 0 and counts[1:] == [0, 0]
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_classifier_stage2"] == 0
    counts.clear()
    with torch.no_grad():
        model.eval()(_batch()[0])
    assert counts[0] > 0 and counts == [counts[0]] * 3
