"""The run journal: append-only JSON lines, each flushed and fsync'd (optuna's JournalStorage).

Events: the members of :class:`~spnas.search.records.Event`, one enum (``start`` with the journal's
``format``, ``generation``, ``proposed``, ``prefiltered``, ``rule_failed``, ``evaluated``, ``failed``,
``retried``, ``converged``, ``noise``, ``rung``, ``accepted``, ``rejected``, ``best``, ``reignited``,
``stopped``, ``done``); :data:`_FIELDS` says what each must carry. The journal writes no other kind,
and a replay refuses a line of another kind. Resume replays the file: the search runs its
deterministic loop again, and every candidate that already has a result takes it from here.

The format is versioned: ``start`` carries ``format`` (:data:`FORMAT`). A journal whose ``start``
has none was written before the version existed (format 1, the same layout); one of a newer format
than this code reads is refused in one line, rather than misread.

Replay tolerates exactly one kind of damage: a torn last line, the trace of a kill in the middle of
a write (no newline after it). It is cut off. A damaged line anywhere else, or a complete last line
that is not an event, stops the replay with a :class:`ConfigError` naming the line: the events after
it are real, and silently dropping them would retrain everything they record.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from spnas.errors import ConfigError
from spnas.search.records import Event

__all__ = ["Journal", "FORMAT", "read_events"]

FORMAT = 1  # the journal's layout: the events and fields below; a start event without it is format 1


_NUMBER = (int, float)
# the fields each event kind must carry for a replay to use it, and their types (None: may be null)
_FIELDS: dict[Event, dict[str, tuple[type, ...]]] = {
    Event.PROPOSED: {"id": (str,), "fingerprint": (str,), "encoding": (str,)},
    Event.EVALUATED: {"id": (str,), "metric": _NUMBER, "weights": (str,), "sha256": (str,)},
    Event.FAILED: {"id": (str,), "reason": (str,)},
    Event.ACCEPTED: {"id": (str,)},
    Event.REJECTED: {"id": (str,)},
    Event.BEST: {"id": (str,)},
    Event.RETRIED: {"id": (str,)},
}


# fields a replay or a listener reads when they are there (absent or null is fine), and their types
_OPTIONAL: dict[Event, dict[str, tuple[type, ...]]] = {
    Event.EVALUATED: {"seconds": _NUMBER, "loss": _NUMBER, "iterations": (int,), "metrics": (dict,), "curve": (dict,), "phase": (str,),
                  "training": (dict,)},
    Event.FAILED: {"seconds": _NUMBER, "kind": (str,), "cause": (str,)},
    Event.PROPOSED: {"gmacs": _NUMBER, "params_m": _NUMBER, "parent": (str,), "role": (str,), "phase": (str,), "morphisms": (list,),
                 "stage_gmacs": (list,), "epochs": (int,), "rung": (int,)},
    Event.ACCEPTED: {"metric": _NUMBER, "gain": _NUMBER, "baseline_metric": _NUMBER, "noise_std": _NUMBER, "encoding": (str,), "baseline": (str,)},
    Event.REJECTED: {"metric": _NUMBER, "baseline_metric": _NUMBER, "baseline": (str,), "kept": (str,)},
    Event.BEST: {"metric": _NUMBER},
    Event.NOISE: {"std": _NUMBER, "mean": _NUMBER, "spread": _NUMBER, "metrics": (list,), "min_gain": _NUMBER},
    Event.REIGNITED: {"metric": _NUMBER, "parent": (str,)},
    Event.GENERATION: {"rng": (dict,), "generation": (int,)},
    Event.START: {"format": (int,)},
    Event.CONVERGED: {"epochs": (int,), "trained_epochs": (int,), "curve": (list,), "metric": _NUMBER},
    Event.RUNG: {"rung": (int,), "epochs": (int,), "contestants": (list,), "promoted": (list,)},
}


def _check_fields(ev: dict[str, Any]) -> None:
    """A parsed event that a replay can use: its kind's fields present, with their types (ValueError says which)."""
    def wrong(name: str, v: Any, types: tuple[type, ...]) -> ValueError:
        what = "missing" if name not in ev else f"{type(v).__name__} {str(v)[:20]!r}, expected {' or '.join(t.__name__ for t in types)}"
        return ValueError(f"a {ev['event']!r} event whose {name!r} is {what}")

    try:
        kind = Event(ev["event"])
    except ValueError:
        raise ValueError(f"an event of unknown kind {ev['event'][:30]!r}") from None
    for name, types in _FIELDS.get(kind, {}).items():
        v = ev.get(name)
        if v is None or isinstance(v, bool) or not isinstance(v, types):
            raise wrong(name, v, types)
        if types is _NUMBER and v != v:
            raise ValueError(f"a {ev['event']!r} event whose {name!r} is NaN")
    for name, types in _OPTIONAL.get(kind, {}).items():
        v = ev.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, types)):
            raise wrong(name, v, types)
    if kind is Event.EVALUATED:
        if not all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in (ev.get("metrics") or {}).values()):
            raise ValueError("an 'evaluated' event whose 'metrics' holds a value that is not a number")
        w = ev["weights"]
        if w.startswith("/") or ".." in Path(w).parts or "\x00" in w or len(w) > 1024:
            raise ValueError(f"an 'evaluated' event whose 'weights' {w[:40]!r} is not a path inside the run directory")
    if kind is Event.NOISE and not all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in ev.get("metrics") or []):
        raise ValueError("a 'noise' event whose 'metrics' holds a value that is not a number")


def _parse(path: Path, raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The events of a journal's bytes, and how many bytes they fill (less than all: a torn last line)."""
    lines = raw.split(b"\n")  # the last item is b"" when the file ends with a newline
    good, events = 0, []
    for i, line in enumerate(lines, start=1):
        torn = i == len(lines) and line != b""  # the last line, with no newline after it
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            ev = json.loads(line)
            if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
                raise ValueError("not an event object")
            _check_fields(ev)
        except (ValueError, UnicodeDecodeError) as e:
            if torn:
                break  # a kill in the middle of a write: the caller cuts it off
            raise ConfigError(f"{path}: line {i} is damaged ({type(e).__name__}: {str(e)[:80]}); "
                              f"{len(lines) - i - (lines[-1] == b'')} line(s) after it are kept; "
                              "repair or delete that line by hand, then --resume") from None
        if ev["event"] == Event.START and (ev.get("format") or 1) > FORMAT:
            raise ConfigError(f"{path}: line {i}: journal format {ev['format']}, written by a newer spnas; "
                              f"this one reads format {FORMAT} and older: upgrade spnas to resume or read this run")
        events.append(ev)
        good += len(line) + 1
    return events, good


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A journal's events, read only (a run still going, or someone else's): the same checks as a replay,
    a torn last line skipped rather than cut off, the file never opened for writing."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the journal ({e.strerror or e})") from None
    return _parse(path, raw)[0]


class Journal:
    """``journal.jsonl`` of a run directory; ``results`` maps candidate id to its outcome event."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.events: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.proposed: dict[str, dict[str, Any]] = {}
        self._keys: set[str] = set()
        if self.path.is_file():
            self._replay()
        self._f = open(self.path, "a", encoding="utf-8")

    def _replay(self) -> None:
        raw = self.path.read_bytes()
        events, good = _parse(self.path, raw)
        for ev in events:
            self._index(ev)
        if good < len(raw):  # drop the torn tail so new lines start clean
            with open(self.path, "r+b") as f:
                f.truncate(min(good, len(raw)))
        elif raw and not raw.endswith(b"\n"):  # a whole last event whose newline never reached the disk: keep it, end it
            with open(self.path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())

    def _index(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        kind, cid = ev.get("event"), ev.get("id")
        if kind in (Event.EVALUATED, Event.FAILED) and cid:
            self.results[cid] = ev
        elif kind == Event.PROPOSED and cid:
            self.proposed[cid] = ev
        self._keys.add(self._key(ev))

    @staticmethod
    def _key(ev: dict[str, Any]) -> str:
        return f"{ev.get('event')}|{ev.get('id')}|{ev.get('generation')}|{ev.get('phase')}"

    @property
    def format(self) -> int:
        """The format of the journal's ``start`` event (1 where it names none, or there is none yet)."""
        start = next((e for e in self.events if e.get("event") == Event.START), None)
        return int((start or {}).get("format") or 1)

    def has(self, event: Event, **ids: Any) -> bool:
        return self._key({"event": Event(event), **ids}) in self._keys

    def append(self, event: Event, **data: Any) -> dict[str, Any]:
        """Write one event (with a timestamp) durably; returns it. ``event`` must be an :class:`Event`
        (ValueError otherwise: a kind no replay and no listener knows)."""
        ev = {"event": Event(event).value, **data, "time": round(time.time(), 3)}
        self._f.write(json.dumps(ev, sort_keys=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._index(ev)
        return ev

    def append_once(self, event: Event, **data: Any) -> dict[str, Any] | None:
        """Append unless an event of this kind for the same id/generation/phase is already there."""
        if self.has(event, id=data.get("id"), generation=data.get("generation"), phase=data.get("phase")):
            return None
        return self.append(event, **data)

    def close(self) -> None:
        self._f.close()
