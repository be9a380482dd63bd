"""``spnas show CODE|DIR|RUN [--json] [--image-size N [N]] [--plugin FILE]`` (or ``python -m spnas.ir show ...``):
stages, blocks, channels, strides, FLOPs, params. ``spnas show RUN --lineage [--out DIR]``: the tree of the
nets the search carried on, with codes, morphisms, metrics and gains, as text and as ``lineage.png``/``.pdf``
(and the trajectory beside it). Building the parser imports nothing heavy (``spnas init`` and ``--help`` stay
instant); torch and the IR load when a net is shown."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from spnas.errors import SpnasError

if TYPE_CHECKING:
    from spnas.ir import Arch


def describe(arch: Arch, size: tuple[int, int]) -> dict:
    specs = arch.specs()
    flops = arch.node_flops(size)
    stages = []
    for st in arch.stages():
        ids = list(st.blocks) + [n for sub in st.subnets for n in (sub.fuse, sub.add, *sub.blocks)]
        stages.append(
            {
                "stage": st.index + 1,
                "blocks": len(st.blocks),
                "subnets": len(st.subnets),
                "in_channels": specs[arch.inputs(st.blocks[0])[0]].channels,
                "out_channels": specs[st.outputs[-1]].channels,
                "stride": specs[st.outputs[-1]].stride,
                "output": arch.spec(st.tap).name if st.tap else None,
                "gmacs": round(sum(flops[n] for n in ids) / 1e9, 4),
            }
        )
    code = arch.code()
    return {
        "code": code,
        "grammar": "custom" if code.startswith("~") else "paper",
        "custom_kinds": arch.custom_kinds(),
        "stem": arch.spec(arch.stem).style,
        "blocks": sum(s["blocks"] for s in stages),
        "stages": stages,
        "size": list(size),
        "gmacs": round(arch.flops(size) / 1e9, 4),
        "params_m": round(arch.params() / 1e6, 4),
        "fingerprint": arch.fingerprint(),
    }


def add_show_arguments(show: argparse.ArgumentParser) -> None:
    show.add_argument("target", help="a code such as 'BNB(111,d111,d11111,d11)', a directory with arch.yaml, or a run directory")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.add_argument("--image-size", "--size", dest="image_size", nargs="+", type=int, default=[224], metavar="N",
                      help="input size for the GMACs: N (square) or H W (default 224)")
    show.add_argument("--stem", default="resnet", choices=["resnet", "deep"])
    show.add_argument("--plugin", action="append", default=[], metavar="FILE",
                      help="a plugin file whose node kinds the saved net uses (repeatable)")
    show.add_argument("--lineage", action="store_true",
                      help="RUN: the tree of accepted and continued nets (codes, morphisms, metrics, gains), as text "
                           "and as lineage.png/.pdf and trajectory.png/.pdf")
    show.add_argument("--out", metavar="DIR", help="--lineage: where the figures go (default: the run directory)")


def _size(v: list[int]) -> tuple[int, int]:
    if len(v) not in (1, 2):
        raise SpnasError(f"--image-size: expected N or H W, got {len(v)} numbers")
    return (v[0], v[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spnas.ir", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    add_show_arguments(sub.add_parser("show", help="describe an architecture code or a saved Arch directory"))
    return run_show(p.parse_args(argv))


def run_lineage(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spnas.rundir import RunDir
    from spnas.search.journal import read_events
    from spnas.search.lineage import lineage, lineage_figure, lineage_text, run_metric, trajectory_figure
    from spnas.search.tb import save_figure

    run = RunDir(args.target)
    if not run.is_run():
        raise SpnasError(f"{run.root}: --lineage needs a run directory (one with {RunDir.JOURNAL})")
    events = read_events(run.journal)
    cfg = _run_config(run)
    metric = run_metric(events, default=str(cfg.get("search", {}).get("metric") or "AP"))
    def count(v: object) -> int | None:  # "auto" (the converged start's epochs are in its event) or unreadable: None
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    train, start = count(cfg.get("train", {}).get("epochs")), cfg.get("start", {}).get("train_epochs")
    epochs = {"train_epochs": train, "start_epochs": train if start is None else count(start)}  # unset: train.epochs
    if args.json:
        print(json.dumps([vars(s) for s in lineage(events, metric, **epochs)]))
        return 0
    print(lineage_text(events, metric, **epochs))
    out = Path(args.out) if args.out else run.root
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_figure(lineage_figure(events, metric, **epochs), out / "lineage")
        save_figure(trajectory_figure(events, metric), out / "trajectory")
    except OSError as e:
        raise SpnasError(f"{out}: cannot write the figures ({e.strerror or e}); pass --out DIR") from None
    print(f"figures: {out / 'lineage.png'} (.pdf), {out / 'trajectory.png'} (.pdf)")
    return 0


def _run_config(run) -> dict:
    """The run's ``config.yaml`` (the whole config, as the search wrote it) as plain sections; {} if unreadable."""
    import yaml

    try:
        cfg = yaml.safe_load(run.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: v for k, v in cfg.items() if isinstance(v, dict)} if isinstance(cfg, dict) else {}


def run_show(args: argparse.Namespace) -> int:
    if getattr(args, "lineage", False):
        try:
            return run_lineage(args)
        except SpnasError as e:
            print(f"spnas: error: {e}", file=sys.stderr)
            return 2
    try:
        from spnas.detect.infer import resolve_source
        from spnas.rundir import found_net

        arch, _ = resolve_source(found_net(args.target), plugins=args.plugin, stem=args.stem)
        d = describe(arch, _size(args.image_size))
    except SpnasError as e:
        print(f"spnas: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{d['code']}  stem={d['stem']}  blocks={d['blocks']}  fingerprint={d['fingerprint']}")
    print(f"{'stage':>5} {'blocks':>6} {'subnets':>7} {'in':>6} {'out':>6} {'stride':>6} {'output':>7} {'GMACs':>8}")
    for s in d["stages"]:
        print(
            f"{s['stage']:>5} {s['blocks']:>6} {s['subnets']:>7} {s['in_channels']:>6} {s['out_channels']:>6} "
            f"{s['stride']:>6} {str(s['output']):>7} {s['gmacs']:>8.3f}"
        )
    print(f"total: {d['gmacs']:.3f} GMACs at {d['size'][0]}x{d['size'][1]}, {d['params_m']:.2f} M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
