"""A search's run directory: its layout, in one place.

The search writes a run directory and every tool that uses a found net reads one (``spnas train``,
``bench``, ``predict``, ``export``, ``show``, ``audit``, ``spnas.load_detector``), so the layout lives
here, below both: the search package writes through :class:`RunDir`, the commands take a found net
through :func:`found_net`, and the detector layer knows only detector directories (``detector.json``
and what it names) and never a run's layout. ::

    RUN/
      config.yaml          the whole config the run was started with (a resume must match it)
      journal.jsonl        every event, append-only (spnas.search.journal)
      .lock                held by the search that writes the directory
      run.log, logbook.txt a line per result and decision; DEAP's logbook
      candidates/<id>/     a trained candidate: trained/ (its Arch and weights), input/ (what it started
                           from, with search.keep_inputs), head.safetensors (the rest of the detector)
      best/                the found net: arch/, detector.safetensors, detector.json, summary.json,
                           top/<rank>_<id>/ (the hall of fame); written beside as best.partial, the old
                           one kept as best.old until the new one is in place
      data/                the generated data set (format: shapes)
      tb/                  TensorBoard
      trajectory, lineage, flops_per_stage .png/.pdf
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO

from spnas.errors import ConfigError

__all__ = ["RunDir", "found_net"]


class RunDir:
    """The paths of one run directory, and the three operations that keep it whole: :meth:`hold` (the
    lock of the one search that writes it), :meth:`clean_partial_writes` (what a kill left half-written)
    and :meth:`commit_best` (the atomic replacement of ``best/``). Nothing else is created or read here."""

    JOURNAL = "journal.jsonl"
    CONFIG = "config.yaml"
    LOCK = ".lock"
    LOG = "run.log"
    LOGBOOK = "logbook.txt"
    BEST = "best"
    SUMMARY = "summary.json"
    DETECTOR_JSON = "detector.json"  # the detector layer's self-description (spnas.detect.infer.DETECTOR_JSON)

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def journal(self) -> Path:
        return self.root / self.JOURNAL

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    @property
    def log(self) -> Path:
        return self.root / self.LOG

    @property
    def logbook(self) -> Path:
        return self.root / self.LOGBOOK

    @property
    def tb(self) -> Path:
        return self.root / "tb"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def candidates(self) -> Path:
        return self.root / "candidates"

    def candidate(self, cid: str) -> Path:
        return self.candidates / cid

    @property
    def best(self) -> Path:
        return self.root / self.BEST

    @property
    def best_partial(self) -> Path:
        """Where the next ``best/`` is built before it is moved in."""
        return self.root / "best.partial"

    @property
    def best_old(self) -> Path:
        """The previous ``best/`` while the new one is moved in (a kill between the two renames leaves it)."""
        return self.root / "best.old"

    @property
    def summary(self) -> Path:
        return self.best / self.SUMMARY

    @staticmethod
    def top(best: Path, rank: int, cid: str) -> Path:
        """The hall of fame's ``rank``-th net inside a ``best/`` being built."""
        return best / "top" / f"{rank}_{cid}"

    def figure(self, name: str) -> Path:
        """The stem of a figure (``.png`` and ``.pdf`` beside each other)."""
        return self.root / name

    def is_run(self) -> bool:
        return self.journal.is_file()

    def hold(self) -> IO[str]:
        """An exclusive lock on ``.lock`` for the life of the returned file (released on close, exit and kill).
        A second search on the same directory stops with one line naming the holder."""
        import fcntl
        import socket
        import time

        f = open(self.lock, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(f"{self.root}: another search holds this run directory ({holder}); wait for it to end or choose "
                              "another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        return f

    def clean_partial_writes(self) -> None:
        """Remove what a killed run left half-written: ``best.partial``, ``best.old`` and ``*.tmp`` files."""
        if not self.best.exists() and self.best_old.exists():  # killed between the two renames of commit_best
            os.replace(self.best_old, self.best)
        for d in (self.best_partial, self.best_old):
            shutil.rmtree(d, ignore_errors=True)
        for f in self.candidates.glob("*/**/*.tmp"):  # ** matches no folder too: head.safetensors.tmp and trained/*.tmp
            f.unlink(missing_ok=True)

    def start_best(self) -> Path:
        """An empty ``best.partial`` to build the next ``best/`` in (see :meth:`commit_best`)."""
        for d in (self.best_partial, self.best_old):
            shutil.rmtree(d, ignore_errors=True)
        return self.best_partial

    def commit_best(self) -> None:
        """Move the built ``best.partial`` in as ``best/``: the old one aside, the new one in, the old one
        removed, so a kill at any point leaves one whole ``best/`` (or its ``best.old``, restored on resume)."""
        if self.best.exists():
            os.replace(self.best, self.best_old)
        os.replace(self.best_partial, self.best)
        shutil.rmtree(self.best_old, ignore_errors=True)


def found_net(path: str | os.PathLike) -> str | os.PathLike:
    """What a command that uses a found net takes from ``path``: a run directory's ``best/``; anything else
    (a detector directory, an Arch directory, a code) as given. A run that has not written ``best/`` yet
    is a one-line error."""
    p = Path(path)
    try:
        is_dir = p.is_dir()
    except (OSError, ValueError):  # a code such as 'BB(1,d1)' or a name too long for a path
        return path
    if not is_dir:
        return path
    run = RunDir(p)
    if (run.best / RunDir.DETECTOR_JSON).is_file():
        return run.best
    if run.is_run() and not (p / RunDir.DETECTOR_JSON).is_file():
        raise ConfigError(f"{p}: the run has no best/{RunDir.DETECTOR_JSON} yet (it has not finished, or an older spnas wrote it); "
                          "finish it with --resume")
    return path
