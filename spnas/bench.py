"""``python -m spnas.bench ARCH [--size 512] [--batch 1] [--device cpu] [--repeats 20]``

Benchmark a found net: GMACs and parameters of the backbone, latency of the compiled backbone,
of its inference export (BN folded, channels-last; eager, frozen TorchScript on CPU, and frozen
under torch.compile/inductor unless ``--no-inductor``) and of the whole
detector in eval mode, medians of interleaved runs, printed as a table and a JSON line. ``ARCH``
is a saved Arch directory (``runs/x/best/arch``) or a code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spnas.bench", description=__doc__.split("\n\n")[1])
    p.add_argument("arch", help="a saved Arch directory or a code")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--classes", type=int, default=80, help="object classes of the detector head")
    p.add_argument("--head", default="cascade", choices=["cascade", "faster"])
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a plugin file whose node kinds the saved net uses (repeatable)")
    p.add_argument("--no-inductor", action="store_true", help="skip the torch.compile export (needs a C++ compiler; 2-10 s to compile)")
    args = p.parse_args(argv)
    import torch

    from spnas.detect import compile_backbone, export_inference
    from spnas.detect.detector import build_detector
    from spnas.errors import SpnasError
    from spnas.ir import load, parse

    try:
        from spnas.ops import load_plugin

        for f in args.plugin:
            load_plugin(f)
        arch = load(args.arch) if Path(args.arch).is_dir() else parse(args.arch)
    except SpnasError as e:
        print(f"spnas: error: {e}", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    body = compile_backbone(arch).eval().to(dev)
    runs = {"backbone": body, "export": export_inference(body)}
    if dev.type == "cpu":
        runs["torchscript"] = export_inference(body, example=x, backend="torchscript")
    if not args.no_inductor:
        try:
            runs["inductor"] = export_inference(body, example=x, backend="inductor")
        except SpnasError as e:
            print(f"spnas: warning: {e}", file=sys.stderr)
    det = build_detector(arch, args.classes, args.head, min_size=args.size, max_size=args.size).eval().to(dev)
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
    row = {"code": arch.code(), "size": args.size, "batch": args.batch, "device": str(dev), "gmacs": round(arch.flops((args.size, args.size)) / 1e9, 3),
           "params_m": round(arch.params() / 1e6, 3), **{f"{k}_ms": round(statistics.median(v) * 1e3, 2) for k, v in times.items()}}
    width = max(map(len, row))
    for k, v in row.items():
        print(f"{k.ljust(width)}  {v}")
    print(json.dumps({"benchmark": "spnas.bench", "rows": [row]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
