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
from pathlib import Path

from spnas.errors import ConfigError

__all__ = ["RunDir", "found_net"]


class RunDir:
    """The paths of one run directory (nothing is created or read here)."""

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
