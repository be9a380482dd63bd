"""Shared helpers: interleaved timing in one process, a printed table and one JSON line."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable


def interleaved_times(fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, round-robin, so drifts of the machine hit all alike.

    Each round starts one function later than the last, so no function always follows the same
    neighbour (what a predecessor leaves in the caches and the allocator is spread over all).
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    keys = list(fns)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            fns[k]()
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
