"""Strategies: what proposes candidates and decides, on top of the loop's services (:class:`~spnas.search.Search`).

A strategy is any object with ``run(loop) -> Candidate`` (the result, trained) and, optionally,
``summary() -> dict`` (keys added to ``best/summary.json``). It draws every random choice from
``loop.rng`` and names its candidates by position, so the same config and seed give the same
journal, and a resumed run replays its decisions from the journal: the services it calls
(:meth:`~spnas.search.Search.evaluate`, :meth:`~spnas.search.Search.accept`, ...) take journaled
results instead of training again. Pass one as ``Search(cfg, out, strategy=...)``.

- :class:`HillClimbing`: the paper's search (default): the serial level (Algorithm 1), then the parallel level.
- :class:`RandomSampling`: ``n`` random walks from the trained start net, each trained once; the best wins
  (the control for "does the search beat chance in its own space").

Writing one: see ``docs/architecture.md`` ("Strategies") and ``tests/search/test_strategy.py``,
which runs a strategy written outside the package.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from spnas.ops import get_morphism
from spnas.search.candidate import Candidate, sample_parallel_code, stage_flops
from spnas.search.records import Event

if TYPE_CHECKING:
    from spnas.search.runner import Search

__all__ = ["Strategy", "HillClimbing", "RandomSampling"]


@runtime_checkable
class Strategy(Protocol):
    """Proposes candidates and decides; returns the search's result (a trained :class:`Candidate`)."""

    def run(self, loop: Search) -> Candidate: ...


class HillClimbing:
    """The paper's search: the serial level (Algorithm 1, with reignite), then, when ``parallel.enabled``,
    the parallel level. Every comparison is fair by default (``search.acceptance``): against the
    parent (or serial net) trained on with the same fast scheme and seed."""

    def run(self, loop: Search) -> Candidate:
        best = self.serial(loop)
        if loop.cfg.parallel.enabled:
            best = self.parallel(loop, best)
        return best

    def serial(self, loop: Search) -> Candidate:
        """The serial level, Algorithm 1: (1+λ) hill climbing from the start net, reignite when stuck.

        ::

            start <- train_eval(start net)                       (train_start; its noise runs)
            parent <- best <- start
            for gen in 1 .. max_generations:
                children <- λ random morphism walks of parent     (children: mutate, or prefiltered)
                bar <- train_eval(parent) again (fair) | best     (continued: the same seed as the children)
                train_eval(children)                              (evaluate: pooled, cached, retried)
                if the best child beats bar by min_gain: parent <- that child    (accept)
                else: parent <- bar if fair, tries += λ                           (reject)
                best <- parent while its line holds acc_best     (record_best)
                if tries >= n_stuck: stop after n_reignite reignites, else parent <- reignite(parent)
            if final_reignite: best <- reignite(best)
            return best
        """
        s = loop.cfg.search
        start = loop.train_start()
        parent = best = start
        tries = reignites = gen = 0
        line_is_best = True  # the parent's line won every comparison since the start or its last reignite
        for gen in range(1, s.max_generations + 1):
            loop.begin(gen, "serial")
            first = {"epochs": s.fidelity.rungs[0], "rung": 1} if s.fidelity is not None else {}
            children = loop.children(parent, gen, **first)
            if not children:
                loop.emit(Event.STOPPED, once=True, id=None, generation=gen, phase="serial", reason="no new child within the bounds")
                break
            continued = loop.continued(parent, f"g{gen:03d}p", gen, "continued", **first) if s.acceptance == "fair" else None
            winner, continued = self.race(loop, children, continued, gen)
            bar = continued if continued is not None and continued.ok else best  # fair: the parent trained on; paper: acc_best
            won = loop.beats(winner, bar)
            if won:
                parent = loop.accept(winner, bar, gen)
                tries = 0
            else:
                tries += len(children)
                parent = loop.reject(winner, bar, gen, kept=loop.trained(bar) if bar is continued else parent)
            best, line_is_best = loop.record_best(parent, best, gen, line_is_best)
            loop.log_generation(gen, "serial", children, bar, "accepted" if won else "rejected")
            if tries >= s.n_stuck:
                if reignites >= s.n_reignite:
                    loop.emit(Event.STOPPED, once=True, id=None, generation=gen, phase="serial", reason=f"stuck for {tries} tries")
                    break
                reignites += 1
                parent = loop.reignite(parent, f"r{reignites}", gen) or parent
                best, line_is_best = loop.record_best(parent, best, gen, False)  # the bar stays acc_best: a reignited net must beat it
                tries = 0
        else:
            loop.emit(Event.STOPPED, once=True, id=None, generation=gen, phase="serial", reason="max_generations reached")
        if s.final_reignite:
            final = loop.reignite(best, f"r{reignites + 1}", gen + 1, final=True)
            if final is not None:
                best = final  # the serial net the parallel level grows: re-pretrained, as in the paper
        return best

    def race(self, loop: Search, children: list[Candidate], continued: Candidate | None, gen: int) -> tuple[Candidate, Candidate | None]:
        """Train a generation's children and its continued parent; return the best child and the parent as
        trained as long. The fixed scheme trains each once. With ``search.fidelity``, successive halving::

            for rung k, epochs e_k in search.fidelity.rungs:
                train_eval(alive children, continued parent) for e_k epochs   (one seed for the rung)
                alive <- the best ceil(len(alive) / eta) children             (the parent always goes on)
                next: each alive net goes on from its own weights               ("<id>.<k+1>")
            return the best child of the last rung, the parent of the last rung

        Each rung is journaled (``rung``). A rung's contestants have trained the same epochs with the
        same seeds, so a rung compares fairly; where the continued parent fails, the race stops there
        (the bar falls back to acc_best, as in the fixed scheme).
        """
        f = loop.cfg.search.fidelity
        if f is None:
            loop.evaluate(children + ([continued] if continued else []))
            return max(children, key=loop.score), continued
        alive, cont = children, continued
        for k, epochs in enumerate(f.rungs, start=1):
            if k > 1:
                alive = [loop.continued(loop.trained(c), f"{c.id.split('.')[0]}.{k}", gen, c.role, epochs=epochs, rung=k) for c in alive]
                cont = loop.continued(loop.trained(cont), f"{cont.id.split('.')[0]}.{k}", gen, "continued", epochs=epochs, rung=k)
            loop.evaluate(alive + [cont])
            ranked = sorted([c for c in alive if c.ok], key=loop.score, reverse=True)  # stable: ties keep the draw's order
            last = k == len(f.rungs) or not ranked or not cont.ok
            promoted = [] if last else ranked[:max(1, math.ceil(len(alive) / f.eta))]
            loop.emit(Event.RUNG, once=True, id=f"rung{k}", generation=gen, phase="serial", rung=k, epochs=epochs,
                      contestants=[{"id": c.id, "metric": c.metric if c.ok else None} for c in alive + [cont]],
                      promoted=[c.id for c in promoted] + ([cont.id] if promoted else []))
            if last:
                return (ranked[0] if ranked else alive[0]), cont
            alive = promoted
        raise AssertionError("unreachable: the last rung returns")

    def parallel(self, loop: Search, serial: Candidate) -> Candidate:
        """The parallel level: random search over parallel codes grown on the serial net.

        ::

            bar <- train_eval(serial net) again (fair) | serial net      (the baseline "pbase")
            for i in 0 .. max_candidates - 1, until n_stuck_p tries in a row lose:
                counts <- a random parallel code: 1 .. L·K subnets, by the stages' FLOPs
                cand <- serial net + add_subnet per count                 (exact: a function-preserving growth)
                train_eval(cand); if it beats bar by min_gain: bar <- cand
            return bar
        """
        p, s = loop.cfg.parallel, loop.cfg.search
        flops = stage_flops(serial.arch, loop.size)
        cap = p.max_additions or len(flops) * p.K
        bar = serial  # paper: the serial net's carried metric
        if s.acceptance == "fair":  # the SerialNet trained on the same way (Algorithm 1's train_eval(p_best, θ_best))
            baseline = loop.continued(serial, "pbase", 0, "baseline", phase="parallel")
            loop.evaluate([baseline])
            bar = loop.trained(baseline) if baseline.ok else serial
        tries = 0
        add = get_morphism("add_subnet")
        for i in range(p.max_candidates):
            if tries >= p.n_stuck_p:
                loop.emit(Event.STOPPED, once=True, id=None, generation=i, phase="parallel", reason=f"stuck for {tries} tries")
                break
            loop.begin(i, "parallel")
            cand = None
            for _ in range(s.max_tries):
                counts = sample_parallel_code(flops, [0] * len(flops), p.K, int(loop.rng.integers(1, cap + 1)), loop.rng)
                arch, ops = serial.arch, []
                for stage, k in enumerate(counts):
                    for _ in range(k):
                        arch = add.apply(arch, stage, loop.rng, loop.space)
                        ops.append({"rule": "add_subnet", "site": stage, "exact": True})
                if arch.fingerprint() not in loop.seen:
                    cand = loop.propose(Candidate(f"p{i:03d}", "parallel", "parallel", serial.id, arch, ops, i))
                    break
            if cand is None:
                loop.emit(Event.STOPPED, once=True, id=None, generation=i, phase="parallel", reason="no new parallel code")
                break
            loop.evaluate([cand])
            won = loop.beats(cand, bar)
            if won:
                bar = loop.accept(cand, bar, i)
                loop.emit(Event.BEST, once=True, id=bar.id, generation=i, phase="parallel", metric=bar.metric)
                tries = 0
            else:
                tries += 1
                loop.reject(cand, bar, i, kept=bar)
            loop.log_generation(i, "parallel", [cand], bar, "accepted" if won else "rejected")
        else:
            loop.emit(Event.STOPPED, once=True, id=None, generation=p.max_candidates, phase="parallel", reason="max_candidates reached")
        return bar  # the last net that won a fair comparison (or the serial net, trained on, if none did)


class RandomSampling:
    """Random sampling with the search's rules and bounds: ``n`` architectures, each a random walk of
    morphisms from the trained start net (``lo .. hi x max_generations`` steps of the serial rules,
    then a random parallel code with 0 .. L x K subnets when the parallel level is on), trained once
    with the fast scheme from the start's weights; the best on the validation split wins. Candidates
    are ``x000``, ``x001``, ... (generation ``i + 1``, phase serial)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"RandomSampling: n must be at least 1, got {n}")
        self.n = n

    def run(self, loop: Search) -> Candidate:
        s, p = loop.cfg.search, loop.cfg.parallel
        start = loop.train_start()
        lo, hi = s.mutations
        add = get_morphism("add_subnet")
        cands = []
        for i in range(self.n):
            loop.begin(i + 1, "serial")
            for _ in range(s.max_tries):
                walked = loop.walk(start.arch, int(loop.rng.integers(lo, hi * s.max_generations + 1)), f"x{i:03d}", i + 1)
                if walked is None:
                    continue
                cur, ops = walked
                if p.enabled:
                    flops = stage_flops(cur, loop.size)
                    counts = sample_parallel_code(flops, [0] * len(flops), p.K, int(loop.rng.integers(0, len(flops) * p.K + 1)), loop.rng)
                    for stage, k in enumerate(counts):
                        for _ in range(k):
                            cur = add.apply(cur, stage, loop.rng, loop.space)
                            ops.append({"rule": "add_subnet", "site": stage, "exact": True})
                if not ops or not (s.min_blocks <= len(cur.main_chain()) <= s.max_blocks) or cur.fingerprint() in loop.seen:
                    continue
                cands.append(loop.propose(Candidate(f"x{i:03d}", "serial", "child", "start", cur, ops, i + 1)))
                break
        loop.evaluate(cands)
        best = loop.trained(max([c for c in cands if c.ok] or [start], key=loop.score))
        if best.id != "start":
            loop.emit(Event.BEST, once=True, id=best.id, generation=self.n, phase="serial", metric=best.metric)
        return best

    def summary(self) -> dict[str, Any]:
        return {"strategy": "random_sampling", "planned": self.n}
