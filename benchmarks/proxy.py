"""The proxy study: do inherited weights and a short run rank architectures as full training does?

    python benchmarks/proxy.py --size quick                 # this machine: 2 cores, resumable in chunks
    python benchmarks/proxy.py --size quick --report-only   # the table, figure and JSON from what is cached
    python benchmarks/proxy.py --size full                  # a GPU machine (see README, Results)
    python benchmarks/proxy.py --size quick --from-table    # a new machine: the shipped table's results kept, the rest trained

Every decision of the search trusts one premise (the paper's section 4.1, Figure 4a): a child trained
a few epochs from its parent's weights ranks as it would after full training. This script measures it
on the real tree data, with the search's own rules and fast scheme, against free proxies.

The nets (``plan.json``, drawn once from ``--plan-seed``): a two-level tree of random walks in the
search's space. ``parents`` nets are 1-2 morphisms from the trained start net (swap, expand, widen,
add_stage, or add_subnet: serial and parallel), picked evenly over GMACs from a pool of walks; each
has ``children`` nets 1-2 morphisms further, inheriting the parent's weights after its fast training
(arm ``a``), as a search's next generation does. So a net is 1-4 morphisms from the start, and its
*input* (the weights the morphisms left it, backbone and detector head) is what every inherited arm
and truth (i) start from.

Short-run arms (the fast scheme's epochs, data, batch and seeds; validation split):

- ``a`` inherited input, today's fast scheme restarted: linear warm-up, then cosine from the full rate;
- ``b10`` inherited input, continued at 1/10 of the rate, no warm-up (Net2Net's choice); ``b3``: at 1/3;
- ``c`` the same architecture from scratch (a fresh init and head; the fast scheme as in ``a``).

Free proxies: GMACs, parameters, the parent's metric (the start's for the first level, the parent's
arm-``a`` metric for the second).

Ground truth (the test split, read only here):

- (i) ``inherited``: the full scheme (step decay, ``full_epochs``) from the inherited input, under
  ``truth_seeds`` seeds; the seed-to-seed tau of the truth is the ceiling any proxy can reach;
- (ii) ``scratch``: the architecture from scratch with the start net's recipe (step decay,
  ``scratch_epochs``), its own worth.

Per proxy and truth: Kendall's tau-b and Spearman's rho with 95 % percentile-bootstrap intervals
(2,000 resamples of the nets), and top-3 recall (do the proxy's best 3 hold the truth's best net?).
Written: a table and a JSON line (stdout), the figure ``proxy`` (a scatter per proxy, PNG and PDF),
and ``benchmarks/tables/proxy_trees_<size>.json``: every net's code, GMACs, params, every arm's metric
per seed, the truths and the seconds: a small benchmark of this search space on real data that later
policies can be replayed against without training.

Every trained net is cached under ``<cache>/proxy/`` (the evidence cache: the start net is shared
with the other evidence scripts), so a killed run resumes where it stopped, and ``--report-only``
reports what is there at any time. The cache is not committed; the shipped table is. With
``--from-table`` a run on another machine (or after the cache is gone) counts what the shipped table
holds as measured and trains only what it lacks, plus what that needs (the start net, a parent's
arm-``a`` weights); its plan must be the table's, net for net (checked by fingerprint). The table's
results stand and the cache adds only what the table lacks: a net trained again here (a start net
retrained by another study on a machine without the cache) is not the one the table's nets descend from.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import evidence as ev  # noqa: E402
from benchmarks.common import emit_json, print_table  # noqa: E402
from spnas.search import stats  # noqa: E402

TABLES = ROOT / "benchmarks" / "tables"

# What each size measures (the start net, data, fast scheme and full epochs are evidence.SIZES').
STUDY: dict[str, dict[str, Any]] = {
    "quick": {"parents": 10, "children": 2, "arm_seeds": [0], "truth_seeds": [0, 1], "scratch_epochs": 16, "pool": 300},
    "smoke": {"parents": 2, "children": 1, "arm_seeds": [0], "truth_seeds": [0, 1], "scratch_epochs": 1, "pool": 40},
    "full": {"parents": 12, "children": 3, "arm_seeds": [0, 1], "truth_seeds": [0, 1, 2], "scratch_epochs": 24, "pool": 400},
}
SERIAL_RULES = ("swap", "expand", "widen", "add_stage")
P_PARALLEL = 0.25  # the chance that a walk's step adds a parallel subnet
# The inherited arms: learning-rate factor and warm-up over the fast scheme ("a" is the fast scheme itself).
ARMS: dict[str, dict[str, Any]] = {
    "a": {"label": "inherited, restarted (today)", "lr_factor": 1.0, "warmup": True, "inherit": True},
    "b10": {"label": "inherited, continued at lr/10", "lr_factor": 0.1, "warmup": False, "inherit": True},
    "b3": {"label": "inherited, continued at lr/3", "lr_factor": 1 / 3, "warmup": False, "inherit": True},
    "c": {"label": "from scratch", "lr_factor": 1.0, "warmup": True, "inherit": False},
}
FREE = {"gmacs": "GMACs", "params_m": "parameters", "parent_metric": "parent's metric"}


# ------------------------------------------------------------------------------ the plan
def space(ctx: dict[str, Any]) -> Any:
    from spnas.ops import Space

    s, p = ctx["size"]["search"], ctx["size"]["parallel"]
    return Space(min_blocks=s["min_blocks"], max_blocks=s["max_blocks"], max_stages=s["max_stages"], max_subnets=p["K"], max_shift=3)


def _walk(arch: Any, rng: np.random.Generator, sp: Any, parallel: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """1-2 random morphisms from ``arch`` (a serial rule, or a parallel subnet with probability P_PARALLEL;
    ``parallel=False``: serial rules only)."""
    from spnas.ops import get_morphism

    cur, ops = arch, []
    for _ in range(int(rng.integers(1, 3))):
        par = get_morphism("add_subnet")
        options = [(m, st) for m in map(get_morphism, SERIAL_RULES) if (st := list(m.sites(cur, sp)))]
        psites = list(par.sites(cur, sp)) if parallel else []
        if psites and (not options or rng.random() < P_PARALLEL):
            m, sites = par, psites
        elif options:
            m, sites = options[int(rng.integers(len(options)))]
        else:
            break
        site = sites[int(rng.integers(len(sites)))]
        cur = m.apply(cur, site, rng, sp)
        ops.append({"rule": m.name, "site": list(site) if isinstance(site, tuple) else site})
    return cur, ops


def _spread(pool: list[tuple[Any, list]], k: int, size: int, quantiles: list[float] | None = None) -> list[tuple[Any, list]]:
    """``k`` walks of ``pool`` evenly spread over GMACs (or at the given quantiles)."""
    pool = sorted(pool, key=lambda w: w[0].flops((size, size)))
    qs = quantiles if quantiles is not None else list(np.linspace(0, 1, k))
    idx = sorted({int(round(q * (len(pool) - 1))) for q in qs})
    return [pool[i] for i in idx]


def make_plan(ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    """The study's nets: a two-level tree of walks drawn from the start code (structure only; weights come later)."""
    from spnas.ir import parse

    z, st = ctx["size"], STUDY[ctx["name"]]
    sp, size = space(ctx), z["image"]
    rng = np.random.default_rng(seed)
    start = parse(z["start_code"], seed=0)
    seen = {start.fingerprint()}

    def pool_from(arch: Any, n: int) -> list[tuple[Any, list]]:
        out, fps = [], set()
        for _ in range(n):
            a, ops = _walk(arch, rng, sp)
            fp = a.fingerprint()
            if ops and fp not in seen and fp not in fps and sp.min_blocks <= len(a.main_chain()) <= sp.max_blocks:
                fps.add(fp)
                out.append((a, ops))
        return out

    nets: list[dict[str, Any]] = []

    def add(a: Any, ops: list, name: str, level: int, parent: str) -> None:
        seen.add(a.fingerprint())
        nets.append({"name": name, "level": level, "parent": parent, "ops": ops, "code": a.code(), "fingerprint": a.fingerprint(),
                     "gmacs": round(a.flops((size, size)) / 1e9, 4), "params_m": round(a.params() / 1e6, 4)})

    firsts = _spread(pool_from(start, st["pool"]), st["parents"], size)
    for i, (a, ops) in enumerate(firsts):
        add(a, ops, f"n{i:02d}", 1, "start")
    qs = list(np.linspace(0.15, 0.85, st["children"])) if st["children"] > 1 else [0.5]
    for i, (pa, _) in enumerate(firsts):
        for j, (a, ops) in enumerate(_spread(pool_from(pa, st["pool"] // 4), st["children"], size, qs)):
            add(a, ops, f"n{i:02d}{chr(97 + j)}", 2, f"n{i:02d}")
    out = {"seed": seed, "start_code": z["start_code"], "rules": list(SERIAL_RULES) + ["add_subnet"], "nets": nets}
    repair_plan(ctx, out)
    return out


def _trained_parallel(code: str) -> bool:
    return "(" in code.split(")", 1)[1] if ")" in code else False


def repair_plan(ctx: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """Redraw the children that add a parallel subnet to a parent that has subnets already.

    ``add_subnet`` applies only to pristine nets (untrained subnets, so the copy is exact); the first plan
    drew such children from the parent's untrained structure, but a child inherits the parent *after* its
    fast training, where the rule offers no site. Each is redrawn from serial rules only, with a generator
    seeded by its name (the other nets stay as drawn), at the same place in GMACs. Returns the names redrawn."""
    from spnas.ir import parse

    sp, size = space(ctx), ctx["size"]["image"]
    nets = {n["name"]: n for n in p["nets"]}
    seen = {n["fingerprint"] for n in p["nets"]} | {parse(p["start_code"], seed=0).fingerprint()}
    redrawn = []
    for n in p["nets"]:
        parent = nets.get(n["parent"])
        if parent is None or not _trained_parallel(parent["code"]) or not any(op["rule"] == "add_subnet" for op in n["ops"]):
            continue
        pa = replay(p["start_code"], nets, parent["name"], sp)
        rng = np.random.default_rng(zlib.crc32(("redraw:" + n["name"]).encode()))
        pool = []
        for _ in range(STUDY[ctx["name"]]["pool"] // 4):
            a, ops = _walk(pa, rng, sp, parallel=False)
            if ops and a.fingerprint() not in seen and sp.min_blocks <= len(a.main_chain()) <= sp.max_blocks:
                pool.append((a, ops))
        if not pool:
            raise RuntimeError(f"{n['name']}: no serial walk from {parent['code']} within the bounds")
        pool.sort(key=lambda w: w[0].flops((size, size)))
        a, ops = min(pool, key=lambda w: abs(w[0].flops((size, size)) / 1e9 - n["gmacs"]))
        seen.add(a.fingerprint())
        n.update(ops=ops, code=a.code(), fingerprint=a.fingerprint(), gmacs=round(a.flops((size, size)) / 1e9, 4),
                 params_m=round(a.params() / 1e6, 4), redrawn=True)
        redrawn.append(n["name"])
    return redrawn


def plan(ctx: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The cached plan (drawn and written on first use; a cached plan from another seed is refused)."""
    path = Path(ctx["cache"]) / "proxy" / "plan.json"
    got = ev._read(path)
    if got is None:
        got = make_plan(ctx, seed)
        ev._write(path, got)
    elif got["seed"] != seed:
        raise SystemExit(f"{path}: drawn with --plan-seed {got['seed']}; use it, or another --cache")
    return got


# ------------------------------------------------------------------------------ materialising a net's input
def _parent_dir(ctx: dict[str, Any], net: dict[str, Any]) -> Path:
    """Where the net's parent's trained weights are: the start, or the parent's arm-a run (seed 0)."""
    if net["parent"] == "start":
        return Path(ctx["cache"]) / "start"
    return _out(ctx, net["parent"], "a", 0)


def materialize(ctx: dict[str, Any], net: dict[str, Any]) -> Any:
    """The net's input: its walk replayed on the parent's trained weights (checked against the plan)."""
    from spnas.ir import load
    from spnas.ops import get_morphism

    parent = load(_parent_dir(ctx, net) / "arch")
    rng = np.random.default_rng(zlib.crc32(net["name"].encode()))
    cur = parent
    for op in net["ops"]:
        site = tuple(op["site"]) if isinstance(op["site"], list) else op["site"]
        cur = get_morphism(op["rule"]).apply(cur, site, rng, space(ctx))
    if cur.fingerprint() != net["fingerprint"]:
        raise RuntimeError(f"{net['name']}: replaying {net['ops']} gave {cur.code()}, the plan says {net['code']}")
    return cur


def _head(ctx: dict[str, Any], net: dict[str, Any]) -> str:
    from spnas.search.evaluator import HEAD_FILE

    h = _parent_dir(ctx, net) / HEAD_FILE
    if not h.is_file():
        raise SystemExit(f"{h}: missing (a start cached before the head was kept); delete {h.parent} and run again")
    return str(h)


def _out(ctx: dict[str, Any], name: str, tag: str, seed: int) -> Path:
    return Path(ctx["cache"]) / "proxy" / name / f"{tag}_s{seed}"


# ------------------------------------------------------------------------------ the jobs
def _net(ctx: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in plan(ctx)["nets"] if n["name"] == name)


def job_arm(ctx: dict[str, Any], name: str, arm: str, seed: int) -> dict[str, Any]:
    """A short run of ``arm`` (the fast scheme's epochs), measured on the validation split."""
    net, a, fast = _net(ctx, name), ARMS[arm], ctx["size"]["fast"]
    out = _out(ctx, name, arm, seed)
    if (r := ev._read(out / "result.json")) is not None:
        return r
    train = {"epochs": fast["epochs"], "schedule": "cosine", "base_lr": fast["base_lr"] * a["lr_factor"]}
    if not a["warmup"]:
        train["warmup_iters"] = 0
    if a["inherit"]:
        return ev.train_net(ctx, out, seed=seed, arch=materialize(ctx, net), head=_head(ctx, net), train=train, splits=("val",))
    return ev.train_net(ctx, out, seed=seed, arch=_fresh(ctx, net).reinitialized(seed), train=train, splits=("val",))


def _fresh(ctx: dict[str, Any], net: dict[str, Any]) -> Any:
    """The net's architecture at a fresh init (its walk replayed on the untrained start code, then re-initialised)."""
    return replay(ctx["size"]["start_code"], {n["name"]: n for n in plan(ctx)["nets"]}, net["name"], space(ctx))


def replay(start_code: str, nets: dict[str, dict[str, Any]], name: str, sp: Any) -> Any:
    """Net ``name`` of a plan or shipped table rebuilt from the start code: its parents' walks, then its own
    (each walk's generator seeded by its net's name); checked against the recorded fingerprint."""
    from spnas.ir import parse
    from spnas.ops import get_morphism

    chain = [nets[name]]
    while chain[-1]["parent"] != "start":
        chain.append(nets[chain[-1]["parent"]])
    cur = parse(start_code, seed=0)
    for n in reversed(chain):
        rng = np.random.default_rng(zlib.crc32(n["name"].encode()))
        for op in n["ops"]:
            site = tuple(op["site"]) if isinstance(op["site"], list) else op["site"]
            cur = get_morphism(op["rule"]).apply(cur, site, rng, sp)
    if cur.fingerprint() != nets[name]["fingerprint"]:
        raise RuntimeError(f"{name}: replaying the walk gave {cur.code()}, the plan says {nets[name]['code']}")
    return cur


def job_truth(ctx: dict[str, Any], name: str, kind: str, seed: int) -> dict[str, Any]:
    """Ground truth: the full scheme from the inherited input (``inherited``), or the start's recipe from scratch."""
    net, z = _net(ctx, name), ctx["size"]
    out = _out(ctx, name, f"truth_{kind}", seed)
    if (r := ev._read(out / "result.json")) is not None:
        return r
    if kind == "inherited":
        return ev.train_net(ctx, out, seed=seed, arch=materialize(ctx, net), head=_head(ctx, net),
                            train={"epochs": z["full_epochs"], "schedule": "step"})
    fresh = _fresh(ctx, net).reinitialized(seed)
    return ev.train_net(ctx, out, seed=seed, arch=fresh, train={"epochs": STUDY[ctx["name"]]["scratch_epochs"], "schedule": "step"})


def shipped(ctx: dict[str, Any]) -> Path:
    return TABLES / f"proxy_trees_{ctx['name']}.json"


def read_table(ctx: dict[str, Any], path: str | Path, plan_seed: int = 0) -> dict[str, Any]:
    """A shipped table whose nets are this plan's (the same names and fingerprints, the same arms' epochs), or a clear error."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read the table ({e})") from None
    mine = {n["name"]: n["fingerprint"] for n in plan(ctx, plan_seed)["nets"]}
    theirs = {n["name"]: n["fingerprint"] for n in table.get("nets", [])}
    if mine != theirs:
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise SystemExit(f"{path}: its nets are not this plan's (net {diff[0]} differs); use its --plan-seed and size")
    wanted = {"fast": ctx["size"]["fast"], "full_epochs": ctx["size"]["full_epochs"], "scratch_epochs": STUDY[ctx["name"]]["scratch_epochs"]}
    for key, want in wanted.items():
        if table.get(key) != want:
            raise SystemExit(f"{path}: field {key} is {table.get(key)!r}, this size trains {want!r}")
    return table


def held_keys(table: dict[str, Any]) -> set[str]:
    """The job keys whose results ``table`` holds."""
    out = {"start"} if table["start"].get("val") is not None else set()
    for n in table["nets"]:
        out |= {f"arm:{n['name']}:{arm}:{s[1:]}" for arm, by_seed in n["arms"].items() for s in by_seed}
        out |= {f"truth:{n['name']}:{kind}:{s[1:]}" for kind, by_seed in n["truth"].items() for s in by_seed}
    return out


def still_to_train(all_jobs: list[ev.Job], held: set[str]) -> list[ev.Job]:
    """The jobs whose results are not ``held``, with every job they depend on (its weights are needed), in order."""
    by_key = {j.key: j for j in all_jobs}
    need: set[str] = set()
    todo = [j.key for j in all_jobs if j.key not in held]
    while todo:
        k = todo.pop()
        if k not in need:
            need.add(k)
            todo.extend(by_key[k].deps)
    return [j for j in all_jobs if j.key in need]


def jobs(ctx: dict[str, Any], plan_seed: int = 0, table: dict[str, Any] | None = None) -> list[ev.Job]:
    """In priority order (the scheduler starts the first job whose dependencies are done); with ``table``,
    only what it does not hold (and what that needs)."""
    st = STUDY[ctx["name"]]
    nets = plan(ctx, plan_seed)["nets"]

    def deps(n: dict[str, Any]) -> tuple[str, ...]:
        return ("start",) if n["parent"] == "start" else (f"arm:{n['parent']}:a:0",)

    def truth(s: int) -> list[ev.Job]:
        return [ev.Job(f"truth:{n['name']}:inherited:{s}", job_truth, (n["name"], "inherited", s), deps=deps(n)) for n in nets]

    out = [ev.Job("start", ev.job_start, ())]
    out += [ev.Job(f"arm:{n['name']}:{arm}:{s}", job_arm, (n["name"], arm, s), deps=deps(n))
            for n in nets for s in st["arm_seeds"] for arm in ARMS if arm != "c"]
    out += truth(st["truth_seeds"][0])  # the inherited arms against one truth first: what the default is chosen by
    out += [ev.Job(f"arm:{n['name']}:c:{s}", job_arm, (n["name"], "c", s)) for n in nets for s in st["arm_seeds"]]
    for s in st["truth_seeds"][1:]:  # then the truth's other seeds: the ceiling
        out += truth(s)
    out += [ev.Job(f"truth:{n['name']}:scratch:0", job_truth, (n["name"], "scratch", 0)) for n in nets]
    return out if table is None else still_to_train(out, held_keys(table))


# ------------------------------------------------------------------------------ statistics
def agreement(proxy: list[float], truth: list[float]) -> dict[str, Any]:
    return stats.agreement(proxy, truth, k=3)


# ------------------------------------------------------------------------------ the report
def collect(ctx: dict[str, Any], plan_seed: int = 0, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every net's cached results (what is not trained yet is absent): the shipped table's rows. With
    ``table`` (an earlier shipped table of this plan), its results stand, and the cache adds what it lacks."""
    st, metric = STUDY[ctx["name"]], ev.METRIC
    p = plan(ctx, plan_seed)
    start = ev._read(Path(ctx["cache"]) / "start" / "result.json")
    if table is not None and table["start"].get("val") is not None:
        start = {"val": {metric: table["start"]["val"]}, "test": {metric: table["start"]["test"]}}
    old = {n["name"]: n for n in table["nets"]} if table is not None else {}
    rows = []
    for n in p["nets"]:
        row = {k: n[k] for k in ("name", "level", "parent", "code", "fingerprint", "gmacs", "params_m", "ops")}
        row["redrawn"] = bool(n.get("redrawn"))
        row["morphisms"] = [op["rule"] for op in n["ops"]]
        row["arms"], row["truth"], row["seconds"] = {}, {"inherited": {}, "scratch": {}}, {}
        for arm in ARMS:
            for s in st["arm_seeds"]:
                if (r := ev._read(_out(ctx, n["name"], arm, s) / "result.json")) is not None:
                    row["arms"].setdefault(arm, {})[f"s{s}"] = r["val"][metric]
                    row["seconds"][f"{arm}_s{s}"] = r["seconds"]
        for kind, seeds in (("inherited", st["truth_seeds"]), ("scratch", [0])):
            for s in seeds:
                if (r := ev._read(_out(ctx, n["name"], f"truth_{kind}", s) / "result.json")) is not None:
                    row["truth"][kind][f"s{s}"] = {split: r[split][metric] for split in ("val", "test", "other")}
                    row["seconds"][f"truth_{kind}_s{s}"] = r["seconds"]
        if n["name"] in old:  # the earlier table's results stand over the cache's
            o = old[n["name"]]
            for field, prefix in (("arms", ""), ("truth", "truth_")):
                for tag, by_seed in o[field].items():
                    for s, v in by_seed.items():
                        row[field].setdefault(tag, {})[s] = v
                        row["seconds"][f"{prefix}{tag}_{s}"] = o["seconds"][f"{prefix}{tag}_{s}"]
        rows.append(row)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        if r["parent"] == "start":
            r["parent_metric"] = start["val"][metric] if start else None
        else:
            r["parent_metric"] = by_name[r["parent"]]["arms"].get("a", {}).get("s0")
    return {"study": "proxy", "data": "deepforest 2.1.0 trees (benchmarks/trees.py split)", "size": ctx["name"], "metric": metric,
            "fast": ctx["size"]["fast"], "full_epochs": ctx["size"]["full_epochs"], "scratch_epochs": st["scratch_epochs"],
            "start": {"code": ctx["size"]["start_code"], "epochs": ctx["size"]["start_epochs"], "val": start["val"][metric] if start else None,
                      "test": start["test"][metric] if start else None},
            "arms": {k: v["label"] for k, v in ARMS.items()}, "arm_seeds": st["arm_seeds"], "truth_seeds": st["truth_seeds"],
            "plan_seed": p["seed"], "space": dataclasses.asdict(space(ctx)), "nets": rows}


def proxy_value(row: dict[str, Any], proxy: str) -> float | None:
    if proxy in ARMS:
        vals = list(row["arms"].get(proxy, {}).values())
        return float(np.mean(vals)) if vals else None
    return row.get(proxy)


def truth_value(row: dict[str, Any], truth: str, split: str = "test") -> float | None:
    vals = [v[split] for v in row["truth"][truth].values()]
    return float(np.mean(vals)) if vals else None


def summarize(table: dict[str, Any]) -> dict[str, Any]:
    """Per proxy and truth, the agreement over the nets where both are measured; the truth's seed ceiling."""
    rows = table["nets"]
    out: dict[str, Any] = {"agreement": {}, "ceiling": None}
    for truth in ("inherited", "scratch"):
        for proxy in list(ARMS) + list(FREE):
            pairs = [(p, t) for r in rows if (p := proxy_value(r, proxy)) is not None and (t := truth_value(r, truth)) is not None]
            if len(pairs) >= 3:
                out["agreement"][f"{proxy}|{truth}"] = agreement([p for p, _ in pairs], [t for _, t in pairs])
    seeds = [f"s{s}" for s in table["truth_seeds"]]
    if len(seeds) >= 2:
        both = [(r["truth"]["inherited"][seeds[0]]["test"], r["truth"]["inherited"][seeds[1]]["test"]) for r in rows
                if seeds[0] in r["truth"]["inherited"] and seeds[1] in r["truth"]["inherited"]]
        if len(both) >= 3:
            out["ceiling"] = agreement([a for a, _ in both], [b for _, b in both])
    return out


def _ci(a: dict[str, Any] | None, key: str = "tau") -> str:
    """``+0.31 [-0.02, +0.60]``, or ``-`` where not measured (or undefined: a constant list)."""
    if not a or a[key] is None:
        return "-"
    lo, hi = a[f"{key}_ci95"]
    return f"{a[key]:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo is not None else f"{a[key]:+.2f}"


def table_rows(table: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for proxy in list(ARMS) + list(FREE):
        row: dict[str, Any] = {"proxy": ARMS[proxy]["label"] if proxy in ARMS else FREE[proxy]}
        vals = [v for r in table["nets"] if (v := proxy_value(r, proxy)) is not None] if proxy in ARMS else []
        row["mean val metric"] = f"{np.mean(vals):.3f} ± {np.std(vals):.3f} ({len(vals)})" if vals else "-"
        for truth in ("inherited", "scratch"):
            a = summary["agreement"].get(f"{proxy}|{truth}")
            row[f"tau vs {truth}"] = _ci(a)
            row[f"rho vs {truth}"] = _ci(a, "rho")
            row[f"top-3 {truth}"] = ("yes" if a["top3_recall"] else "no") if a else "-"
            row[f"n {truth}"] = a["n"] if a else 0
        out.append(row)
    c = summary["ceiling"]
    out.append({"proxy": "ceiling: truth (i) seed vs seed", "mean val metric": "-", "tau vs inherited": _ci(c), "rho vs inherited": _ci(c, "rho"), "top-3 inherited": ("yes" if c["top3_recall"] else "no") if c else "-",
                "n inherited": c["n"] if c else 0, "tau vs scratch": "", "rho vs scratch": "", "top-3 scratch": "", "n scratch": ""})
    return out


def markdown(table: dict[str, Any]) -> str:
    """The README's table: each proxy's agreement with both truths, and how much of the study is measured."""
    cols = ["proxy", "mean val metric", "tau vs inherited", "top-3 inherited", "n inherited", "tau vs scratch", "top-3 scratch", "n scratch"]
    rows = table_rows(table, table["summary"])
    nets = table["nets"]
    count = {k: sum(1 for r in nets if r["truth"][k]) for k in ("inherited", "scratch")}
    seeds = {k: sum(len(r["truth"][k]) for r in nets) for k in ("inherited", "scratch")}
    arms = sum(len(v) for r in nets for v in r["arms"].values())
    note = (f"\n{len(nets)} nets; measured so far: {arms} of {len(nets) * len(ARMS) * len(table['arm_seeds'])} short runs, "
            f"truth (i) for {count['inherited']} nets ({seeds['inherited']} of {len(nets) * len(table['truth_seeds'])} trainings), "
            f"truth (ii) for {count['scratch']} nets. tau: Kendall's tau-b [95 % bootstrap interval]; truth: test {table['metric']}; "
            f"the start net: validation {table['start']['val']}, test {table['start']['test']}.\n")
    return ev.markdown_table([{c: r[c] for c in cols} for r in rows]) + note


def figure(ctx: dict[str, Any], table: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    import matplotlib.pyplot as plt

    proxies = list(ARMS) + list(FREE)
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.4))
    for ax, proxy in zip(axes.flat, proxies):
        pts = [(p, t, r["level"]) for r in table["nets"] if (p := proxy_value(r, proxy)) is not None and (t := truth_value(r, "inherited")) is not None]
        if pts:
            ax.scatter([p for p, _, _ in pts], [t for _, t, _ in pts], c=["tab:blue" if lv == 1 else "tab:orange" for *_, lv in pts],
                       s=28, edgecolors="black", linewidths=0.4)
        a = summary["agreement"].get(f"{proxy}|inherited")
        title = ARMS[proxy]["label"] if proxy in ARMS else FREE[proxy]
        ax.set_title(f"{title}\nτ = {_ci(a)}, n = {a['n']}" if a else title, fontsize=9)
        ax.set_xlabel(f"validation {ev.METRIC} after {ctx['size']['fast']['epochs']} epochs" if proxy in ARMS else FREE[proxy], fontsize=8)
        ax.set_ylabel(f"test {ev.METRIC}, full training (i)", fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes.flat[len(proxies)]
    c = summary["ceiling"]
    seeds = [f"s{s}" for s in table["truth_seeds"]][:2]
    both = [(r["truth"]["inherited"][seeds[0]]["test"], r["truth"]["inherited"][seeds[1]]["test"]) for r in table["nets"]
            if len(seeds) == 2 and all(s in r["truth"]["inherited"] for s in seeds)]
    if both:
        ax.scatter([a for a, _ in both], [b for _, b in both], s=28, c="tab:gray", edgecolors="black", linewidths=0.4)
    ax.set_title(f"ceiling: truth (i) seed {seeds[0][1:]} vs seed {seeds[-1][1:]}\n" + (f"τ = {_ci(c)}" if c else "not measured yet"), fontsize=9)
    ax.set_xlabel(f"test {ev.METRIC}, seed {seeds[0][1:]}", fontsize=8)
    ax.set_ylabel(f"test {ev.METRIC}, seed {seeds[-1][1:]}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"Does a proxy rank the nets as full training from their inherited weights does? (blue: 1st level, orange: 2nd; {len(table['nets'])} nets)", fontsize=10)
    fig.tight_layout()
    return ev.save_figure(fig, Path(ctx["figures"]) / "proxy")


def report(ctx: dict[str, Any], plan_seed: int, t0: float, ship: bool, old: dict[str, Any] | None = None) -> dict[str, Any]:
    table = collect(ctx, plan_seed, old)
    summary = summarize(table)
    table["summary"] = summary
    rows = table_rows(table, summary)
    print_table(rows, list(rows[0]))
    figs = figure(ctx, table, summary)
    ev.write_results(ctx, "proxy", markdown(table), table)
    if ship:
        TABLES.mkdir(parents=True, exist_ok=True)
        shipped(ctx).write_text(json.dumps(table, indent=1) + "\n")
    done = sum(1 for r in table["nets"] for v in (r["arms"], r["truth"]["inherited"], r["truth"]["scratch"]) for _ in v)
    emit_json("proxy", rows, size=ctx["name"], metric=ev.METRIC, nets=len(table["nets"]), results=done,
              summary=summary, figures=figs, seconds=round(time.time() - t0))
    return table


def main(argv: list[str] | None = None) -> None:
    def more(p: Any) -> None:
        p.add_argument("--plan-seed", type=int, default=0, help="the seed the nets are drawn with")
        p.add_argument("--report-only", action="store_true", help="train nothing: report what is cached")
        p.add_argument("--ship", action="store_true", help="also write benchmarks/tables/proxy_trees_<size>.json (the repo's table)")
        p.add_argument("--from-table", nargs="?", const="", default=None, metavar="JSON",
                       help="count what this table (default: the shipped one) holds as measured; train only the rest")

    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_arguments(p)
    more(p)
    args = p.parse_args(argv)
    t0 = time.time()
    ctx = ev.context(args)
    old = None
    if args.from_table is not None:
        old = read_table(ctx, args.from_table or shipped(ctx), args.plan_seed)
    if not args.report_only:
        ev.run_jobs(ctx, jobs(ctx, args.plan_seed, old))
    report(ctx, args.plan_seed, t0, args.ship, old)
    print(f"# proxy --size {ctx['name']}: {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
