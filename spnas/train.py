"""``spnas train SOURCE [--data DATA.yaml] [--scheme full|fast] [--epochs N] [--out DIR]``

Full training of a found net (the paper's full scheme by default: 24 epochs, step decay), with
evaluation every ``--eval-every`` epochs. ``SOURCE`` is a search's run directory (its best net,
trained on the run's own data with the run's detector settings; ``--data`` and the flags override
them), a saved Arch directory (``runs/x/best/arch``) or a code. ``DATA.yaml`` holds a ``data:``
section as in the search config (or is that section). Writes ``arch/`` (trained backbone),
``checkpoint/`` (every epoch: model.safetensors + state.json), ``detector.safetensors`` +
``detector.json`` (so ``spnas.load_detector(OUT)`` and ``spnas predict OUT`` take it),
``metrics.json`` and ``tb/`` into ``--out``. (``python -m spnas.train --ir SOURCE`` is the same.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", help="a run directory, a saved Arch directory, or a code such as 'BB(11,d1,d1,d1)'")
    p.add_argument("--ir", dest="ir", help="the same as SOURCE, as a flag (what `python -m spnas.train --ir` takes)")
    p.add_argument("--data", default=None, help="YAML with a data: section (format: shapes|coco|voc|ecp, train, val, ...); "
                                                "default for a run directory: the run's data")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--scheme", choices=["full", "fast"], default="full")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="base learning rate at batch 16")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--head", choices=["cascade", "faster"], default=None, help="default: the run's, else cascade")
    p.add_argument("--preset", default=None, help="default: the run's, else lean")
    p.add_argument("--image-size", "--size", dest="image_size", type=int, default=None,
                   help="the detector's min and max image size (default: the run's, else the preset's)")
    p.add_argument("--train-scales", default=None, metavar="F,F,...",
                   help="multi-scale training for this (final) training only: each training image resized by one of these "
                        "factors, e.g. the paper's 0.8,0.9,1.0,1.1,1.2 for COCO; 'none' turns off the run's own")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when there is one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="a bad annotation is an error, not a dropped annotation")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a plugin file whose node kinds the saved net uses (repeatable)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spnas.train", description=__doc__.split("\n\n")[1])
    add_arguments(p)
    from spnas.errors import SpnasError

    try:
        return run(p.parse_args(argv), p)
    except SpnasError as e:
        print(f"spnas: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from spnas.detect import lift
    from spnas.detect.detector import build_detector, resolve_options
    from spnas.detect.infer import DETECTOR_WEIGHTS, describe_detector, resolve_source, write_description
    from spnas.detect.train import FAST, FULL, save_checkpoint, train_detector
    from spnas.ir import save
    from spnas.ir.io import write_tensors
    from spnas.detect.datasets import load_datasets, read_data_file

    source = args.source or args.ir
    if not source:
        p.error("SOURCE (a run directory, an Arch directory or a code) is required")
    arch, run_meta = resolve_source(source, plugins=args.plugin, seed=args.seed)
    out = Path(args.out)
    if args.data is not None:
        out.mkdir(parents=True, exist_ok=True)
        data = read_data_file(args.data, out, seed=args.seed, strict=args.strict)
    elif run_meta is not None and run_meta.get("source", {}).get("data"):
        data = dict(run_meta["source"]["data"])
        if args.strict:
            data["strict"] = True
    else:
        p.error("--data DATA.yaml is required unless SOURCE is a run directory")
    train_ds, val_ds = load_datasets(data)
    if run_meta is not None:
        head, options = args.head or run_meta["head"], dict(run_meta["options"])
        preset = "default"  # the run's options are every field, resolved
    else:
        head, options, preset = args.head or "cascade", {}, args.preset or "lean"
    if args.preset is not None and run_meta is not None:
        preset, options = args.preset, {}
    if args.image_size:
        options.update(min_size=args.image_size, max_size=args.image_size)
    if args.train_scales is not None:  # the paper: multi-scale only in the final training, never in the search's fast scheme
        options["train_scales"] = _scales(args.train_scales, p)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    model = build_detector(arch, train_ds.num_classes, head, preset=preset, **options)
    tc = FULL if args.scheme == "full" else FAST
    changes = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "base_lr": args.lr, "eval_every": args.eval_every,
                                 "seed": args.seed}.items() if v is not None}
    tc = dataclasses.replace(tc, **changes)
    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(out / "tb"))

    def on_epoch(epoch: int, rec: dict) -> None:
        save_checkpoint(model, out / "checkpoint", {"epoch": epoch, "history": rec, "train": dataclasses.asdict(tc)})

    res = train_detector(model, train_ds, val_ds, tc, device=device, writer=writer, on_epoch=on_epoch)
    writer.close()
    trained = lift(arch, model.backbone.body)
    save(trained, out / "arch")
    save_checkpoint(model, out / "checkpoint", {"epoch": tc.epochs, "metrics": res.metrics, "train": dataclasses.asdict(tc)})
    write_tensors({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}, out / DETECTOR_WEIGHTS)
    name = ((run_meta or {}).get("metric") or {}).get("name", "AP")  # the run's metric, else AP
    write_description(out, describe_detector(
        code=trained.code(), classes=train_ds.class_names, label_to_cat=train_ds.label_to_cat, head=head,
        options=resolve_options(preset, **options), eval_batch_size=tc.batch_size,
        plugins=list(args.plugin) or (run_meta or {}).get("plugins", []),
        metric={"name": name, "value": res.metrics.get(name), "split": "val"},
        source={"trained_from": str(source), "scheme": args.scheme, "epochs": tc.epochs, "data": data, "seed": args.seed}))
    summary = {"arch": trained.code(), "metrics": res.metrics, "history": res.history, "seconds": round(res.seconds, 1),
               "iterations": res.iterations}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({"metrics": res.metrics, "seconds": round(res.seconds, 1)}))
    return 0


def _scales(text: str, p: argparse.ArgumentParser) -> tuple[float, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        p.error(f"--train-scales: expected factors such as 0.8,0.9,1.0,1.1,1.2 (or none), got {text!r}")
    if not all(0.1 <= f <= 4.0 for f in scales):
        p.error(f"--train-scales: every factor must lie in [0.1, 4], got {text!r}")
    return scales


if __name__ == "__main__":
    sys.exit(main())
