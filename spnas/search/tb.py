"""TensorBoard for a search: per-candidate metric, best so far, FLOPs/params, accepted codes, hparams,
and a trajectory picture like the paper's Figure 3 (metric of every candidate over the search,
accepted ones joined, phases coloured), drawn with PIL and also saved as ``trajectory.png``.

Tags: ``candidate/metric``, ``candidate/gmacs``, ``candidate/params_m``, ``search/best_so_far``,
``accepted/encoding`` (text), ``summary`` (text), ``trajectory`` (image), and the hparams plugin's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.tensorboard import SummaryWriter

__all__ = ["TBLogger", "trajectory_png"]

_PHASE_COLOURS = {"serial": (31, 119, 180), "reignite": (214, 39, 40), "parallel": (44, 160, 44)}


class TBLogger:
    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self.w = SummaryWriter(str(self.logdir))
        self.step = 0

    def candidate(self, c: Any, size: tuple[int, int], best: float, step: int) -> None:
        """Log one result at ``step`` (its position among the journal's results, stable across resumes)."""
        self.step = step
        if c.ok:
            self.w.add_scalar("candidate/metric", c.metric, self.step)
            self.w.add_scalar("search/best_so_far", best, self.step)
        self.w.add_scalar("candidate/gmacs", c.arch.flops(size) / 1e9, self.step)
        self.w.add_scalar("candidate/params_m", c.arch.params() / 1e6, self.step)
        self.w.flush()

    def accepted(self, c: Any) -> None:
        from spnas.search.runner import _code

        self.w.add_text("accepted/encoding", f"{c.id}: `{_code(c.arch)}` ({c.metric:.4f})", self.step)
        self.w.flush()

    def finish(self, cfg: Any, summary: dict[str, Any], candidates: list[Any], events: list[dict[str, Any]]) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k != "metrics")
        self.w.add_text("summary", "| field | value |\n|---|---|\n" + rows, self.step)
        png = trajectory_png(events, summary.get("metric", "metric"))
        png.save(self.logdir.parent / "trajectory.png")
        self.w.add_image("trajectory", np.asarray(png).transpose(2, 0, 1), self.step)
        s = cfg.search
        hp = {"seed": cfg.seed, "lam": s.lam, "n_stuck": s.n_stuck, "n_reignite": s.n_reignite, "start": cfg.start.code or cfg.start.ir or "",
              "head": cfg.detector.head, "K": cfg.parallel.K}
        self.w.add_hparams(hp, {"hparam/best_metric": summary["best_metric"], "hparam/gmacs": summary["gmacs"]}, run_name=".")
        self.w.flush()

    def close(self) -> None:
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
