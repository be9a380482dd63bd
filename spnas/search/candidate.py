"""A search's individual and the net arithmetic strategies share: a :class:`Candidate` (id, lineage,
the IR and its result), stage FLOPs, the parallel level's 1/FLOPs sampler, and a net's code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from deap import base, creator, tools

from spnas.detect.metrics import Metric
from spnas.errors import SpnasError
from spnas.ir import Arch
from spnas.search.records import EvalResult

__all__ = ["Candidate", "stage_flops", "stage_gmacs", "sample_parallel_code", "code_of", "individual", "hall_of_fame", "finite"]

if not hasattr(creator, "SpnasFitnessMax"):  # DEAP's way to say a metric's direction: AP up, miss rates down
    creator.create("SpnasFitnessMax", base.Fitness, weights=(1.0,))
    creator.create("SpnasFitnessMin", base.Fitness, weights=(-1.0,))
    creator.create("SpnasIndividualMax", dict, fitness=creator.SpnasFitnessMax)
    creator.create("SpnasIndividualMin", dict, fitness=creator.SpnasFitnessMin)


def individual(cid: str, fingerprint: str, encoding: str, value: float, metric: Metric) -> Any:
    """The DEAP individual of an evaluated candidate (its fitness is its metric, with the metric's weights)."""
    kind = creator.SpnasIndividualMin if metric.weights == (-1.0,) else creator.SpnasIndividualMax
    ind = kind(id=cid, fingerprint=fingerprint, encoding=encoding)
    ind.fitness.values = (value,)
    return ind


def hall_of_fame(size: int = 3) -> tools.HallOfFame:
    """``best/top/``: the ``size`` best architectures, one entry per architecture (the first trained
    instance of each: a continued parent or a noise run does not replace its architecture's entry)."""
    return tools.HallOfFame(size, similar=lambda a, b: a["fingerprint"] == b["fingerprint"])


@dataclass
class Candidate:
    """An individual: id, lineage, the IR (weights in memory, files on disk), and its result."""

    id: str
    phase: str  # serial | reignite | parallel
    role: str  # start | converge | noise | child | continued | reignite | baseline | parallel
    parent: str | None
    arch: Arch
    morphisms: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0
    result: EvalResult | None = None  # its evaluation, as journaled (None: not evaluated yet)
    epochs: int | None = None  # detection epochs of its training (None: the fast scheme's, train.epochs)
    rung: int = 0  # multi-fidelity: its rung in the generation's race (1, 2, ...; 0: no race)

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def metric(self) -> float:
        return float(self.result.metric) if self.ok else -math.inf


def finite(x: float | None) -> float | None:
    """A metric as the journal and the summary write it: rounded to 6 places, None where not finite."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def stage_flops(arch: Arch, size: tuple[int, int]) -> list[int]:
    """Multiply-accumulates of each stage's main blocks at input ``size``."""
    per_node = arch.node_flops(size)
    return [sum(per_node[b] for b in st.blocks) for st in arch.stages()]


def stage_gmacs(arch: Arch, size: tuple[int, int]) -> list[float]:
    """GMACs of each stage with its subnets (fuses, adds, blocks) at input ``size``: the paper's Figure 4b allocation."""
    per_node = arch.node_flops(size)
    out = []
    for st in arch.stages():
        nodes = [*st.blocks, *(n for sub in st.subnets for n in (sub.fuse, sub.add, *sub.blocks))]
        out.append(round(sum(per_node[n] for n in nodes) / 1e9, 4))
    return out


def sample_parallel_code(flops: list[int], counts: list[int], K: int, n_add: int, rng: np.random.Generator) -> list[int]:
    """Add ``n_add`` subnets: each goes to stage l (any stage with fewer than K) with chance ∝ 1/FLOPs(l)."""
    counts = list(counts)
    for _ in range(n_add):
        eligible = [i for i in range(len(flops)) if counts[i] < K]
        if not eligible:
            break
        w = np.array([1.0 / flops[i] for i in eligible])
        counts[eligible[int(rng.choice(len(eligible), p=w / w.sum()))]] += 1
    return counts


def code_of(arch: Arch) -> str:
    """The paper's code of ``arch``, or its custom encoding (``~…``, see :meth:`Arch.code`)."""
    try:
        return arch.code()
    except SpnasError:
        return "<no code>"
