"""``spnas audit RUN``: did this search's fast scheme rank its nets as full training does, on this run's data?

The paper's Figure 4a, for the user's own run. It takes the start net, the net the search chose
(``best``) and the search's top ``--top`` other candidates by their fast-scheme metric (distinct
architectures), and trains each with the full scheme (step decay, ``--epochs``) from the weights the
search left it (``candidates/<id>/trained`` and its detector head: what ``spnas train RUN`` would
continue), under each of ``--seeds``, on the run's data, with the run's detector and evaluators
(``workers``: local processes, Ray, or inline). Then:

- Kendall's tau-b and Spearman's rho of the fast metric against the mean full metric, with 95 %
  percentile-bootstrap intervals: does the fast scheme rank as full training does?
- the found net against the start net *at an equal budget*: the start net gets the same full training
  plus the detection epochs that the found net's line trained beyond the start's (a reignite's
  classification epochs are not counted); the found net wins beyond the seed spread when its mean
  gain exceeds twice the larger of the two seed standard deviations (one seed: the spread is unknown,
  and the verdict says so).

Printed: a table and one JSON line. Written: ``RUN/audit/audit.json``, the figure
``RUN/audit/audit.png`` / ``.pdf``, and the verdict into ``RUN/best/summary.json`` (``audit``).
Every full training is cached in ``RUN/audit/<id>_s<seed>/`` (its ``metrics.json``), so a killed
audit resumes and trains nothing twice; a changed ``--epochs`` trains anew in its own directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spnas.errors import ConfigError, SpnasError
from spnas.rundir import RunDir
from spnas.search.records import DetectorSpec, EvalRequest, EvalResult, Event

__all__ = ["add_arguments", "run", "plan", "audit"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a search's run directory (finished)")
    p.add_argument("--top", type=int, default=5, help="the search's best K candidates besides the start and the found net (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="full-scheme epochs per net (default: 24, the paper's full scheme)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds per net (default 0 1)")
    p.add_argument("--workers", type=int, default=None, help="evaluator processes (default: the run's workers.n)")
    p.add_argument("--backend", choices=("local", "ray", "inline"), default=None, help="default: the run's")
    p.add_argument("--device", action="append", default=None, help="a device for the evaluators (repeatable; default: the run's)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a plugin file the run's node kinds need (repeatable): never imported from the run directory itself")
    p.add_argument("--quiet", action="store_true")


def _events(run: Path) -> list[dict[str, Any]]:
    from spnas.search.journal import Journal

    path = RunDir(run).journal
    if not path.is_file():
        raise ConfigError(f"{run}: no {RunDir.JOURNAL}; expected a search's run directory")
    j = Journal(path)  # replays (and refuses a damaged line, naming it)
    j.close()
    return j.events


def plan(run: Path, top: int) -> dict[str, Any]:
    """The nets to audit: start, best, and the ``top`` best others by fast metric (distinct architectures)."""
    from spnas.detect.metrics import lower_is_better

    events = _events(run)
    done = [e for e in events if e["event"] == Event.DONE]
    if not done:
        raise ConfigError(f"{run}: the search has not finished (no 'done' event); resume it first")
    prop = {e["id"]: e for e in events if e["event"] == Event.PROPOSED}
    evaluated = {e["id"]: e for e in events if e["event"] == Event.EVALUATED}
    summary = json.loads(RunDir(run).summary.read_text())
    metric, lower = summary["metric"], lower_is_better(summary["metric"])
    best = done[-1]["id"]

    def score(cid: str) -> float:
        m = evaluated[cid]["metric"]
        return -m if lower else m

    chosen = ["start", best] if best != "start" else ["start"]
    fps = {prop[c]["fingerprint"] for c in chosen}
    others = sorted((c for c in evaluated if c not in chosen and prop[c]["role"] not in ("noise",)), key=score, reverse=True)
    for c in others:
        if len(chosen) >= top + (2 if best != "start" else 1):
            break
        if prop[c]["fingerprint"] not in fps:
            fps.add(prop[c]["fingerprint"])
            chosen.append(c)
    cfg = yaml.safe_load(RunDir(run).config.read_text())
    start_epochs = (cfg.get("start") or {}).get("train_epochs")
    start_epochs = start_epochs if isinstance(start_epochs, int) else cfg["train"]["epochs"]  # "auto": cycles of train.epochs

    def own_epochs(c: str) -> int:
        if isinstance(prop[c].get("epochs"), int):  # a rung of a multi-fidelity race
            return prop[c]["epochs"]
        return int(start_epochs if prop[c]["role"] == "start" else cfg["train"]["epochs"])

    epochs_of = {c: own_epochs(c) for c in evaluated}

    def line_epochs(c: str | None) -> int:
        """Detection epochs along ``c``'s weights: its own and every ancestor's (parents, continued parents)."""
        total = 0
        while c is not None:
            total += epochs_of.get(c, 0)
            c = prop[c].get("parent")
        return total

    nets = [{"id": c, "role": prop[c]["role"], "code": prop[c]["encoding"], "gmacs": prop[c]["gmacs"], "params_m": prop[c]["params_m"],
             "fast": evaluated[c]["metric"], "line_epochs": line_epochs(c)} for c in chosen]
    return {"metric": metric, "lower_is_better": lower, "best": best, "nets": nets}


def _settings(run: Path, plugins: list[str]) -> dict[str, Any]:
    """What the run trained with: its saved config (train, detector, metric, workers) and, from ``best/detector.json``,
    the resolved data request and plugin files (the config's own paths may be relative to a file elsewhere)."""
    cfg = yaml.safe_load(RunDir(run).config.read_text())
    desc = json.loads((RunDir(run).best / RunDir.DETECTOR_JSON).read_text())
    if not isinstance(cfg, dict) or not isinstance(desc, dict) or "source" not in desc:
        raise ConfigError(f"{run}: config.yaml or best/detector.json is not a search's; cannot audit")
    recorded = [str(p) for p in desc.get("plugins") or []]
    given = {Path(p).resolve() for p in plugins}
    missing = [p for p in recorded if Path(p).resolve() not in given]
    if missing:  # a shipped run directory must not run code of its own: the user names what to import
        raise ConfigError(f"{run}: the run's nets need plugin files {', '.join(missing)}; spnas never imports a plugin a run "
                          "directory names: if you trust them, pass " + " ".join(f"--plugin {p}" for p in missing))
    return {"train": cfg["train"], "detector": cfg["detector"], "metric": cfg["search"]["metric"], "workers": cfg.get("workers") or {},
            "data": desc["source"]["data"], "plugins": [str(Path(p).resolve()) for p in plugins]}


def _request(run: Path, st: dict[str, Any], net: dict[str, Any], epochs: int, seed: int, out: Path) -> EvalRequest:
    """A full training of ``net`` from its trained weights, as an evaluation request of the run's evaluators."""
    from spnas.detect.detector import resolve_options
    from spnas.detect.train import config_from_dict
    from spnas.search.evaluator import HEAD_FILE

    d = out / f"{net['id']}_e{epochs}_s{seed}"
    src = RunDir(run).candidate(net["id"])
    if not (d / "input" / "arch.yaml").is_file():
        tmp = d / "input.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src / "trained", tmp)
        shutil.rmtree(d / "input", ignore_errors=True)
        os.replace(tmp, d / "input")
    det = st["detector"]
    return EvalRequest(id=f"{net['id']}_s{seed}", dir=str(d), parent_head=str(src / HEAD_FILE), data=st["data"],
                       detector=DetectorSpec(det["head"], resolve_options(det["preset"], **dict(det.get("options") or {}))),
                       train=config_from_dict({**st["train"], "epochs": epochs, "schedule": "step", "seed": seed}),
                       inherits=False, metric=st["metric"], plugins=tuple(st["plugins"]))


def _cached(d: Path) -> EvalResult | None:
    p = d / "metrics.json"
    try:
        r = EvalResult.of(json.loads(p.read_text()))
    except (OSError, ValueError):  # absent, or unreadable (a file written before results were written whole): train it
        return None
    return r if r.ok else None


def audit(run: str | os.PathLike, *, top: int = 5, epochs: int | None = None, seeds: list[int] = (0, 1), workers: int | None = None,
          backend: str | None = None, devices: list[str] | None = None, plugins: list[str] = (), quiet: bool = False) -> dict[str, Any]:
    """Train, measure and judge (see the module doc); returns the report written to ``RUN/audit/audit.json``."""
    from spnas.detect.train import FULL
    from spnas.search.evaluator import evaluate_candidate, make_pool
    from spnas.search.stats import agreement

    run = Path(run)
    t0 = time.time()
    p = plan(run, top)
    st = _settings(run, list(plugins))
    epochs = int(epochs or FULL.epochs)
    seeds = list(seeds)
    out = run / "audit"
    out.mkdir(exist_ok=True)
    best = next(n for n in p["nets"] if n["id"] == p["best"])
    start = next(n for n in p["nets"] if n["id"] == "start")
    extra = max(0, best["line_epochs"] - start["line_epochs"])
    jobs = []  # (net id, epochs, seed)
    for n in p["nets"]:
        jobs += [(n, epochs, s) for s in seeds]
    if extra:  # the equal-budget control: the start net trained for the found net's extra epochs too
        jobs += [(start, epochs + extra, s) for s in seeds]
    reqs = [_request(run, st, n, e, s, out) for n, e, s in jobs]
    results: dict[int, EvalResult] = {}
    todo = []
    for i, r in enumerate(reqs):
        got = _cached(Path(r.dir))
        if got is not None:
            results[i] = got
        else:
            todo.append(i)
    log = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr))
    log(f"audit {run}: {len(reqs)} full trainings of {epochs} epochs ({len(reqs) - len(todo)} cached)")
    if todo:
        w = st["workers"]
        pool = make_pool(backend or w.get("backend", "local"), list(devices or w.get("devices") or ["cpu"]), workers or w.get("n", 1),
                         w.get("threads", 0), address=w.get("address"), gpus_per_task=w.get("gpus_per_task", 1.0),
                         transport=w.get("transport", "object_store"))
        try:
            def done(k: int, r: EvalResult) -> None:
                log(f"  {reqs[todo[k]].id} ({jobs[todo[k]][1]} epochs): {r.metric if r.ok else r.reason}")

            for k, r in enumerate(pool.map(evaluate_candidate, [reqs[i] for i in todo], on_result=done)):
                if not r.ok:
                    raise SpnasError(f"audit: the full training of {reqs[todo[k]].id} failed ({r.reason}); "
                                     "what finished is kept: fix it and run the audit again")
                results[todo[k]] = r
        finally:
            pool.close()
    full: dict[tuple[str, int], list[float]] = {}
    seconds = 0.0
    for i, (n, e, s) in enumerate(jobs):
        full.setdefault((n["id"], e), []).append(float(results[i].metric))
        seconds += float(results[i].seconds or 0.0)
    sign = -1.0 if p["lower_is_better"] else 1.0
    rows = []
    for n in p["nets"]:
        vals = full[(n["id"], epochs)]
        rows.append({**n, "full": vals, "full_mean": float(np.mean(vals)), "full_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None})
    agree = agreement([sign * r["fast"] for r in rows], [sign * r["full_mean"] for r in rows]) if len(rows) >= 3 else None
    control = full.get((start["id"], epochs + extra), full[(start["id"], epochs)])
    found = full[(best["id"], epochs)]
    verdict = _verdict(p, found, control, sign, best, extra)
    report = {"run": str(run), "metric": p["metric"], "lower_is_better": p["lower_is_better"], "epochs": epochs, "seeds": seeds,
              "nets": rows, "ranking": agree, "equal_budget": {"found": best["id"], "found_full": found, "start_epochs": epochs + extra,
                                                               "start_full": control, **verdict},
              "seconds": round(seconds, 1), "wall_seconds": round(time.time() - t0, 1)}
    (out / "audit.json").write_text(json.dumps(report, indent=1))
    report["figures"] = figure(report, out / "audit")
    summary_path = RunDir(run).summary
    summary = json.loads(summary_path.read_text())
    summary["audit"] = {"epochs": epochs, "seeds": seeds, "nets": len(rows), "kendall_tau": agree and agree["tau"],
                        "tau_ci95": agree and agree["tau_ci95"], "verdict": verdict["verdict"], "gain": verdict["gain"]}
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, summary_path)
    return report


def _verdict(p: dict[str, Any], found: list[float], control: list[float], sign: float, best: dict[str, Any], extra: int) -> dict[str, Any]:
    if best["id"] == "start":
        return {"gain": 0.0, "spread": None, "beats_start": False,
                "verdict": "the search kept the start net: there is nothing to compare"}
    gain = sign * (float(np.mean(found)) - float(np.mean(control)))
    if len(found) < 2 or len(control) < 2:
        return {"gain": round(gain, 5), "spread": None, "beats_start": None,
                "verdict": f"found net {'+' if gain >= 0 else ''}{gain:.4f} {p['metric']} over the start at an equal budget; "
                           "one seed: whether that is beyond the seed spread is unknown (pass --seeds 0 1 2)"}
    spread = 2 * max(float(np.std(found, ddof=1)), float(np.std(control, ddof=1)))
    beats = gain > spread
    words = ("beats the start net beyond the seed spread" if beats else
             "does not beat the start net beyond the seed spread" if gain > 0 else "is not better than the start net")
    return {"gain": round(gain, 5), "spread": round(spread, 5), "beats_start": beats,
            "verdict": f"the found net {best['id']} {words}: gain {gain:+.4f} {p['metric']} vs 2 x seed std {spread:.4f} "
                       f"({len(found)} seeds; the start trained {extra} more epochs for an equal budget)"}


def figure(report: dict[str, Any], path: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, m = report["nets"], report["metric"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    for r in rows:
        err = r["full_std"] or 0.0
        c = "tab:red" if r["id"] == report["equal_budget"]["found"] else "tab:gray" if r["id"] == "start" else "tab:blue"
        ax.errorbar(r["fast"], r["full_mean"], yerr=err, fmt="o", color=c, ecolor="0.6", capsize=2)
        ax.annotate(f"{r['id']} {r['code']}", (r["fast"], r["full_mean"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    a = report["ranking"]
    tau = f"τ = {a['tau']:+.2f} [{a['tau_ci95'][0]:+.2f}, {a['tau_ci95'][1]:+.2f}], n = {a['n']}" if a and a["tau"] is not None else "τ undefined"
    ax.set_title(f"fast vs full: {tau}", fontsize=9)
    ax.set_xlabel(f"{m} after the fast scheme (journal)")
    ax.set_ylabel(f"{m} after {report['epochs']} full epochs (mean ± std over {len(report['seeds'])} seeds)")
    ax.grid(alpha=0.3)
    eb = report["equal_budget"]
    labels = [f"start\n+{eb['start_epochs'] - report['epochs']} epochs", f"found\n{eb['found']}"]
    for i, vals in enumerate((eb["start_full"], eb["found_full"])):
        bx.bar(i, float(np.mean(vals)), color=["tab:gray", "tab:red"][i], alpha=0.6)
        bx.scatter([i] * len(vals), vals, color="black", s=14, zorder=3)
    bx.set_xticks([0, 1], labels)
    bx.set_ylabel(m)
    bx.set_title("equal budget: " + ("beats the start" if eb.get("beats_start") else "no win beyond the spread" if eb.get("beats_start") is False else "spread unknown"), fontsize=9)
    fig.tight_layout()
    out = []
    for ext in ("png", "pdf"):
        fig.savefig(path.with_suffix(f".{ext}"), dpi=120)
        out.append(str(path.with_suffix(f".{ext}")))
    plt.close(fig)
    return out


def run(args: argparse.Namespace, p: argparse.ArgumentParser | None = None) -> int:
    if args.top < 1 or (args.epochs is not None and args.epochs < 1) or not args.seeds or any(s < 0 for s in args.seeds):
        raise ConfigError("audit: --top and --epochs must be at least 1, and --seeds non-negative integers")
    r = audit(args.run, top=args.top, epochs=args.epochs, seeds=args.seeds, workers=args.workers, backend=args.backend,
              devices=args.device, plugins=args.plugin, quiet=args.quiet)
    cols = ("id", "role", "code", "gmacs", "fast", "full_mean", "full_std")
    table = [{c: (round(v, 4) if isinstance(v, float) else v) for c, v in ((c, n[c]) for c in cols)} for n in r["nets"]]
    widths = {c: max(len(c), *(len(str(t[c])) for t in table)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for t in table:
        print("  ".join(str(t[c]).rjust(widths[c]) for c in cols))
    a = r["ranking"]
    if a:
        print(f"Kendall tau (fast vs full) {a['tau']} {a['tau_ci95']}, Spearman {a['rho']} {a['rho_ci95']}, n = {a['n']}")
    print(r["equal_budget"]["verdict"])
    print(json.dumps({"audit": r["run"], "metric": r["metric"], "epochs": r["epochs"], "seeds": r["seeds"], "nets": r["nets"], "ranking": a,
                      "equal_budget": r["equal_budget"], "figures": r["figures"], "seconds": r["seconds"]}))
    return 0
