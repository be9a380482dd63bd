"""``spnas``: one command for the whole workflow.

    spnas init [DIR] [--example quickstart|paper|coco_gpu]     write a start.yaml to edit
    spnas search start.yaml [--out RUN] [--resume] ...          run (or resume) a search
    spnas show CODE|ARCH|RUN [--image-size N [N]] [--json]     stages, channels, GMACs, params
    spnas train RUN|ARCH|CODE [--data DATA.yaml] [--out DIR]   full training (a run: its data and detector)
    spnas bench RUN|ARCH|CODE [--image-size N] [--device D]    latency of backbone, exports and detector
    spnas predict RUN IMAGES... --out preds.json               COCO-style detections of image files
    spnas export RUN --format torchscript|onnx --out FILE      the whole detector, checked against eager
    spnas export RUN --format python --out DIR                 the backbone as plain PyTorch (torch only)
    spnas audit RUN [--top K] [--epochs N] [--seeds S ...]      did the fast scheme rank as full training does?

The flags mean one thing everywhere: ``--image-size`` an input size in pixels, ``--out`` where
results go, ``--device`` a torch device, ``--plugin`` a plugin file, ``--debug`` a traceback instead
of the one-line error. ``python -m spnas.search --ir start.yaml``, ``python -m spnas.train``,
``python -m spnas.bench`` and ``python -m spnas.ir show`` are the same commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

EXAMPLES = ("quickstart", "paper", "coco_gpu")


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".", help="where to write start.yaml (default: here)")
    p.add_argument("--example", choices=EXAMPLES, default="quickstart",
                   help="quickstart: CPU, minutes, built-in data; paper: the paper's settings; coco_gpu: COCO on 4 GPUs")
    p.add_argument("--name", default="start.yaml")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def _run_init(args: argparse.Namespace) -> int:
    from spnas.errors import ConfigError

    text = resources.files("spnas.configs").joinpath(f"{args.example}.yaml").read_text()
    out = Path(args.dir) / args.name
    if out.exists() and not args.force:
        raise ConfigError(f"{out}: exists already; pass --force to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} (the {args.example} example); run it with: spnas search {out}")
    return 0


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a run directory, its best/, or `spnas train`'s output")
    p.add_argument("images", nargs="+", help="image files or folders of them (.jpg .png .tif .bmp ...)")
    p.add_argument("--out", required=True, help="the COCO results file to write (a JSON list)")
    p.add_argument("--coco", default=None, help="a COCO annotation file: name each image by its id there (matched by file name)")
    p.add_argument("--score-thresh", type=float, default=None, help="drop detections below this score (the model keeps >= box_score_thresh)")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: the batch the net was evaluated with)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE")


def _image_files(items: list[str]) -> list[Path]:
    from spnas.detect.data import _IMAGE_EXTS
    from spnas.errors import DataError

    files: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_EXTS)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such image file or folder")
    if not files:
        raise DataError(f"{' '.join(items)}: no image files")
    return files


def _run_predict(args: argparse.Namespace) -> int:
    import spnas
    from spnas.detect.infer import coco_results
    from spnas.errors import DataError

    model = spnas.load_detector(args.source, device=args.device, plugins=args.plugin)
    files = _image_files(args.images)
    if args.coco:
        try:
            d = json.loads(Path(args.coco).read_text())
            by_name = {Path(im["file_name"]).name: im["id"] for im in d["images"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{args.coco}: not a COCO annotation file with images[].file_name and id ({e})") from None
        missing = [f.name for f in files if f.name not in by_name]
        if missing:
            raise DataError(f"{args.coco}: has no image named {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        ids = [by_name[f.name] for f in files]
    else:
        ids = list(range(1, len(files) + 1))
    outs = spnas.predict(model, files, batch_size=args.batch_size, score_thresh=args.score_thresh)
    results = coco_results(outs, ids, model.spnas_meta, file_names=[str(f) for f in files])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results))
    print(f"wrote {len(results)} detections of {len(files)} images to {args.out}")
    return 0


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a run directory, its best/, or `spnas train`'s output")
    p.add_argument("--format", choices=("torchscript", "onnx", "python"), default="torchscript",
                   help="python: the found backbone alone as one plain PyTorch file and its weights (torch only, no spnas)")
    p.add_argument("--out", required=True, help="the file to write (.pt for TorchScript, .onnx for ONNX; a directory for python)")
    p.add_argument("--check", nargs="*", default=None, metavar="IMAGE",
                   help="images to compare the export with eager on (default: one random image of the detector's size)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE")


def _run_export(args: argparse.Namespace) -> int:
    import torch

    import spnas
    from spnas.detect.data import decode_image_file
    from spnas.detect.infer import compare_detections, run_exported

    model = spnas.load_detector(args.source, plugins=args.plugin)
    if args.format == "python":  # the backbone that outlives spnas; export_python checks it against the compiled one
        from spnas.detect.standalone import export_python

        size = int(model.transform.min_size[-1])
        py = export_python(model.backbone.body, args.out, code=(getattr(model, "spnas_meta", {}) or {}).get("code", ""),
                           example=torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
        print(json.dumps({"export": str(py), "weights": str(py.with_suffix(".pt")), "format": "python", "checked": True}))
        return 0
    path = spnas.export_detector(model, args.out, format=args.format)
    size = int(model.transform.min_size[-1])
    images = [decode_image_file(f).float() / 255 for f in _image_files(args.check)] if args.check else \
        [torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))]
    worst = {"max_box_diff": 0.0, "max_score_diff": 0.0}
    for img in images:
        with torch.no_grad():
            ref = model([img])[0]
        c = compare_detections(ref, run_exported(path, img))
        if not (c["same_count"] and c["labels_equal"]):
            print(f"spnas: warning: the export's detections differ from eager's: {c}", file=sys.stderr)
        worst = {k: max(worst[k], c[k]) for k in worst}
    print(json.dumps({"export": str(path), "format": args.format, "checked_images": len(images), **worst}))
    return 0


def _search_arguments(p: argparse.ArgumentParser) -> None:
    from spnas.search import __main__ as search_main  # imports the search package (torch): only for `spnas search`

    search_main.add_arguments(p)


def _run_search(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    from spnas.search import __main__ as search_main

    return search_main.run(args, p)


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    from spnas.search import audit

    audit.add_arguments(p)


def _run_audit(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    from spnas.search import audit

    return audit.run(args, p)


def main(argv: list[str] | None = None) -> int:
    from spnas import bench, show, train

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="spnas", description="Serial-to-parallel backbone search for object detection (SP-NAS).",
                                epilog="`spnas COMMAND -h` describes a command.")
    p.add_argument("--version", action="version", version=f"spnas {__import__('spnas').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmds = {
        "init": ("write an example search config (start.yaml)", _init_arguments, lambda a, q: _run_init(a)),
        "search": ("run or resume a search", _search_arguments, _run_search),
        "show": ("describe a net: stages, channels, strides, GMACs, params", show.add_show_arguments, lambda a, q: show.run_show(a)),
        "train": ("full training of a found net", train.add_arguments, train.run),
        "bench": ("latency of a found net's backbone, exports and detector", bench.add_arguments, bench.run),
        "predict": ("detections of image files as COCO results", _predict_arguments, lambda a, q: _run_predict(a)),
        "export": ("export the whole detector (TorchScript or ONNX), checked against eager", _export_arguments, lambda a, q: _run_export(a)),
        "audit": ("fully train the start net and a search's best nets: does the fast scheme rank them as full training does?",
                  _audit_arguments, _run_audit),
    }
    chosen = next((a for a in argv if not a.startswith("-")), None)  # only its arguments are built: `spnas init` stays light
    parsers = {}
    for name, (help_, add, _) in cmds.items():
        parsers[name] = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            add(parsers[name])
            if not any(a.dest == "debug" for a in parsers[name]._actions):
                parsers[name].add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")
    args = p.parse_args(argv)
    from spnas.errors import SpnasError

    try:
        _check_flags(args)
        return cmds[args.command][2](args, parsers[args.command])
    except (SpnasError, OSError) as e:
        if args.debug:
            raise
        where = f"{e.filename}: " if isinstance(e, OSError) and e.filename else ""
        text = f"{where}{e.strerror}" if isinstance(e, OSError) and e.strerror else str(e)
        print(f"spnas: error: {text}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last resort: one line that says what happened, never a traceback
        if args.debug:
            raise
        text = " ".join(str(e).split())[:300]
        print(f"spnas: error: {type(e).__name__}: {text} (run it again with --debug for the traceback)", file=sys.stderr)
        return 2


def _check_flags(args: argparse.Namespace) -> None:
    """The flags every command shares, checked before any work: one line naming the flag."""
    import math

    from spnas.errors import ConfigError

    def positive(name: str, v: object) -> None:
        vals = v if isinstance(v, list) else [v]
        if any(x is not None and x < 1 for x in vals):
            raise ConfigError(f"--{name.replace('_', '-')}: expected a positive integer, got {' '.join(map(str, vals))}")

    for name in ("batch_size", "batch", "image_size", "epochs", "repeats", "top", "workers"):
        if hasattr(args, name):
            positive(name, getattr(args, name))
    thresh = getattr(args, "score_thresh", None)
    if thresh is not None and not (math.isfinite(thresh) and 0.0 <= thresh <= 1.0):
        raise ConfigError(f"--score-thresh: expected a number from 0 to 1, got {thresh}")
    devices = getattr(args, "device", None)
    for dev in (devices if isinstance(devices, list) else [devices]):
        if dev is not None and dev != "auto":
            _check_device(dev)
    if args.command in ("export", "predict") and Path(args.out).is_dir() and getattr(args, "format", None) != "python":
        raise ConfigError(f"--out {args.out}: is a directory; expected the file to write")


def _check_device(dev: str) -> None:
    import torch

    from spnas.errors import ConfigError

    try:
        d = torch.device(dev)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {dev}: not a torch device (cpu, cuda, cuda:N, mps)") from None
    if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {dev}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if d.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {dev}: spnas runs on cpu, cuda or mps")


if __name__ == "__main__":
    sys.exit(main())
