"""Table 9: the search vs random sampling at equal compute, and the "no search" control; on real trees.

    python benchmarks/search_vs_random.py --size quick     # this machine: 2 cores, ~40 min
    python benchmarks/search_vs_random.py --size full      # a GPU machine (see README, Results)

Per seed, from one start (the start net trained with the full scheme on the training split):

- search: spnas's search (fair acceptance, serial level, final reignite, parallel level);
- random: as many trained candidates as that search trained, sampled by random walks with the same
  rules and bounds (serial rules, then a random parallel code), each trained once with the same fast
  scheme from the same start weights; the best on the validation split;
- no search: the start net trained on for as many epochs as the search's candidates trained;
- start: the start net alone.

Then each arm's net gets the same full training and is measured once on the test split, which no
decision saw. Printed: a table (mean ± std over seeds), one JSON line; written: the figure
``search_vs_random`` (metric vs GMACs of every trained candidate) and the results table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import evidence as ev  # noqa: E402
from benchmarks.common import emit_json, print_table  # noqa: E402


def jobs(ctx: dict) -> list[ev.Job]:
    fast = ctx["size"]["fast"]["epochs"]
    out = [ev.Job("start", ev.job_start, ())]
    for s in ctx["size"]["seeds"]:
        out += [
            ev.Job(f"search{s}", ev.job_search, (s,), deps=("start",)),
            ev.Job(f"random{s}", ev.job_random, (), deps=(f"search{s}",), make_args=lambda r, s=s: (s, r[f"search{s}"]["candidates"] - 1)),
            ev.Job(f"nosearch{s}", ev.job_no_search, (), deps=(f"search{s}",),
                   make_args=lambda r, s=s: (s, ev.compute_epochs(ev.run_dir(ctx, "search", s), fast))),
            ev.full_job(ctx, "start", s, "start", ()),
            ev.Job(f"fullsearch{s}", ev.job_full_best, ("search", s), deps=(f"search{s}",)),
            ev.Job(f"fullrandom{s}", ev.job_full_best, ("random", s), deps=(f"random{s}",)),
        ]
    return out


def figure(ctx: dict, res: dict) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, colour, marker in (("random", "tab:gray", "o"), ("search", "tab:blue", "s")):
        xs, ys = [], []
        for s in ctx["size"]["seeds"]:
            for c in ev.trained_candidates(ev.run_dir(ctx, arm, s)):
                if c["event"] == "evaluated" and c["role"] not in ("start", "noise"):
                    xs.append(c["gmacs"])
                    ys.append(c["metric"])
        ax.scatter(xs, ys, s=18, alpha=0.45, c=colour, marker=marker, label=f"{arm}: every trained candidate")
        bx = [res[f"{arm}{s}"]["gmacs"] for s in ctx["size"]["seeds"]]
        by = [res[f"{arm}{s}"]["best_metric"] for s in ctx["size"]["seeds"]]
        ax.scatter(bx, by, s=90, c=colour, marker=marker, edgecolors="black", linewidths=1.2, label=f"{arm}: best of a seed")
    start = [res[f"search{s}"]["start_metric"] for s in ctx["size"]["seeds"]]
    ax.axhline(sum(start) / len(start), color="tab:red", ls="--", lw=1, label="start net after the fast scheme (a fresh head)")
    ax.set_xlabel(f"GMACs of the backbone at {ctx['size']['image']} px")
    ax.set_ylabel(f"validation {ev.METRIC} after the fast scheme (higher is better)")
    ax.set_title("Search vs random sampling, same rules, bounds and compute (trees)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return ev.save_figure(fig, Path(ctx["figures"]) / "search_vs_random")


def main(argv: list[str] | None = None) -> None:
    ctx, res, _, t0 = ev.start(__doc__, jobs, argv)
    seeds = ctx["size"]["seeds"]
    fast = ctx["size"]["fast"]["epochs"]
    full = ctx["size"]["full_epochs"]
    rows, per_seed = [], []
    arms = {
        "start": (lambda s: res[f"full:start:s{s}:start:trained"], lambda s: 0, lambda s: None, lambda s: 0.0),
        "no search": (lambda s: res[f"nosearch{s}"], lambda s: ev.compute_epochs(ev.run_dir(ctx, "search", s), fast), lambda s: None,
                      lambda s: res[f"nosearch{s}"]["seconds"] * (1 - full / res[f"nosearch{s}"]["epochs"])),
        "random": (lambda s: res[f"fullrandom{s}"], lambda s: ev.compute_epochs(ev.run_dir(ctx, "random", s), fast),
                   lambda s: res[f"random{s}"]["best_metric"], lambda s: sum(res[f"random{s}"]["device_hours"].values()) * 3600),
        "search": (lambda s: res[f"fullsearch{s}"], lambda s: ev.compute_epochs(ev.run_dir(ctx, "search", s), fast),
                   lambda s: res[f"search{s}"]["best_metric"], lambda s: sum(res[f"search{s}"]["device_hours"].values()) * 3600),
    }
    for arm, (final, epochs, val, secs) in arms.items():
        rows.append({"arm": arm, "extra epochs": ev.pm([epochs(s) for s in seeds], 0), "compute s": ev.pm([secs(s) for s in seeds], 0),
                     f"best val {ev.METRIC} (fast)": ev.pm([val(s) for s in seeds]) if val(seeds[0]) is not None else "-",
                     f"test {ev.METRIC}": ev.pm([final(s)["test"][ev.METRIC] for s in seeds]),
                     "test AP": ev.pm([final(s)["test"]["AP"] for s in seeds]),
                     f"other image {ev.METRIC}": ev.pm([final(s)["other"][ev.METRIC] for s in seeds]),
                     "GMACs": ev.pm([final(s)["gmacs"] for s in seeds], 2)})
        for s in seeds:
            per_seed.append({"arm": arm, "seed": s, "code": final(s)["code"], "gmacs": final(s)["gmacs"], "extra_epochs": epochs(s),
                             "compute_s": round(secs(s), 1), "val_fast": val(s), "test": final(s)["test"], "other": final(s)["other"],
                             "val_full": final(s)["val"]})
    print_table(rows, list(rows[0]))
    figs = figure(ctx, res)
    wins = {a: sum(1 for s in seeds if arms["search"][0](s)["test"][ev.METRIC] > arms[a][0](s)["test"][ev.METRIC]) for a in ("start", "no search", "random")}
    md = ev.markdown_table(rows) + "\n" + f"Search's test {ev.METRIC} above, by seed (of {len(seeds)}): " + \
        ", ".join(f"{a} {n}" for a, n in wins.items()) + ".\n"
    ev.write_results(ctx, "search_vs_random", md, {"rows": rows, "per_seed": per_seed, "wins": wins})
    emit_json("search_vs_random", per_seed, size=ctx["name"], seeds=seeds, metric=ev.METRIC, wins=wins, full_epochs=full,
              boxes=ctx["boxes"], figures=figs, seconds=round(time.time() - t0))
    print(f"# search_vs_random --size {ctx['name']}: {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
