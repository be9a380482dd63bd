"""``run.log``: the search as lines of text, written as it happens (a journal listener, with ``logging``).

A line per candidate result (id, code, metric, seconds), per decision (accepted or rejected, against
which baseline, by how much), per retry, stop and new best. The file is appended to, so a resumed
search continues it. When standard error is not a terminal (sbatch, nohup, a pipe) the same lines
go there too, so a batch job shows its progress while it runs, not only when it ends.
"""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["RunLog"]
_IDS = itertools.count()


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


class _BestEffortFileHandler(logging.FileHandler):
    """The journal is the record; a log line that cannot be written (a full disk) is dropped without a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class RunLog:
    """A listener writing the run's log file ``path`` (``run.log``; and, when ``echo``, standard error)
    through a logger of its own."""

    def __init__(self, path: str | Path, metric: str, *, echo: bool) -> None:
        self.metric = metric
        self.codes: dict[str, str] = {}
        self.logger = logging.getLogger(f"spnas.search.run{next(_IDS)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # the user's root logging configuration is theirs
        fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        self.handlers: list[logging.Handler] = [_BestEffortFileHandler(Path(path), encoding="utf-8", delay=True)]
        if echo:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        for h in self.handlers:
            h.setFormatter(fmt)
            self.logger.addHandler(h)

    def __call__(self, ev: dict[str, Any]) -> None:
        kind, cid = ev["event"], ev.get("id")
        line = None
        if kind == "start":
            line = f"search started (seed {ev.get('seed')})"
        elif kind == "proposed":
            self.codes[cid] = ev.get("encoding", "?")
        elif kind == "generation":
            line = f"generation {ev.get('generation')} ({ev.get('phase')})"
        elif kind == "evaluated":
            line = (f"evaluated {cid} {self.codes.get(cid, '?')} {self.metric}={_num(ev.get('metric'))} "
                    f"{ev.get('seconds', 0):.1f}s")
        elif kind == "failed":
            line = f"failed {cid} {self.codes.get(cid, '?')} ({ev.get('kind')}: {ev.get('reason')}) {ev.get('seconds', 0):.1f}s"
        elif kind == "accepted" and ev.get("rule") == "start":
            line = f"start net {cid} {self.codes.get(cid, '?')} {self.metric}={_num(ev.get('metric'))}"
        elif kind in ("accepted", "rejected"):
            line = (f"{kind} {cid} {self.metric}={_num(ev.get('metric'))} vs {ev.get('baseline')} {_num(ev.get('baseline_metric'))}"
                    + (f" gain {_num(ev.get('gain'))}" if kind == "accepted" else f", {ev.get('kept')} carries on"))
        elif kind == "retried":
            line = f"retried {cid} (attempt {ev.get('attempt')}, after: {ev.get('after')})"
        elif kind == "reignited":
            line = f"reignited {ev.get('parent')} as {cid}: {self.metric}={_num(ev.get('metric'))}"
        elif kind == "best":
            line = f"best so far {cid} {self.metric}={_num(ev.get('metric'))}"
        elif kind == "noise":
            line = f"noise of the start net: std {_num(ev.get('std'))}"
        elif kind == "stopped":
            line = f"{ev.get('phase')} level stopped: {ev.get('reason')}"
        elif kind == "done":
            line = f"done: best {cid} {ev.get('best_code', '?')} {self.metric}={_num(ev.get('best_metric'))}"
        if line is not None:
            self.logger.info(line)

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()
