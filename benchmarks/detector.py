"""Detector benchmarks, each printed as a table and one JSON line.

    python benchmarks/detector.py throughput      # spnas Faster R-CNN (compiled R50) vs torchvision's, train steps
    python benchmarks/detector.py cascade         # Cascade vs Faster R-CNN on the built-in set, same backbone and schedule
    python benchmarks/detector.py deepforest      # real aerial trees (VOC xml from the deepforest wheel), tiled, held-out AP50

``throughput``: the ratio is torchvision's step time / spnas's (>= 0.95 is the target), measured
interleaved in one process, same image sizes and RPN/RoI settings, random weights, CPU.
``deepforest`` needs the data: ``pip install --no-deps deepforest==2.1.0`` (or ``--deepforest-dir``);
the files are read, the package is never imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import emit_json, interleaved_times, print_table  # noqa: E402
from spnas.detect.data import generate_shapes, load_coco, load_voc, tile_dataset  # noqa: E402
from spnas.detect.detector import build_detector  # noqa: E402
from spnas.detect.train import TrainConfig, train_detector  # noqa: E402
from spnas.ir import from_torchvision, parse  # noqa: E402


def throughput(args) -> None:
    import torchvision
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    kw = dict(min_size=args.size, max_size=args.size, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
              rpn_batch_size_per_image=128, box_batch_size_per_image=128)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5, trainable_backbone_layers=5, **kw).train()
    arch = from_torchvision(torchvision.models.resnet50())
    ours = build_detector(arch, 4, "faster", fpn_channels=256, representation_size=1024, **kw).train()
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, args.size, args.size, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 120.0, 140.0], [60.0, 60.0, 200.0, 230.0]]), "labels": torch.tensor([1, 3])} for _ in imgs]
    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for n, m in (("torchvision", tv), ("spnas", ours))}

    def step(name, model):
        def f():
            losses = model(imgs, targets)
            opts[name].zero_grad()
            sum(losses.values()).backward()
            opts[name].step()
        return f

    t = interleaved_times({"torchvision": step("torchvision", tv), "spnas": step("spnas", ours)}, repeats=args.repeats, warmup=2)
    tv_s, sp_s = statistics.median(t["torchvision"]), statistics.median(t["spnas"])
    rows = [{"model": "fasterrcnn_resnet50_fpn", "size": args.size, "batch": 2, "torchvision_s": round(tv_s, 3), "spnas_s": round(sp_s, 3),
             "throughput_ratio": round(tv_s / sp_s, 3)}]
    print_table(rows, list(rows[0]))
    emit_json("detector_throughput", rows, threads=torch.get_num_threads(), target=0.95, met=rows[0]["throughput_ratio"] >= 0.95)


def _train_eval(code, head, train, val, cfg, size, seed=0):
    torch.manual_seed(seed)
    model = build_detector(parse(code, seed=seed), train.num_classes, head, preset="lean", min_size=size, max_size=size)
    res = train_detector(model, train, val, cfg, quiet=False)
    return res


def cascade(args) -> None:
    root = Path(args.data_dir)
    train = load_coco(generate_shapes(root, n_images=args.n_train, size=args.size, seed=0, split="train"))
    val = load_coco(generate_shapes(root, n_images=args.n_val, size=args.size, seed=1, split="val"))
    cfg = TrainConfig(epochs=args.epochs, batch_size=4, base_lr=args.lr, warmup_iters=50, schedule="cosine", grad_clip=args.clip)
    rows = []
    for head in ("faster", "cascade"):
        res = _train_eval(args.code, head, train, val, cfg, args.size)
        m = res.metrics
        rows.append({"head": head, "AP": round(m["AP"], 4), "AP50": round(m["AP50"], 4), "AP75": round(m["AP75"], 4),
                     "iters": res.iterations, "train_s": round(res.seconds, 1)})
    print_table(rows, list(rows[0]))
    emit_json("cascade_vs_faster", rows, code=args.code, epochs=args.epochs, n_train=args.n_train, n_val=args.n_val, size=args.size,
              cascade_ap75_higher=rows[1]["AP75"] > rows[0]["AP75"])


def _deepforest_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    spec = importlib.util.find_spec("deepforest")  # locates the files; the package is not imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("deepforest data not found: pip install --no-deps deepforest==2.1.0, or pass --deepforest-dir")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def deepforest(args) -> None:
    d = _deepforest_dir(args.deepforest_dir)
    xmls = sorted(d.glob("*.xml"))
    full = load_voc(xmls, d, classes=["Tree"])
    tiles = tile_dataset(full, args.tile)
    rng = np.random.default_rng(0)
    ids = np.array(tiles.image_ids)
    rng.shuffle(ids)
    n_val = max(1, int(len(ids) * 0.2))
    val, train = tiles.subset(sorted(ids[:n_val].tolist())), tiles.subset(sorted(ids[n_val:].tolist()))
    n_boxes = len(full.coco.anns)
    cfg = TrainConfig(epochs=args.epochs, batch_size=4, base_lr=args.lr, warmup_iters=50, grad_clip=args.clip)
    res = _train_eval(args.code, args.head, train, val, cfg, args.tile)
    m = res.metrics
    rows = [{"images": len(full), "boxes": n_boxes, "tiles_train": len(train), "tiles_val": len(val), "head": args.head, "epochs": args.epochs,
             "AP50": round(m["AP50"], 4), "VOC_AP50": round(m["VOC_AP50"], 4), "AP": round(m["AP"], 4), "train_s": round(res.seconds, 1)}]
    print_table(rows, list(rows[0]))
    emit_json("deepforest", rows, code=args.code, tile=args.tile)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["throughput", "cascade", "deepforest"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--code", default="BB(11,d1,d1,d1)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=0.08)
    p.add_argument("--clip", type=float, default=10.0, help="gradient-norm clip (0: off)")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--data-dir", default="runs/bench_shapes")
    p.add_argument("--deepforest-dir", default=None)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--head", default="cascade", choices=["cascade", "faster"])
    args = p.parse_args()
    t0 = time.time()
    {"throughput": throughput, "cascade": cascade, "deepforest": deepforest}[args.task](args)
    print(f"# {args.task}: {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
