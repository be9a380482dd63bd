"""Per morphism rule: preservation error and the cost of apply + verify and of compiling.

On a ResNet-50-sized Arch (BNB(111,d111,d11111,d11), random BN statistics) each rule is applied at
up to ``--sites`` random sites; the error is max|after - before| / max|before| over the outputs in
eval and train mode (2 x 3 x 128 x 128), in float32 and in float64 (train-mode BN over a 4x4 map
amplifies float32 rounding; float64 shows the rule's own arithmetic). Targets: apply + verify <= 20 ms, compile <= 100 ms.

    python benchmarks/morphism.py [--sites 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import emit_json, print_table  # noqa: E402
from spnas.detect import compile_backbone  # noqa: E402
from spnas.ir import parse  # noqa: E402
from spnas.ops import check, get_morphism, list_morphisms, load_plugin  # noqa: E402


def randomise_bn(arch, seed):
    g = torch.Generator().manual_seed(seed)
    for key, t in list(arch.weights.items()):
        node, name = key.split("/", 1)
        if key.endswith("running_mean"):
            arch.set_tensors(node, {name: torch.randn(t.shape, generator=g) * 0.1})
        elif key.endswith("running_var"):
            arch.set_tensors(node, {name: torch.rand(t.shape, generator=g) + 0.5})
    return arch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--code", default="BNB(111,d111,d11111,d11)")
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    for plugin in ("dilate.py", "squeeze_excite.py"):  # a rule on existing blocks; a rule with its own node kind
        load_plugin(os.path.join(os.path.dirname(__file__), "..", "examples", "morphisms", plugin))
    rng = np.random.default_rng(0)
    arch = randomise_bn(parse(args.code), 0)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in list_morphisms():
        m = get_morphism(name)
        sites = m.sites(arch)
        if not sites:
            continue
        picks = [sites[i] for i in rng.choice(len(sites), size=min(args.sites, len(sites)), replace=False)]
        r32 = [check(m, arch, x, site=s, rng=np.random.default_rng(i)) for i, s in enumerate(picks)]
        r64 = [check(m, arch, x.double(), site=s, rng=np.random.default_rng(i)) for i, s in enumerate(picks)]
        errs = [r.error for r in r32]
        times = []
        for i in range(args.repeats):
            s = picks[i % len(picks)]
            t0 = time.perf_counter()
            m.apply(arch, s, rng)  # apply() verifies the result
            times.append(time.perf_counter() - t0)
        child = m.apply(arch, picks[0], rng)
        ctimes = []
        for _ in range(max(5, args.repeats // 2)):
            t0 = time.perf_counter()
            compile_backbone(child)
            ctimes.append(time.perf_counter() - t0)
        rows.append(
            {
                "rule": name,
                "exact": m.exact,
                "sites": len(picks),
                "max_err": float(f"{max(errs):.3g}"),
                "mean_err": float(f"{statistics.fmean(errs):.3g}"),
                "max_eval_err": float(f"{max(r.eval_error for r in r32):.3g}"),
                "max_train_err": float(f"{max(r.train_error for r in r32):.3g}"),
                "max_err_f64": float(f"{max(r.error for r in r64):.3g}"),
                "apply_verify_ms": round(statistics.median(times) * 1e3, 2),
                "compile_ms": round(statistics.median(ctimes) * 1e3, 2),
            }
        )
    print_table(rows, list(rows[0]))
    ok = all(r["apply_verify_ms"] <= 20 and r["compile_ms"] <= 100 and (not r["exact"] or r["max_err_f64"] <= 1e-5) for r in rows)
    emit_json("morphism", rows, code=args.code, targets={"apply_verify_ms": 20, "compile_ms": 100}, all_met=ok)


if __name__ == "__main__":
    main()
