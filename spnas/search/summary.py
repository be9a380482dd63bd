"""A search's result: ``best/`` (the net, the whole detector, the hall of fame) and ``summary.json``.

:func:`summarize` is the loop's last step: it writes ``best/`` atomically (built in
``best.partial``, then moved in; a kill between the renames is repaired on resume), writes
``summary.json`` and ``logbook.txt``, and journals ``done`` with the summary.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file

from spnas.detect.infer import DETECTOR_WEIGHTS, describe_detector, write_description
from spnas.ir.io import WEIGHTS_FILE, write_tensors
from spnas.rundir import RunDir
from spnas.search.candidate import Candidate, code_of
from spnas.search.candidate import finite as _finite
from spnas.search.evaluator import HEAD_FILE, detector_state
from spnas.search.records import Event

if TYPE_CHECKING:
    from spnas.search.runner import Search

__all__ = ["summarize", "write_best"]


def summarize(loop: Search, best: Candidate, seconds: float) -> dict[str, Any]:
    """Write ``best/``, ``summary.json`` and ``logbook.txt`` for the result ``best``; journal ``done``; return the summary."""
    write_best(loop, best)
    evaluated = [c for c in loop.candidates.values() if c.result is not None]
    seconds_by_phase: dict[str, float] = {}
    for c in evaluated:
        seconds_by_phase[c.phase] = seconds_by_phase.get(c.phase, 0.0) + float(c.result.seconds or 0.0)
    start = loop.start or loop.candidates["start"]  # the converged start where it trained until converged
    events = loop.journal.events
    accepted = [e for e in events if e.get("event") == Event.ACCEPTED and e.get("rule") != "start"]
    conv = next((e for e in events if e.get("event") == Event.CONVERGED), None)
    cfg = loop.cfg
    summary = {
        "best_id": best.id,
        "best_code": code_of(best.arch),
        "best_metric": best.metric,
        "metric": cfg.search.metric,
        "acceptance": cfg.search.acceptance,
        "start_code": code_of(start.arch),
        "start_metric": start.metric,
        "start_epochs": conv["epochs"] if conv else loop.epochs_of(loop.candidates["start"]),
        **({"start_curve": conv["curve"]} if conv else {}),
        "improved": loop.score(best) > loop.score(start),
        "lower_is_better": loop.metric.lower_is_better,
        "noise_std": (loop.noise or {}).get("std"),
        "accepted": [{"id": e["id"], "code": e.get("encoding"), "metric": e.get("metric"), "baseline": e.get("baseline"),
                      "gain": e.get("gain")} for e in accepted],
        "gmacs": round(best.arch.flops(loop.size) / 1e9, 4),
        "params_m": round(best.arch.params() / 1e6, 4),
        "candidates": len(evaluated),
        "failed": sum(1 for c in evaluated if not c.ok),
        "device_hours": {k: round(v / 3600, 5) for k, v in seconds_by_phase.items()},
        "wall_seconds": round(seconds, 1),
        "metrics": dict(best.result.metrics) if best.result is not None else {},
        **getattr(loop.strategy, "summary", lambda: {})(),
    }
    summary["top"] = [{"rank": r, "id": ind["id"], "code": ind["encoding"], "metric": ind.fitness.values[0]}
                      for r, ind in enumerate(loop.hof, start=1)]
    summary["choice"] = _choice(loop, best, summary["top"])
    loop.run_dir.summary.write_text(json.dumps(summary, indent=1))
    loop.run_dir.logbook.write_text(loop.logbook_text() + "\n")
    loop.emit(Event.DONE, once=True, id=best.id, generation=None, phase=None,
              **{k: v for k, v in summary.items() if k not in ("wall_seconds", "device_hours", "top", "choice", "start_epochs", "start_curve")})
    return summary


def _choice(loop: Search, best: Candidate, top: list[dict[str, Any]]) -> str:
    """Which net a user should take, and why, where best/ and best/top/1 differ."""
    if not top or top[0]["id"] == best.id:
        return f"best/ ({best.id}) is also the highest metric of the run (best/top/1)"
    return (f"take best/ ({best.id}, {loop.cfg.search.metric} {_finite(best.metric)}): the last net that won a comparison "
            f"({loop.cfg.search.acceptance}); best/top/1 ({top[0]['id']}, {top[0]['metric']}) measured higher once, "
            "but at another training length or seed, and no comparison confirmed it: audit both (spnas audit RUN --top 3) "
            "before trusting the difference")


def _describe(loop: Search, best: Candidate) -> dict[str, Any]:
    """``best/detector.json``: what loading and using the net needs (classes, label map, settings, metric)."""
    from spnas.detect.datasets import load_datasets

    train_ds, _ = load_datasets(loop.data)  # annotations only; images decode lazily
    cfg = loop.cfg
    return describe_detector(
        code=code_of(best.arch), classes=train_ds.class_names, label_to_cat=train_ds.label_to_cat, head=loop.detector.head,
        options=loop.detector.options, eval_batch_size=cfg.train.batch_size,
        plugins=[str(cfg.path(p)) for p in cfg.search.plugins],
        metric={"name": cfg.search.metric, "value": _finite(best.metric), "split": "val", "id": best.id},
        source={"run": str(loop.out.resolve()), "id": best.id, "seed": cfg.seed, "data": loop.data,
                "train": cfg.train.model_dump(mode="json")})


def write_best(loop: Search, best: Candidate) -> None:
    """``best/``: arch + weights, the whole detector, and the hall of fame in ``top/``; built beside, then moved in."""
    run = loop.run_dir
    tmp = run.start_best()
    shutil.copytree(run.candidate(best.id) / "trained", tmp / "arch")
    head = load_file(str(run.candidate(best.id) / HEAD_FILE))
    body = load_file(str(tmp / "arch" / WEIGHTS_FILE))
    write_tensors(detector_state(body, head), tmp / DETECTOR_WEIGHTS)
    write_description(tmp, _describe(loop, best))
    for rank, ind in enumerate(loop.hof, start=1):  # hard links: the hall of fame costs no second copy of the weights
        dst = RunDir.top(tmp, rank, ind["id"])
        shutil.copytree(run.candidate(ind["id"]) / "trained", dst / "arch", copy_function=_link)
        _link(run.candidate(ind["id"]) / HEAD_FILE, dst / HEAD_FILE)
        (dst / "metric.json").write_text(json.dumps({"id": ind["id"], "code": ind["encoding"], "metric": ind.fitness.values[0]}))
    run.commit_best()


def _link(src: str | Path, dst: str | Path) -> None:
    """A hard link where the file system allows one, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
