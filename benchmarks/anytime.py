"""Anytime curves: the incumbent as a function of compute, for the search and every control (issue 25).

    python benchmarks/anytime.py --size quick     # this machine: 2 cores; resumable, cached per trained net
    python benchmarks/anytime.py --size full      # a GPU machine

Per seed (the size's ``anytime.seeds``, 5; ``--seeds`` overrides), from the shared start (the start
net trained with the full scheme on the training split), each arm with the size's fast scheme and
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
- train longer: the start net trained on for the search's whole compute, the same way.

The curves: the best validation metric so far against cumulative training epochs and seconds (the
searches' and random search's from their journals, the two single nets' from their training
histories). The table: at three budgets (a third, two thirds and all of the fixed search's epochs),
each arm's incumbent by validation, and its test metric after the same final training: the full
scheme (``full_epochs``, a fresh head) from the backbone it has at that budget (a search's incumbent
as trained; a single net as its curve left it at the budget).
Mean ± std over the seeds; figure ``anytime`` (PNG and PDF), spread shaded. Printed: the table and
one JSON line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import evidence as ev  # noqa: E402
from benchmarks.common import emit_json, print_table  # noqa: E402
from spnas.rundir import RunDir  # noqa: E402

ARMS = ("fixed", "multi-fidelity", "random search", "random sampling", "train longer")
SEARCHES = {"fixed": "anytime_fixed", "multi-fidelity": "anytime_mf", "random search": "anytime_random"}
BUDGETS = (1 / 3, 2 / 3, 1.0)


# ------------------------------------------------------------------------------ the runs
def seeds_of(ctx: dict[str, Any]) -> list[int]:
    return list(ctx["size"]["seeds"]) if ctx.get("seeds_given") else list(ctx["size"]["anytime"]["seeds"])


def anytime_config(ctx: dict[str, Any], seed: int, fidelity: bool) -> dict[str, Any]:
    cfg = ev.search_config(ctx, seed)
    a = ctx["size"]["anytime"]
    cfg["train"] = {**cfg["train"], **a["train"]}
    cfg["search"] = {**cfg["search"], **a["search"],
                     **({"fidelity": a["fidelity"], "max_generations": a["fidelity_generations"]} if fidelity else {})}
    cfg["parallel"] = {**cfg["parallel"], **a["parallel"]}
    return cfg


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


def budgets(ctx: dict[str, Any], seed: int) -> list[int]:
    total = ev.compute_epochs(ev.run_dir(ctx, SEARCHES["fixed"], seed), ctx["size"]["fast"]["epochs"])
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


def draw_arch(ctx: dict[str, Any], seed: int) -> str:
    """Random sampling's one draw: random search's first trained net, with the weights it inherited."""
    first = next(p for p in search_points(ctx, "random search", seed) if p["role"] != "noise")
    return str(RunDir(ev.run_dir(ctx, SEARCHES["random search"], seed)).candidate(first["id"]) / "input")


def jobs(ctx: dict[str, Any]) -> list[ev.Job]:
    out = [ev.Job("start", ev.job_start, ())]
    start = str(Path(ctx["cache"]) / "start" / "arch")
    head = str(Path(ctx["cache"]) / "start" / "head.safetensors")  # what the start's children inherit besides the backbone
    fast = ctx["size"]["fast"]["epochs"]
    for s in seeds_of(ctx):
        total = lambda r, s=s: ev.compute_epochs(ev.run_dir(ctx, SEARCHES["fixed"], s), fast)  # noqa: E731
        out += [
            ev.Job(f"fixed{s}", job_anytime_search, (s, False), deps=("start",)),
            ev.Job(f"mf{s}", job_anytime_search, (s, True), deps=("start",)),
            ev.Job(f"random{s}", job_anytime_random, (), deps=(f"fixed{s}",),
                   make_args=lambda r, s=s: (s, r[f"fixed{s}"]["candidates"] - 1)),
            ev.Job(f"longer{s}", job_curve, (), deps=(f"fixed{s}",),
                   make_args=lambda r, s=s, t=total: (s, start, head, t(r), f"longer_s{s}", tuple(budgets(ctx, s)))),
            ev.Job(f"draw{s}", job_curve, (), deps=(f"random{s}", f"fixed{s}"),
                   make_args=lambda r, s=s, t=total: (s, draw_arch(ctx, s), head, t(r), f"draw_s{s}", tuple(budgets(ctx, s)))),
        ]
        for i in range(len(BUDGETS)):
            for arm, dep in (("fixed", "fixed"), ("multi-fidelity", "mf"), ("random search", "random"), ("random sampling", "draw"),
                             ("train longer", "longer")):  # the single nets' finals need their curves' checkpoints
                out.append(ev.Job(f"final:{arm}:{s}:{i}", job_final, (), deps=(f"{dep}{s}", f"fixed{s}", f"random{s}"),
                                  make_args=lambda r, s=s, i=i, arm=arm: (arm, s, budgets(ctx, s)[min(i, len(budgets(ctx, s)) - 1)])))
    return out


# ------------------------------------------------------------------------------ reading the curves
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


def at(points: list[dict[str, Any]], x: float, key: str = "epochs") -> float | None:
    reached = [p["best"] for p in points if p[key] <= x + 1e-9]
    return reached[-1] if reached else None


def figure(ctx: dict[str, Any], res: dict[str, Any]) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    seeds = seeds_of(ctx)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    colours = dict(zip(ARMS, ("tab:blue", "tab:purple", "tab:gray", "tab:olive", "tab:orange")))
    for ax, key, label in ((axes[0], "epochs", "cumulative training epochs"), (axes[1], "seconds", "cumulative training seconds")):
        for arm in ARMS:
            curves = [curve(ctx, res, arm, s) for s in seeds]
            top = max((c[-1][key] for c in curves if c), default=0)
            if not top:
                continue
            xs = np.linspace(0, top, 60)
            ys = np.array([[at(c, x, key) if at(c, x, key) is not None else np.nan for x in xs] for c in curves], dtype=float)
            with np.errstate(all="ignore"):
                m, sd = np.nanmean(ys, 0), np.nanstd(ys, 0)
            ax.plot(xs, m, color=colours[arm], label=arm)
            ax.fill_between(xs, m - sd, m + sd, color=colours[arm], alpha=0.15)
        ax.set_xlabel(label)
        ax.set_ylabel(f"best validation {ev.METRIC} so far")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Anytime: the incumbent against compute, mean ± std over {len(seeds)} seeds")
    return ev.save_figure(fig, Path(ctx["figures"]) / "anytime")


def main(argv: list[str] | None = None) -> None:
    ctx, res, args, t0 = ev.start(__doc__, jobs, argv)
    seeds = seeds_of(ctx)
    rows = []
    for i, frac in enumerate(BUDGETS):
        for arm in ARMS:
            finals = [res.get(f"final:{arm}:{s}:{i}") for s in seeds]
            vals = [at(curve(ctx, res, arm, s), budgets(ctx, s)[min(i, len(budgets(ctx, s)) - 1)]) for s in seeds]
            rows.append({"budget": f"{frac:.2f}", "arm": arm, "seeds": len(seeds),
                         f"val {ev.METRIC} (best so far)": ev.pm([v for v in vals if v is not None]),
                         f"test {ev.METRIC} (final training)": ev.pm([f["test"][ev.METRIC] for f in finals if f]),
                         "epochs": ev.pm([budgets(ctx, s)[min(i, len(budgets(ctx, s)) - 1)] for s in seeds], 0),
                         "_test": [f["test"][ev.METRIC] if f else None for f in finals], "_val": vals})
    shown = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    print(f"anytime ({ctx['name']}): the incumbent at a third, two thirds and all of the fixed search's epochs")
    print_table(shown, list(shown[0]))
    figs = figure(ctx, res)
    ev.write_results(ctx, "anytime", ev.markdown_table(shown), {"rows": rows, "seeds": seeds})
    counts = {arm: [len(search_points(ctx, arm, s)) for s in seeds] for arm in SEARCHES}
    emit_json("anytime", rows, size=ctx["name"], seeds=seeds, metric=ev.METRIC, trained=counts, figures=figs,
              seconds=round(time.time() - t0, 1))


if __name__ == "__main__":
    main()
