"""The records that cross the search's seams: one enum of journal events, and the evaluation's
request and result as frozen dataclasses (optuna's ``JournalOperation`` and frozen trials).

::

    Search ──EvalRequest──▶ pool ──▶ evaluate(request) ──EvalResult──▶ Search ──Event──▶ journal ──▶ listeners

- :class:`Event`: every kind of journal line, in one place. The journal refuses an event of any
  other name (so a listener's dispatch and the docs cannot drift from what is written).
- :class:`EvalRequest`: what an evaluation function needs to train and measure one candidate: its
  directory, the data request, the detector (head and its resolved options), the schedule as
  :class:`~spnas.detect.train.TrainConfig` (epochs and seed already the candidate's), the metric,
  and where it runs (``device``, ``threads``: set by the pool with :meth:`EvalRequest.on`).
- :class:`EvalResult`: one outcome (:class:`Outcome`: ``ok``, the candidate's own failure, or the
  machine's, which is retried and never decided on) with its measurements. The search journals it
  as an ``evaluated`` or ``failed`` event (:meth:`EvalResult.event_fields`) and reads it back from
  one (:meth:`EvalResult.from_event`), so a resumed run holds the same record.

Plain dicts stay the wire form where a result crosses a process as JSON (a rank's file,
``metrics.json``): :meth:`EvalResult.as_dict` and :meth:`EvalResult.of`; ``of`` also accepts the
dict an evaluation function written before these records returns (``{"status": "ok", ...}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the types only: importing this module imports no torch
    from spnas.detect.detector import DetectorOptions
    from spnas.detect.train import TrainConfig

__all__ = ["Event", "Outcome", "DetectorSpec", "EvalRequest", "EvalResult"]


class Event(StrEnum):
    """A journal line's ``event``. A StrEnum: it is written, and compares, as its name."""

    START = "start"  # the run began (seed, the journal's format)
    GENERATION = "generation"  # a generation began (its rng state: a resume checks it draws the same)
    PROPOSED = "proposed"  # a candidate: its code, lineage, morphisms, GMACs
    PREFILTERED = "prefiltered"  # search.prefilter: the drawn children and the ones kept by the free proxy
    RULE_FAILED = "rule_failed"  # a morphism rule raised (or ran too long) on a child: that child is dropped
    EVALUATED = "evaluated"  # a candidate trained and measured (an EvalResult of outcome ok)
    FAILED = "failed"  # a candidate's failure, its own or the machine's (kind)
    RETRIED = "retried"  # a machine failure retried (or an out-of-memory retried at half the batch)
    CONVERGED = "converged"  # start.train_epochs: auto: the start's learning curve
    NOISE = "noise"  # the start's seed spread (search.noise_seeds) and the min_gain it sets
    RUNG = "rung"  # a multi-fidelity race's rung: its contestants and who goes on
    ACCEPTED = "accepted"  # a child won its comparison (or the start: rule "start")
    REJECTED = "rejected"  # the generation's best child lost; the kept net
    BEST = "best"  # the search's result so far changed
    REIGNITED = "reignited"  # a net re-pretrained
    STOPPED = "stopped"  # a level ended (the reason)
    DONE = "done"  # the run's summary


class Outcome(StrEnum):
    """How an evaluation ended. The failures' values are what the journal's ``failed`` events call ``kind``."""

    OK = "ok"
    CANDIDATE = "candidate"  # its own failure (diverged, its code raised, too large): decided on, never retried
    MACHINE = "machine"  # out of disk or memory, a worker lost, a timeout: retried (bounded), never decided on


@dataclass(frozen=True)
class DetectorSpec:
    """The detector a candidate trains in: its head and its options, resolved from the preset once."""

    head: str
    options: DetectorOptions

    def build_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~spnas.detect.detector.build_detector` (every option explicit)."""
        return dataclasses.asdict(self.options)


@dataclass(frozen=True)
class EvalRequest:
    """One candidate to train and measure (see the module doc). ``train`` carries the candidate's own
    epochs and seed; ``inherits``: its weights were trained, so ``train.inherited`` applies."""

    id: str
    dir: str  # the candidate's directory: input/ is read, trained/, the head file and metrics.json written
    data: Mapping[str, Any]  # the resolved data request (spnas.detect.datasets.resolve_data)
    detector: DetectorSpec
    train: TrainConfig
    metric: str
    inherits: bool = False
    parent_head: str | None = None  # the parent's head weights, carried over where they fit
    reignite: Mapping[str, Any] | None = None  # re-pretrain first (the reignite section), or not
    plugins: tuple[str, ...] = ()  # plugin files the worker imports (node kinds, rules)
    device: str = "cpu"  # one device, or several joined by commas: that many data-parallel ranks
    threads: int = 0  # torch threads (0: leave torch's default)

    @property
    def seed(self) -> int:
        return self.train.seed

    def on(self, device: str, threads: int) -> EvalRequest:
        """This request where a pool runs it."""
        return dataclasses.replace(self, device=device, threads=threads)


# the fields of an ok result the journal's evaluated event carries, in order (None: not written)
_OK_FIELDS = ("metric", "metrics", "loss", "iterations", "curve", "training", "seconds", "weights", "sha256", "epochs_trained")


@dataclass(frozen=True)
class EvalResult:
    """An evaluation's outcome and what it measured.

    ``ok``: ``metric`` (the search's), ``metrics`` (every one measured), ``weights`` (the trained
    backbone, relative to the run directory) and its ``sha256``, and where known the last ``loss``,
    the ``iterations``, the ``curve`` (loss and learning rate along the training), ``training``
    (ranks, batch, accumulation, normalisation) and ``epochs_trained`` (along the net's whole line).
    A failure: ``reason`` (one line) and ``cause`` (``diverged``, ``error``, ``too large``,
    ``out of memory``, ``out of disk``, ...)."""

    id: str
    outcome: Outcome
    seconds: float = 0.0
    metric: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    weights: str | None = None
    sha256: str | None = None
    loss: float | None = None
    iterations: int | None = None
    curve: Mapping[str, Any] | None = None
    training: Mapping[str, Any] | None = None
    epochs_trained: int | None = None
    reason: str | None = None
    cause: str | None = None
    rank: int = 0  # the rank that wrote it (a data-parallel candidate's non-zero ranks return an empty ok)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def machine_failure(self) -> bool:
        return self.outcome is Outcome.MACHINE

    @classmethod
    def failure(cls, cid: str, outcome: Outcome, reason: str, cause: str, seconds: float) -> EvalResult:
        return cls(cid, outcome, seconds=round(seconds, 3), reason=reason, cause=cause)

    def event(self) -> Event:
        """The journal event this result is written as."""
        return Event.EVALUATED if self.ok else Event.FAILED

    def event_fields(self) -> dict[str, Any]:
        """The fields of its journal event (``id`` and ``phase`` are the search's): what is known, no nulls."""
        if not self.ok:
            return {"reason": self.reason, "kind": self.outcome.value, "cause": self.cause, "seconds": self.seconds}
        return {k: _plain(v) for k in _OK_FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_event(cls, ev: Mapping[str, Any]) -> EvalResult:
        """The result a journaled ``evaluated`` or ``failed`` event records."""
        if ev["event"] == Event.EVALUATED:
            outcome = Outcome.OK
        elif ev["event"] == Event.FAILED:
            outcome = _failure(ev)
        else:
            raise ValueError(f"a {ev['event']!r} event records no result")
        return cls._make(ev["id"], outcome, ev)

    def as_dict(self) -> dict[str, Any]:
        """The wire form (JSON): ``id``, ``status`` (``ok`` or ``failed``), the event's fields, the rank."""
        return {"id": self.id, "status": "ok" if self.ok else "failed", **self.event_fields(), **({"rank": self.rank} if self.rank else {})}

    @classmethod
    def of(cls, r: EvalResult | Mapping[str, Any]) -> EvalResult:
        """``r`` as a record: an EvalResult as it is; a dict in the wire form (``status`` ``ok`` or
        ``failed``, a failure's ``kind`` ``candidate`` or ``machine``) read into one."""
        if isinstance(r, EvalResult):
            return r
        if not isinstance(r, Mapping) or "id" not in r or r.get("status") not in ("ok", "failed"):
            raise TypeError(f"an evaluation function returned {type(r).__name__} {str(r)[:80]!r}; expected an EvalResult "
                            "(or a dict with 'id' and 'status' 'ok' or 'failed')")
        return cls._make(r["id"], Outcome.OK if r["status"] == "ok" else _failure(r), r)

    @classmethod
    def _make(cls, cid: str, outcome: Outcome, d: Mapping[str, Any]) -> EvalResult:
        names = {f.name for f in dataclasses.fields(cls)} - {"id", "outcome"}
        values = {k: d[k] for k in names if d.get(k) is not None}
        if "seconds" in values:
            values["seconds"] = float(values["seconds"])
        return cls(cid, outcome, **values)

    def with_seconds(self, seconds: float) -> EvalResult:
        return dataclasses.replace(self, seconds=round(seconds, 3))


def _failure(d: Mapping[str, Any]) -> Outcome:
    """A failure's outcome by its ``kind`` (the candidate's own where none is given)."""
    return Outcome.MACHINE if d.get("kind") == Outcome.MACHINE else Outcome.CANDIDATE


def _plain(v: Any) -> Any:
    """A value as JSON holds it (a mapping as a dict)."""
    return dict(v) if isinstance(v, Mapping) else v
