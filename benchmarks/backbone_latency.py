"""Compiled backbone vs torchvision's own model: same weights, CPU, batch 1, eval mode.

Ratios are spnas time / torchvision time measured interleaved in one process; targets: plain
compiled <= 1.05x, inference export (BN folded; ``export`` = eager channels-last, ``frozen`` = traced,
frozen, optimize_for_inference) <= 0.80x; outputs equal within 1e-4.

    python benchmarks/backbone_latency.py [--models resnet18 resnet50] [--sizes 224 512] [--repeats 20]
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
from spnas.ir import from_torchvision  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 512])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
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
        export = export_inference(body)
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            frozen = export_inference(body, example=x)
            with torch.inference_mode():
                ref = tv(x)
                err_c = max(((body(x)[k] - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref)
                err_e = max(((export(x)[k] - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref)
                err_f = max(((frozen(x)[k] - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref)

                def run(m):
                    return lambda: m(x)

                t = interleaved_times(
                    {"tv": run(tv), "compiled": run(body), "export": run(export), "frozen": run(frozen)}, repeats=args.repeats
                )
            tv_ms = median(t["tv"]) * 1e3
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "torchvision_ms": round(tv_ms, 2),
                    "compiled_ms": round(median(t["compiled"]) * 1e3, 2),
                    "export_ms": round(median(t["export"]) * 1e3, 2),
                    "compiled_ratio": round(median(t["compiled"]) * 1e3 / tv_ms, 3),
                    "export_ratio": round(median(t["export"]) * 1e3 / tv_ms, 3),
                    "frozen_ratio": round(median(t["frozen"]) * 1e3 / tv_ms, 3),
                    "max_rel_err_compiled": float(f"{err_c:.2e}"),
                    "max_rel_err_export": float(f"{max(err_e, err_f):.2e}"),
                }
            )
    print_table(rows, list(rows[0]))
    ok = all(
        r["compiled_ratio"] <= 1.05 and min(r["export_ratio"], r["frozen_ratio"]) <= 0.80 and r["max_rel_err_export"] <= 1e-4
        for r in rows
    )
    targets = {"compiled_ratio": 1.05, "best_export_ratio": 0.80}
    emit_json("backbone_latency", rows, threads=args.threads, targets=targets, all_met=ok)


if __name__ == "__main__":
    main()
