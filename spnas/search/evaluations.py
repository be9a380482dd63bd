"""The loop's evaluation service: a batch of candidates in, each with its journaled result out.

:class:`Evaluations` owns everything between "train these" and "here is what each measured":

- a result already in the journal is taken from there (unless its files are gone or damaged, or
  the machine failed it: those train again);
- the rest go through the pool (:func:`~spnas.search.evaluator.make_pool`: local processes, the
  search's own process, or Ray), made on first use, with a timeout (``workers.timeout_s``, or 10x
  the slowest result so far);
- each result is journaled the moment it exists (``evaluated`` or ``failed``);
- a machine's failure is retried at once, bounded by ``workers.retries``; out of memory twice at one
  size retries once at half the per-device batch with twice the accumulation (the same images a
  step), and a net that fails so is too large: its own failure.

The search builds the requests (which seed, which epochs: its decisions) and passes the function
that does so; this module knows no strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spnas.errors import SpnasError
from spnas.ir import save
from spnas.ir.io import WEIGHTS_FILE, sha256_file
from spnas.rundir import RunDir
from spnas.search.evaluator import HEAD_FILE, Evaluate, make_pool
from spnas.search.journal import Journal
from spnas.search.records import EvalRequest, EvalResult, Event, Outcome

if TYPE_CHECKING:
    from spnas.search.candidate import Candidate
    from spnas.search.config import SearchConfig

__all__ = ["Evaluations", "auto_timeout"]

# (candidate, factor its per-device batch is divided by) -> its request
Request = Callable[["Candidate", int], EvalRequest]
Emit = Callable[..., "dict[str, Any] | None"]


def auto_timeout(seconds: list[float], *, factor: float = 10.0, floor: float = 600.0, first: float = 6 * 3600.0) -> float:
    """The default per-candidate timeout: ``factor`` x the slowest candidate so far, at least ``floor``; ``first`` before any."""
    return max(floor, factor * max(seconds)) if seconds else first


class Evaluations:
    """Evaluate candidates for the loop (see the module doc). ``emit`` journals an event and tells the
    listeners (the search's :meth:`~spnas.search.Search.emit`); ``request`` builds a candidate's request."""

    def __init__(self, cfg: SearchConfig, run: RunDir, journal: Journal, emit: Emit, evaluate: Evaluate, request: Request) -> None:
        self.cfg, self.run, self.journal, self.emit = cfg, run, journal, emit
        self.evaluate_fn = evaluate
        self.request = request
        self.shrunk: dict[str, int] = {}  # candidate -> the factor its per-device batch was divided by (out of memory)
        self.pool: Any = None

    def __call__(self, cands: list[Candidate]) -> None:
        """Results from the journal where they exist; the rest through the pool, each journaled as it finishes."""
        todo = []
        for c in cands:
            c.result = self.cached(c)
            if c.result is None:
                todo.append(c)
        for c in todo:  # a resumed candidate may have had its input weights dropped
            d = self.run.candidate(c.id) / "input"
            if not (d / WEIGHTS_FILE).is_file():
                save(c.arch, d)

        def record(i: int, r: EvalResult) -> None:
            c = todo[i]
            c.result = EvalResult.from_event(self.emit(r.event(), id=c.id, phase=c.phase, **r.event_fields()))
            if c.ok and not self.cfg.search.keep_inputs:
                # the input is the parent's trained weights under the journaled morphisms: rebuilt on demand
                (self.run.candidate(c.id) / "input" / WEIGHTS_FILE).unlink(missing_ok=True)

        attempts: dict[str, int] = {}
        ooms: dict[str, int] = {}
        if todo:  # a resumed run keeps a halving it journaled
            halved = {e.get("id") for e in self.journal.events if e.get("event") == Event.RETRIED and e.get("batch_size")}
            for c in todo:
                if c.id in halved:
                    self.shrunk.setdefault(c.id, 2)
        while todo:  # a machine's failure is retried at once, bounded; a candidate fails only for its own reasons
            self.map([self.request(c, self.shrunk.get(c.id, 1)) for c in todo], record)
            todo = [c for c in todo if c.result is not None and c.result.machine_failure]
            for c in list(todo):
                if c.result.cause == "out of memory":
                    ooms[c.id] = ooms.get(c.id, 0) + 1
                    if ooms[c.id] >= 2:  # it repeats at this size: the net is too large for the device at this batch
                        if not self._halve(c):
                            todo.remove(c)
                        continue
                attempts[c.id] = attempts.get(c.id, 0) + 1
                if attempts[c.id] > self.cfg.workers.retries:
                    raise SpnasError(f"the machine failed candidate {c.id} {attempts[c.id]} times ({c.result.cause}: "
                                     f"{c.result.reason}); nothing journaled is lost: fix the machine, then --resume")
                self.emit(Event.RETRIED, id=c.id, phase=c.phase, after=c.result.reason, attempt=attempts[c.id])

    def cached(self, c: Candidate) -> EvalResult | None:
        """The journaled result of ``c``, unless it must run again: its files are damaged, or the machine
        failed it (out of disk, out of memory, worker lost, timeout), which no decision ever counts."""
        ev = self.journal.results.get(c.id)
        if ev is None:
            return None
        r = EvalResult.from_event(ev)
        if r.machine_failure:
            return None
        if c.id == "start" and not r.ok:  # nothing was decided yet: a fixed cause trains it again
            return None
        if r.ok:
            w = self.run.root / r.weights
            try:
                if not w.is_file() or sha256_file(w) != r.sha256 or not (self.run.candidate(c.id) / HEAD_FILE).is_file():
                    return None  # the files are gone or damaged: evaluate again
            except OSError:  # a name the file system cannot hold (too long, ...): as gone
                return None
        return r

    def map(self, requests: list[EvalRequest], on_result: Callable[[int, EvalResult], None]) -> list[EvalResult]:
        """``requests`` through the pool (made on first use), ``on_result`` as each finishes."""
        if self.pool is None:
            w = self.cfg.workers
            self.pool = make_pool(w.backend, list(w.devices), w.n, w.threads, address=w.address,
                                  gpus_per_task=w.gpus_per_task, transport=w.transport, runtime_env=w.runtime_env,
                                  devices_per_candidate=w.devices_per_candidate)
        if hasattr(self.pool, "timeout_s"):  # so a hung worker (SIGSTOP, a deadlock) never blocks the search forever
            self.pool.timeout_s = self.timeout()
        return self.pool.map(self.evaluate_fn, requests, on_result)

    def timeout(self) -> float:
        """``workers.timeout_s``, or automatic: 10x the slowest result so far (at least 600 s), 6 h before any."""
        if self.cfg.workers.timeout_s is not None:
            return self.cfg.workers.timeout_s
        return auto_timeout([float(e.get("seconds") or 0.0) for e in self.journal.events if e.get("event") == Event.EVALUATED])

    def _halve(self, c: Candidate) -> bool:
        """Out of memory twice at one size: retry ``c`` at half the per-device batch with twice the accumulation
        (the same images a step), once; where it failed so already, or the batch is 1, it is ``c``'s own
        failure, journaled, so the search goes on and a resume takes it from the journal. True: retry."""
        batch = self.cfg.train.batch_size // self.shrunk.get(c.id, 1)
        if c.id in self.shrunk or batch < 2:
            too_large = EvalResult.failure(c.id, Outcome.CANDIDATE, f"too large for this device at batch {batch} "
                                           f"(out of memory: {c.result.reason})", "too large", c.result.seconds)
            c.result = EvalResult.from_event(self.emit(Event.FAILED, id=c.id, phase=c.phase, **too_large.event_fields()))
            return False
        self.shrunk[c.id] = 2
        self.emit(Event.RETRIED, id=c.id, phase=c.phase, after=c.result.reason, attempt=0, batch_size=batch // 2,
                  accumulate=self.cfg.train.accumulate * 2)
        return True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
