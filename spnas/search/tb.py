"""TensorBoard for a search, fed by the journal's events (a listener of :class:`~spnas.search.runner.Search`).

In ``tb/``: ``candidate/metric``, ``candidate/gmacs``, ``candidate/params_m``, ``search/best_so_far``,
``search/noise_std``, ``accepted/encoding`` (text: code, metric, baseline, gain, noise),
``summary`` (text), ``trajectory``, ``lineage`` and ``flops_per_stage`` (images), and the search's hparams.
In ``tb/candidates/<id>/``, one TensorBoard run per trained candidate: ``train/loss`` and
``train/lr`` along its training, ``metrics/<name>`` for every metric measured (AP, AP50, ...,
VOC_AP50), and an hparams session (code, role, phase, generation, parent, morphisms, GMACs,
params; the metrics as ``hparam/<name>``), so TensorBoard overlays candidates' curves and its HParams
dashboard compares them. The trajectory picture is like the paper's Figure 3 (metric of every
candidate over the search, each accepted child beside the continued parent it beat, the result so
far); the lineage picture is the tree of the nets the search carried on (:mod:`spnas.search.lineage`);
the FLOPs picture is like its Figure 4b (GMACs per stage of the start net and the found net). All
are drawn with matplotlib and also saved as ``trajectory``, ``lineage`` and ``flops_per_stage`` ``.png``/``.pdf``.

The logger knows nothing of the search's classes: everything it shows is in the events, so a
resumed run (whose earlier events are replayed into it, not logged again) continues its curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from spnas.search.lineage import lineage_figure, trajectory_figure
from spnas.search.records import Event

__all__ = ["TBLogger", "trajectory_figure", "lineage_figure", "flops_figure", "save_figure"]


class TBLogger:
    """Call it with each new journal event; ``events`` are those already journaled (a resumed run)."""

    def __init__(self, logdir: Path, cfg: Any, events: list[dict[str, Any]], figures: Path | None = None) -> None:
        self.logdir = Path(logdir)
        self.figures = Path(figures) if figures is not None else self.logdir.parent  # where the PNG/PDF files go
        self.cfg = cfg
        self.w: SummaryWriter | None = None
        self.events: list[dict[str, Any]] = []
        self.proposed: dict[str, dict[str, Any]] = {}
        self.results = 0
        from spnas.detect.metrics import Metric

        metric = Metric(cfg.search.metric)
        self.pick = metric.pick  # best so far: the lowest miss rate, the highest AP
        self.best = metric.worst
        for ev in events:
            self._index(ev)

    def _index(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        kind = ev.get("event")
        if kind == Event.PROPOSED:
            self.proposed[ev["id"]] = ev
        elif kind in (Event.EVALUATED, Event.FAILED):
            self.results += 1
            if kind == Event.EVALUATED:
                self.best = self.pick(self.best, float(ev["metric"]))

    def _writer(self) -> SummaryWriter:
        if self.w is None:
            self.w = SummaryWriter(str(self.logdir))
        return self.w

    def __call__(self, ev: dict[str, Any]) -> None:
        self._index(ev)
        kind, step = ev.get("event"), self.results
        if kind in (Event.EVALUATED, Event.FAILED):
            w, p = self._writer(), self.proposed.get(ev["id"], {})
            if kind == Event.EVALUATED:
                w.add_scalar("candidate/metric", float(ev["metric"]), step)
                w.add_scalar("search/best_so_far", self.best, step)
                self._candidate_run(ev, p)
            if "gmacs" in p:
                w.add_scalar("candidate/gmacs", p["gmacs"], step)
                w.add_scalar("candidate/params_m", p["params_m"], step)
        elif kind == Event.NOISE and ev.get("std") is not None:
            self._writer().add_scalar("search/noise_std", ev["std"], step)
            self._writer().add_text("noise", f"start net continued under {ev['seeds']} seeds: {ev['metrics']} (std {ev['std']:.4f})", step)
        elif kind == Event.ACCEPTED:
            gain = f", gain {ev['gain']:+.4f} over `{ev['baseline']}`" if ev.get("gain") is not None else ""
            noise = f" (noise std {ev['noise_std']:.4f})" if ev.get("noise_std") is not None else ""
            self._writer().add_text("accepted/encoding", f"{ev['id']}: `{ev.get('encoding')}` ({ev['metric']:.4f}){gain}{noise}", step)
        elif kind == Event.DONE:
            self._finish(ev, step)
        else:
            return
        self._writer().flush()

    def _candidate_run(self, ev: dict[str, Any], p: dict[str, Any]) -> None:
        """``tb/candidates/<id>/``: the candidate's loss and learning-rate curves, its metrics and an hparams session."""
        from torch.utils.tensorboard.summary import hparams

        w = SummaryWriter(str(self.logdir / "candidates" / ev["id"]))
        try:
            curve = ev.get("curve") or {}
            for it, loss, lr in zip(curve.get("iteration", []), curve.get("loss", []), curve.get("lr", [])):
                w.add_scalar("train/loss", loss, it)
                w.add_scalar("train/lr", lr, it)
            metrics = {k: float(v) for k, v in (ev.get("metrics") or {}).items() if v is not None and math.isfinite(float(v))}
            for k, v in metrics.items():
                w.add_scalar(f"metrics/{k}", v, 0)
            hp = {"id": ev["id"], "code": str(p.get("encoding", "")), "role": str(p.get("role", "")), "phase": str(p.get("phase", "")),
                  "generation": int(p.get("generation") or 0), "parent": str(p.get("parent") or ""),
                  "morphisms": " ".join(f"{m['rule']}@{m['site']}" for m in p.get("morphisms") or []) or "-",
                  "gmacs": float(p.get("gmacs") or 0.0), "params_m": float(p.get("params_m") or 0.0)}
            exp, ssi, sei = hparams(hp, {f"hparam/{k}": v for k, v in metrics.items()})
            for summary in (exp, ssi, sei):
                w.file_writer.add_summary(summary)
            for k, v in metrics.items():
                w.add_scalar(f"hparam/{k}", v, 0)
        finally:
            w.close()

    def _finish(self, summary: dict[str, Any], step: int) -> None:
        w = self._writer()
        rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k not in ("metrics", "event", "time", "accepted"))
        w.add_text("summary", "| field | value |\n|---|---|\n" + rows, step)
        metric = summary.get("metric", "metric")
        picture = save_figure(trajectory_figure(self.events, metric), self.figures / "trajectory")
        w.add_image("trajectory", picture, step)
        w.add_image("lineage", save_figure(lineage_figure(self.events, metric), self.figures / "lineage"), step)
        flops = flops_figure(self.events, summary.get("id"))
        if flops is not None:
            w.add_image("flops_per_stage", save_figure(flops, self.figures / "flops_per_stage"), step)
        cfg, s = self.cfg, self.cfg.search
        hp = {"seed": cfg.seed, "lam": s.lam, "n_stuck": s.n_stuck, "n_reignite": s.n_reignite, "acceptance": s.acceptance,
              "start": cfg.start.code or cfg.start.ir or "", "head": cfg.detector.head, "K": cfg.parallel.K}
        w.add_hparams(hp, {"hparam/best_metric": summary["best_metric"], "hparam/gmacs": summary["gmacs"]}, run_name=".")

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def flops_figure(events: list[dict[str, Any]], best_id: str | None) -> Figure | None:
    """The paper's Figure 4b: GMACs per stage (subnets included) of the start net, the serial result and the
    found net, from the journal's ``stage_gmacs``; None where the journal has none (an older run)."""
    proposed = {e["id"]: e for e in events if e.get("event") == Event.PROPOSED}
    serial = [e["id"] for e in events if e.get("event") == Event.BEST and e.get("phase") in ("serial", "reignite")]
    rows = [("start net", "start"), ("serial level", serial[-1] if serial else None), ("found net", best_id)]
    rows = [(label, proposed[cid]) for label, cid in rows if cid in proposed and proposed[cid].get("stage_gmacs")]
    unique: list[tuple[str, dict[str, Any]]] = []
    for label, p in rows:  # the serial result may be the found net (trained on), or the start net
        same = [i for i, (_, q) in enumerate(unique) if q.get("fingerprint") == p.get("fingerprint")]
        if same:
            unique[same[0]] = (f"{unique[same[0]][0]} = {label}", unique[same[0]][1])
        else:
            unique.append((label, p))
    if not unique:
        return None
    fig = Figure(figsize=(8, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    n = max(len(p["stage_gmacs"]) for _, p in unique)
    width = 0.8 / len(unique)
    for i, (label, p) in enumerate(unique):
        xs = np.arange(len(p["stage_gmacs"])) + (i - (len(unique) - 1) / 2) * width
        bars = ax.bar(xs, p["stage_gmacs"], width, label=f"{label} ({p['id']}): {p.get('encoding', '')}, {p.get('gmacs', 0):.2f} GMACs")
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(np.arange(n), [f"stage {k + 1}" for k in range(n)])
    ax.set_ylabel("GMACs of the stage (main blocks and subnets)")
    ax.set_title("Where the computation goes: FLOPs per stage")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return fig


def save_figure(fig: Figure, stem: Path) -> np.ndarray:
    """Write ``stem.png`` and ``stem.pdf``; return the picture as an (3, H, W) uint8 array for TensorBoard."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.savefig(stem.with_suffix(".png"))
    fig.savefig(stem.with_suffix(".pdf"))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].transpose(2, 0, 1).copy()
