"""Rank statistics for judging a proxy: Kendall's tau-b, Spearman's rho, percentile-bootstrap intervals, top-k recall.

``spnas audit`` and the evidence benchmarks (``benchmarks/``) share these; numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["kendall_tau", "spearman", "ranks", "bootstrap_ci", "top_recall", "agreement"]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either list handled as scipy does); NaN when either list is constant."""
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else float("nan")


def ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank."""
    a = np.asarray(x, float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(len(a), dtype=float)
    for v in np.unique(a):
        m = a == v
        r[m] = r[m].mean()
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Pearson's r of the mean ranks); NaN when either list is constant."""
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_ci(fn: Callable[[list[float], list[float]], float], x: Sequence[float], y: Sequence[float], *,
                 n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile-bootstrap interval of ``fn(x, y)``: the pairs resampled with replacement ``n`` times."""
    rng = np.random.default_rng(seed)
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(xa), len(xa))
        v = fn(xa[idx].tolist(), ya[idx].tolist())
        if math.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def top_recall(proxy: Sequence[float], truth: Sequence[float], k: int = 3) -> bool:
    """Do the proxy's best ``k`` hold the truth's best (higher is better in both)?"""
    best = int(np.argmax(np.asarray(truth, float)))
    return best in set(np.argsort(-np.asarray(proxy, float), kind="mergesort")[:k].tolist())


def agreement(proxy: Sequence[float], truth: Sequence[float], *, k: int = 3) -> dict[str, object]:
    """tau-b and rho with 95 % bootstrap intervals, and top-``k`` recall, rounded for a table."""
    def r(v: float) -> float | None:
        return round(v, 3) if math.isfinite(v) else None

    tau, rho = kendall_tau(proxy, truth), spearman(proxy, truth)
    return {"n": len(proxy), "tau": r(tau), "tau_ci95": [r(v) for v in bootstrap_ci(kendall_tau, proxy, truth)],
            "rho": r(rho), "rho_ci95": [r(v) for v in bootstrap_ci(spearman, proxy, truth)], f"top{k}_recall": top_recall(proxy, truth, k)}
