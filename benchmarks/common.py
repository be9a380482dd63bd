"""Shared helpers: interleaved timing in one process, a printed table and one JSON line."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable


def interleaved_times(fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, round-robin, so drifts of the machine hit all alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def emit_json(name: str, rows: list[dict], **extra: object) -> None:
    print(json.dumps({"benchmark": name, "rows": rows, **extra}))
