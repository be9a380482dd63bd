"""A search read back from its journal: the lineage of the nets it carried on, and the trajectory.

The *lineage* is the tree of every net the search carried on: the start, each accepted child, each
continued parent that was kept because no child beat it, each reignited net, and the parallel
level's accepted nets. A node's parent is the lineage net it was made from. Each node says how it
got there: an accepted child with its gain over the continued parent it was compared with (the
number the search decided on), a kept parent with the child that lost to it. The run's result
(``best/``) and the hall of fame's first entry (``best/top/1``: the best architecture by its first
trained instance) are marked, since they can differ: in fair mode a net's metric depends on how long
it trained, and only a comparison at equal training decides.

:func:`lineage` gives the nodes; :func:`lineage_text` the tree as text (``spnas show RUN
--lineage``); :func:`lineage_figure` and :func:`trajectory_figure` draw it (matplotlib ``Figure``
objects, no pyplot state). Everything here reads events only, so it works on a finished run, a run
still going, or a journal copied elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from spnas.detect.metrics import Metric
from spnas.search.records import Event

__all__ = ["Step", "lineage", "lineage_text", "lineage_figure", "trajectory_figure", "run_metric"]

_PHASE_COLOURS = {"serial": "tab:blue", "reignite": "tab:red", "parallel": "tab:green"}
_HOW_COLOURS = {"start": "0.2", "converged": "0.2", "accepted": "tab:green", "continued": "tab:gray", "reignited": "tab:red"}


@dataclass(frozen=True)
class Step:
    """One net of the lineage. ``how``: start | converged | accepted | continued | reignited."""

    id: str
    parent: str | None
    how: str
    code: str
    phase: str
    generation: int | None
    morphisms: str
    metric: float | None
    epochs: int | None
    baseline: str | None = None
    baseline_metric: float | None = None
    gain: float | None = None
    lost: tuple[str, float | None] | None = None  # a kept parent: the best child, which did not beat it
    final: bool = False  # a reignite after the serial level's last generation
    depth: int = 0  # how many branch points lie above it (the tree's indentation)
    result: bool = False  # the run's result: best/
    top: bool = False  # best/top/1 where it is not the result


def run_metric(events: list[dict[str, Any]], default: str = "metric") -> str:
    """The metric a run decided on, from its ``done`` event (a finished run) or ``default``."""
    done = next((e for e in reversed(events) if e.get("event") == Event.DONE), None)
    return str((done or {}).get("metric") or default)


def _morphisms(p: dict[str, Any]) -> str:
    """``expand@b3``, ``swap@b4+b3``; a run of one rule as ``add_subnet@1,1,2,2``."""
    runs: list[tuple[str, list[str]]] = []
    for m in p.get("morphisms") or []:
        site = m.get("site")
        site = "+".join(map(str, site)) if isinstance(site, list) else ("" if site is None else str(site))
        if runs and runs[-1][0] == m.get("rule"):
            runs[-1][1].append(site)
        else:
            runs.append((str(m.get("rule")), [site]))
    return " ".join(f"{rule}@{','.join(sites)}" if any(sites) else rule for rule, sites in runs)


def _epochs(events: list[dict[str, Any]], train_epochs: int | None, start_epochs: int | None) -> dict[str, int]:
    """Each trained candidate's detection epochs in all, its ancestors' included: its own (the proposal's
    ``epochs`` under multi-fidelity, else ``start_epochs`` for the start and ``train_epochs`` for the
    rest) plus its parent's; the converged start's from its ``converged`` event. A journal that records
    ``epochs_trained`` is taken at its word. Unknown (no settings given): absent."""
    proposed = {e["id"]: e for e in events if e.get("event") == Event.PROPOSED}
    known = {e["id"]: int(e["epochs_trained"]) for e in events if e.get("event") == Event.EVALUATED and e.get("epochs_trained") is not None}
    known.update({e["id"]: int(e["epochs"]) for e in events if e.get("event") == Event.CONVERGED and e.get("epochs") is not None})
    out: dict[str, int] = {}

    visiting: set[str] = set()  # a parent loop (a damaged journal) ends the walk instead of recursing for ever

    def total(cid: str) -> int | None:
        if cid in known or cid in out:
            return known.get(cid, out.get(cid))
        p = proposed.get(cid)
        if p is None or cid in visiting:
            return None
        visiting.add(cid)
        own = p.get("epochs") or (start_epochs if p.get("role") == "start" else train_epochs)
        if own is None:
            return None
        before = total(p["parent"]) if p.get("parent") else 0
        if before is None:
            return None
        out[cid] = before + int(own)
        return out[cid]

    for e in events:
        if e.get("event") == Event.EVALUATED:
            total(e["id"])
    return {**out, **known}


def lineage(events: list[dict[str, Any]], metric: str | None = None, *, train_epochs: int | None = None,
            start_epochs: int | None = None) -> list[Step]:
    """The lineage's nets in tree order (depth first, children in the order they were decided). With the
    run's ``train.epochs`` and the start's epochs, each net says how many epochs it trained in all."""
    m = Metric(metric or run_metric(events))
    proposed = {e["id"]: e for e in events if e.get("event") == Event.PROPOSED}
    results = {e["id"]: e for e in events if e.get("event") in (Event.EVALUATED, Event.FAILED) and e.get("id")}
    epochs = _epochs(events, train_epochs, start_epochs)
    how: dict[str, dict[str, Any]] = {}  # node id -> the event that put it in the lineage (first one wins)
    for e in events:
        kind, cid = e.get("event"), e.get("id")
        if kind == Event.ACCEPTED and cid:
            how.setdefault(cid, {"how": "start" if e.get("rule") == "start" else "accepted", **e})
        elif kind == Event.CONVERGED and cid:
            how.setdefault(cid, {"how": "converged", **e})
        elif kind == Event.REJECTED and e.get("kept"):
            how.setdefault(e["kept"], {"how": "continued", "lost": (cid, e.get("metric")), **e, "id": e["kept"]})
        elif kind == Event.REIGNITED and cid:
            how.setdefault(cid, {"how": "reignited", **e})
    if not how:
        return []

    def lineage_parent(cid: str) -> str | None:
        seen, p = {cid}, proposed.get(cid, {}).get("parent")
        while p is not None and p not in how and p not in seen:
            seen.add(p)
            p = proposed.get(p, {}).get("parent")
        return p if p in how else None

    parents = {cid: lineage_parent(cid) for cid in how}
    children: dict[str | None, list[str]] = {}
    for cid in how:  # insertion order: the order of the decisions
        children.setdefault(parents[cid], []).append(cid)
    done = next((e for e in reversed(events) if e.get("event") == Event.DONE), None)
    result = (done or {}).get("id")
    top = _top(events, m)

    out: list[Step] = []

    def visit(cid: str, depth: int) -> None:
        e, p, r = how[cid], proposed.get(cid, {}), results.get(cid, {})
        metric_value = r.get("metric") if r.get("event") == Event.EVALUATED else None
        out.append(Step(
            id=cid, parent=parents[cid], how=e["how"], code=str(p.get("encoding") or e.get("encoding") or ""),
            phase=str(p.get("phase") or e.get("phase") or ""), generation=e.get("generation"), morphisms=_morphisms(p),
            metric=metric_value, epochs=epochs.get(cid), baseline=e.get("baseline") if e["how"] != "continued" else None,
            baseline_metric=e.get("baseline_metric"), gain=e.get("gain") if e["how"] == "accepted" else None,
            lost=tuple(e["lost"]) if e.get("lost") else None, final=bool(e.get("final")), depth=depth,
            result=cid == result, top=cid == top and top != result))
        kids = children.get(cid, [])
        for k in kids:
            visit(k, depth + (len(kids) > 1))

    for root in children.get(None, []):
        visit(root, 0)
    return out


def _number(v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(float(v)):
        return "-"
    return f"{float(v):+.4f}" if signed else f"{float(v):.4f}"


def _decision(s: Step, metric: str, min_gain: float | None = None) -> str:
    if s.how == "start":
        return "the start net"
    if s.how == "converged":
        return f"the start, trained until its {metric} stopped improving"
    if s.how == "accepted":
        return f"accepted: {_number(s.gain, True)} over {s.baseline} ({_number(s.baseline_metric)})"
    if s.how == "continued":
        lost_id, lost_metric = s.lost or ("?", None)
        m = Metric(metric)
        if min_gain and lost_metric is not None and s.metric is not None and m.score(lost_metric) > m.score(s.metric):
            return f"kept: its best child {lost_id} ({_number(lost_metric)}) did not beat it by more than min_gain {_number(min_gain)}"
        return f"kept: its best child {lost_id} ({_number(lost_metric)}) did not beat it"
    return "reignited (re-pretrained)" + (" after the serial level" if s.final else "")


def lineage_text(events: list[dict[str, Any]], metric: str | None = None, **epochs: int | None) -> str:
    """The lineage as an indented tree, one net per line: id, code, morphisms, metric, epochs in all (with
    ``train_epochs`` and ``start_epochs``, as :func:`lineage`), decision."""
    metric = metric or run_metric(events)
    steps = lineage(events, metric, **epochs)
    if not steps:
        return "(no decision in this journal yet)"
    min_gain = next((e.get("min_gain") for e in events if e.get("event") == Event.NOISE), None)  # journaled under auto
    kids: dict[str | None, list[Step]] = {}
    for s in steps:
        kids.setdefault(s.parent, []).append(s)
    prefix: dict[str, str] = {}
    labels = []
    for s in steps:  # a chain stays in its column; a branch point indents its children with tree connectors
        sibs = kids[s.parent]
        base = prefix.get(s.parent, "") if s.parent else ""
        if len(sibs) > 1:
            last = s is sibs[-1]
            labels.append(base + ("└─ " if last else "├─ ") + s.id)
            prefix[s.id] = base + ("   " if last else "│  ")
        else:
            labels.append(base + s.id)
            prefix[s.id] = base
    w_id = max(len(x) for x in labels)
    w_code = max(len(s.code) for s in steps)
    w_m = max([len(s.morphisms) for s in steps] + [9])
    head = f"{'net':<{w_id}}  {'code':<{w_code}}  {'morphisms':<{w_m}}  {metric:>8}  {'epochs':>6}  decision"
    lines = [f"lineage of the search ({metric}, {Metric(metric).direction} is better). A gain is over the net the child "
             "was compared with: its parent trained on as long (serial), or the parallel level's bar.", head]
    for label, s in zip(labels, steps):
        mark = "  <- best/ (the run's result)" if s.result else ("  <- best/top/1 (higher once, not confirmed)" if s.top else "")
        lines.append(f"{label:<{w_id}}  {s.code:<{w_code}}  {s.morphisms or '-':<{w_m}}  {_number(s.metric):>8}  "
                     f"{s.epochs if s.epochs is not None else '-':>6}  {_decision(s, metric, min_gain)}{mark}")
    done = next((e for e in reversed(events) if e.get("event") == Event.DONE), None)
    top = _top(events, Metric(metric))
    if done is not None and top not in (None, done.get("id")) and top not in {s.id for s in steps}:
        lines.append(f"best/top/1 is {top}, a net the search did not carry on (see spnas audit RUN --top 3)")
    return "\n".join(lines)


def _top(events: list[dict[str, Any]], m: Metric) -> str | None:
    """The id in ``best/top/1``: the hall of fame replayed from the events (one entry per architecture,
    its first trained instance; :func:`~spnas.search.candidate.hall_of_fame`)."""
    from spnas.search.candidate import hall_of_fame, individual

    proposed = {e["id"]: e for e in events if e.get("event") == Event.PROPOSED}
    hof = hall_of_fame()
    for e in events:
        if e.get("event") == Event.EVALUATED and e["id"] in proposed:
            p = proposed[e["id"]]
            hof.update([individual(e["id"], p["fingerprint"], p["encoding"], float(e["metric"]), m)])
    return hof[0]["id"] if len(hof) else None


def lineage_figure(events: list[dict[str, Any]], metric: str | None = None, **epochs: int | None) -> Figure:
    """The lineage drawn: one row per net (the text's order), the metric across. An accepted net is joined
    to the continued parent it beat (hollow, same row): the bar is the decided gain. Lines join each net
    to its lineage parent; colour says how it got there."""
    metric = metric or run_metric(events)
    steps = lineage(events, metric, **epochs)
    fig = Figure(figsize=(10, 1.2 + 0.42 * max(len(steps), 3)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    row = {s.id: i for i, s in enumerate(steps)}
    xs = [v for s in steps for v in (s.metric, s.baseline_metric) if v is not None and math.isfinite(float(v))]
    for s in steps:
        y = row[s.id]
        if s.parent in row and s.metric is not None and steps[row[s.parent]].metric is not None:
            ax.plot([steps[row[s.parent]].metric, s.metric], [row[s.parent], y], "-", color="0.75", lw=1, zorder=1)
        if s.how == "accepted" and s.baseline_metric is not None and s.metric is not None:
            ax.plot([s.baseline_metric, s.metric], [y, y], "-", color="tab:green", lw=3, alpha=0.5, zorder=2)
            ax.scatter([s.baseline_metric], [y], s=50, facecolors="none", edgecolors="tab:gray", zorder=3)
        if s.how == "continued" and s.lost and s.lost[1] is not None:
            ax.scatter([s.lost[1]], [y], s=30, marker="x", color="tab:gray", zorder=3)
        if s.metric is not None:
            ax.scatter([s.metric], [y], s=70 if (s.result or s.top) else 45, color=_HOW_COLOURS[s.how],
                       edgecolors="black" if s.result else "none", linewidths=1.5, zorder=4)
    ax.set_yticks(range(len(steps)), [("  " * s.depth) + f"{s.id}  {s.code}" for s in steps], fontsize=8)
    ax.invert_yaxis()
    for s in steps:
        note = {"accepted": f"{_number(s.gain, True)} vs {s.baseline}", "continued": f"kept over {s.lost[0] if s.lost else '?'}",
                "reignited": "reignited", "start": "start", "converged": "converged start"}[s.how]
        note += "  [best/]" if s.result else ("  [best/top/1]" if s.top else "")
        if s.metric is not None:
            ax.annotate(note, (s.metric, row[s.id]), textcoords="offset points", xytext=(7, -3), fontsize=7, color="0.25")
    if xs:
        lo, hi = min(xs), max(xs)
        pad = (hi - lo) * 0.35 or abs(hi) * 0.1 or 0.01
        ax.set_xlim(lo - pad * 0.2, hi + pad)
    handles = [ax.scatter([], [], color=c, s=40, label=k) for k, c in _HOW_COLOURS.items() if k != "converged"]
    handles.append(ax.scatter([], [], s=50, facecolors="none", edgecolors="tab:gray", label="continued parent it beat"))
    handles.append(ax.scatter([], [], s=30, marker="x", color="tab:gray", label="best child that lost"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel(f"{metric} after the fast scheme ({Metric(metric).direction} is better)")
    ax.set_title("SP-NAS lineage: the nets the search carried on")
    ax.grid(alpha=0.3, axis="x")
    return fig


def trajectory_figure(events: list[dict[str, Any]], metric: str | None = None) -> Figure:
    """The paper's Figure 3, drawn so that the decisions read: every evaluated candidate's metric in
    evaluation order (dots, by phase); each accepted child beside the continued parent it beat (a
    bar from the parent, hollow, to the child: the gain the search decided on); the search's result so
    far (the ``best`` events, a step line) and the highest metric measured so far (dotted: any net at any
    training length, which is why it can stand above the result)."""
    metric = metric or run_metric(events)
    m = Metric(metric)
    fig = Figure(figsize=(10, 5.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    evals = [e for e in events if e.get("event") == Event.EVALUATED]
    at = {e["id"]: i for i, e in enumerate(evals)}
    proposed = {e["id"]: e for e in events if e.get("event") == Event.PROPOSED}
    for phase, colour in _PHASE_COLOURS.items():
        pts = [(i, float(e["metric"])) for i, e in enumerate(evals) if proposed.get(e["id"], {}).get("phase", "serial") == phase]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=14, color=colour, alpha=0.6, label=f"{phase} candidates", zorder=2)
    first = True
    for e in events:
        if e.get("event") != Event.ACCEPTED or e.get("rule") == "start" or e["id"] not in at:
            continue
        i, y, b = at[e["id"]], e.get("metric"), e.get("baseline_metric")
        if y is None:
            continue
        if b is not None:
            ax.plot([i, i], [b, y], "-", color="tab:green", lw=2.5, alpha=0.7, zorder=3,
                    label="accepted child over the continued parent it beat" if first else None)
            ax.scatter([i], [b], s=45, facecolors="white", edgecolors="tab:gray", zorder=4)
        ax.scatter([i], [y], s=60, color="tab:green", edgecolors="black", zorder=5)
        ax.annotate(f"{e['id']} {_number(e.get('gain'), True)}\n{e.get('encoding') or proposed.get(e['id'], {}).get('encoding', '')}",
                    (i, y), textcoords="offset points", xytext=(4, 6), fontsize=7, color="0.2")
        first = False
    # the search's result after each evaluation (its best events), and the highest metric seen so far
    # (a best event applies from the evaluation it follows)
    result: float | None = None
    result_line: list[float | None] = []
    top, top_line = m.worst, []
    for e in events:
        if e.get("event") == Event.EVALUATED:
            top = m.pick(top, float(e["metric"]))
            top_line.append(top)
            result_line.append(result)
        elif e.get("event") == Event.BEST and e.get("metric") is not None:
            result = float(e["metric"])
            if result_line:
                result_line[-1] = result
    if evals:
        ax.step(range(len(evals)), [v if v is not None else math.nan for v in result_line], where="post", color="0.15", lw=1.5,
                label="the search's result so far (best/)", zorder=3)
        ax.step(range(len(evals)), top_line, where="post", color="0.45", lw=1, ls=":",
                label="highest metric measured so far (any net, any training length)", zorder=3)
    ax.set_xlabel("candidates in evaluation order")
    ax.set_ylabel(f"{metric} ({m.direction} is better)")
    ax.set_title("SP-NAS search trajectory")
    ax.grid(alpha=0.3)
    if evals:
        ax.legend(loc="best", fontsize=8)
    return fig
