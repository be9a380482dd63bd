"""Anytime curves: the incumbent as a function of compute, for the search and every control (issue 25).

    python benchmarks/anytime.py --size quick     # this machine: 2 cores; resumable, cached per trained net
    python benchmarks/anytime.py --size full      # a GPU machine
    python benchmarks/anytime.py --size quick --ship --from-table   # resumable across machines (below)

Per seed (the size's ``anytime.seeds``, 5; ``--seeds`` overrides), from the shared converged start
(the start net trained with the full scheme on the training split for ``start_epochs``, then trained
on by spnas's ``start.train_epochs: auto`` in cycles of the anytime scheme until the validation
metric stops improving, ``anytime.converge``: its backbone and its detector head, which every arm
carries over; its learning curve is the shipped table's ``start``), each arm with the size's fast scheme and
``anytime.train`` over it (at the quick size: one pass over the training tiles, an "epoch" being
half a pass):

- search (fixed): spnas's search, the fixed fast scheme (every child trains ``fast.epochs``), sized
  by the size's ``anytime.search`` so that it trains at least 30 candidates at the quick size;
- search (multi-fidelity): the same search with ``search.fidelity`` (successive halving in each
  generation, the size's ``anytime.fidelity``), run for ``anytime.fidelity_generations`` so that it
  spends about the fixed search's compute;
- random search: as many random walks from the start net (the search's rules and bounds), each
  trained once with the fast scheme from the start's weights: the best so far on validation;
- random sampling: one random draw (the random search's first net) trained on, from the weights
  it inherited, for the search's whole compute in one schedule (validation every ``anytime.curve_every``
  epochs; its backbone saved at each budget);
- train longer: the converged start trained on for the search's whole compute, the same way.

The curves: the best validation metric so far against cumulative training epochs and seconds (the
searches' and random search's from their journals, the two single nets' from their training
histories). The table: at three budgets (a third, two thirds and all of the fixed search's epochs),
each arm's incumbent by validation, and its test metric after the same final training: the full
scheme (``full_epochs``, a fresh head) from the backbone it has at that budget (a search's incumbent
as trained; a single net as its curve left it at the budget).
Mean ± std over the seeds; figure ``anytime`` (PNG and PDF), spread shaded. Printed: the table and
one JSON line.

A seed is the unit of the shipped table (``benchmarks/tables/anytime_trees_<size>.json``, with
``--ship``): the moment all of a seed's jobs are done, its record (each arm's curve, the budgets,
each arm's incumbent and final test metric per budget, the nets trained) is written there. The cache
is not committed; with ``--from-table`` a run on another machine (or after the cache is gone) takes
the seeds the table holds as measured and trains only the others.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json  # noqa: E402
import os  # noqa: E402

from benchmarks import evidence as ev  # noqa: E402
from benchmarks.common import emit_json, print_table  # noqa: E402
from spnas.rundir import RunDir  # noqa: E402

ARMS = ("fixed", "multi-fidelity", "random search", "random sampling", "train longer")
SEARCHES = {"fixed": "anytime_fixed", "multi-fidelity": "anytime_mf", "random search": "anytime_random"}
BUDGETS = (1 / 3, 2 / 3, 1.0)
SHARED = {"start", "converge"}  # the jobs every seed begins after
TABLES = Path(__file__).resolve().parent / "tables"


# ------------------------------------------------------------------------------ the runs
def seeds_of(ctx: dict[str, Any]) -> list[int]:
    return list(ctx["size"]["seeds"]) if ctx.get("seeds_given") else list(ctx["size"]["anytime"]["seeds"])


def start_paths(ctx: dict[str, Any]) -> tuple[str, str]:
    """The converged start every arm begins from: its backbone (an Arch directory) and its detector head."""
    d = Path(ctx["cache"]) / "anytime_start"
    return str(d / "arch"), str(d / "head.safetensors")


def anytime_config(ctx: dict[str, Any], seed: int, fidelity: bool) -> dict[str, Any]:
    cfg = ev.search_config(ctx, seed)
    a = ctx["size"]["anytime"]
    # the start's detector head too, as the single nets' curves carry it: without it the searches' first fast run
    # re-learns a fresh head (the start's validation AP50 0.34 fell to 0.05 in a first try) and every search arm
    # pays for it while the controls do not
    arch, head = start_paths(ctx)
    cfg["start"] = {**cfg["start"], "ir": arch, "head": head}
    cfg["train"] = {**cfg["train"], **a["train"]}
    cfg["search"] = {**cfg["search"], **a["search"],
                     **({"fidelity": a["fidelity"], "max_generations": a["fidelity_generations"]} if fidelity else {})}
    cfg["parallel"] = {**cfg["parallel"], **a["parallel"]}
    return cfg


def job_converge(ctx: dict[str, Any]) -> dict[str, Any]:
    """The converged start: the documented start (``start_epochs`` of the full scheme, its head carried over)
    trained on by spnas's own ``start.train_epochs: auto`` (cycles of the anytime scheme until the validation
    metric has not improved for ``anytime.converge.patience`` cycles or ``max_epochs`` are spent), then its
    noise runs; no generation. Its best cycle's backbone and head are copied to :func:`start_paths`. Returns
    the learning curve, the epochs it took, why it stopped, and the noise around it."""
    import shutil

    from spnas.search import Search, config_from_dict

    out = ev.run_dir(ctx, "anytime_converge", 0)
    arch, head = start_paths(ctx)
    copied = Path(head).is_file()  # the head is copied last: its presence says the run and the copy are whole
    if not copied:
        ev._setup(ctx)
        cfg = anytime_config(ctx, 0, False)
        cfg["start"] = {**cfg["start"], "ir": str(Path(ctx["cache"]) / "start" / "arch"),
                        "head": str(Path(ctx["cache"]) / "start" / "head.safetensors"),
                        "train_epochs": "auto", **ctx["size"]["anytime"]["converge"]}
        cfg["search"] = {**cfg["search"], "max_generations": 0}
        Search(config_from_dict(cfg, where="anytime converge"), out, resume=RunDir(out).is_run(), quiet=True).run()
    events = ev.journal(out)
    conv = next(e for e in events if e["event"] == "converged")
    if not copied:
        cand = RunDir(out).candidate(conv["id"])
        Path(arch).parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(arch, ignore_errors=True)
        shutil.copytree(cand / "trained", arch)
        shutil.copyfile(cand / "head.safetensors", head + ".tmp")
        os.replace(head + ".tmp", head)
    noise = next((e for e in events if e["event"] == "noise"), {})
    return {"id": conv["id"], "epochs": conv["epochs"], "trained_epochs": conv["trained_epochs"], "reason": conv.get("reason"),
            "metric": conv["metric"], "curve": conv["curve"], "noise": {k: noise.get(k) for k in ("metrics", "mean", "std")},
            "before_epochs": ctx["size"]["start_epochs"]}


def job_anytime_search(ctx: dict[str, Any], seed: int, fidelity: bool) -> dict[str, Any]:
    from spnas.search import Search, config_from_dict

    out = ev.run_dir(ctx, SEARCHES["multi-fidelity" if fidelity else "fixed"], seed)
    done = ev._read(RunDir(out).summary)
    if done is not None and any('"event": "done"' in ln for ln in RunDir(out).journal.open()):
        return done
    ev._setup(ctx)
    cfg = config_from_dict(anytime_config(ctx, seed, fidelity), where="anytime")
    return Search(cfg, out, resume=RunDir(out).is_run(), quiet=True).run()


def job_anytime_random(ctx: dict[str, Any], seed: int, n: int) -> dict[str, Any]:
    from spnas.search import RandomSampling, Search, config_from_dict

    out = ev.run_dir(ctx, SEARCHES["random search"], seed)
    done = ev._read(RunDir(out).summary)
    if done is not None and done.get("planned") == n:
        return done
    ev._setup(ctx)
    cfg = config_from_dict(anytime_config(ctx, seed, False), where="anytime")
    return Search(cfg, out, strategy=RandomSampling(n), resume=RunDir(out).is_run(), quiet=True).run()


def checkpoint(ctx: dict[str, Any], tag: str, epochs: int) -> Path:
    """Where a single net's curve keeps its backbone as it was after ``epochs``."""
    return Path(ctx["cache"]) / "anytime_curves" / f"{tag}_e{epochs}" / "arch"


def job_curve(ctx: dict[str, Any], seed: int, arch_dir: str, head: str | None, epochs: int, tag: str,
              save_at: tuple[int, ...] = ()) -> dict[str, Any]:
    """One net trained on for ``epochs`` with the anytime scheme's settings in one schedule, validated every
    ``anytime.curve_every`` epochs, its backbone saved after each epoch of ``save_at``: the curve of a single
    net (cached in ``<cache>/anytime_curves/<tag>.json``)."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from spnas.detect import lift
    from spnas.detect.datasets import load_datasets
    from spnas.detect.detector import build_detector, carry_over
    from spnas.detect.train import FAST, train_detector
    from spnas.ir import load, save

    out = Path(ctx["cache"]) / "anytime_curves" / f"{tag}.json"
    done = ev._read(out)
    if done is not None:
        return done
    ev._setup(ctx)
    torch.manual_seed(seed)
    train_ds, val_ds = load_datasets(ev.data_section(ctx))
    det = ev.detector_section(ctx)
    arch = load(arch_dir)
    model = build_detector(arch, train_ds.num_classes, det["head"], preset=det["preset"], **det["options"])
    if head is not None and Path(head).is_file():
        carry_over(load_file(head), model)
    a = ctx["size"]["anytime"]
    cfg = dataclasses.replace(FAST, **{**ctx["size"]["fast"], **a["train"], "epochs": epochs, "eval_every": a["curve_every"], "seed": seed})
    t0, stamps = time.perf_counter(), {}

    def on_epoch(e: int, rec: dict[str, Any]) -> None:
        if e in save_at:
            save(lift(arch, model.backbone.body), checkpoint(ctx, tag, e))
        stamps[e] = time.perf_counter() - t0  # the checkpoint's writing is no training: after it

    res = train_detector(model, train_ds, val_ds, cfg, device=ev._device_of_process(ctx), quiet=True, on_epoch=on_epoch)
    points = [{"epochs": r["epoch"], "seconds": round(stamps[r["epoch"]], 1), "metric": r[ev.METRIC]} for r in res.history if ev.METRIC in r]
    result = {"tag": tag, "arch": arch_dir, "epochs": epochs, "points": points}
    ev._write(out, result)
    return result


def search_points(ctx: dict[str, Any], arm: str, seed: int) -> list[dict[str, Any]]:
    """A run's trained candidates in order, each with the compute spent until it was trained (epochs, seconds)."""
    fast = ctx["size"]["fast"]["epochs"]
    out, epochs, seconds = [], 0, 0.0
    for c in ev.trained_candidates(ev.run_dir(ctx, SEARCHES[arm], seed)):
        if c.get("role") == "start":
            continue  # the shared start: every arm's compute begins after it
        epochs += int(c.get("epochs") or fast)
        seconds += float(c.get("seconds") or 0.0)
        if c["event"] == "evaluated":
            out.append({"id": c["id"], "epochs": epochs, "seconds": round(seconds, 1), "metric": c["metric"], "role": c.get("role")})
    return out


def incumbent(points: list[dict[str, Any]], epochs: float) -> dict[str, Any] | None:
    """The best point by validation among those reached within ``epochs`` (a race's lower rungs count too)."""
    reached = [p for p in points if p["epochs"] <= epochs + 1e-9]
    return max(reached, key=lambda p: p["metric"]) if reached else None


def total_epochs(ctx: dict[str, Any], seed: int) -> int:
    """The fixed search's compute in epochs, after the shared start (as its curve counts them)."""
    pts = search_points(ctx, "fixed", seed)
    return pts[-1]["epochs"] if pts else 0


def budgets(ctx: dict[str, Any], seed: int) -> list[int]:
    total = total_epochs(ctx, seed)
    return sorted({max(1, round(total * f)) for f in BUDGETS})


def job_final(ctx: dict[str, Any], arm: str, seed: int, b: int) -> dict[str, Any] | None:
    """The test metric of ``arm``'s incumbent at budget ``b`` epochs, after the same final training."""
    if arm in SEARCHES:
        best = incumbent(search_points(ctx, arm, seed), b)
        if best is None:
            return None
        base = best["id"].split(".")[0] if arm == "multi-fidelity" and "." in best["id"] else best["id"]
        arch = RunDir(ev.run_dir(ctx, SEARCHES[arm], seed)).candidate(best["id"]) / "trained"
        if not arch.is_dir():  # a race's rung keeps its net under the rung's id only
            arch = RunDir(ev.run_dir(ctx, SEARCHES[arm], seed)).candidate(base) / "trained"
        res = ev.job_full(ctx, str(arch), seed, f"anytime_{SEARCHES[arm]}_s{seed}_{best['id']}")
        return {**res, "id": best["id"], "val": best["metric"]}
    tag = f"{'longer' if arm == 'train longer' else 'draw'}_s{seed}"
    res = ev.job_full(ctx, str(checkpoint(ctx, tag, b)), seed, f"anytime_{tag}_e{b}")
    return {**res, "id": arm}


def job_final_start(ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    """The converged start itself after the same final training: every arm's budget 0, so the train-longer
    control's gain at each budget is measured on the test split too, with the seed's own final training."""
    return {**ev.job_full(ctx, start_paths(ctx)[0], seed, f"anytime_start_s{seed}"), "id": "start"}


def draw_arch(ctx: dict[str, Any], seed: int) -> str:
    """Random sampling's one draw: random search's first trained net, with the weights it inherited."""
    first = next(p for p in search_points(ctx, "random search", seed) if p["role"] != "noise")
    return str(RunDir(ev.run_dir(ctx, SEARCHES["random search"], seed)).candidate(first["id"]) / "input")


def jobs(ctx: dict[str, Any], seeds: list[int] | None = None) -> list[ev.Job]:
    """Every job of ``seeds`` (default: the size's), the shared start first."""
    seeds = seeds_of(ctx) if seeds is None else seeds
    out = [ev.Job("start", ev.job_start, ()), ev.Job("converge", job_converge, (), deps=("start",))] if seeds else []
    start, head = start_paths(ctx)  # the converged start: its backbone, and the head its children inherit besides it
    for s in seeds:
        total = lambda r, s=s: total_epochs(ctx, s)  # noqa: E731
        out += [
            ev.Job(f"fixed{s}", job_anytime_search, (s, False), deps=("converge",)),
            ev.Job(f"mf{s}", job_anytime_search, (s, True), deps=("converge",)),
            ev.Job(f"random{s}", job_anytime_random, (), deps=(f"fixed{s}",),
                   make_args=lambda r, s=s: (s, r[f"fixed{s}"]["candidates"] - 1)),
            ev.Job(f"longer{s}", job_curve, (), deps=(f"fixed{s}",),
                   make_args=lambda r, s=s, t=total: (s, start, head, t(r), f"longer_s{s}", tuple(budgets(ctx, s)))),
            ev.Job(f"draw{s}", job_curve, (), deps=(f"random{s}", f"fixed{s}"),
                   make_args=lambda r, s=s, t=total: (s, draw_arch(ctx, s), head, t(r), f"draw_s{s}", tuple(budgets(ctx, s)))),
        ]
        out.append(ev.Job(f"final:start:{s}", job_final_start, (s,), deps=("converge",)))
        for i in range(len(BUDGETS)):
            for arm, dep in (("fixed", "fixed"), ("multi-fidelity", "mf"), ("random search", "random"), ("random sampling", "draw"),
                             ("train longer", "longer")):  # the single nets' finals need their curves' checkpoints
                out.append(ev.Job(f"final:{arm}:{s}:{i}", job_final, (), deps=(f"{dep}{s}", f"fixed{s}", f"random{s}"),
                                  make_args=lambda r, s=s, i=i, arm=arm: (arm, s, budgets(ctx, s)[min(i, len(budgets(ctx, s)) - 1)])))
    return out


# ------------------------------------------------------------------------------ a seed's record
def curve(ctx: dict[str, Any], res: dict[str, Any], arm: str, seed: int) -> list[dict[str, Any]]:
    """``arm``'s best-so-far validation metric after each trained net (or each validation of a single net)."""
    if arm in SEARCHES:
        pts = search_points(ctx, arm, seed)
    else:
        pts = res[f"{'longer' if arm == 'train longer' else 'draw'}{seed}"]["points"]
    best, out = -float("inf"), []
    for p in pts:
        best = max(best, p["metric"])
        out.append({"epochs": p["epochs"], "seconds": p["seconds"], "best": best})
    return out


def record(ctx: dict[str, Any], res: dict[str, Any], seed: int) -> dict[str, Any]:
    """What the report needs of one finished seed (the shipped table's unit): budgets, curves, finals, counts."""
    bs = budgets(ctx, seed)
    finals: dict[str, list[dict[str, Any] | None]] = {}
    for arm in ARMS:
        finals[arm] = []
        for i in range(len(BUDGETS)):
            f = res.get(f"final:{arm}:{seed}:{i}")
            finals[arm].append(None if not f else {"id": f["id"], "val": f.get("val") if arm in SEARCHES else None,
                                                   "test": f["test"][ev.METRIC], "seconds": f.get("seconds")})
    start = res["converge"]  # which start the seed began from: a start retrained elsewhere would show here
    return {"seed": seed, "start": {**{k: start[k] for k in ("id", "epochs", "metric")},
                                    "test": res[f"final:start:{seed}"]["test"][ev.METRIC]},
            "budgets": [bs[min(i, len(bs) - 1)] for i in range(len(BUDGETS))],
            "curves": {arm: curve(ctx, res, arm, seed) for arm in ARMS}, "finals": finals,
            "trained": {arm: len(search_points(ctx, arm, seed)) for arm in SEARCHES}}


def seed_keys(ctx: dict[str, Any], seed: int) -> set[str]:
    return {j.key for j in jobs(ctx, [seed])} - SHARED


def table_path(ctx: dict[str, Any]) -> Path:
    return TABLES / f"anytime_trees_{ctx['name']}.json"


def settings(ctx: dict[str, Any]) -> dict[str, Any]:
    """What a seed's numbers depend on: a table made under other settings is refused."""
    z = ctx["size"]
    return {"start_code": z["start_code"], "start_epochs": z["start_epochs"], "fast": z["fast"], "full_epochs": z["full_epochs"],
            "anytime": {k: v for k, v in z["anytime"].items() if k != "seeds"}}


def read_table(ctx: dict[str, Any], path: Path, strict: bool = True) -> dict[str, Any]:
    """The shipped table (empty where there is none), refused if its settings are not this size's (``strict``;
    a report of a table made under other settings, which trains nothing, is only told so)."""
    if not path.is_file():
        return {"study": "anytime", "size": ctx["name"], "metric": ev.METRIC, "settings": settings(ctx), "seeds": {}}
    try:
        table = json.loads(path.read_text())
    except ValueError as e:
        raise SystemExit(f"{path}: not JSON ({e})") from None
    if table.get("settings") != json.loads(json.dumps(settings(ctx))):
        if not strict:
            print(f"# {path}: made with other settings than --size {ctx['name']}'s; reported as it is", file=sys.stderr)
            return table
        raise SystemExit(f"{path}: made with other settings than --size {ctx['name']}'s (field settings); move it away, or use its size")
    return table


def prune(ctx: dict[str, Any], seed: int) -> int:
    """Free the disk a shipped seed holds (its three search runs' candidates, its curves' checkpoints and its final
    trainings: 20.5 GiB for seed 0 at the quick size): the table is its record. The runs' journals, summaries and
    figures stay. Returns the bytes freed."""
    import shutil

    cache = Path(ctx["cache"])
    doomed = [RunDir(ev.run_dir(ctx, arm, seed)).candidates for arm in SEARCHES.values()]
    doomed += [p for p in (cache / "anytime_curves").glob(f"*_s{seed}_e*")]
    doomed += [p for p in (cache / "full").glob(f"anytime_*_s{seed}_*")] + [cache / "full" / f"anytime_start_s{seed}"]
    freed = 0
    for d in doomed:
        if d.is_dir():
            freed += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            shutil.rmtree(d)
    return freed


def at(points: list[dict[str, Any]], x: float, key: str = "epochs") -> float | None:
    reached = [p["best"] for p in points if p[key] <= x + 1e-9]
    return reached[-1] if reached else None


# ------------------------------------------------------------------------------ the report
def _pm(xs: list[float], digits: int = 3) -> str:
    """Mean ± std over the seeds; one seed's value alone (it has no spread to show)."""
    return ev.pm(xs, digits) if len(xs) > 1 else (f"{xs[0]:.{digits}f}" if xs else "-")


def rows_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, frac in enumerate(BUDGETS):
        for arm in ARMS:
            finals = [r["finals"][arm][i] for r in records]
            vals = [at(r["curves"][arm], r["budgets"][i]) for r in records]
            rows.append({"budget": f"{frac:.2f}", "arm": arm, "seeds": len(records),
                         f"val {ev.METRIC} (best so far)": _pm([v for v in vals if v is not None]),
                         f"test {ev.METRIC} (final training)": _pm([f["test"] for f in finals if f]),
                         "epochs": _pm([r["budgets"][i] for r in records], 0),
                         "_test": [f["test"] if f else None for f in finals], "_val": vals})
    return rows


def reach(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed: the epochs the multi-fidelity search took to reach the fixed search's best validation metric,
    against the epochs the fixed search took to reach it (``ratio``; None where it never did)."""
    out = []
    for r in records:
        fixed, mf = r["curves"]["fixed"], r["curves"]["multi-fidelity"]
        if not fixed:
            continue
        target = fixed[-1]["best"]
        at_best = next(p["epochs"] for p in fixed if p["best"] >= target)
        got = next((p["epochs"] for p in mf if p["best"] >= target), None)
        out.append({"seed": r["seed"], "fixed_best": target, "fixed_epochs": at_best, "fixed_total": fixed[-1]["epochs"],
                    "mf_epochs": got, "mf_total": mf[-1]["epochs"] if mf else 0, "mf_best": mf[-1]["best"] if mf else None,
                    "ratio": round(got / at_best, 3) if got is not None else None})
    return out


def verdict(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At each budget, each search against each control on the test split after the final training, paired by
    seed: the mean difference, its std over the seeds and 95 % t interval; "search better" or "control better"
    only where the interval excludes 0 (beyond the seed spread), else "no difference"."""
    from spnas.search.stats import paired_difference

    out = []
    for i, frac in enumerate(BUDGETS):
        for search in ("fixed", "multi-fidelity"):
            for control in ("random search", "random sampling", "train longer"):
                pairs = [(r["finals"][search][i]["test"], r["finals"][control][i]["test"]) for r in records
                         if r["finals"][search][i] and r["finals"][control][i]]
                d = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
                out.append({"budget": f"{frac:.2f}", "search": search, "against": control, "seeds": d["n"],
                            f"difference (test {ev.METRIC})": "-" if d["mean"] is None else
                            (f"{d['mean']:+.3f} ± {d['std']:.3f}" if d["std"] is not None else f"{d['mean']:+.3f}"),
                            "95% interval": "-" if d["ci95"][0] is None else f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]",
                            "verdict": {"a better": "search better", "b better": "control better"}.get(d["verdict"], d["verdict"])})
    return out


def start_gain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget: the train-longer control's test metric minus the converged start's (both after the same final
    training, the same seed), mean and std over the seeds that record the start's (the first try's do not), and
    its paired 95 % t interval (``ci95``; None below 2 seeds)."""
    from spnas.search.stats import paired_difference

    with_start = [r for r in records if "test" in r.get("start", {})]
    out = []
    for i, frac in enumerate(BUDGETS):
        pairs = [(r["finals"]["train longer"][i]["test"], r["start"]["test"]) for r in with_start if r["finals"]["train longer"][i]]
        if pairs:
            gains = [a - b for a, b in pairs]
            ci = paired_difference([a for a, _ in pairs], [b for _, b in pairs])["ci95"]
            out.append({"budget": f"{frac:.2f}", "seeds": len(gains), "gain": _pm(gains), "gains": [round(g, 4) for g in gains],
                        "ci95": None if ci[0] is None else ci})
    return out


def per_seed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a seed: the converged start's and every arm's test metric after the final training at the full
    budget, train longer's gain over the start, and the multi-fidelity search's epochs to the fixed search's best
    validation metric against the fixed search's own (the ratio must-show 2 judges)."""
    reached = {m["seed"]: m for m in reach(records)}
    out = []
    for r in records:
        start = r.get("start", {}).get("test")  # the first try's records have none
        row: dict[str, Any] = {"seed": r["seed"], f"start (test {ev.METRIC})": "-" if start is None else f"{start:.3f}"}
        for arm in ARMS:
            f = r["finals"][arm][-1]
            row[arm] = f"{f['test']:.3f}" if f else "-"
        tl = r["finals"]["train longer"][-1]
        row["train longer - start"] = f"{tl['test'] - start:+.3f}" if tl and start is not None else "-"
        m = reached.get(r["seed"])
        row["multi-fidelity to the fixed best"] = "-" if m is None else (
            f"{m['mf_epochs']} / {m['fixed_epochs']} epochs ({m['ratio']:.2f}x)" if m["ratio"] is not None
            else f"never in {m['mf_total']} / {m['fixed_epochs']} epochs")
        out.append(row)
    return out


def figure(ctx: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    import warnings

    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    colours = dict(zip(ARMS, ("tab:blue", "tab:purple", "tab:gray", "tab:olive", "tab:orange")))
    for ax, key, label in ((axes[0], "epochs", "cumulative training epochs"), (axes[1], "seconds", "cumulative training seconds")):
        for arm in ARMS:
            curves = [r["curves"][arm] for r in records]
            top = max((c[-1][key] for c in curves if c), default=0)
            if not top:
                continue
            xs = np.linspace(0, top, 60)
            ys = np.array([[at(c, x, key) if at(c, x, key) is not None else np.nan for x in xs] for c in curves], dtype=float)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a budget no seed has reached yet: a gap
                m, sd = np.nanmean(ys, 0), np.nanstd(ys, 0)
            ax.plot(xs, m, color=colours[arm], label=arm)
            ax.fill_between(xs, m - sd, m + sd, color=colours[arm], alpha=0.15)
        starts = [r["start"]["metric"] for r in records if "metric" in r.get("start", {})]
        if starts:  # where every arm begins: the converged start's validation metric
            ax.axhline(float(np.mean(starts)), color="0.3", ls="--", lw=1, label="converged start")
        ax.set_xlabel(label)
        ax.set_ylabel(f"best validation {ev.METRIC} so far")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Anytime: the incumbent against compute, mean ± std over {len(records)} seeds "
                 f"({', '.join(str(r['seed']) for r in records)})")
    return ev.save_figure(fig, Path(ctx["figures"]) / "anytime")


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_arguments(p)
    p.add_argument("--ship", action="store_true", help="write each finished seed into benchmarks/tables/anytime_trees_<size>.json")
    p.add_argument("--from-table", action="store_true", help="take the seeds the shipped table holds as measured; train the others")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the seeds the shipped table holds")
    p.add_argument("--table", default=None, help="the table's file (default benchmarks/tables/anytime_trees_<size>.json)")
    p.add_argument("--prune", action="store_true", help="with --ship: free a seed's trained nets once it is shipped "
                   "(and those of the seeds the table already holds); the table is the record")
    args = p.parse_args(argv)
    t0 = time.time()
    ctx = ev.context(args)
    path = Path(args.table) if args.table else table_path(ctx)
    table = read_table(ctx, path, strict=not args.report_only) if (args.ship or args.from_table or args.report_only) else None
    held = {int(k) for k in table["seeds"]} if table is not None and (args.from_table or args.report_only) else set()
    todo = [] if args.report_only else [s for s in seeds_of(ctx) if s not in held]
    fresh: dict[int, dict[str, Any]] = {}

    def pruned(s: int) -> None:
        if args.prune and args.ship:
            print(f"# seed {s}: {prune(ctx, s) / 2**30:.1f} GiB of trained nets freed (--prune)", file=sys.stderr)

    for s in sorted(held):
        pruned(s)

    def write_table() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=1) + "\n")

    def on_done(results: dict[str, Any]) -> None:
        if args.ship and "converge" in results and "start" not in table:  # the converged start's learning curve
            table["start"] = results["converge"]
            write_table()
        for s in todo:
            if s not in fresh and seed_keys(ctx, s) <= results.keys():
                fresh[s] = record(ctx, results, s)
                if args.ship:  # the seed is safe the moment it is whole
                    table["seeds"][str(s)] = fresh[s]
                    write_table()
                    print(f"# seed {s} shipped to {path}", file=sys.stderr)
                    pruned(s)

    ev.run_jobs(ctx, jobs(ctx, todo), on_done=on_done)
    records = [table["seeds"][str(s)] if s in held else fresh[s] for s in seeds_of(ctx) if s in held or s in fresh]
    if not records:
        raise SystemExit(f"no seed measured yet ({path} holds none)")
    rows = rows_of(records)
    shown = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    print(f"anytime ({ctx['name']}): the incumbent at a third, two thirds and all of the fixed search's epochs")
    print_table(shown, list(shown[0]))
    figs = figure(ctx, records)
    ev.write_results(ctx, "anytime", ev.markdown_table(shown), {"rows": rows, "seeds": [r["seed"] for r in records]})
    counts = {arm: [r["trained"][arm] for r in records] for arm in SEARCHES}
    mf = reach(records)
    for m in mf:
        print(f"seed {m['seed']}: the fixed search's best {m['fixed_best']:.4f} after {m['fixed_epochs']} of {m['fixed_total']} epochs; "
              + (f"multi-fidelity reached it after {m['mf_epochs']} ({m['ratio']:.2f}x)" if m["ratio"] is not None
                 else f"multi-fidelity never reached it in {m['mf_total']} epochs (its best {m['mf_best']:.4f})"))
    judged = verdict(records)
    print("each search against each control, test metric after the final training, paired by seed:")
    print_table(judged, list(judged[0]))
    ev.write_results(ctx, "anytime_verdict", ev.markdown_table(judged), {"rows": judged})
    seeds_rows = per_seed(records)
    print(f"each seed at the full budget (test {ev.METRIC} after the final training):")
    print_table(seeds_rows, list(seeds_rows[0]))
    ev.write_results(ctx, "anytime_seeds", ev.markdown_table(seeds_rows), {"rows": seeds_rows})
    gain = start_gain(records)
    if gain:
        tests = [r["start"]["test"] for r in records if "test" in r.get("start", {})]
        print(f"the converged start: test {ev.METRIC} {_pm(tests)} after the final training; train longer's gain over it: "
              + "; ".join(f"{g['gain']} at budget {g['budget']}" + (f" [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]" if g["ci95"] else "")
                          for g in gain))
    emit_json("anytime", rows, size=ctx["name"], seeds=[r["seed"] for r in records], metric=ev.METRIC, trained=counts,
              mf_reach=mf, verdict=judged, start_gain=gain, figures=figs, seconds=round(time.time() - t0, 1))


if __name__ == "__main__":
    main()
