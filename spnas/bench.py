"""``spnas bench SOURCE [--image-size 512] [--batch 1] [--device cpu] [--repeats 20]``

Benchmark a found net: GMACs and parameters of the backbone, latency of the compiled backbone,
of its inference export (BN folded, channels-last; eager, frozen TorchScript on CPU, and frozen
under torch.compile/inductor unless ``--no-inductor``) and of the whole
detector in eval mode, medians of interleaved runs, printed as a table and a JSON line. ``SOURCE``
is a run directory (its best net, with the run's head and classes), a saved Arch directory
(``runs/x/best/arch``) or a code. (``python -m spnas.bench`` is the same.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a run directory, a saved Arch directory or a code")
    p.add_argument("--image-size", "--size", dest="image_size", type=int, default=512, help="square input size (default 512)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--classes", type=int, default=None, help="object classes of the detector head (default: the run's, else 80)")
    p.add_argument("--head", default=None, choices=["cascade", "faster"], help="default: the run's, else cascade")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a plugin file whose node kinds the saved net uses (repeatable)")
    p.add_argument("--no-inductor", action="store_true", help="skip the torch.compile export (needs a C++ compiler; 2-10 s to compile)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="the paper's protocol (SOURCE a run or detector directory): the found detector itself, with the run's "
                        "settings and weights, on N real images of the run's validation split (cycled), one at a time; the mean "
                        "of the later half, as ms and FPS, beside torchvision's ResNet-50-FPN Faster R-CNN on the same images "
                        "(the paper: 2000, the last 1000)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spnas.bench", description=__doc__.split("\n\n")[1])
    add_arguments(p)
    return run(p.parse_args(argv), p)


def run(args: argparse.Namespace, p: argparse.ArgumentParser | None = None) -> int:
    import torch

    from spnas.detect import compile_backbone, export_inference
    from spnas.detect.detector import build_detector
    from spnas.errors import SpnasError

    try:
        from spnas.detect.infer import resolve_source
        from spnas.rundir import found_net

        arch, meta = resolve_source(found_net(args.source), plugins=args.plugin)
        head = args.head or (meta or {}).get("head", "cascade")
        classes = args.classes or len((meta or {}).get("classes", [])) or 80
    except SpnasError as e:
        print(f"spnas: error: {e}", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    if args.images is not None:
        try:
            return _paper_protocol(args, meta, dev)
        except SpnasError as e:
            print(f"spnas: error: {e}", file=sys.stderr)
            return 2
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=dev)
    body = compile_backbone(arch).eval().to(dev)
    runs = {"backbone": body, "export": export_inference(body)}
    if dev.type == "cpu":
        runs["torchscript"] = export_inference(body, example=x, backend="torchscript")
    if not args.no_inductor:
        try:
            runs["inductor"] = export_inference(body, example=x, backend="inductor")
        except SpnasError as e:
            print(f"spnas: warning: {e}", file=sys.stderr)
    det = build_detector(arch, classes, head, min_size=args.image_size, max_size=args.image_size).eval().to(dev)
    fns = {k: (lambda m=m: m(x)) for k, m in runs.items()}
    fns["detector"] = lambda: det(list(x))
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(2):
            for f in fns.values():
                f()
        for _ in range(args.repeats):
            for k, f in fns.items():
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                f()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t0)
    row = {"code": arch.code(), "size": args.image_size, "batch": args.batch, "device": str(dev), "gmacs": round(arch.flops((args.image_size, args.image_size)) / 1e9, 3),
           "params_m": round(arch.params() / 1e6, 3), **{f"{k}_ms": round(statistics.median(v) * 1e3, 2) for k, v in times.items()}}
    width = max(map(len, row))
    for k, v in row.items():
        print(f"{k.ljust(width)}  {v}")
    print(json.dumps({"benchmark": "spnas.bench", "rows": [row]}))
    return 0


def _paper_protocol(args: argparse.Namespace, meta: dict | None, dev) -> int:
    """Detector latency as the paper measures it (§4.2: 2000 images, the mean of the last 1000), on the run's own
    detector and real validation images, beside torchvision's ResNet-50-FPN Faster R-CNN, interleaved image by image."""
    import torch
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from spnas.detect.infer import load_detector
    from spnas.rundir import found_net
    from spnas.errors import ConfigError
    from spnas.detect.datasets import load_datasets

    if args.images < 2:
        raise ConfigError(f"--images: expected at least 2 (the mean is of the later half), got {args.images}")
    if meta is None:
        raise ConfigError(f"{args.source}: --images measures a found detector on its run's validation images; "
                          "give a run directory, its best/, or spnas train's output")
    data = (meta.get("source") or {}).get("data")
    if not data:
        raise ConfigError(f"{args.source}: detector.json records no data source, so there are no validation images to time on")
    model = load_detector(found_net(args.source), device=dev, plugins=args.plugin)
    val = load_datasets(data)[1]
    images = [val[i][0].to(dev) for i in range(min(len(val), args.images))]
    t = model.transform
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=t.min_size[-1], max_size=t.max_size).eval().to(dev)
    models = {"found": model, "resnet50_fpn": reference}
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for i in range(args.images):
            img = images[i % len(images)]
            for k, m in models.items():
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                m([img])
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t0)
    later = {k: v[len(v) // 2:] for k, v in times.items()}
    ms = {k: statistics.fmean(v) * 1e3 for k, v in later.items()}
    row = {"code": meta.get("code"), "images": args.images, "distinct_images": len(images), "timed": len(later["found"]),
           "device": str(dev), "input": f"{t.min_size[-1]}..{t.max_size}",
           "found_ms": round(ms["found"], 2), "found_fps": round(1e3 / ms["found"], 2),
           "resnet50_fpn_ms": round(ms["resnet50_fpn"], 2), "resnet50_fpn_fps": round(1e3 / ms["resnet50_fpn"], 2),
           "ratio": round(ms["found"] / ms["resnet50_fpn"], 3)}
    width = max(map(len, row))
    for k, v in row.items():
        print(f"{k.ljust(width)}  {v}")
    print(json.dumps({"benchmark": "spnas.bench", "protocol": "paper", "rows": [row]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
