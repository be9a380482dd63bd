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

The journal is the record; TensorBoard and the progress bar listen to its events. The evaluator is
a parameter (``Search(cfg, out, evaluate=fn)``): tests pass a fake one. DEAP supplies the pieces:
``toolbox.map`` is the evaluator pool's map, ``toolbox.mutate`` the random morphisms, a
``tools.Logbook`` with ``tools.Statistics`` (``logbook.txt``), and a ``tools.HallOfFame``
(``best/top/``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from deap import base, tools
from safetensors.torch import load_file

from spnas.errors import ConfigError, MorphismError, SpnasError
from spnas.ir import Arch, load, parse, save
from spnas.ir.io import WEIGHTS_FILE, sha256_file, write_tensors
from spnas.ops import Space, get_morphism
from spnas.detect.metrics import LAMR_METRICS, Metric
from spnas.detect.infer import DETECTOR_WEIGHTS, describe_detector, write_description
from spnas.search.candidate import Candidate, code_of, hall_of_fame, individual, sample_parallel_code, stage_flops, stage_gmacs
from spnas.search.config import SearchConfig
from spnas.search.evaluator import HEAD_FILE, candidate_seed, detector_state, evaluate_candidate, make_pool
from spnas.search.journal import FORMAT as JOURNAL_FORMAT
from spnas.search.journal import Journal
from spnas.search.log import RunLog
from spnas.search.strategy import HillClimbing, Strategy
from spnas.rundir import RunDir

__all__ = ["Search", "Candidate", "sample_parallel_code", "stage_flops", "stage_gmacs", "resolve_data", "code_of", "auto_timeout"]

Evaluate = Callable[[dict[str, Any]], dict[str, Any]]
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
        self.evaluate_fn = evaluate
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
        self.start_arch = self._start_arch()  # start weights are read (and refused) before anything is written
        _check_start(self.start_arch, cfg)
        _check_reignite(cfg)
        self.data: dict[str, Any] | None = None
        if cfg.data.format != "shapes":  # the user's annotations too: bad data is one line now, not every candidate's failure
            self.data = resolve_data(cfg, self.out)
            _check_data(self.data, cfg.search.metric, keep=cfg.workers.backend == "inline")
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.run_dir)
        try:
            if resume:
                _clean_partial_writes(self.run_dir)
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

        o = resolve_options(cfg.detector.preset, **cfg.detector.options)
        self.size = (o.max_size, o.max_size)  # the detector's input: FLOPs and budgets are counted at it
        self.rng = np.random.default_rng(cfg.seed)
        self.metric = Metric(cfg.search.metric)  # owns the direction: a miss rate turns every comparison around
        self.lower = self.metric.lower_is_better
        self.seen: set[str] = set()
        self._checked_rules: set[str] = set()
        self.candidates: dict[str, Candidate] = {}
        self.noise: dict[str, Any] | None = None
        self.start: Candidate | None = None  # the trained start the search grows from (train_start sets it)
        self._shrunk: dict[str, int] = {}  # candidate -> the factor its per-device batch was divided by (out of memory)
        self.pool = None
        self.toolbox = base.Toolbox()
        self.toolbox.register("map", self._pool_map)
        self.toolbox.register("evaluate", self.evaluate_fn)
        self.toolbox.register("mutate", self.mutate)
        self.stats = tools.Statistics(key=lambda ind: ind.fitness.values[0])
        for name, fn in (("avg", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
            self.stats.register(name, fn)
        self.logbook = tools.Logbook()
        self.logbook.header = ["gen", "phase", "evals", "avg", "max", "baseline", "decision"]
        self.hof = hall_of_fame()

    # ------------------------------------------------------------------------------ events
    def emit(self, event: str, once: bool = False, **data: Any) -> dict[str, Any] | None:
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
            self.emit("start", once=True, id=None, seed=self.cfg.seed, generation=None, phase=None, format=JOURNAL_FORMAT)
            if self.data is None:  # the generated set is written into the run directory
                self.data = resolve_data(self.cfg, self.out)
            best = self.strategy.run(self)
            summary = self._finish(best, time.time() - t_start)
        finally:
            if self.pool is not None:
                self.pool.close()
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
            raise SpnasError(f"the start network failed to train: {start.result.get('reason')}; nothing was decided, "
                             "so fix it and --resume (the start trains again)")
        start = self.trained(start)
        if self.cfg.start.train_epochs == "auto":
            start = self.converge(start)
        self.start = start
        self.emit("accepted", once=True, id=start.id, generation=0, phase="serial", rule="start", metric=start.metric,
                   encoding=code_of(start.arch))
        self.emit("best", once=True, id=start.id, generation=0, phase="serial", metric=start.metric)
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
            self.emit("noise", once=True, id=None, generation=0, phase="serial", **self.noise)
        return start

    def converge(self, first: Candidate) -> Candidate:
        """``start.train_epochs: auto``: train the start net on in cycles of ``train.epochs`` (``start2``,
        ``start3``, ... each from the last one's weights, as inherited nets train: with ``train.inherited``
        "restart", warm restarts) until the validation metric has not improved for ``start.patience``
        cycles or ``start.max_epochs`` are spent. The best cycle is the converged start; the learning
        curve is journaled (``converged``) and the summary says how many epochs it took."""
        st, e = self.cfg.start, self.cfg.train.epochs
        cycles, best, k = [first], first, 1
        reason = "max_epochs reached"
        while (k + 1) * e <= st.max_epochs:
            if cycles.index(best) + 1 + st.patience <= k:
                reason = f"no gain for {st.patience} cycles"
                break
            k += 1
            c = self.propose(Candidate(f"start{k}", "serial", "converge", cycles[-1].id, cycles[-1].arch, [], 0))
            self.evaluate([c])
            if not c.ok:
                reason = f"cycle {k} failed: {c.result.get('reason')}"
                break
            c = self.trained(c)
            cycles.append(c)
            if self.score(c) > self.score(best):
                best = c
        curve = [{"id": c.id, "epochs": (i + 1) * e, "metric": _finite(c.metric)} for i, c in enumerate(cycles)]
        self.emit("converged", once=True, id=best.id, generation=0, phase="serial", epochs=(cycles.index(best) + 1) * e,
                   trained_epochs=len(cycles) * e, curve=curve, reason=reason, metric=_finite(best.metric))
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
        self.emit("prefiltered", once=True, id=None, generation=gen, phase="serial", by=s.prefilter,
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
        self.emit("reignited", once=True, id=r.id, generation=gen, phase="reignite", parent=parent.id, metric=_finite(r.metric), final=final)
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
        self.emit("accepted", once=True, id=c.id, generation=gen, phase=c.phase, rule=self.cfg.search.acceptance,
                   metric=_finite(c.metric), encoding=code_of(c.arch), baseline=bar.id, baseline_metric=_finite(bar.metric),
                   gain=_finite(self.score(c) - self.score(bar)), noise_std=(self.noise or {}).get("std"))
        return c

    def reject(self, c: Candidate, bar: Candidate, gen: int, kept: Candidate) -> Candidate:
        """``c`` (the best of its generation) did not beat ``bar``; ``kept`` carries on (fair: the continued parent)."""
        self.emit("rejected", once=True, id=c.id, generation=gen, phase=c.phase, rule=self.cfg.search.acceptance,
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
                self.emit("best", once=True, id=c.id, generation=gen, phase=c.phase, metric=c.metric)
            return c, True
        return best, False

    def begin(self, generation: int, phase: str) -> None:
        """Journal the generator's state; on resume, check it (a changed config cannot silently fork)."""
        state = json.loads(json.dumps(self.rng.bit_generator.state))
        prior = [e for e in self.journal.events if e.get("event") == "generation" and e.get("generation") == generation and e.get("phase") == phase]
        if prior and prior[0].get("rng") != state:
            raise ConfigError(f"{self.journal.path}: generation {generation} of {phase} began from another random state; "
                              "the journal belongs to a different run")
        self.emit("generation", once=True, id=None, generation=generation, phase=phase, rng=state)

    def log_generation(self, gen: int, phase: str, evaluated: list[Candidate], bar: Candidate, decision: str) -> None:
        inds = [individual(c.id, c.arch.fingerprint(), code_of(c.arch), c.metric, self.metric) for c in evaluated if c.ok]
        rec = self.stats.compile(inds) if inds else {}
        self.logbook.record(gen=gen, phase=phase, evals=len(evaluated), baseline=_finite(bar.metric), decision=decision, **rec)

    # ------------------------------------------------------------------------------ candidates
    def _start_arch(self) -> Arch:
        st = self.cfg.start
        arch = load(self.cfg.path(st.ir)) if st.ir else parse(st.code, stem=st.stem, seed=self.cfg.seed)
        if st.weights:
            arch = _with_weights(arch, self.cfg.path(st.weights))
        return arch

    def propose(self, c: Candidate) -> Candidate:
        size = self.size
        d = self._dir(c.id) / "input"
        if not (d / "arch.yaml").is_file() or c.id not in self.journal.proposed:
            save(c.arch, d)
        self.emit("proposed", once=True, id=c.id, phase=c.phase, role=c.role, generation=c.generation, parent=c.parent,
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
                self.emit("rule_failed", once=True, id=cid, generation=generation, phase=phase, rule=m.name,
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

    def _epochs(self, c: Candidate) -> int:
        """The detection epochs of ``c``'s own training."""
        if c.epochs is not None:
            return c.epochs
        st = self.cfg.start.train_epochs
        return st if c.role == "start" and isinstance(st, int) else self.cfg.train.epochs

    def _dir(self, cid: str) -> Path:
        return self.run_dir.candidate(cid)

    # ------------------------------------------------------------------------------ evaluation
    def _request(self, c: Candidate) -> dict[str, Any]:
        parent = self.candidates.get(c.parent) if c.parent else None
        head = self._dir(parent.id) / HEAD_FILE if parent is not None and parent.ok else None
        det = self.cfg.detector
        train = self.cfg.train.model_dump()
        train["epochs"] = self._epochs(c)
        if c.id in self._shrunk:  # out of memory at the configured batch: fewer images a micro-step, as many a step
            f = self._shrunk[c.id]
            train.update(batch_size=train["batch_size"] // f, accumulate=train["accumulate"] * f)
        # common random numbers: the candidates of one serial generation and its continued parent train with one
        # seed (the same batches and flips), and so do the parallel level's candidates and its baseline; each
        # rung of a multi-fidelity race has a seed of its own, shared by its contestants
        seed_key = {"start": "start", "converge": c.id, "noise": c.id, "reignite": c.id, "baseline": "parallel",
                    "parallel": "parallel"}.get(c.role, f"{c.phase}{c.generation}" + (f".{c.rung}" if c.rung > 1 else ""))
        return {
            "id": c.id,
            "dir": str(self._dir(c.id)),
            "parent_head": str(head) if head is not None and head.is_file() else None,
            "data": self.data,
            "detector": {"head": det.head, "preset": det.preset, "options": dict(det.options)},
            "train": train,
            "inherits": c.role not in ("start", "reignite"),  # its weights were trained: train.inherited applies
            "metric": self.cfg.search.metric,
            "seed": candidate_seed(self.cfg.seed, seed_key),
            "reignite": self.cfg.reignite.model_dump() if c.role == "reignite" else None,
            "plugins": [str(self.cfg.path(p)) for p in self.cfg.search.plugins],
        }

    def _cached(self, c: Candidate) -> dict[str, Any] | None:
        """The journaled result of ``c``, unless it must run again: its files are damaged, or the machine
        failed it (out of disk, out of memory, worker lost, timeout), which no decision ever counts."""
        r = self.journal.results.get(c.id)
        if r is None or _machine_failed(r):
            return None
        if c.id == "start" and r.get("event") == "failed":  # nothing was decided yet: a fixed cause trains it again
            return None
        if r.get("event") == "evaluated":
            w = self.out / r["weights"]
            try:
                if not w.is_file() or sha256_file(w) != r.get("sha256") or not (self._dir(c.id) / HEAD_FILE).is_file():
                    return None  # the files are gone or damaged: evaluate again
            except OSError:  # a name the file system cannot hold (too long, ...): as gone
                return None
        return r

    def _pool_map(self, fn: Evaluate, requests: list[dict[str, Any]], on_result: Callable[[int, dict[str, Any]], None]) -> list[dict[str, Any]]:
        if self.pool is None:
            w = self.cfg.workers
            self.pool = make_pool(w.backend, list(w.devices), w.n, w.threads, address=w.address,
                                  gpus_per_task=w.gpus_per_task, transport=w.transport, runtime_env=w.runtime_env,
                                  devices_per_candidate=w.devices_per_candidate)
        if hasattr(self.pool, "timeout_s"):  # so a hung worker (SIGSTOP, a deadlock) never blocks the search forever
            self.pool.timeout_s = self._timeout()
        return self.pool.map(fn, requests, on_result)

    def _timeout(self) -> float:
        """``workers.timeout_s``, or automatic: 10x the slowest result so far (at least 600 s), 6 h before any."""
        if self.cfg.workers.timeout_s is not None:
            return self.cfg.workers.timeout_s
        return auto_timeout([float(e.get("seconds") or 0.0) for e in self.journal.events if e.get("event") == "evaluated"])

    def evaluate(self, cands: list[Candidate]) -> None:
        """Results from the journal where they exist; the rest through ``toolbox.map``, each journaled as it finishes."""
        todo = []
        for c in cands:
            c.result = self._cached(c)
            if c.result is None:
                todo.append(c)
        for c in todo:  # a resumed candidate may have had its input weights dropped
            d = self._dir(c.id) / "input"
            if not (d / WEIGHTS_FILE).is_file():
                save(c.arch, d)

        def record(i: int, r: dict[str, Any]) -> None:
            c = todo[i]
            body = {k: v for k, v in r.items() if k not in ("id", "status", "event")}
            c.result = self.emit("evaluated" if r.get("status") == "ok" else "failed", id=c.id, phase=c.phase, **body)
            if c.ok and not self.cfg.search.keep_inputs:
                # the input is the parent's trained weights under the journaled morphisms: rebuilt on demand
                (self._dir(c.id) / "input" / WEIGHTS_FILE).unlink(missing_ok=True)

        attempts: dict[str, int] = {}
        ooms: dict[str, int] = {}
        halved = {e.get("id") for e in self.journal.events if e.get("event") == "retried" and e.get("batch_size")} if todo else set()
        for c in todo:  # a resumed run keeps a halving it journaled
            if c.id in halved:
                self._shrunk.setdefault(c.id, 2)
        while todo:  # a machine's failure is retried at once, bounded; a candidate fails only for its own reasons
            self.toolbox.map(self.toolbox.evaluate, [self._request(c) for c in todo], record)
            todo = [c for c in todo if _machine_failed(c.result)]
            for c in list(todo):
                if c.result.get("cause") == "out of memory":
                    ooms[c.id] = ooms.get(c.id, 0) + 1
                    if ooms[c.id] >= 2:  # it repeats at this size: the net is too large for the device at this batch
                        if not self._halve(c):
                            todo.remove(c)
                        continue
                attempts[c.id] = attempts.get(c.id, 0) + 1
                if attempts[c.id] > self.cfg.workers.retries:
                    raise SpnasError(f"the machine failed candidate {c.id} {attempts[c.id]} times ({c.result.get('cause')}: "
                                     f"{c.result.get('reason')}); nothing journaled is lost: fix the machine, then --resume")
                self.emit("retried", id=c.id, phase=c.phase, after=c.result.get("reason"), attempt=attempts[c.id])
        self.hof.update([individual(c.id, c.arch.fingerprint(), code_of(c.arch), c.metric, self.metric) for c in cands if c.ok])

    def _halve(self, c: Candidate) -> bool:
        """Out of memory twice at one size: retry ``c`` at half the per-device batch with twice the accumulation
        (the same images a step), once; where it failed so already, or the batch is 1, it is ``c``'s own
        failure, journaled, so the search goes on and a resume takes it from the journal. True: retry."""
        batch = self.cfg.train.batch_size // self._shrunk.get(c.id, 1)
        if c.id in self._shrunk or batch < 2:
            c.result = self.emit("failed", id=c.id, phase=c.phase, reason=f"too large for this device at batch {batch} "
                                 f"(out of memory: {c.result.get('reason')})", kind="candidate", cause="too large",
                                 seconds=c.result.get("seconds"))
            return False
        self._shrunk[c.id] = 2
        self.emit("retried", id=c.id, phase=c.phase, after=c.result.get("reason"), attempt=0, batch_size=batch // 2,
                  accumulate=self.cfg.train.accumulate * 2)
        return True


    # ------------------------------------------------------------------------------ the result
    def _finish(self, best: Candidate, seconds: float) -> dict[str, Any]:
        size = self.size
        self._write_best(best)
        evaluated = [c for c in self.candidates.values() if c.result is not None]
        seconds_by_phase: dict[str, float] = {}
        for c in evaluated:
            seconds_by_phase[c.phase] = seconds_by_phase.get(c.phase, 0.0) + float(c.result.get("seconds") or 0.0)
        start = self.start or self.candidates["start"]  # the converged start where it trained until converged
        accepted = [e for e in self.journal.events if e.get("event") == "accepted" and e.get("rule") != "start"]
        conv = next((e for e in self.journal.events if e.get("event") == "converged"), None)
        summary = {
            "best_id": best.id,
            "best_code": code_of(best.arch),
            "best_metric": best.metric,
            "metric": self.cfg.search.metric,
            "acceptance": self.cfg.search.acceptance,
            "start_code": code_of(start.arch),
            "start_metric": start.metric,
            "start_epochs": conv["epochs"] if conv else self._epochs(self.candidates["start"]),
            **({"start_curve": conv["curve"]} if conv else {}),
            "improved": self.score(best) > self.score(start),
            "lower_is_better": self.lower,
            "noise_std": (self.noise or {}).get("std"),
            "accepted": [{"id": e["id"], "code": e.get("encoding"), "metric": e.get("metric"), "baseline": e.get("baseline"),
                          "gain": e.get("gain")} for e in accepted],
            "gmacs": round(best.arch.flops(size) / 1e9, 4),
            "params_m": round(best.arch.params() / 1e6, 4),
            "candidates": len(evaluated),
            "failed": sum(1 for c in evaluated if not c.ok),
            "device_hours": {k: round(v / 3600, 5) for k, v in seconds_by_phase.items()},
            "wall_seconds": round(seconds, 1),
            "metrics": best.result.get("metrics", {}),
            **getattr(self.strategy, "summary", lambda: {})(),
        }
        summary["top"] = [{"rank": r, "id": ind["id"], "code": ind["encoding"], "metric": ind.fitness.values[0]}
                          for r, ind in enumerate(self.hof, start=1)]
        summary["choice"] = self._choice(best, summary["top"])
        self.run_dir.summary.write_text(json.dumps(summary, indent=1))
        self.run_dir.logbook.write_text(self.logbook_text() + "\n")
        self.emit("done", once=True, id=best.id, generation=None, phase=None,
                   **{k: v for k, v in summary.items() if k not in ("wall_seconds", "device_hours", "top", "choice", "start_epochs", "start_curve")})
        return summary

    def _choice(self, best: Candidate, top: list[dict[str, Any]]) -> str:
        """Which net a user should take, and why, where best/ and best/top/1 differ."""
        if not top or top[0]["id"] == best.id:
            return f"best/ ({best.id}) is also the highest metric of the run (best/top/1)"
        return (f"take best/ ({best.id}, {self.cfg.search.metric} {_finite(best.metric)}): the last net that won a comparison "
                f"({self.cfg.search.acceptance}); best/top/1 ({top[0]['id']}, {top[0]['metric']}) measured higher once, "
                "but at another training length or seed, and no comparison confirmed it: audit both (spnas audit RUN --top 3) "
                "before trusting the difference")

    def logbook_text(self) -> str:
        """DEAP's logbook of the generations (statistics of each generation's evaluated candidates)."""
        return str(self.logbook) if len(self.logbook) else "(no generation ran)"

    def _describe(self, best: Candidate) -> dict[str, Any]:
        """``best/detector.json``: what loading and using the net needs (classes, label map, settings, metric)."""
        from spnas.detect.detector import resolve_options
        from spnas.search.evaluator import load_datasets

        train_ds, _ = load_datasets(self.data)  # annotations only; images decode lazily
        det = self.cfg.detector
        return describe_detector(
            code=code_of(best.arch), classes=train_ds.class_names, label_to_cat=train_ds.label_to_cat, head=det.head,
            options=resolve_options(det.preset, **det.options), eval_batch_size=self.cfg.train.batch_size,
            plugins=[str(self.cfg.path(p)) for p in self.cfg.search.plugins],
            metric={"name": self.cfg.search.metric, "value": _finite(best.metric), "split": "val", "id": best.id},
            source={"run": str(self.out.resolve()), "id": best.id, "seed": self.cfg.seed, "data": self.data,
                    "train": self.cfg.train.model_dump(mode="json")})

    def _write_best(self, best: Candidate) -> None:
        """``best/``: arch + weights, the whole detector, and the hall of fame in ``top/``; built beside, then moved in."""
        tmp, final, old = self.run_dir.best_partial, self.run_dir.best, self.run_dir.best_old
        for d in (tmp, old):
            shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(self._dir(best.id) / "trained", tmp / "arch")
        head = load_file(str(self._dir(best.id) / HEAD_FILE))
        body = load_file(str(tmp / "arch" / WEIGHTS_FILE))
        write_tensors(detector_state(body, head), tmp / DETECTOR_WEIGHTS)
        write_description(tmp, self._describe(best))
        for rank, ind in enumerate(self.hof, start=1):  # hard links: the hall of fame costs no second copy of the weights
            dst = RunDir.top(tmp, rank, ind["id"])
            shutil.copytree(self._dir(ind["id"]) / "trained", dst / "arch", copy_function=_link)
            _link(self._dir(ind["id"]) / HEAD_FILE, dst / HEAD_FILE)
            (dst / "metric.json").write_text(json.dumps({"id": ind["id"], "code": ind["encoding"], "metric": ind.fitness.values[0]}))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)


class _Progress:
    """A tqdm bar over the serial generations and parallel candidates; quiet when not a terminal."""

    def __init__(self, cfg: SearchConfig, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=cfg.search.max_generations + (cfg.parallel.max_candidates if cfg.parallel.enabled else 0),
                        desc="search", disable=disable)
        self.best = -math.inf

    def __call__(self, ev: dict[str, Any]) -> None:
        if ev["event"] == "generation":
            self.bar.update(1)
        elif ev["event"] == "best":
            self.best = ev["metric"]
            self.bar.set_postfix(best=f"{self.best:.4f}")

    def close(self) -> None:
        self.bar.close()


def _lock(run: RunDir):
    """Hold an exclusive lock on the run's ``.lock`` for the life of this search (released on exit and on kill).

    A second search on the same directory stops with one line naming the holder.
    """
    import fcntl
    import socket

    out = run.root
    f = open(run.lock, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ConfigError(f"{out}: another search holds this run directory ({holder}); wait for it to end or choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    f.flush()
    return f


def _clean_partial_writes(run: RunDir) -> None:
    """Remove what a killed run left half-written: ``best.partial``, ``best.old`` and ``*.tmp`` files."""
    if not run.best.exists() and run.best_old.exists():  # killed between the two renames
        os.replace(run.best_old, run.best)
    for d in (run.best_partial, run.best_old):
        shutil.rmtree(d, ignore_errors=True)
    for f in run.candidates.glob("*/**/*.tmp"):  # ** matches no folder too: head.safetensors.tmp and trained/*.tmp
        f.unlink(missing_ok=True)


def auto_timeout(seconds: list[float], *, factor: float = 10.0, floor: float = 600.0, first: float = 6 * 3600.0) -> float:
    """The default per-candidate timeout: ``factor`` x the slowest candidate so far, at least ``floor``; ``first`` before any."""
    return max(floor, factor * max(seconds)) if seconds else first


def _machine_failed(r: dict[str, Any] | None) -> bool:
    return bool(r) and r.get("event") == "failed" and r.get("kind") == "machine"


def _link(src: str | Path, dst: str | Path) -> None:
    """A hard link where the file system allows one, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


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


def _check_data(data: dict[str, Any], metric: str, *, keep: bool) -> None:
    """Load both splits once in the driver (annotations only; images decode lazily, or all under ``strict``).

    ``keep``: leave them in the process cache (inline evaluation reuses them); else free them.
    """
    from spnas.detect.datasets import clear_cache, load_datasets

    _, val = load_datasets(data)
    if metric in LAMR_METRICS:
        from spnas.detect.train import person_miss_rates

        if val.lamr_protocol is None:
            raise ConfigError(f"search.metric: {metric} is a miss rate of person data: ECP frames (data.format: ecp) or "
                              "CityPersons-style COCO (annotations with vis_ratio); this data set is neither")
        value = person_miss_rates(val, None)[metric]
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"search.metric: {metric}: the validation split has no person in this subset, so the miss rate is undefined")
    if metric in _AREA_RANGES:  # pycocotools gives -1 for an area range with no object: every candidate would tie
        lo, hi = _AREA_RANGES[metric]
        anns = [a for a in val.coco.anns.values() if not a.get("iscrowd")]
        if not any(lo <= float(a.get("area") or a["bbox"][2] * a["bbox"][3]) < hi for a in anns):
            name = {"APs": "small (area < 32²)", "APm": "medium (32² to 96²)", "APl": "large (area > 96²)"}[metric]
            raise ConfigError(f"search.metric: {metric}: the validation split has no {name} object, so {metric} is -1 for "
                              "every candidate; choose another metric")
    if not keep:
        clear_cache()


_AREA_RANGES = {"APs": (0.0, 32.0**2), "APm": (32.0**2, 96.0**2), "APl": (96.0**2, math.inf)}  # pycocotools' ranges


def _check_start(arch: Arch, cfg: SearchConfig) -> None:
    """A start net the search's own bounds refuse could never be compared with a child: refused before the run."""
    s = cfg.search
    n, stages = len(arch.main_chain()), len(arch.stages())
    if not s.min_blocks <= n <= s.max_blocks:
        raise ConfigError(f"start: the start net has {n} blocks on its main chain, outside search.min_blocks..max_blocks "
                          f"({s.min_blocks}..{s.max_blocks}); widen the bounds or choose another start")
    if stages > s.max_stages:
        raise ConfigError(f"start: the start net has {stages} stages, more than search.max_stages ({s.max_stages})")


def _check_reignite(cfg: SearchConfig) -> None:
    """A reignite data source that cannot be had fails at the first reignite, hours in: refused before the run."""
    if not (cfg.search.final_reignite or cfg.search.n_reignite):
        return
    spec = cfg.reignite.data
    if spec == "fashion-mnist":
        from spnas.detect.pretrain import FASHION_DIRS, fashion_mnist_dir

        if fashion_mnist_dir() is None:
            raise ConfigError(f"reignite.data: fashion-mnist: no IDX files in {', '.join(FASHION_DIRS)} "
                              "(apt-get install dataset-fashion-mnist), and the search reignites")
    elif spec != "generated" and not Path(cfg.path(spec)).is_dir():
        raise ConfigError(f"reignite.data: {spec}: no such ImageFolder directory, and the search reignites")


def _with_weights(arch: Arch, path: Path) -> Arch:
    """Start weights: a torchvision checkpoint (weights_only) or an spnas safetensors store."""
    import torch

    from spnas.ir import from_torchvision

    if not path.is_file():
        raise ConfigError(f"start.weights: {path}: no such file")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except Exception as e:
            raise ConfigError(f"start.weights: {path}: not a safetensors file ({e})") from None
        if set(tensors) != set(arch.weights):
            missing = sorted(set(arch.weights) ^ set(tensors))[:1]
            raise ConfigError(f"start.weights: {path}: keys differ from the start architecture's (e.g. {missing})")
        new = arch.with_weights(tensors)
        new.verify()
        return new
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"start.weights: {path}: not a torch checkpoint of plain tensors ({e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    imported = from_torchvision(sd)
    if imported.fingerprint() != arch.fingerprint():
        raise ConfigError(f"start.weights: {path} holds {code_of(imported)}, but start.code is {code_of(arch)}")
    return imported
