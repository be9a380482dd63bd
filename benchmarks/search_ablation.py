"""Table 6 (and Figure 3): start net -> serial level -> after reignite -> parallel level, on real trees.

    python benchmarks/search_ablation.py --size quick     # this machine: 2 cores
    python benchmarks/search_ablation.py --size full      # a GPU machine (see README, Results)

Per seed, one spnas search (fair acceptance) from the shared start (the start net trained with the
full scheme on the training split). Its steps are read from its journal: the start net, the serial
level's result, that net after the final reignite (re-pretrained on Fashion-MNIST, then the fast
scheme), and the parallel level's result. Each step's net then gets the same full training from the
weights the search left it and is measured once on the test split. Printed: the metric with its
spread over seeds and the GMACs at each step, a table and a JSON line; written: the trajectory of
seed 0 (Figure 3) and the results table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import evidence as ev  # noqa: E402
from benchmarks.common import emit_json, print_table  # noqa: E402

STEPS = 4  # start, serial level, after reignite, parallel level (a failed reignite leaves 3)


def jobs(ctx: dict) -> list[ev.Job]:
    out = [ev.Job("start", ev.job_start, ())]
    for s in ctx["size"]["seeds"]:
        out.append(ev.Job(f"search{s}", ev.job_search, (s,), deps=("start",)))
        out += [ev.Job(f"step{s}:{i}", ev.job_full_step, (s, i), deps=(f"search{s}",)) for i in range(STEPS)]
    return out


def trajectory(ctx: dict, seed: int) -> list[str]:
    from spnas.search.tb import trajectory_figure

    fig = trajectory_figure(ev.journal(ev.run_dir(ctx, "search", seed)), ev.METRIC)
    fig.axes[0].set_title(f"SP-NAS search on trees, seed {seed} (validation {ev.METRIC}, fast scheme)")
    return ev.save_figure(fig, Path(ctx["figures"]) / "trajectory")


def main(argv: list[str] | None = None) -> None:
    ctx, res, _, t0 = ev.start(__doc__, jobs, argv)
    seeds = ctx["size"]["seeds"]
    names = ["start", "serial level", "after reignite", "parallel level"]
    per_seed = [r for s in seeds for i in range(STEPS) if (r := res[f"step{s}:{i}"]) is not None]
    rows = []
    for name in names:
        got = [r for r in per_seed if r["step"] == name]
        if not got:
            continue
        codes = sorted({r["code"] for r in got})
        rows.append({"step": name, "seeds": len(got), "codes": " / ".join(f"`{c}`" for c in codes),
                     "GMACs": ev.pm([r["gmacs"] for r in got], 2), "params M": ev.pm([r["params_m"] for r in got], 2),
                     f"val {ev.METRIC} (fast, search)": ev.pm([r["fast_val"] for r in got]) if name != "start" else "-",
                     f"test {ev.METRIC} (full)": ev.pm([r["test"][ev.METRIC] for r in got]),
                     "test AP (full)": ev.pm([r["test"]["AP"] for r in got])})
    print_table(rows, list(rows[0]))
    figs = trajectory(ctx, seeds[0])
    ev.write_results(ctx, "search_ablation", ev.markdown_table(rows), {"rows": rows, "per_seed": per_seed})
    emit_json("search_ablation", per_seed, size=ctx["name"], seeds=seeds, metric=ev.METRIC, full_epochs=ctx["size"]["full_epochs"],
              figures=figs, seconds=round(time.time() - t0))
    print(f"# search_ablation --size {ctx['name']}: {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
