"""Figure 4a: does the fast scheme rank architectures as full training does? Kendall's tau with a bootstrap interval.

    python benchmarks/ranking.py --size quick     # this machine: 2 cores
    python benchmarks/ranking.py --size full      # a GPU machine (see README, Results)

The nets are the searches' own candidates (children, parallel candidates, the parallel baseline) of
every seed, distinct architectures, picked evenly over their fast-scheme metric. Each one is trained
with the full scheme from the same weights its fast training started from (its journaled input, kept
by the evidence searches), with one training seed for all, and measured on the validation split (the
split its fast metric was measured on) and on the test split. Printed: the pairs, Kendall's tau-b of
fast vs full with a 95 % percentile-bootstrap interval (2000 resamples of the pairs), a table and a
JSON line; written: the scatter ``ranking``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import evidence as ev  # noqa: E402
from benchmarks.common import emit_json, print_table  # noqa: E402
from spnas.rundir import RunDir  # noqa: E402

ROLES = ("child", "parallel", "baseline")


def pick(ctx: dict) -> list[dict]:
    """``ranking_nets`` distinct searched nets, spread evenly over the fast metric's range."""
    pool, seen = [], set()
    for s in ctx["size"]["seeds"]:
        for c in ev.trained_candidates(ev.run_dir(ctx, "search", s)):
            if c["event"] == "evaluated" and c["role"] in ROLES and c["fingerprint"] not in seen:
                seen.add(c["fingerprint"])
                pool.append({**c, "seed": s})
    pool.sort(key=lambda c: c["metric"])
    k = min(ctx["size"]["ranking_nets"], len(pool))
    return [pool[int(i)] for i in np.unique(np.round(np.linspace(0, len(pool) - 1, k)).astype(int))]


def job_ranked(ctx: dict, k: int) -> dict | None:
    nets = pick(ctx)
    if k >= len(nets):
        return None
    c = nets[k]
    arch = RunDir(ev.run_dir(ctx, "search", c["seed"])).candidate(c["id"]) / "input"
    res = ev.job_full(ctx, str(arch), 0, f"search_s{c['seed']}_{c['id']}_input")
    return {"seed": c["seed"], "id": c["id"], "code": c["encoding"], "gmacs": c["gmacs"], "fast_val": c["metric"],
            "full_val": res["val"][ev.METRIC], "full_test": res["test"][ev.METRIC]}


def jobs(ctx: dict) -> list[ev.Job]:
    seeds = ctx["size"]["seeds"]
    out = [ev.Job("start", ev.job_start, ())]
    out += [ev.Job(f"search{s}", ev.job_search, (s,), deps=("start",)) for s in seeds]
    out += [ev.Job(f"net{k}", job_ranked, (k,), deps=tuple(f"search{s}" for s in seeds)) for k in range(ctx["size"]["ranking_nets"])]
    return out


def figure(ctx: dict, rows: list[dict], tau: float, ci: tuple[float, float]) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    x = [r["fast_val"] for r in rows]
    y = [r["full_val"] for r in rows]
    ax.scatter(x, y, s=40, c=[r["gmacs"] for r in rows], cmap="viridis", edgecolors="black", linewidths=0.5)
    for r in rows:
        ax.annotate(r["code"], (r["fast_val"], r["full_val"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"validation {ev.METRIC}, fast scheme ({ctx['size']['fast']['epochs']} epochs)")
    ax.set_ylabel(f"validation {ev.METRIC}, full scheme ({ctx['size']['full_epochs']} epochs)")
    ax.set_title(f"Fast vs full training: Kendall τ = {tau:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], n = {len(rows)}")
    ax.grid(alpha=0.3)
    fig.colorbar(ax.collections[0], ax=ax, label="GMACs")
    return ev.save_figure(fig, Path(ctx["figures"]) / "ranking")


def main(argv: list[str] | None = None) -> None:
    ctx, res, _, t0 = ev.start(__doc__, jobs, argv)
    rows = [r for k in range(ctx["size"]["ranking_nets"]) if (r := res[f"net{k}"]) is not None]
    fast = [r["fast_val"] for r in rows]
    tau = ev.kendall_tau(fast, [r["full_val"] for r in rows])
    ci = ev.bootstrap_tau(fast, [r["full_val"] for r in rows])
    tau_test = ev.kendall_tau(fast, [r["full_test"] for r in rows])
    ci_test = ev.bootstrap_tau(fast, [r["full_test"] for r in rows])
    table = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    print_table(table, list(table[0]))
    summary = [{"pairs": len(rows), "versus": "full, validation", "kendall_tau": round(tau, 3), "ci95": f"[{ci[0]:.2f}, {ci[1]:.2f}]"},
               {"pairs": len(rows), "versus": "full, test", "kendall_tau": round(tau_test, 3), "ci95": f"[{ci_test[0]:.2f}, {ci_test[1]:.2f}]"}]
    print_table(summary, list(summary[0]))
    figs = figure(ctx, rows, tau, ci)
    ev.write_results(ctx, "ranking", ev.markdown_table(summary) + "\n" + ev.markdown_table(table), {"pairs": rows, "summary": summary})
    emit_json("ranking", rows, size=ctx["name"], metric=ev.METRIC, kendall_tau=tau, ci95=ci, kendall_tau_test=tau_test, ci95_test=ci_test,
              figures=figs, seconds=round(time.time() - t0))
    print(f"# ranking --size {ctx['name']}: {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
