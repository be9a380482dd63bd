"""What the evidence benchmarks share: the sizes, the arms, the full training, a cache, and a small job scheduler.

Every arm starts from one documented start: the start net trained with the full scheme on the
training split (``start/``), since nothing pretrained can be loaded here. Then, per seed:

- ``search``: spnas's search (fair acceptance; serial level, final reignite, parallel level) from it;
- ``random``: random sampling in the same space (the same rules, bounds, fast scheme, start weights),
  as many trained candidates as the search of that seed trained, the best picked on the validation split;
- ``no search``: the start net trained on for the epochs the search's candidates trained, then the full scheme;
- the ``full`` training of a net: the full scheme from its weights (a fresh detector head), then measured
  on the validation and the test split. The test split is read only here.

Results are cached under ``--cache`` (default ``runs/evidence/<size>``), keyed by what decides them,
so the four scripts share runs: what one script trained, another reads. Jobs run in
``--procs`` processes (default 2, one torch thread each: 1.36x the throughput of one process with two
threads on the 2-core development machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import trees  # noqa: E402
from spnas.search.stats import bootstrap_ci, kendall_tau  # noqa: E402,F401  (kendall_tau: the scripts' name for it)
from spnas.rundir import RunDir  # noqa: E402
from spnas.search import Search  # noqa: E402,F401
from spnas.search.strategy import RandomSampling  # noqa: E402,F401  (re-exported: the benchmarks' control)

# The two sizes. quick: this machine (2 cores, no GPU); full: one GPU per process (see README, Results).
SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "start_code": "BB(1,d1,d1,d1)", "tile": 256, "image": 256, "seeds": [0, 1, 2],
        "fast": {"epochs": 2, "batch_size": 4, "base_lr": 0.08, "warmup_iters": 20, "grad_clip": 10.0},
        "full_epochs": 8, "start_epochs": 30,
        "search": {"lam": 2, "mutations": [1, 2], "max_generations": 2, "n_stuck": 4, "n_reignite": 0, "final_reignite": True,
                   "min_blocks": 4, "max_blocks": 12, "max_stages": 5},
        "parallel": {"enabled": True, "K": 1, "max_candidates": 2, "n_stuck_p": 2},
        "reignite": {"data": "fashion-mnist", "epochs": 1, "n_images": 2048, "image_size": 64, "batch_size": 64},
        "ranking_nets": 10, "device": "cpu",
        # anytime.py (5 seeds, an estimated 4.5 hours on 2 cores): searches of at least 30 trained candidates (8 generations of
        # 3 children and the continued parent: n_stuck 100 lets them run their budget; with 12 a first try stopped after 4
        # generations, 18 nets, as no child beat min_gain), the serial level only, 2 noise runs setting min_gain (auto). Its fast scheme is one pass over the 45 training
        # tiles (12 iterations; an "epoch" is half a pass, so a race's rung can be one; warm-up is capped at a fifth of a
        # run's iterations either way), the rest of the scheme as above;
        # the final training is the full scheme (full_epochs passes) as everywhere else. The multi-fidelity search runs
        # more generations (11: about the fixed search's epochs), so both curves span the same compute. Every arm
        # begins from the converged start: start.train_epochs: auto on the 30-epoch start, cycles of 2, 4, 8, ... epochs
        # (cycle_growth 2; cycles of a constant 2 epochs swung 0.31-0.40 validation AP50 with no trend) until two
        # in a row bring no gain, at most 126 epochs.
        "anytime": {"seeds": [0, 1, 2, 3, 4], "train": {"max_iters_per_epoch": 6, "warmup_iters": 4},
                    "search": {"lam": 3, "max_generations": 8, "n_stuck": 100, "final_reignite": False, "noise_seeds": 2},
                    "parallel": {"enabled": False}, "fidelity": {"rungs": [1, 1], "eta": 3}, "fidelity_generations": 11,
                    "curve_every": 4, "converge": {"patience": 2, "cycle_growth": 2, "max_epochs": 126}},
    },
    "smoke": {  # seconds: the benchmarks' own test (tests/test_benchmarks.py), not a measurement
        "start_code": "BB(1,d1,d1,d1)", "tile": 128, "image": 128, "seeds": [0, 1],
        "fast": {"epochs": 1, "batch_size": 2, "base_lr": 0.02, "warmup_iters": 2, "grad_clip": 10.0, "max_iters_per_epoch": 2},
        "full_epochs": 1, "start_epochs": 1,
        "search": {"lam": 1, "mutations": [1, 1], "max_generations": 1, "n_stuck": 4, "n_reignite": 0, "final_reignite": True,
                   "min_blocks": 4, "max_blocks": 8, "max_stages": 5},
        "parallel": {"enabled": True, "K": 1, "max_candidates": 1, "n_stuck_p": 1},
        "reignite": {"data": "generated", "epochs": 1, "n_images": 16, "image_size": 32, "batch_size": 8},
        "ranking_nets": 3, "device": "cpu",
        "anytime": {"seeds": [0, 1], "train": {}, "search": {"lam": 2, "max_generations": 1, "final_reignite": False},
                    "parallel": {"enabled": False}, "fidelity": {"rungs": [1, 1], "eta": 2}, "fidelity_generations": 1, "curve_every": 1,
                    "converge": {"patience": 1, "cycle_growth": 2, "max_epochs": 3}},
    },
    "full": {
        "start_code": "BB(11,d1,d1,d1)", "tile": 512, "image": 512, "seeds": [0, 1, 2],
        "fast": {"epochs": 3, "batch_size": 8, "base_lr": 0.08, "warmup_iters": 100, "grad_clip": 10.0},
        "full_epochs": 24, "start_epochs": 24,
        "search": {"lam": 3, "mutations": [1, 3], "max_generations": 10, "n_stuck": 12, "n_reignite": 1, "final_reignite": True,
                   "min_blocks": 8, "max_blocks": 24, "max_stages": 6},
        "parallel": {"enabled": True, "K": 3, "max_candidates": 12, "n_stuck_p": 6},
        "reignite": {"data": "fashion-mnist", "epochs": 4, "n_images": 60000, "image_size": 64, "batch_size": 128},
        "ranking_nets": 12, "device": "cuda",
        "anytime": {"seeds": [0, 1, 2, 3, 4], "train": {}, "search": {"lam": 3, "max_generations": 12, "n_stuck": 12, "noise_seeds": 2},
                    "parallel": {"enabled": True}, "fidelity": {"rungs": [1, 2], "eta": 3}, "fidelity_generations": 15, "curve_every": 3,
                    "converge": {"patience": 1, "cycle_growth": 2, "max_epochs": 189}},
    },
}
METRIC = "AP50"  # the search's metric on trees (DeepForest's own evaluation is at IoU 0.4; AP50 is the nearest COCO one)


# ------------------------------------------------------------------------------ context
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=sorted(SIZES), default="quick")
    p.add_argument("--cache", default=None, help="where runs are kept and shared between the scripts (default runs/evidence/<size>)")
    p.add_argument("--procs", type=int, default=None, help="jobs at once (default: 2 on CPU, 1 per GPU)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--trees-dir", default=None, help="deepforest's data directory (default: from the installed wheel)")
    p.add_argument("--figures", default="docs/figures", help="where the figures (PNG + PDF) are written")


def start(doc: str, make_jobs: Callable[[dict[str, Any]], list[Job]], argv: list[str] | None = None,
          more: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[dict[str, Any], dict[str, Any], argparse.Namespace, float]:
    """An evidence script's prologue: its arguments, its context, its jobs run (or read from the cache)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    if more is not None:
        more(p)
    args = p.parse_args(argv)
    t0 = time.time()
    ctx = context(args)
    return ctx, run_jobs(ctx, make_jobs(ctx)), args, t0


def context(args: argparse.Namespace) -> dict[str, Any]:
    size = dict(SIZES[args.size])
    cache = Path(args.cache or f"runs/evidence/{args.size}").resolve()
    split = trees.prepare(cache.parent / "trees", args.trees_dir)
    if args.seeds:
        size["seeds"] = list(args.seeds)
    device = size["device"]
    if device == "cuda":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    procs = args.procs or (max(1, _gpus()) if device == "cuda" else 2)
    return {"name": args.size, "size": size, "cache": str(cache), "split": split, "device": device, "procs": procs,
            "seeds_given": bool(args.seeds),
            "boxes": trees.box_counts(cache.parent / "trees"), "figures": args.figures}


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def data_section(ctx: dict[str, Any], val: str = "val") -> dict[str, Any]:
    s = ctx["split"]
    return {"format": "voc", "train": s["train"], "val": s[val], "classes": ["Tree"], "tile": ctx["size"]["tile"]}


def detector_section(ctx: dict[str, Any]) -> dict[str, Any]:
    im = ctx["size"]["image"]
    return {"head": "cascade", "preset": "lean", "options": {"min_size": im, "max_size": im}}


def search_config(ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    z = ctx["size"]
    return {
        "start": {"ir": str(Path(ctx["cache"]) / "start" / "arch"), "train_epochs": z["fast"]["epochs"]},
        "data": data_section(ctx),
        "detector": detector_section(ctx),
        "train": dict(z["fast"]),
        "search": {"metric": METRIC, "keep_inputs": True, **z["search"]},  # inputs kept: ranking trains them on
        "parallel": dict(z["parallel"]),
        "reignite": dict(z["reignite"]),
        "workers": {"backend": "inline", "threads": 1 if ctx["device"] == "cpu" else 0,
                    "devices": [_device_of_process(ctx)]},
        "seed": seed,
    }


def _device_of_process(ctx: dict[str, Any]) -> str:
    if ctx["device"] != "cuda":
        return "cpu"
    ident = mp.current_process()._identity
    return f"cuda:{(ident[0] - 1) % max(1, _gpus()) if ident else 0}"


def _setup(ctx: dict[str, Any]) -> None:
    import torch

    if ctx["device"] == "cpu":
        torch.set_num_threads(1)


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ training
def train_and_measure(ctx: dict[str, Any], arch_dir: str | None, code: str | None, epochs: int, out: Path, seed: int,
                      schedule: str = "step") -> dict[str, Any]:
    """The full scheme (``epochs``, step decay) from ``arch_dir``'s weights (or ``code`` at random init), a fresh head;
    then the metrics on the validation split, the test split and the other image. Writes ``out/arch`` and ``out/result.json``."""
    return train_net(ctx, out, seed=seed, arch_dir=arch_dir, code=code, train={"epochs": epochs, "schedule": schedule})


def train_net(ctx: dict[str, Any], out: Path, *, seed: int, arch_dir: str | None = None, code: str | None = None,
              arch: Any = None, head: str | None = None, train: dict[str, Any] | None = None,
              splits: tuple[str, ...] = ("val", "test", "other")) -> dict[str, Any]:
    """Train one detector and measure it on ``splits``; cached in ``out/result.json`` (returned at once when there).

    The backbone is ``arch`` (an Arch), else ``arch_dir``'s saved net, else ``code`` at random init (``seed``);
    ``head``: a detector-weights file whose FPN and heads are carried over (else a fresh head). ``train``: the
    settings over the size's fast scheme (``epochs``, ``schedule``, ``base_lr``, ``warmup_iters``, ...). Writes
    ``out/arch`` (the trained backbone), ``out/head.safetensors`` (the rest: what a child inherits) and ``out/result.json``."""
    import torch
    from safetensors.torch import load_file

    from spnas.detect import lift
    from spnas.detect.detector import build_detector, carry_over
    from spnas.detect.train import FULL, evaluate, train_detector
    from spnas.ir import load, parse, save
    from spnas.ir.io import write_tensors
    from spnas.search.evaluator import BODY, HEAD_FILE, load_datasets

    done = _read(out / "result.json")
    if done is not None:
        return done
    _setup(ctx)
    device = _device_of_process(ctx)
    torch.manual_seed(seed)
    train_ds, val_ds = load_datasets(data_section(ctx))
    sets = {"val": val_ds}
    for name in splits:
        if name != "val":
            sets[name] = load_datasets(data_section(ctx, name))[1]
    if arch is None:
        arch = load(arch_dir) if arch_dir else parse(code, seed=seed)
    det = detector_section(ctx)
    model = build_detector(arch, train_ds.num_classes, det["head"], preset=det["preset"], **det["options"])
    if head is not None:
        carry_over(load_file(head), model)
    fast = ctx["size"]["fast"]
    settings = {"batch_size": fast["batch_size"], "base_lr": fast["base_lr"], "warmup_iters": fast["warmup_iters"],
                "grad_clip": fast["grad_clip"], "max_iters_per_epoch": fast.get("max_iters_per_epoch", 0), **(train or {})}
    cfg = dataclasses.replace(FULL, **settings, seed=seed)
    t0 = time.perf_counter()
    train_detector(model, train_ds, None, cfg, device=device, quiet=True)
    seconds = time.perf_counter() - t0
    keep = ("AP", "AP50", "AP75", "VOC_AP50")
    measured = {name: evaluate(model, sets[name], device=device) for name in splits}
    save(lift(arch, model.backbone.body.to("cpu")), out / "arch")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if not k.startswith(BODY)}
    write_tensors(state, out / HEAD_FILE)
    result = {"code": arch.code(), "epochs": cfg.epochs, "seed": seed, "seconds": round(seconds, 1),
              "gmacs": round(arch.flops((ctx["size"]["image"],) * 2) / 1e9, 4), "params_m": round(arch.params() / 1e6, 4),
              **{name: {k: round(float(m[k]), 5) for k in keep} for name, m in measured.items()}}
    _write(out / "result.json", result)
    return result


# ------------------------------------------------------------------------------ the jobs (each idempotent: a cached result is returned)
def job_start(ctx: dict[str, Any]) -> dict[str, Any]:
    """The documented start: the start code trained with the full scheme on the training split, seed 0."""
    z = ctx["size"]
    return train_and_measure(ctx, None, z["start_code"], z["start_epochs"], Path(ctx["cache"]) / "start", seed=0)


def job_search(ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    from spnas.search import Search
    from spnas.search.config import config_from_dict

    out = Path(ctx["cache"]) / "search" / f"s{seed}"
    done = _read(RunDir(out).summary)
    if done is not None and RunDir(out).is_run() and any('"event": "done"' in ln for ln in RunDir(out).journal.open()):
        return done
    _setup(ctx)
    cfg = config_from_dict(search_config(ctx, seed), where="evidence")
    return Search(cfg, out, resume=RunDir(out).is_run(), quiet=True).run()


def job_random(ctx: dict[str, Any], seed: int, n: int) -> dict[str, Any]:
    from spnas.search.config import config_from_dict

    out = Path(ctx["cache"]) / "random" / f"s{seed}"
    done = _read(RunDir(out).summary)
    if done is not None and done.get("planned") == n:
        return done
    _setup(ctx)
    cfg = config_from_dict(search_config(ctx, seed), where="evidence")
    return Search(cfg, out, strategy=RandomSampling(n), resume=RunDir(out).is_run(), quiet=True).run()


def job_full(ctx: dict[str, Any], arch_dir: str, seed: int, tag: str) -> dict[str, Any]:
    return train_and_measure(ctx, arch_dir, None, ctx["size"]["full_epochs"], Path(ctx["cache"]) / "full" / tag, seed=seed)


def job_full_best(ctx: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """The full training of the net a run found (its ``best``), from the weights the run left it."""
    summary = _read(RunDir(run_dir(ctx, arm, seed)).summary)
    cid = summary["best_id"]
    arch = RunDir(run_dir(ctx, arm, seed)).candidate(cid) / "trained"
    return {**job_full(ctx, str(arch), seed, f"{arm}_s{seed}_{cid}_trained"), "id": cid}


def job_full_step(ctx: dict[str, Any], seed: int, index: int) -> dict[str, Any] | None:
    """The full training of step ``index`` of a search's Table-6 steps (None when that search has fewer steps).

    Step 0, the start net, is the shared start's full training (the same as ``start`` in search_vs_random)."""
    steps = ablation_steps(run_dir(ctx, "search", seed))
    if index >= len(steps):
        return None
    st = steps[index]
    if st["step"] == "start":
        res = job_full(ctx, str(Path(ctx["cache"]) / "start" / "arch"), seed, f"start_s{seed}")
    else:
        res = job_full(ctx, st["arch"], seed, f"search_s{seed}_{st['id']}_trained")
    return {**res, **{k: v for k, v in st.items() if k != "arch"}}


def run_dir(ctx: dict[str, Any], arm: str, seed: int) -> Path:
    return Path(ctx["cache"]) / arm / f"s{seed}"


def full_job(ctx: dict[str, Any], arm: str, seed: int, cid: str, deps: tuple[str, ...], weights: str = "trained") -> Job:
    """The full training of candidate ``cid`` of ``arm``'s run for ``seed`` (``weights``: its trained or input weights)."""
    key = f"full:{arm}:s{seed}:{cid}:{weights}"
    if arm == "start":
        return Job(key, job_full, (str(Path(ctx["cache"]) / "start" / "arch"), seed, f"start_s{seed}"), deps=("start",))
    arch = str(RunDir(run_dir(ctx, arm, seed)).candidate(cid) / weights)
    return Job(key, job_full, (arch, seed, f"{arm}_s{seed}_{cid}_{weights}"), deps=deps)


def job_no_search(ctx: dict[str, Any], seed: int, epochs: int) -> dict[str, Any]:
    """The start net trained on for the search's ``epochs`` plus the full scheme, in one step schedule."""
    start = str(Path(ctx["cache"]) / "start" / "arch")
    return train_and_measure(ctx, start, None, epochs + ctx["size"]["full_epochs"], Path(ctx["cache"]) / "full" / f"nosearch_s{seed}_e{epochs}", seed=seed)


# ------------------------------------------------------------------------------ random sampling in the search's space
# ------------------------------------------------------------------------------ reading the runs
def journal(run: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in RunDir(run).journal.read_text().splitlines() if ln.strip()]


def trained_candidates(run: Path) -> list[dict[str, Any]]:
    """Evaluated events of a run (one per trained candidate), with the proposal's code, GMACs and role."""
    ev = journal(run)
    prop = {e["id"]: e for e in ev if e["event"] == "proposed"}
    return [{**prop[e["id"]], **e} for e in ev if e["event"] in ("evaluated", "failed")]


def compute_epochs(run: Path, fast_epochs: int) -> int:
    """Detection-training epochs a run spent (its reignites' classification epochs are not counted; a
    multi-fidelity rung counts its own epochs)."""
    return sum(int(c.get("epochs") or fast_epochs) for c in trained_candidates(run) if c["event"] == "evaluated")


def ablation_steps(run: Path) -> list[dict[str, Any]]:
    """Table 6's steps of one search: start, serial level, after reignite, parallel level (id, code, fast metric)."""
    ev = journal(run)
    prop = {e["id"]: e for e in ev if e["event"] == "proposed"}
    metric = {e["id"]: e.get("metric") for e in ev if e["event"] == "evaluated"}
    bests = [e for e in ev if e["event"] == "best"]
    serial = [e for e in bests if e.get("phase") == "serial"]
    rei = [e for e in ev if e["event"] == "reignited" and e.get("final")]
    par = [e for e in bests if e.get("phase") == "parallel"]
    done = [e for e in ev if e["event"] == "done"][0]
    steps = [("start", "start"), ("serial level", serial[-1]["id"])]
    if rei and rei[0].get("metric") is not None:
        steps.append(("after reignite", rei[0]["id"]))
    steps.append(("parallel level", par[-1]["id"] if par else done["id"]))
    return [{"step": name, "id": cid, "code": prop[cid]["encoding"], "gmacs": prop[cid]["gmacs"], "params_m": prop[cid]["params_m"],
             "fast_val": metric.get(cid), "arch": str(RunDir(run).candidate(cid) / "trained")} for name, cid in steps]


# ------------------------------------------------------------------------------ scheduling
@dataclasses.dataclass
class Job:
    key: str
    fn: Callable[..., Any]
    args: tuple
    deps: tuple[str, ...] = ()
    make_args: Callable[[dict[str, Any]], tuple] | None = None  # args from the dependencies' results


def run_jobs(ctx: dict[str, Any], jobs: list[Job], log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
             on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``jobs`` in ``ctx['procs']`` processes (spawned), each when its dependencies are done;
    ``on_done(results)`` after each (a script ships what is whole)."""
    results: dict[str, Any] = {}
    pending = {j.key: j for j in jobs}
    running: dict[Any, Job] = {}
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=ctx["procs"], mp_context=mp.get_context("spawn")) as pool:
        while pending or running:
            for key, j in list(pending.items()):
                if len(running) >= ctx["procs"]:
                    break
                if all(d in results for d in j.deps):
                    args = j.make_args(results) if j.make_args else j.args
                    running[pool.submit(j.fn, ctx, *args)] = j
                    del pending[key]
            if not running:
                raise RuntimeError(f"jobs wait on missing dependencies: {sorted(pending)}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                j = running.pop(f)
                results[j.key] = f.result()
                log(f"# {time.time() - t0:7.0f} s  done {j.key}")
                if on_done is not None:
                    on_done(results)
    return results


# ------------------------------------------------------------------------------ statistics
def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def pm(xs: list[float], digits: int = 3) -> str:
    m, s = mean_std(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def bootstrap_tau(x: list[float], y: list[float], *, n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of Kendall's tau (pairs resampled with replacement)."""
    return bootstrap_ci(kendall_tau, x, y, n=n, seed=seed, level=level)


def save_figure(fig: Any, path: str | Path) -> list[str]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        fig.savefig(path.with_suffix(f".{ext}"), dpi=130, bbox_inches="tight")
        out.append(str(path.with_suffix(f".{ext}")))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def write_results(ctx: dict[str, Any], name: str, table_md: str, payload: dict[str, Any]) -> Path:
    """``<cache>/results/<name>.md`` (the README's table is this file) and ``.json``."""
    d = Path(ctx["cache"]) / "results"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.md").write_text(table_md)
    _write(d / f"{name}.json", payload)
    return d / f"{name}.md"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
