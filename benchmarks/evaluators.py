"""Evaluator back ends: per-candidate overhead, and candidates per hour with 1, 2, 3 Ray nodes.

Part 1 (overhead): a no-op evaluation that only copies its input net to its output (ResNet-18,
45 MB of weights each way, as a real candidate moves) through local worker processes and through
Ray tasks on a one-node cluster, with candidates as files (``transport: files``) and through the
object store (``object_store``). Overhead per candidate = wall time / candidates, one in flight.

Part 2 (throughput): real candidates of ``tests/search/tiny.yaml`` (``BB(1,d1,d1,d1)``, 64 px, one
epoch of 8 images, 1 torch thread each) on a simulated cluster (``ray.cluster_utils.Cluster``) of
1, 2 and 3 worker nodes of 1 CPU each, and on 1 and 2 local processes. This machine has 2 cores, so
3 nodes oversubscribe it: the scaling it shows is the machine's, see docs/scaling.md.

    python benchmarks/evaluators.py [--tasks 20] [--candidates 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

from benchmarks.common import emit_json, print_table  # noqa: E402
from spnas.ir import parse, save  # noqa: E402
from spnas.search.evaluator import HEAD_FILE, LocalPool, RayPool  # noqa: E402
from spnas.search.records import DetectorSpec, EvalRequest, EvalResult, Outcome  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "tests" / "search" / "tiny.yaml"


def copy_evaluate(req: EvalRequest) -> EvalResult:
    """A no-op candidate: its output net is its input net; the head is one small tensor."""
    d = Path(req.dir)
    (d / "trained").mkdir(exist_ok=True)
    for name in ("arch.yaml", "weights.safetensors"):
        shutil.copyfile(d / "input" / name, d / "trained" / name)
    (d / HEAD_FILE).write_bytes(b"0" * 1024)
    return EvalResult(req.id, Outcome.OK, metric=0.0)


def _requests(root: Path, n: int, code: str, template: EvalRequest) -> list[EvalRequest]:
    arch = parse(code)
    reqs = []
    for i in range(n):
        d = root / "candidates" / f"c{i}"
        save(arch, d / "input")
        reqs.append(dataclasses.replace(template, id=f"c{i}", dir=str(d)))
    return reqs


def _template(data: dict[str, Any], detector: DetectorSpec, train: Any, metric: str) -> EvalRequest:
    return EvalRequest(id="", dir="", data=data, detector=detector, train=train, metric=metric)


def _wall(pool: Any, fn: Any, reqs: list[EvalRequest]) -> float:
    pool.map(fn, reqs[:1])  # warm: workers started, modules imported
    t0 = time.perf_counter()
    res = pool.map(fn, reqs)
    wall = time.perf_counter() - t0
    bad = [r for r in res if not r.ok]
    if bad:
        raise SystemExit(f"a benchmark candidate failed: {bad[0].reason}")
    return wall


def overhead(tasks: int) -> list[dict[str, Any]]:
    import ray

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from spnas.detect.detector import resolve_options
        from spnas.detect.train import FAST

        reqs = _requests(Path(tmp), tasks, "BB(11,d1,d1,d1)", _template({}, DetectorSpec("faster", resolve_options("lean")), FAST, "AP"))
        mb = sum(f.stat().st_size for f in (Path(reqs[0].dir) / "input").iterdir()) / 2**20
        pool = LocalPool(["cpu"], threads=1)
        try:
            rows.append({"backend": "local process", "transport": "files", "ms_per_candidate": _wall(pool, copy_evaluate, reqs) / tasks * 1e3})
        finally:
            pool.close()
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            for transport in ("files", "object_store"):
                pool = RayPool(["cpu"], threads=1, transport=transport)
                rows.append({"backend": "ray (1 node)", "transport": transport,
                             "ms_per_candidate": _wall(pool, copy_evaluate, reqs) / tasks * 1e3})
        finally:
            ray.shutdown()
    for r in rows:
        r["ms_per_candidate"] = round(r["ms_per_candidate"], 1)
        r["net_mb"] = round(mb, 1)
    return rows


def throughput(candidates: int) -> list[dict[str, Any]]:
    import ray
    from ray.cluster_utils import Cluster

    from spnas.search import load_config
    from spnas.search.evaluator import evaluate_candidate
    from spnas.search.runner import resolve_data

    cfg = load_config(TINY)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = resolve_data(cfg, Path(tmp))
        from spnas.detect.detector import resolve_options
        from spnas.detect.train import config_from_dict

        det = cfg.detector
        template = _template(data, DetectorSpec(det.head, resolve_options(det.preset, **det.options)),
                             config_from_dict({**cfg.train.model_dump(), "loader_workers": 0, "seed": 0}), cfg.search.metric)
        reqs = _requests(Path(tmp), candidates, cfg.start.code, template)
        for n in (1, 2):
            pool = LocalPool(["cpu"] * n, threads=1)
            try:
                wall = _wall(pool, evaluate_candidate, reqs)
            finally:
                pool.close()
            rows.append({"backend": "local processes", "workers": n, "candidates_per_hour": round(candidates / wall * 3600)})
        for n in (1, 2, 3):
            c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
            for i in range(n):
                c.add_node(num_cpus=1, env_vars={"SPNAS_SCRATCH": str(Path(tmp) / f"node{n}-{i}")})
            c.wait_for_nodes()
            ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
            try:
                pool = RayPool(["cpu"] * n, threads=1)
                wall = _wall(pool, evaluate_candidate, reqs)
            finally:
                ray.shutdown()
                c.shutdown()
            rows.append({"backend": "ray nodes (object store)", "workers": n, "candidates_per_hour": round(candidates / wall * 3600)})
    base = {r["backend"]: r["candidates_per_hour"] for r in rows if r["workers"] == 1}
    for r in rows:
        r["speedup"] = round(r["candidates_per_hour"] / base[r["backend"]], 2)
        r["efficiency"] = round(r["speedup"] / r["workers"], 2)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20, help="no-op candidates per back end (overhead)")
    p.add_argument("--candidates", type=int, default=6, help="real tiny candidates per configuration (throughput)")
    args = p.parse_args()
    rows = overhead(args.tasks)
    print_table(rows, list(rows[0]))
    rows2 = throughput(args.candidates)
    print_table(rows2, list(rows2[0]))
    emit_json("evaluators", rows + rows2, cores=os.cpu_count(), tasks=args.tasks, candidates=args.candidates)


if __name__ == "__main__":
    main()
