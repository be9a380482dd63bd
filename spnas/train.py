"""``python -m spnas.train --ir ARCH --data DATA.yaml [--epochs N] [--scheme full|fast] [--out DIR]``

Full training of a found net (the paper's full scheme by default: 24 epochs, step decay), with
evaluation every ``--eval-every`` epochs. ``ARCH`` is a saved Arch directory (``runs/x/best/arch``)
or a code; ``DATA.yaml`` holds a ``data:`` section as in the search config (or is that section).
Writes ``arch/`` (trained backbone), ``checkpoint/`` (model.safetensors + state.json),
``metrics.json`` and ``tb/`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spnas.train", description=__doc__.split("\n\n")[1])
    p.add_argument("--ir", required=True, help="a saved Arch directory or a code such as 'BB(11,d1,d1,d1)'")
    p.add_argument("--data", required=True, help="YAML with a data: section (format: shapes|coco|voc, train, val, ...)")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--scheme", choices=["full", "fast"], default="full")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="base learning rate at batch 16")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--head", choices=["cascade", "faster"], default="cascade")
    p.add_argument("--preset", default="lean")
    p.add_argument("--size", type=int, default=None, help="min and max image size of the detector")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="a bad annotation is an error, not a dropped annotation")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a plugin file whose node kinds the saved net uses (repeatable)")
    args = p.parse_args(argv)
    from spnas.errors import SpnasError

    try:
        return _run(args)
    except SpnasError as e:
        print(f"spnas: error: {e}", file=sys.stderr)
        return 2


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _run(args: argparse.Namespace) -> int:
    import torch
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    from spnas.detect import lift
    from spnas.detect.detector import build_detector
    from spnas.detect.train import FAST, FULL, save_checkpoint, train_detector
    from spnas.errors import ConfigError
    from spnas.ir import load, parse, save
    from spnas.ops import load_plugin
    from spnas.search.config import config_from_dict
    from spnas.search.evaluator import load_datasets
    from spnas.search.runner import resolve_data

    for f in args.plugin:
        load_plugin(f)
    dp = Path(args.data)
    try:
        doc = yaml.safe_load(dp.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{dp}: cannot read YAML ({e})") from None
    doc = doc if isinstance(doc, dict) and "data" in doc else {"data": doc}
    if args.strict and isinstance(doc["data"], dict):
        doc["data"] = {**doc["data"], "strict": True}
    cfg = config_from_dict({"data": doc["data"], "seed": args.seed}, where=str(dp), base_dir=dp.parent.resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_ds, val_ds = load_datasets(resolve_data(cfg, out))
    arch = load(args.ir) if Path(args.ir).is_dir() else parse(args.ir, seed=args.seed)
    opts = {"min_size": args.size, "max_size": args.size} if args.size else {}
    torch.manual_seed(args.seed)
    model = build_detector(arch, train_ds.num_classes, args.head, preset=args.preset, **opts)
    tc = FULL if args.scheme == "full" else FAST
    changes = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "base_lr": args.lr, "eval_every": args.eval_every,
                                 "seed": args.seed}.items() if v is not None}
    tc = dataclasses.replace(tc, **changes)
    writer = SummaryWriter(str(out / "tb"))

    def on_epoch(epoch: int, rec: dict) -> None:
        save_checkpoint(model, out / "checkpoint", {"epoch": epoch, "history": rec, "train": dataclasses.asdict(tc)})

    res = train_detector(model, train_ds, val_ds, tc, device=args.device, writer=writer, on_epoch=on_epoch)
    writer.close()
    save(lift(arch, model.backbone.body), out / "arch")
    save_checkpoint(model, out / "checkpoint", {"epoch": tc.epochs, "metrics": res.metrics, "train": dataclasses.asdict(tc)})
    summary = {"arch": arch.code(), "metrics": res.metrics, "history": res.history, "seconds": round(res.seconds, 1),
               "iterations": res.iterations}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({"metrics": res.metrics, "seconds": round(res.seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
