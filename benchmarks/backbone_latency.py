"""Compiled backbone vs torchvision's own model: same weights, CPU, batch 1, eval mode.

Ratios are spnas time / torchvision time measured interleaved in one process; targets: plain
compiled <= 1.05x, inference export (BN folded, channels-last) <= 0.80x; outputs equal within 1e-4.
The export is measured with each backend of ``export_inference``: ``eager`` (the folded module),
``torchscript`` (traced, frozen, optimize_for_inference) and ``inductor`` (torch.compile with
freezing); the target is judged on the best of them, and the JSON says which.

    python benchmarks/backbone_latency.py [--models resnet18 resnet50] [--sizes 224 512] [--repeats 20]
                                          [--backends eager torchscript inductor]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import emit_json, interleaved_times, median, print_table  # noqa: E402
from spnas.detect import compile_backbone, export_inference  # noqa: E402
from spnas.detect.compile import EXPORT_BACKENDS  # noqa: E402
from spnas.ir import from_torchvision  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 512])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--backends", nargs="+", default=list(EXPORT_BACKENDS), choices=EXPORT_BACKENDS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        model = getattr(torchvision.models, name)().eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        tv = IntermediateLayerGetter(model, {f"layer{i}": f"res{i + 1}" for i in range(1, 5)}).eval()
        body = compile_backbone(from_torchvision(model)).eval()
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            runs = {"tv": tv, "compiled": body}
            runs.update({b: export_inference(body, example=x, backend=b) for b in args.backends})
            with torch.inference_mode():
                ref = tv(x)
                err = {k: max(((m(x)[o] - ref[o]).abs().max() / ref[o].abs().max()).item() for o in ref) for k, m in runs.items()}
                t = interleaved_times({k: (lambda m=m: m(x)) for k, m in runs.items()}, repeats=args.repeats)
            tv_s = median(t["tv"])
            ratios = {k: round(median(t[k]) / tv_s, 3) for k in runs if k != "tv"}
            best = min(args.backends, key=lambda b: ratios[b])
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "torchvision_ms": round(tv_s * 1e3, 2),
                    "compiled_ms": round(median(t["compiled"]) * 1e3, 2),
                    "compiled_ratio": ratios["compiled"],
                    **{f"{b}_ratio": ratios[b] for b in args.backends},
                    "best_export": best,
                    "best_export_ms": round(median(t[best]) * 1e3, 2),
                    "max_rel_err_compiled": float(f"{err['compiled']:.2e}"),
                    "max_rel_err_export": float(f"{max(err[b] for b in args.backends):.2e}"),
                }
            )
    print_table(rows, list(rows[0]))
    ok = all(
        r["compiled_ratio"] <= 1.05 and r[f"{r['best_export']}_ratio"] <= 0.80 and r["max_rel_err_export"] <= 1e-4
        for r in rows
    )
    targets = {"compiled_ratio": 1.05, "best_export_ratio": 0.80, "max_rel_err": 1e-4}
    emit_json("backbone_latency", rows, threads=args.threads, targets=targets, all_met=ok)


if __name__ == "__main__":
    main()
