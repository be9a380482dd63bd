"""TensorBoard for a search, fed by the journal's events (a listener of :class:`~spnas.search.runner.Search`).

Tags: ``candidate/metric``, ``candidate/gmacs``, ``candidate/params_m``, ``search/best_so_far``,
``search/noise_std``, ``accepted/encoding`` (text: code, metric, baseline, gain, noise),
``summary`` (text), ``trajectory`` (image), and the hparams plugin's. The trajectory picture is
like the paper's Figure 3 (metric of every candidate over the search, accepted ones joined, phases
coloured), drawn with PIL and also saved as ``trajectory.png``.

The logger knows nothing of the search's classes: everything it shows is in the events, so a
resumed run (whose earlier events are replayed into it, not logged again) continues its curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.tensorboard import SummaryWriter

__all__ = ["TBLogger", "trajectory_png"]

_PHASE_COLOURS = {"serial": (31, 119, 180), "reignite": (214, 39, 40), "parallel": (44, 160, 44)}


class TBLogger:
    """Call it with each new journal event; ``events`` are those already journaled (a resumed run)."""

    def __init__(self, logdir: Path, cfg: Any, events: list[dict[str, Any]]) -> None:
        self.logdir = Path(logdir)
        self.cfg = cfg
        self.w: SummaryWriter | None = None
        self.events: list[dict[str, Any]] = []
        self.proposed: dict[str, dict[str, Any]] = {}
        self.results = 0
        from spnas.detect.metrics import lower_is_better

        self.pick = min if lower_is_better(cfg.search.metric) else max  # best so far: the lowest miss rate, the highest AP
        self.best = math.inf if self.pick is min else -math.inf
        for ev in events:
            self._index(ev)

    def _index(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        kind = ev.get("event")
        if kind == "proposed":
            self.proposed[ev["id"]] = ev
        elif kind in ("evaluated", "failed"):
            self.results += 1
            if kind == "evaluated":
                self.best = self.pick(self.best, float(ev["metric"]))

    def _writer(self) -> SummaryWriter:
        if self.w is None:
            self.w = SummaryWriter(str(self.logdir))
        return self.w

    def __call__(self, ev: dict[str, Any]) -> None:
        self._index(ev)
        kind, step = ev.get("event"), self.results
        if kind in ("evaluated", "failed"):
            w, p = self._writer(), self.proposed.get(ev["id"], {})
            if kind == "evaluated":
                w.add_scalar("candidate/metric", float(ev["metric"]), step)
                w.add_scalar("search/best_so_far", self.best, step)
            if "gmacs" in p:
                w.add_scalar("candidate/gmacs", p["gmacs"], step)
                w.add_scalar("candidate/params_m", p["params_m"], step)
        elif kind == "noise" and ev.get("std") is not None:
            self._writer().add_scalar("search/noise_std", ev["std"], step)
            self._writer().add_text("noise", f"start net continued under {ev['seeds']} seeds: {ev['metrics']} (std {ev['std']:.4f})", step)
        elif kind == "accepted":
            gain = f", gain {ev['gain']:+.4f} over `{ev['baseline']}`" if ev.get("gain") is not None else ""
            noise = f" (noise std {ev['noise_std']:.4f})" if ev.get("noise_std") is not None else ""
            self._writer().add_text("accepted/encoding", f"{ev['id']}: `{ev.get('encoding')}` ({ev['metric']:.4f}){gain}{noise}", step)
        elif kind == "done":
            self._finish(ev, step)
        else:
            return
        self._writer().flush()

    def _finish(self, summary: dict[str, Any], step: int) -> None:
        w = self._writer()
        rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k not in ("metrics", "event", "time", "accepted"))
        w.add_text("summary", "| field | value |\n|---|---|\n" + rows, step)
        png = trajectory_png(self.events, summary.get("metric", "metric"))
        png.save(self.logdir.parent / "trajectory.png")
        w.add_image("trajectory", np.asarray(png).transpose(2, 0, 1), step)
        cfg, s = self.cfg, self.cfg.search
        hp = {"seed": cfg.seed, "lam": s.lam, "n_stuck": s.n_stuck, "n_reignite": s.n_reignite, "acceptance": s.acceptance,
              "start": cfg.start.code or cfg.start.ir or "", "head": cfg.detector.head, "K": cfg.parallel.K}
        w.add_hparams(hp, {"hparam/best_metric": summary["best_metric"], "hparam/gmacs": summary["gmacs"]}, run_name=".")

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def trajectory_png(events: list[dict[str, Any]], metric: str, size: tuple[int, int] = (900, 520)) -> Image.Image:
    """Every evaluated candidate's metric in order; the accepted ones joined by a line."""
    W, H = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    evals = [e for e in events if e.get("event") == "evaluated"]
    phase_of = {e["id"]: e.get("phase", "serial") for e in events if e.get("event") == "proposed"}
    accepted = {e["id"] for e in events if e.get("event") == "accepted"}
    L, R, T, B = 70, 20, 30, 60
    d.text((L, 8), f"SP-NAS search trajectory: {metric} per candidate (blue serial, red reignite, green parallel)", fill="black")
    d.line([(L, T), (L, H - B), (W - R, H - B)], fill="black")
    if not evals:
        return img
    ys = [float(e["metric"]) for e in evals]
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5

    def xy(i: int, y: float) -> tuple[float, float]:
        x = L + (W - L - R) * (i + 0.5) / len(evals)
        return x, T + (H - T - B) * (1 - (y - lo) / (hi - lo))

    for t in range(5):
        y = lo + (hi - lo) * t / 4
        _, py = xy(0, y)
        d.line([(L - 4, py), (L, py)], fill="black")
        d.text((4, py - 6), f"{y:.4f}", fill="black")
    pts = []
    for i, e in enumerate(evals):
        x, y = xy(i, float(e["metric"]))
        col = _PHASE_COLOURS.get(phase_of.get(e["id"], "serial"), (0, 0, 0))
        r = 6 if e["id"] in accepted else 3
        d.ellipse([x - r, y - r, x + r, y + r], fill=col, outline="black" if e["id"] in accepted else col)
        if e["id"] in accepted:
            pts.append((x, y))
            d.text((x + 6, y - 14), e["id"], fill="black")
    if len(pts) > 1:
        d.line(pts, fill=(120, 120, 120), width=2)
    d.text((L, H - B + 10), "candidates in evaluation order  (big dots: accepted)", fill="black")
    return img
