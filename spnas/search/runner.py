"""The search: serial (1+λ) hill climbing with reignite (paper Algorithm 1), then the parallel level.

Every decision is a fair comparison by default (``search.acceptance: fair``): each generation also
trains the unchanged parent with the same fast scheme and the same training seed as its children
(the *continued parent*), and the best child is accepted only if it beats that, by more than
``search.min_gain``. When no child wins, the continued parent becomes the parent, so its training
is kept. The parallel level compares its candidates with the serial net trained on the same way.
``acceptance: paper`` compares with the parent's carried metric instead, as Algorithm 1 does.
``acc_best`` (the best metric so far, what the serial level returns) is never reset, not by a
reignite either.

The loop is deterministic given the config and seed: one ``numpy.random.Generator`` drives every
choice, candidate ids are positional (``start``, ``n1``, ``g003c1``, ``g003p``, ``r1``, ``pbase``,
``p002``), and each candidate trains with a seed derived from its generation. Resume runs the same
loop again; every candidate with a result in the journal (and its weight file intact) takes it from
there, so a killed search loses only its in-flight candidates.

The journal is the record; TensorBoard and the progress bar listen to its events
(:class:`~spnas.search.records.Event`). The evaluator is a parameter (``Search(cfg, out,
evaluate=fn)``, a function from :class:`~spnas.search.records.EvalRequest` to
:class:`~spnas.search.records.EvalResult`): tests pass a fake one. What the loop delegates lives
beside it: :mod:`spnas.search.evaluations` (cached results, the pool, retries, timeouts),
:mod:`spnas.search.start` (the start net and the checks before a run), :mod:`spnas.search.summary`
(``best/`` and ``summary.json``), :class:`~spnas.rundir.RunDir` (every path). DEAP supplies
``toolbox.mutate`` (the random morphisms), a ``tools.Logbook`` with ``tools.Statistics``
(``logbook.txt``) and a ``tools.HallOfFame`` (``best/top/``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from deap import base, tools

from spnas.errors import ConfigError, MorphismError, SpnasError
from spnas.ir import Arch, load, save
from spnas.ops import Space, get_morphism
from spnas.detect.metrics import Metric
from spnas.search.candidate import Candidate, code_of, hall_of_fame, individual, sample_parallel_code, stage_flops, stage_gmacs
from spnas.search.candidate import finite as _finite
from spnas.search.config import SearchConfig
from spnas.search.evaluations import Evaluations, auto_timeout
from spnas.search.evaluator import HEAD_FILE, Evaluate, candidate_seed, evaluate_candidate
from spnas.search.journal import FORMAT as JOURNAL_FORMAT
from spnas.search.journal import Journal
from spnas.search.log import RunLog
from spnas.search.records import DetectorSpec, EvalRequest, Event
from spnas.search.start import check_reignite, check_start, start_arch
from spnas.search.strategy import HillClimbing, Strategy
from spnas.search.summary import summarize
from spnas.rundir import RunDir

__all__ = ["Search", "Candidate", "sample_parallel_code", "stage_flops", "stage_gmacs", "resolve_data", "code_of", "auto_timeout"]

Listener = Callable[[dict[str, Any]], None]


def _grammar(arch: Arch, code: str) -> dict[str, Any]:
    """Journal fields saying whether the paper's grammar expresses the net (its ``code``); if not, which plugin kinds it holds."""
    custom = arch.custom_kinds()
    if not custom and code[:1] not in ("~", "<"):
        return {"grammar": "paper"}
    return {"grammar": "custom", "custom_kinds": custom, "note": "the code is a description; candidates/<id>/input/arch.yaml is the net"}


def _plain_site(site: Any) -> Any:
    return list(site) if isinstance(site, tuple) else site


class Search:
    """One run directory: ``config.yaml``, ``journal.jsonl``, ``candidates/<id>/``, ``best/``, ``tb/``.

    ``strategy`` proposes the candidates and decides (default :class:`~spnas.search.strategy.HillClimbing`,
    the paper's serial level with reignite, then the parallel level); ``evaluate(request) -> result``
    trains and measures one candidate (default: the real fast scheme,
    :func:`~spnas.search.evaluator.evaluate_candidate`); ``listeners`` receive every new journal event
    after it is durable.

    A strategy drives the loop through the public services below (see ``docs/architecture.md``,
    "Strategies"): :meth:`train_start`, :meth:`begin`, :meth:`walk`, :meth:`mutate`, :meth:`children`,
    :meth:`propose`, :meth:`continued`, :meth:`reignite`, :meth:`evaluate`, :meth:`trained`,
    :meth:`score`, :meth:`beats`, :meth:`accept`, :meth:`reject`, :meth:`record_best`,
    :meth:`log_generation` and :meth:`emit`, and reads ``cfg``, ``rng``, ``space``, ``rules``,
    ``size``, ``seen``, ``noise`` and ``candidates``. Every service journals what it does, so any
    strategy resumes: on a resume the same calls replay from the journal instead of training again.
    """

    def __init__(self, cfg: SearchConfig, out: str | Path, *, resume: bool = False, quiet: bool | None = None,
                 evaluate: Evaluate = evaluate_candidate, listeners: tuple[Listener, ...] = (), tensorboard: bool = True,
                 strategy: Strategy | None = None) -> None:
        self.strategy: Strategy = strategy if strategy is not None else HillClimbing()
        self.cfg = cfg
        self.out = Path(out)
        self.run_dir = RunDir(self.out)  # every path inside the run directory
        self.quiet = (not sys.stderr.isatty()) if quiet is None else quiet
        cfg_file, jpath = self.run_dir.config, self.run_dir.journal
        self.rules = [get_morphism(n) for n in cfg.search.morphisms]  # the config checked the names
        resolved = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        if jpath.exists() and not resume:
            raise ConfigError(f"{self.out}: holds a run already; pass --resume to continue it or choose another --out")
        if resume and jpath.exists() and not cfg_file.is_file():
            raise ConfigError(f"{cfg_file}: missing, so whether this config is the one the run was started with cannot be "
                              "checked (another would train and journal foreign candidates); restore the file, or start "
                              "another --out")
        if resume and cfg_file.is_file() and _decisive(_with_new_defaults(yaml.safe_load(cfg_file.read_text()), cfg)) != _decisive(cfg.to_dict()):
            raise ConfigError(f"{cfg_file}: the run was started with another config; resume without changing it "
                              "(only the workers section may change: another machine, other devices)")
        self.start_arch = start_arch(cfg)  # start weights are read (and refused) before anything is written
        check_start(self.start_arch, cfg)
        check_reignite(cfg)
        self.data: dict[str, Any] | None = None
        if cfg.data.format != "shapes":  # the user's annotations too: bad data is one line now, not every candidate's failure
            from spnas.detect.datasets import check_data

            self.data = resolve_data(cfg, self.out)
            check_data(self.data, cfg.search.metric, keep=cfg.workers.backend == "inline")
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = self.run_dir.hold()
        try:
            if resume:
                self.run_dir.clean_partial_writes()
            cfg_file.write_text(resolved)
            self.journal = Journal(jpath)
        except BaseException:
            self._lock.close()
            raise
        self.listeners: list[Listener] = list(listeners)
        if tensorboard:
            from spnas.search.tb import TBLogger

            self.listeners.append(TBLogger(self.run_dir.tb, cfg, self.journal.events, figures=self.run_dir.root))
        self.listeners.append(_Progress(cfg, disable=self.quiet))
        # run.log always; echoed to stderr when that is no terminal (sbatch, nohup) and --quiet was not given
        self.listeners.append(RunLog(self.run_dir.log, cfg.search.metric, echo=quiet is not True and not sys.stderr.isatty()))
        s = cfg.search
        self.space = Space(min_blocks=s.min_blocks, max_blocks=s.max_blocks, max_stages=s.max_stages,
                           max_subnets=cfg.parallel.K, max_shift=s.max_shift)
        from spnas.detect.detector import resolve_options
        from spnas.detect.train import config_from_dict

        # the settings in the types the evaluators use, parsed once
        self.detector = DetectorSpec(cfg.detector.head, resolve_options(cfg.detector.preset, **cfg.detector.options))
        self.train_config = config_from_dict(cfg.train.model_dump())
        self.size = (self.detector.options.max_size, self.detector.options.max_size)  # FLOPs and budgets are counted at it
        self.rng = np.random.default_rng(cfg.seed)
        self.metric = Metric(cfg.search.metric)  # owns the direction: a miss rate turns every comparison around
        self.seen: set[str] = set()
        self._checked_rules: set[str] = set()
        self.candidates: dict[str, Candidate] = {}
        self.noise: dict[str, Any] | None = None
        self.start: Candidate | None = None  # the trained start the search grows from (train_start sets it)
        self.evaluations = Evaluations(cfg, self.run_dir, self.journal, self.emit, evaluate, self._request)
        self.toolbox = base.Toolbox()
        self.toolbox.register("mutate", self.mutate)
        self.stats = tools.Statistics(key=lambda ind: ind.fitness.values[0])
        for name, fn in (("avg", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
            self.stats.register(name, fn)
        self.logbook = tools.Logbook()
        self.logbook.header = ["gen", "phase", "evals", "avg", "max", "baseline", "decision"]
        self.hof = hall_of_fame()

    # ------------------------------------------------------------------------------ events
    def emit(self, event: Event, once: bool = False, **data: Any) -> dict[str, Any] | None:
        """Journal an event (durably), then tell the listeners. ``once``: skip if already journaled."""
        ev = self.journal.append_once(event, **data) if once else self.journal.append(event, **data)
        if ev is not None:
            for listen in self.listeners:
                listen(ev)
        return ev

    # ------------------------------------------------------------------------------ the algorithm
    def run(self) -> dict[str, Any]:
        t_start = time.time()
        try:
            self.emit(Event.START, once=True, id=None, seed=self.cfg.seed, generation=None, phase=None, format=JOURNAL_FORMAT)
            if self.data is None:  # the generated set is written into the run directory
                self.data = resolve_data(self.cfg, self.out)
            best = self.strategy.run(self)
            summary = summarize(self, best, time.time() - t_start)
        finally:
            self.evaluations.close()
            for listen in self.listeners:
                getattr(listen, "close", lambda: None)()
            self.journal.close()
            self._lock.close()  # releases the run directory (the kernel does so too when the process dies)
        return summary

    # ------------------------------------------------------------------------------ the steps
    def train_start(self) -> Candidate:
        """The start net, trained (``start.train_epochs``, default the fast scheme); then its noise."""
        start = self.propose(Candidate("start", "serial", "start", None, self.start_arch))
        self.evaluate([start])
        if not start.ok:
            raise SpnasError(f"the start network failed to train: {start.result.reason}; nothing was decided, "
                             "so fix it and --resume (the start trains again)")
        start = self.trained(start)
        if self.cfg.start.train_epochs == "auto":
            start = self.converge(start)
        self.start = start
        self.emit(Event.ACCEPTED, once=True, id=start.id, generation=0, phase="serial", rule="start", metric=start.metric,
                   encoding=code_of(start.arch))
        self.emit(Event.BEST, once=True, id=start.id, generation=0, phase="serial", metric=start.metric)
        n = self.cfg.search.noise_seeds
        if n:
            runs = [self.continued(start, f"n{i}", 0, "noise") for i in range(1, n + 1)]
            self.evaluate(runs)
            ms = [c.metric for c in runs if c.ok]
            self.noise = {"seeds": n, "metrics": ms, "mean": float(np.mean(ms)) if ms else None,
                          "std": float(np.std(ms, ddof=1)) if len(ms) > 1 else None,
                          "spread": float(max(ms) - min(ms)) if ms else None}
            if self.cfg.search.min_gain == "auto":  # the bar the decisions use, journaled where it is set
                self.noise["min_gain"] = self.min_gain
            self.emit(Event.NOISE, once=True, id=None, generation=0, phase="serial", **self.noise)
        return start

    def converge(self, first: Candidate) -> Candidate:
        """``start.train_epochs: auto``: train the start net on in cycles (``start2``, ``start3``, ... each
        from the last one's weights, as inherited nets train: with ``train.inherited`` "restart", warm
        restarts) until the validation metric has not improved for ``start.patience`` cycles or
        ``start.max_epochs`` are spent. The first cycle is the start's own ``train.epochs``; each next
        one ``start.cycle_growth`` times as long as the one before. The best cycle is the converged
        start; the learning curve (cumulative epochs) is journaled (``converged``) and the summary says
        how many epochs it took."""
        st = self.cfg.start
        lengths = [self.epochs_of(first)]
        cycles, best, k = [first], first, 1
        reason = "max_epochs reached"
        while sum(lengths) + lengths[-1] * st.cycle_growth <= st.max_epochs:
            if cycles.index(best) + 1 + st.patience <= k:
                reason = f"no gain for {st.patience} cycles"
                break
            k += 1
            e = lengths[-1] * st.cycle_growth
            c = self.propose(Candidate(f"start{k}", "serial", "converge", cycles[-1].id, cycles[-1].arch, [], 0,
                                       epochs=None if st.cycle_growth == 1 else e))
            lengths.append(e)
            self.evaluate([c])
            if not c.ok:
                reason = f"cycle {k} failed: {c.result.reason}"
                break
            c = self.trained(c)
            cycles.append(c)
            if self.score(c) > self.score(best):
                best = c
        upto = [sum(lengths[:i + 1]) for i in range(len(cycles))]  # a failed last cycle has no point
        curve = [{"id": c.id, "epochs": upto[i], "metric": _finite(c.metric)} for i, c in enumerate(cycles)]
        self.emit(Event.CONVERGED, once=True, id=best.id, generation=0, phase="serial", epochs=upto[cycles.index(best)],
                   trained_epochs=upto[-1], curve=curve, reason=reason, metric=_finite(best.metric))
        return best

    def children(self, parent: Candidate, gen: int, *, epochs: int | None = None, rung: int = 0) -> list[Candidate]:
        """λ children of ``parent`` (random morphism walks; prefiltered where ``search.prefilter`` says), proposed;
        ``epochs``/``rung``: their training where it is not the fast scheme's (a multi-fidelity race's first rung)."""
        s = self.cfg.search
        if s.prefilter is not None:
            return [self.propose(dataclasses.replace(c, epochs=epochs, rung=rung)) for c in self.prefiltered(parent, gen)]
        out = []
        for i in range(s.lam):  # each proposed before the next is drawn: no two children of a generation are alike
            c = self.toolbox.mutate(parent, f"g{gen:03d}c{i}", gen)
            if c is not None:
                out.append(self.propose(dataclasses.replace(c, epochs=epochs, rung=rung)))
        return out

    def prefiltered(self, parent: Candidate, gen: int) -> list[Candidate]:
        """``search.prefilter``: draw ``prefilter_draw`` distinct children, keep the λ best by a free proxy
        (GMACs or parameters, higher or lower first), train only those; the draw is journaled."""
        s = self.cfg.search
        key, sign = s.prefilter.lstrip("-"), (-1.0 if s.prefilter.startswith("-") else 1.0)
        drawn: list[tuple[float, Candidate]] = []
        fps: set[str] = set()
        for i in range(max(s.prefilter_draw, s.lam)):
            c = self.toolbox.mutate(parent, f"g{gen:03d}c{i}", gen)
            if c is None or c.arch.fingerprint() in fps:
                continue
            fps.add(c.arch.fingerprint())
            value = c.arch.flops(self.size) / 1e9 if key == "gmacs" else c.arch.params() / 1e6
            drawn.append((value, c))
        kept = sorted(drawn, key=lambda vc: -sign * vc[0])[:s.lam]  # stable: ties keep the draw's order
        self.emit(Event.PREFILTERED, once=True, id=None, generation=gen, phase="serial", by=s.prefilter,
                   drawn=[{"id": c.id, "encoding": code_of(c.arch), key: round(v, 4)} for v, c in drawn],
                   kept=[c.id for _, c in kept])
        return [c for _, c in sorted(kept, key=lambda vc: vc[1].id)]

    def continued(self, c: Candidate, cid: str, gen: int, role: str, phase: str = "serial", *, epochs: int | None = None,
                  rung: int = 0) -> Candidate:
        """``c`` unchanged (pass it ``trained``), to be trained on from its trained weights: the fast scheme,
        or ``epochs`` of it (a rung of a multi-fidelity race)."""
        return self.propose(Candidate(cid, phase, role, c.id, c.arch, [], gen, epochs=epochs, rung=rung))

    def reignite(self, parent: Candidate, cid: str, gen: int, final: bool = False) -> Candidate | None:
        """Re-pretrain ``parent``'s backbone (classification), then the fast scheme; None if it failed."""
        r = self.propose(Candidate(cid, "reignite", "reignite", parent.id, parent.arch, [], gen))
        self.evaluate([r])
        self.emit(Event.REIGNITED, once=True, id=r.id, generation=gen, phase="reignite", parent=parent.id, metric=_finite(r.metric), final=final)
        return self.trained(r) if r.ok else None

    def score(self, c: Candidate) -> float:
        """The metric turned so that higher is better (a miss rate is negated); a failure is -inf."""
        return self.metric.score(c.metric) if c.ok else -math.inf

    def beats(self, c: Candidate, bar: Candidate) -> bool:
        return c.ok and self.score(c) > self.score(bar) + self.min_gain

    @property
    def min_gain(self) -> float:
        """What a child must win by: ``search.min_gain``, or with ``auto`` ``min_gain_sigmas`` x the noise runs' std
        (0 where the noise runs gave no std: fewer than two of them trained)."""
        s = self.cfg.search
        if s.min_gain != "auto":
            return float(s.min_gain)
        std = (self.noise or {}).get("std")
        return float(s.min_gain_sigmas * std) if std is not None else 0.0

    def accept(self, c: Candidate, bar: Candidate, gen: int) -> Candidate:
        """``c`` beat ``bar``: journal the gain (next to the measured noise); ``c`` becomes the parent."""
        c = self.trained(c)
        self.emit(Event.ACCEPTED, once=True, id=c.id, generation=gen, phase=c.phase, rule=self.cfg.search.acceptance,
                   metric=_finite(c.metric), encoding=code_of(c.arch), baseline=bar.id, baseline_metric=_finite(bar.metric),
                   gain=_finite(self.score(c) - self.score(bar)), noise_std=(self.noise or {}).get("std"))
        return c

    def reject(self, c: Candidate, bar: Candidate, gen: int, kept: Candidate) -> Candidate:
        """``c`` (the best of its generation) did not beat ``bar``; ``kept`` carries on (fair: the continued parent)."""
        self.emit(Event.REJECTED, once=True, id=c.id, generation=gen, phase=c.phase, rule=self.cfg.search.acceptance,
                   metric=_finite(c.metric), baseline=bar.id, baseline_metric=_finite(bar.metric), kept=kept.id)
        return kept

    def record_best(self, c: Candidate, best: Candidate, gen: int, line_is_best: bool) -> tuple[Candidate, bool]:
        """The serial result: the parent while its line holds it; after a reignite, the line must beat acc_best.

        Within a line every step won a comparison (fair: against the parent trained on as long), so
        the parent is the result even where its raw metric dips below an earlier, shorter-trained
        one. A reignited line takes over only by beating acc_best, which is never reset.
        """
        if c.ok and (line_is_best or self.score(c) > self.score(best)):
            if c.id != best.id:
                self.emit(Event.BEST, once=True, id=c.id, generation=gen, phase=c.phase, metric=c.metric)
            return c, True
        return best, False

    def begin(self, generation: int, phase: str) -> None:
        """Journal the generator's state; on resume, check it (a changed config cannot silently fork)."""
        state = json.loads(json.dumps(self.rng.bit_generator.state))
        prior = [e for e in self.journal.events if e.get("event") == Event.GENERATION and e.get("generation") == generation and e.get("phase") == phase]
        if prior and prior[0].get("rng") != state:
            raise ConfigError(f"{self.journal.path}: generation {generation} of {phase} began from another random state; "
                              "the journal belongs to a different run")
        self.emit(Event.GENERATION, once=True, id=None, generation=generation, phase=phase, rng=state)

    def log_generation(self, gen: int, phase: str, evaluated: list[Candidate], bar: Candidate, decision: str) -> None:
        inds = [individual(c.id, c.arch.fingerprint(), code_of(c.arch), c.metric, self.metric) for c in evaluated if c.ok]
        rec = self.stats.compile(inds) if inds else {}
        self.logbook.record(gen=gen, phase=phase, evals=len(evaluated), baseline=_finite(bar.metric), decision=decision, **rec)

    # ------------------------------------------------------------------------------ candidates
    def propose(self, c: Candidate) -> Candidate:
        size = self.size
        d = self._dir(c.id) / "input"
        if not (d / "arch.yaml").is_file() or c.id not in self.journal.proposed:
            save(c.arch, d)
        self.emit(Event.PROPOSED, once=True, id=c.id, phase=c.phase, role=c.role, generation=c.generation, parent=c.parent,
                   encoding=(code := code_of(c.arch)), **_grammar(c.arch, code), fingerprint=c.arch.fingerprint(), morphisms=c.morphisms,
                   gmacs=round(c.arch.flops(size) / 1e9, 4), params_m=round(c.arch.params() / 1e6, 4),
                   stage_gmacs=stage_gmacs(c.arch, size), **({"epochs": c.epochs} if c.epochs is not None else {}),
                   **({"rung": c.rung} if c.rung else {}))
        self.seen.add(c.arch.fingerprint())
        self.candidates[c.id] = c
        return c

    def mutate(self, parent: Candidate, cid: str, generation: int) -> Candidate | None:
        """lo..hi random morphisms (a rule, then one of its sites, uniformly); bounded retries."""
        s = self.cfg.search
        lo, hi = s.mutations
        size = self.size
        for _ in range(s.max_tries):
            k = int(self.rng.integers(lo, hi + 1))
            walked = self.walk(parent.arch, k, cid, generation)
            if walked is None:
                continue
            cur, ops = walked
            if not ops:
                return None
            if not (s.min_blocks <= len(cur.main_chain()) <= s.max_blocks):
                continue
            if s.flops_budget is not None and cur.flops(size) / 1e9 > s.flops_budget:
                continue
            if s.params_budget is not None and cur.params() / 1e6 > s.params_budget:
                continue
            if cur.fingerprint() in self.seen:
                continue
            return Candidate(cid, "serial", "child", parent.id, cur, ops, generation)
        return None

    def walk(self, arch: Arch, steps: int, cid: str, generation: int, phase: str = "serial") -> tuple[Arch, list[dict[str, Any]]] | None:
        """Up to ``steps`` random morphisms of ``self.rules`` from ``arch`` (a rule with sites, then one of
        its sites, uniformly, from ``self.rng``): the net and the morphisms applied (fewer where no rule
        applies). None where a rule failed (journaled once as ``rule_failed`` under ``cid``); a rule's
        run time is bounded, and a plugin rule registered as exact is checked on its first use."""
        cur, ops = arch, []
        for _ in range(steps):
            options = [(m, st) for m in self.rules if (st := m.sites(cur, self.space))]
            if not options:
                break
            m, sites = options[int(self.rng.integers(len(options)))]
            site = sites[int(self.rng.integers(len(sites)))]
            try:
                nxt = _bounded(lambda m=m, cur=cur, site=site: m.apply(cur, site, self.rng, self.space), RULE_SECONDS, m.name)
            except MorphismError as e:  # the rule's own failure: this child fails, the search goes on
                self.emit(Event.RULE_FAILED, once=True, id=cid, generation=generation, phase=phase, rule=m.name,
                          site=_plain_site(site), reason=str(e)[:500])
                return None
            self._check_declared_exact(m, cur, nxt)
            cur = nxt
            ops.append({"rule": m.name, "site": _plain_site(site), "exact": m.exact})
        return cur, ops

    def _check_declared_exact(self, m: Any, before: Arch, after: Arch) -> None:
        """A plugin rule registered as exact is checked the first time it applies (compiled before and after, as the
        property tests do for the built-in rules); one that changes the function is refused in one line."""
        if not m.exact or m.fn.__module__.startswith("spnas.") or m.name in self._checked_rules:
            return
        import torch

        from spnas.ops.check import _run
        from spnas.ops import relative_error

        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        err = relative_error(_run(before, x, False), _run(after, x, False))
        if not err <= EXACT_TOL:
            raise ConfigError(f"morphism {m.name!r} ({m.fn.__module__}) is registered as exact but changed the net's "
                              f"outputs by {err:.2e} (relative) on its first use; fix the rule or register it exact=False")
        self._checked_rules.add(m.name)

    def trained(self, c: Candidate) -> Candidate:
        """``c`` carrying its trained backbone weights (what its children and continuation start from)."""
        if not c.ok:
            return c
        return dataclasses.replace(c, arch=load(self._dir(c.id) / "trained"))

    def epochs_of(self, c: Candidate) -> int:
        """The detection epochs of ``c``'s own training."""
        if c.epochs is not None:
            return c.epochs
        st = self.cfg.start.train_epochs
        return st if c.role == "start" and isinstance(st, int) else self.cfg.train.epochs

    def _dir(self, cid: str) -> Path:
        return self.run_dir.candidate(cid)

    # ------------------------------------------------------------------------------ evaluation
    def _request(self, c: Candidate, shrink: int = 1) -> EvalRequest:
        """What training ``c`` needs; ``shrink``: out of memory at the configured batch, the per-device batch is
        divided by it and the accumulation multiplied (as many images a step)."""
        parent = self.candidates.get(c.parent) if c.parent else None
        head = self._dir(parent.id) / HEAD_FILE if parent is not None and parent.ok else None
        if c.role == "start" and self.cfg.start.head:  # a detector head the user brings (checked before the run)
            head = self.cfg.path(self.cfg.start.head)
        # common random numbers: the candidates of one serial generation and its continued parent train with one
        # seed (the same batches and flips), and so do the parallel level's candidates and its baseline; each
        # rung of a multi-fidelity race has a seed of its own, shared by its contestants
        seed_key = {"start": "start", "converge": c.id, "noise": c.id, "reignite": c.id, "baseline": "parallel",
                    "parallel": "parallel"}.get(c.role, f"{c.phase}{c.generation}" + (f".{c.rung}" if c.rung > 1 else ""))
        t = self.train_config
        train = dataclasses.replace(t, epochs=self.epochs_of(c), seed=candidate_seed(self.cfg.seed, seed_key),
                                    batch_size=t.batch_size // shrink, accumulate=t.accumulate * shrink)
        return EvalRequest(
            id=c.id,
            dir=str(self._dir(c.id)),
            data=self.data,
            detector=self.detector,
            train=train,
            metric=self.cfg.search.metric,
            inherits=c.role not in ("start", "reignite"),  # its weights were trained: train.inherited applies
            parent_head=str(head) if head is not None and head.is_file() else None,
            reignite=self.cfg.reignite.model_dump() if c.role == "reignite" else None,
            plugins=tuple(str(self.cfg.path(p)) for p in self.cfg.search.plugins),
        )

    def evaluate(self, cands: list[Candidate]) -> None:
        """Train and measure ``cands`` (results from the journal where they exist: see
        :class:`~spnas.search.evaluations.Evaluations`); their results are set and journaled."""
        self.evaluations(cands)
        self.hof.update([individual(c.id, c.arch.fingerprint(), code_of(c.arch), c.metric, self.metric) for c in cands if c.ok])

    def logbook_text(self) -> str:
        """DEAP's logbook of the generations (statistics of each generation's evaluated candidates)."""
        return str(self.logbook) if len(self.logbook) else "(no generation ran)"


class _Progress:
    """A tqdm bar over the serial generations and parallel candidates; quiet when not a terminal."""

    def __init__(self, cfg: SearchConfig, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=cfg.search.max_generations + (cfg.parallel.max_candidates if cfg.parallel.enabled else 0),
                        desc="search", disable=disable)
        self.best = -math.inf

    def __call__(self, ev: dict[str, Any]) -> None:
        if ev["event"] == Event.GENERATION:
            self.bar.update(1)
        elif ev["event"] == Event.BEST:
            self.best = ev["metric"]
            self.bar.set_postfix(best=f"{self.best:.4f}")

    def close(self) -> None:
        self.bar.close()


def resolve_data(cfg: SearchConfig, out: Path) -> dict[str, Any]:
    """The data section as a plain request for the evaluators (:func:`spnas.detect.datasets.resolve_data`);
    a generated set goes into the run directory ``out``."""
    from spnas.detect.datasets import resolve_data as resolve

    return resolve(cfg.data, cfg.path, RunDir(out).data, cfg.seed)


RULE_SECONDS = 120.0  # a rule's apply() that runs longer is the rule's failure (a plugin stuck in a loop)
EXACT_TOL = 1e-6  # relative output change (float64) an exact plugin rule may make on its first use


def _bounded(fn: Callable[[], Arch], seconds: float, name: str) -> Arch:
    """``fn()``, ended with a MorphismError after ``seconds`` (SIGALRM: in the main thread on Unix; elsewhere unbounded).
    A rule that calls ``sys.exit`` is the rule's failure too, not the end of the search."""
    import signal
    import threading

    def expired(signum: int, frame: Any) -> None:
        raise MorphismError(f"morphism {name!r} ran longer than {seconds:.0f} s")

    timed = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGALRM, expired) if timed else None
    if timed:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    except SystemExit as e:
        raise MorphismError(f"morphism {name!r} called sys.exit({e.code!r})") from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _with_new_defaults(old: Any, cfg: SearchConfig) -> Any:
    """A saved config with the settings added since it was written filled in at their defaults (a run started
    before a setting existed ran as its default does, so it resumes)."""
    if not isinstance(old, dict):
        return old
    new = cfg.to_dict()
    out = dict(old)
    for sec, values in new.items():
        model = getattr(cfg, sec, None)
        if not isinstance(values, dict) or not isinstance(out.get(sec), dict) or not hasattr(type(model), "model_fields"):
            continue
        fields = type(model).model_fields
        added = {k: v for k, v in values.items() if k not in out[sec] and k in fields and fields[k].default == getattr(model, k)}
        out[sec] = {**out[sec], **added}
    return out


def _decisive(d: dict[str, Any] | None) -> dict[str, Any]:
    """The parts of a config that decide the search's results (all but ``workers``: where it runs)."""
    return {k: v for k, v in (d or {}).items() if k != "workers"}
