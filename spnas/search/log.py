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

from spnas.search.records import Event

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
        cid, m = ev.get("id"), self.metric
        code = self.codes.get(cid, "?")
        line = None
        match Event(ev["event"]):
            case Event.START:
                line = f"search started (seed {ev.get('seed')})"
            case Event.PROPOSED:
                self.codes[cid] = ev.get("encoding", "?")
            case Event.GENERATION:
                line = f"generation {ev.get('generation')} ({ev.get('phase')})"
            case Event.EVALUATED:
                line = f"evaluated {cid} {code} {m}={_num(ev.get('metric'))} {ev.get('seconds', 0):.1f}s"
            case Event.FAILED:
                line = f"failed {cid} {code} ({ev.get('kind')}: {ev.get('reason')}) {ev.get('seconds', 0):.1f}s"
            case Event.ACCEPTED if ev.get("rule") == "start":
                line = f"start net {cid} {code} {m}={_num(ev.get('metric'))}"
            case Event.ACCEPTED | Event.REJECTED as kind:
                line = (f"{kind} {cid} {m}={_num(ev.get('metric'))} vs {ev.get('baseline')} {_num(ev.get('baseline_metric'))}"
                        + (f" gain {_num(ev.get('gain'))}" if kind is Event.ACCEPTED else f", {ev.get('kept')} carries on"))
            case Event.RETRIED:
                line = f"retried {cid} (attempt {ev.get('attempt')}, after: {ev.get('after')})"
            case Event.REIGNITED:
                line = f"reignited {ev.get('parent')} as {cid}: {m}={_num(ev.get('metric'))}"
            case Event.BEST:
                line = f"best so far {cid} {m}={_num(ev.get('metric'))}"
            case Event.NOISE:
                line = f"noise of the start net: std {_num(ev.get('std'))}"
            case Event.STOPPED:
                line = f"{ev.get('phase')} level stopped: {ev.get('reason')}"
            case Event.DONE:
                line = f"done: best {cid} {ev.get('best_code', '?')} {m}={_num(ev.get('best_metric'))}"
        if line is not None:
            self.logger.info(line)

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()
