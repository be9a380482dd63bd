"""Rank statistics for judging a proxy: Kendall's tau-b, Spearman's rho, percentile-bootstrap intervals, top-k recall;
and a paired difference over seeds with its t interval (is one arm better than another beyond the seed spread?).

``spnas audit`` and the evidence benchmarks (``benchmarks/``) share these; numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["kendall_tau", "spearman", "ranks", "bootstrap_ci", "top_recall", "agreement", "paired_difference"]

# Student's t, two-sided 95 %: the 0.975 quantile by degrees of freedom (the standard table); between two rows the
# smaller df's (wider) value is used, past 30 the normal's
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


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


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (conservative between table rows)."""
    if df < 1:
        raise ValueError("t975: at least 1 degree of freedom")
    return 1.960 if df > 30 else _T975[max(k for k in _T975 if k <= df)]


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, object]:
    """``a - b`` paired by seed: the mean, the std over seeds, the 95 % t interval of the mean, and the
    verdict: "a better" or "b better" when the interval excludes 0, else "no difference"; "too few seeds"
    with fewer than 2 pairs, where there is no spread to judge by."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    if n < 2:
        return {"n": n, "mean": round(float(d[0]), 4) if n else None, "std": None, "ci95": [None, None], "verdict": "too few seeds"}
    m, sd = float(d.mean()), float(d.std(ddof=1))
    half = t975(n - 1) * sd / math.sqrt(n)
    lo, hi = m - half, m + half
    verdict = "a better" if lo > 0 else "b better" if hi < 0 else "no difference"
    return {"n": n, "mean": round(m, 4), "std": round(sd, 4), "ci95": [round(lo, 4), round(hi, 4)], "verdict": verdict}
