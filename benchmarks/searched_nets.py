"""Table 8, Figure 5a, Figure 4b: the start net and the nets the search found, at an equal full-training budget.

    python benchmarks/searched_nets.py --size quick     # this machine: 2 cores
    python benchmarks/searched_nets.py --size full      # a GPU machine (see README, Results)

The found nets are the best net of each seed's search (see search_vs_random.py). To compare
architectures rather than training histories, every net here trains from scratch (random
initialisation, the seed of its search) with the start net's own recipe: the full scheme for
``start_epochs`` epochs, step decay; the start architecture trains the same way under each seed.
So the searched net and the start net get an equal full-training budget from an equal start; each
found net is paired with the start net of the same seed. Measured on the test split (no search
decision saw it) and the other image; GMACs and parameters of the backbone at the detector's input
size; CPU latency (batch 1, eval) of the compiled backbone and of the whole detector, medians of
interleaved runs in one process, as ratios to the start net. Printed: a table and a JSON line;
written: ``searched_nets_flops`` (FLOPs per stage, Figure 4b) and ``searched_nets_accuracy``
(test AP50 vs GMACs, Figure 5a).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import evidence as ev  # noqa: E402
from benchmarks.common import emit_json, interleaved_times, median, print_table  # noqa: E402
from spnas.rundir import RunDir  # noqa: E402


def job_scratch(ctx: dict, code: str, seed: int) -> dict:
    """``code`` trained from scratch with the start net's recipe (the start itself for its own code and seed 0)."""
    z = ctx["size"]
    if code == z["start_code"] and seed == 0:
        return ev.job_start(ctx)
    key = hashlib.sha1(code.encode()).hexdigest()[:10]
    return ev.train_and_measure(ctx, None, code, z["start_epochs"], Path(ctx["cache"]) / "scratch" / f"{key}_s{seed}", seed=seed)


def found_code(ctx: dict, seed: int) -> str:
    return ev._read(RunDir(ev.run_dir(ctx, "search", seed)).summary)["best_code"]


def jobs(ctx: dict) -> list[ev.Job]:
    out = [ev.Job("start", ev.job_start, ())]
    for s in ctx["size"]["seeds"]:
        out += [ev.Job(f"search{s}", ev.job_search, (s,), deps=("start",)),
                ev.Job(f"scratch:start:s{s}", job_scratch, (ctx["size"]["start_code"], s), deps=("start",)),
                ev.Job(f"scratch:found:s{s}", job_scratch, (), deps=(f"search{s}",), make_args=lambda r, s=s: (found_code(ctx, s), s))]
    return out


def stage_gmacs(ctx: dict, code: str) -> list[float]:
    from spnas.ir import parse
    from spnas.search.runner import stage_gmacs as sg

    return sg(parse(code), (ctx["size"]["image"],) * 2)


def latency(ctx: dict, codes: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Median ms of the compiled backbone and the whole detector (eval, batch 1) per code, interleaved in one process."""
    import torch

    from spnas.detect import build_detector, compile_backbone
    from spnas.ir import parse

    torch.set_num_threads(1 if ctx["device"] == "cpu" else torch.get_num_threads())
    im = ctx["size"]["image"]
    det = ev.detector_section(ctx)
    x = torch.rand(1, 3, im, im)
    fns = {}
    for c in codes:
        arch = parse(c, seed=0)
        body = compile_backbone(arch).eval()
        model = build_detector(arch, 1, det["head"], preset=det["preset"], **det["options"]).eval()
        fns[f"{c}|backbone"] = lambda b=body: b(x)
        fns[f"{c}|detector"] = lambda m=model: m(list(x))
    with torch.inference_mode():
        t = interleaved_times(fns, repeats=repeats)
    return {c: {k: round(median(t[f"{c}|{k}"]) * 1e3, 2) for k in ("backbone", "detector")} for c in codes}


def figures(ctx: dict, rows: list[dict], per_seed: list[dict]) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    out = []
    nets = [r for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.4))
    width = 0.8 / len(nets)
    for i, r in enumerate(nets):
        xs = np.arange(len(r["stage_gmacs"])) + (i - (len(nets) - 1) / 2) * width
        ax.bar(xs, r["stage_gmacs"], width, label=f"{r['net']}: {r['code']} ({r['GMACs']:.2f} GMACs)")
    n = max(len(r["stage_gmacs"]) for r in nets)
    ax.set_xticks(np.arange(n), [f"stage {k + 1}" for k in range(n)])
    ax.set_ylabel(f"GMACs of the stage at {ctx['size']['image']} px")
    ax.set_title("FLOPs allocation per stage: the start net and the found nets (Figure 4b)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.grid(alpha=0.3, axis="y")
    out += ev.save_figure(fig, Path(ctx["figures"]) / "searched_nets_flops")

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    start = [p for p in per_seed if p["net"] == "start"]
    found = [p for p in per_seed if p["net"] != "start"]
    ax.scatter([p["gmacs"] for p in start], [p["test"][ev.METRIC] for p in start], s=60, c="tab:red", marker="o",
               label="start net, each seed", edgecolors="black", linewidths=0.6)
    ax.scatter([p["gmacs"] for p in found], [p["test"][ev.METRIC] for p in found], s=60, c="tab:blue", marker="s",
               label="found net of each seed's search", edgecolors="black", linewidths=0.6)
    for p in found:
        ax.annotate(f"s{p['seed']}: {p['code']}", (p["gmacs"], p["test"][ev.METRIC]), fontsize=6, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel(f"GMACs of the backbone at {ctx['size']['image']} px")
    ax.set_ylabel(f"test {ev.METRIC}, trained from scratch, {ctx['size']['start_epochs']} epochs")
    ax.set_title("Accuracy vs computation at an equal training budget (Figure 5a)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    out += ev.save_figure(fig, Path(ctx["figures"]) / "searched_nets_accuracy")
    return out


def main(argv: list[str] | None = None) -> None:
    ctx, res, args, t0 = ev.start(__doc__, jobs, argv, lambda p: p.add_argument("--repeats", type=int, default=20,
                                                                                  help="latency repeats per net"))
    seeds = ctx["size"]["seeds"]
    start_code = ctx["size"]["start_code"]
    per_seed = []
    for s in seeds:
        per_seed.append({"net": "start", "seed": s, **res[f"scratch:start:s{s}"]})
        per_seed.append({"net": f"found s{s}", "seed": s, **res[f"scratch:found:s{s}"]})
    codes = [start_code] + [c for c in dict.fromkeys(found_code(ctx, s) for s in seeds) if c != start_code]
    lat = latency(ctx, codes, args.repeats)
    rows = []
    for c in codes:
        got = [p for p in per_seed if p["code"] == c and (p["net"] == "start") == (c == start_code)]
        name = "start" if c == start_code else "found " + ", ".join(p["net"].split()[1] for p in got)
        rows.append({"net": name, "code": c, "GMACs": got[0]["gmacs"], "params M": got[0]["params_m"],
                     "backbone ms": lat[c]["backbone"], "backbone ratio": round(lat[c]["backbone"] / lat[start_code]["backbone"], 3),
                     "detector ms": lat[c]["detector"], "detector ratio": round(lat[c]["detector"] / lat[start_code]["detector"], 3),
                     f"test {ev.METRIC}": ev.pm([p["test"][ev.METRIC] for p in got]), "test AP": ev.pm([p["test"]["AP"] for p in got]),
                     f"other {ev.METRIC}": ev.pm([p["other"][ev.METRIC] for p in got]), "runs": len(got),
                     "stage_gmacs": stage_gmacs(ctx, c)})
    paired = [(res[f"scratch:found:s{s}"]["test"][ev.METRIC], res[f"scratch:start:s{s}"]["test"][ev.METRIC]) for s in seeds]
    gains = [f - st for f, st in paired]
    show = [{k: v for k, v in r.items() if k != "stage_gmacs"} for r in rows]
    print_table(show, list(show[0]))
    verdict = (f"Found net minus start net, test {ev.METRIC}, paired by seed: " + ", ".join(f"{g:+.3f}" for g in gains)
               + f" (mean {ev.pm(gains)}); the found net wins {sum(g > 0 for g in gains)} of {len(gains)} seeds.")
    print(verdict)
    figs = figures(ctx, rows, per_seed)
    ev.write_results(ctx, "searched_nets", ev.markdown_table(show) + "\n" + verdict + "\n", {"rows": rows, "per_seed": per_seed, "gains": gains})
    emit_json("searched_nets", rows, per_seed=per_seed, size=ctx["name"], seeds=seeds, metric=ev.METRIC, gains=gains,
              epochs=ctx["size"]["start_epochs"], figures=figs, seconds=round(time.time() - t0))
    print(f"# searched_nets --size {ctx['name']}: {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
