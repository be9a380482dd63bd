"""``spnas train SOURCE [--data DATA.yaml] [--scheme full|fast] [--epochs N] [--out DIR]``

Full training of a found net (the paper's full scheme by default: 24 epochs, step decay), with
evaluation every ``--eval-every`` epochs. ``SOURCE`` is a search's run directory (its best net,
trained on the run's own data with the run's detector settings; ``--data`` and the flags override
them), a saved Arch directory (``runs/x/best/arch``) or a code. ``DATA.yaml`` holds a ``data:``
section as in the search config (or is that section). Writes ``arch/`` (trained backbone),
``checkpoint/`` (every epoch: model.safetensors + state.json), ``detector.safetensors`` +
``detector.json`` (so ``spnas.load_detector(OUT)`` and ``spnas predict OUT`` take it),
``metrics.json`` and ``tb/`` into ``--out``. ``--devices cuda:0,cuda:1,...`` trains it data-parallel, one rank per
device (``--batch-size`` per device, ``--norm`` for small per-device batches); the files are the same.
(``python -m spnas.train --ir SOURCE`` is the same.)
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
    p.add_argument("--devices", default=None, metavar="D,D,...",
                   help="data-parallel training, one rank per device (torch.distributed: NCCL on CUDA, gloo on the CPU), "
                        "e.g. cuda:0,cuda:1,cuda:2,cuda:3; --batch-size is per device")
    p.add_argument("--accumulate", type=int, default=None, help="gradient accumulation steps (the global batch: batch x devices x this)")
    p.add_argument("--norm", choices=["bn", "frozen", "sync"], default=None,
                   help="the backbone's normalisation: bn, frozen (statistics fixed) or sync (over all ranks); default: the run's, else bn")
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
    from pydantic import ValidationError

    from spnas.detect.datasets import load_datasets, read_data_file
    from spnas.detect.infer import resolve_source
    from spnas.detect.train import FAST, FULL, checked_config
    from spnas.rundir import found_net

    source = args.source or args.ir
    if not source:
        p.error("SOURCE (a run directory, an Arch directory or a code) is required")
    flags = {"epochs": "--epochs", "batch_size": "--batch-size", "base_lr": "--lr", "eval_every": "--eval-every", "seed": "--seed",
             "accumulate": "--accumulate"}
    changes = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "base_lr": args.lr, "eval_every": args.eval_every,
                                 "seed": args.seed, "accumulate": args.accumulate}.items() if v is not None}
    try:  # within the bounds a search's train: section has; checked before anything is written
        tc = checked_config(FULL if args.scheme == "full" else FAST, **changes)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        p.error(f"{flags.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}, got {err.get('input')!r}")
    given, source = source, found_net(source)  # a run directory trains its best/; the output names what was given
    _, run_meta = resolve_source(source, plugins=args.plugin, seed=args.seed)
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
    load_datasets(data)  # a bad data set is one line here, before any rank starts
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
    if args.norm is not None:
        options["norm"] = args.norm
    if args.devices:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices or not all(d == "cpu" or d.startswith("cuda") for d in devices):
            p.error(f"--devices: expected a comma-separated list such as cuda:0,cuda:1 or cpu,cpu, got {args.devices!r}")
    else:
        devices = [args.device or ("cuda" if torch.cuda.is_available() else "cpu")]
    job = {"source": str(source), "given": str(given), "plugins": list(args.plugin), "seed": args.seed, "data": data, "head": head, "options": options,
           "preset": preset, "train": dataclasses.asdict(tc), "scheme": args.scheme, "out": str(out), "run_meta": run_meta}
    if len(devices) == 1:
        res = _train(job, devices[0])
    else:
        res = _ranks(job, devices)
    print(json.dumps(res))
    return 0


def _train(job: dict, device: str) -> dict:
    """The training itself, on ``device``; inside a process group one rank of it (rank 0 writes every file)."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from spnas.detect import lift
    from spnas.detect.datasets import load_datasets
    from spnas.detect.detector import build_detector, resolve_options
    from spnas.detect.distributed import describe, world
    from spnas.detect.infer import DETECTOR_WEIGHTS, describe_detector, resolve_source, write_description
    from spnas.detect.train import config_from_dict, save_checkpoint, train_detector
    from spnas.ir import save
    from spnas.ir.io import write_tensors

    rank, ranks = world()
    arch, _ = resolve_source(job["source"], plugins=job["plugins"], seed=job["seed"])
    train_ds, val_ds = load_datasets(job["data"])
    tc = config_from_dict(job["train"])
    head, options, preset, run_meta, out = job["head"], job["options"], job["preset"], job["run_meta"], Path(job["out"])
    torch.manual_seed(job["seed"])
    model = build_detector(arch, train_ds.num_classes, head, preset=preset, **options)
    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out / "tb"))
    how = describe(ranks, tc.batch_size, max(1, tc.accumulate), resolve_options(preset, **options).norm)

    def on_epoch(epoch: int, rec: dict) -> None:
        if rank == 0:
            save_checkpoint(model, out / "checkpoint", {"epoch": epoch, "history": rec, "train": dataclasses.asdict(tc), "training": how})

    res = train_detector(model, train_ds, val_ds, tc, device=device, writer=writer, on_epoch=on_epoch)
    if rank != 0:
        return {}
    writer.close()
    model.to("cpu")
    trained = lift(arch, model.backbone.body)
    save(trained, out / "arch")
    save_checkpoint(model, out / "checkpoint", {"epoch": tc.epochs, "metrics": res.metrics, "train": dataclasses.asdict(tc), "training": how})
    write_tensors({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}, out / DETECTOR_WEIGHTS)
    name = ((run_meta or {}).get("metric") or {}).get("name", "AP")  # the run's metric, else AP
    write_description(out, describe_detector(
        code=trained.code(), classes=train_ds.class_names, label_to_cat=train_ds.label_to_cat, head=head,
        options=resolve_options(preset, **options), eval_batch_size=tc.batch_size,
        plugins=job["plugins"] or (run_meta or {}).get("plugins", []),
        metric={"name": name, "value": res.metrics.get(name), "split": "val"},
        source={"trained_from": job["given"], "scheme": job["scheme"], "epochs": tc.epochs, "data": job["data"], "seed": job["seed"]}))
    summary = {"arch": trained.code(), "metrics": res.metrics, "history": res.history, "seconds": round(res.seconds, 1),
               "iterations": res.iterations, "training": how}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return {"metrics": res.metrics, "seconds": round(res.seconds, 1), "training": how}


def _ranks(job: dict, devices: list[str]) -> dict:
    """``job`` trained as one rank per device (torch.distributed: NCCL on CUDA, gloo on the CPU), spawned
    here with a free port for the rendezvous; a rank that fails ends the others, and is one line."""
    import multiprocessing as mp
    import time

    from spnas.detect.distributed import free_port
    from spnas.errors import SpnasError

    n, out = len(devices), Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    results = [out / f".rank{r}.json" for r in range(n)]
    for f in results:
        f.unlink(missing_ok=True)
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, n, port, job, devices[r], str(results[r]))) for r in range(n)]
    for q in procs:
        q.start()
    failed = None
    import signal

    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill of this process ends its ranks too (finally below)
    try:
        while any(q.is_alive() for q in procs) and failed is None:
            for r, q in enumerate(procs):  # a rank that ended without a result, or with an error: the others would wait forever
                if not q.is_alive() and (q.exitcode != 0 or not results[r].is_file() or "error" in json.loads(results[r].read_text())):
                    failed = r
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for q in procs:
            if q.is_alive():
                q.terminate()
            q.join()
    outcome = [json.loads(f.read_text()) if f.is_file() else None for f in results]
    for f in results:
        f.unlink(missing_ok=True)
    bad = next(((r, o) for r, o in enumerate(outcome) if o is None or "error" in o), None)
    if failed is not None or bad is not None:
        r = failed if failed is not None else bad[0]
        why = (outcome[r] or {}).get("error") or f"exit code {procs[r].exitcode}"
        raise SpnasError(f"training on {n} devices: rank {r} ({devices[r]}) failed: {why}")
    return outcome[0]


def _rank_main(rank: int, ranks: int, port: int, job: dict, device: str, result: str) -> None:
    import os

    import torch

    from spnas.detect.distributed import process_group

    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        with process_group(rank, ranks, f"127.0.0.1:{port}", device):
            res = _train(job, device)
    except Exception as e:  # noqa: BLE001 - reported by the parent in one line
        res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    tmp = Path(result + ".tmp")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, result)


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
