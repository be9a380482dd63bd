"""The search: serial (1+λ) hill climbing with reignite (paper Algorithm 1), then the parallel level.

The loop is deterministic given the config and seed: one ``numpy.random.Generator`` drives every
choice, candidate ids are positional (``start``, ``g003c1``, ``r1``, ``p002``), and each
candidate trains with a seed derived from its id. Resume runs the same loop again; every candidate
that already has a result in the journal (with its weight file intact) takes it from there, so a
killed search loses only its in-flight candidates. The generator's state at each generation is
journaled and checked on resume, so a changed config cannot silently fork the trajectory.

DEAP supplies the pieces (``creator`` fitness and individual, ``toolbox.mutate/evaluate/map``,
``tools.Logbook``, ``tools.HallOfFame``); the loops are ours, as DEAP advises for checkpointing.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from deap import base, creator, tools
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from spnas.errors import ConfigError, SpnasError
from spnas.ir import Arch, load, parse, save
from spnas.ir.io import WEIGHTS_FILE
from spnas.ops import Space, get_morphism, load_plugin
from spnas.search.config import SearchConfig
from spnas.search.evaluator import HEAD_FILE, candidate_seed, detector_state, make_pool
from spnas.search.journal import Journal

__all__ = ["Search", "Candidate", "sample_parallel_code", "stage_flops", "resolve_data"]

if not hasattr(creator, "SpnasFitness"):
    creator.create("SpnasFitness", base.Fitness, weights=(1.0,))
    creator.create("SpnasIndividual", dict, fitness=creator.SpnasFitness)


@dataclass
class Candidate:
    """An individual: id, lineage, the IR on disk, and its result (never a live module)."""

    id: str
    phase: str
    parent: str | None
    arch: Arch
    morphisms: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0
    reignite: bool = False
    result: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.result) and self.result.get("event") == "evaluated"

    @property
    def metric(self) -> float:
        return float(self.result["metric"]) if self.ok else -math.inf


def stage_flops(arch: Arch, size: tuple[int, int]) -> list[int]:
    """Multiply-accumulates of each stage's main blocks at input ``size``."""
    per_node = arch.node_flops(size)
    return [sum(per_node[b] for b in st.blocks) for st in arch.stages()]


def sample_parallel_code(flops: list[int], counts: list[int], K: int, n_add: int, rng: np.random.Generator) -> list[int]:
    """Add ``n_add`` subnets: each goes to stage l (l >= 1, fewer than K there) with chance ∝ 1/FLOPs(l)."""
    counts = list(counts)
    for _ in range(n_add):
        eligible = [i for i in range(1, len(flops)) if counts[i] < K]
        if not eligible:
            break
        w = np.array([1.0 / flops[i] for i in eligible])
        counts[eligible[int(rng.choice(len(eligible), p=w / w.sum()))]] += 1
    return counts


def _plain_site(site: Any) -> Any:
    return list(site) if isinstance(site, tuple) else site


class Search:
    """One run directory: ``config.yaml``, ``journal.jsonl``, ``candidates/<id>/``, ``best/``, ``tb/``."""

    def __init__(self, cfg: SearchConfig, out: str | Path, *, resume: bool = False, quiet: bool | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.quiet = (not sys.stderr.isatty()) if quiet is None else quiet
        cfg_file = self.out / "config.yaml"
        jpath = self.out / "journal.jsonl"
        import yaml

        for p in cfg.search.plugins:
            load_plugin(str(cfg.path(p)))
        try:
            self.rules = [get_morphism(n) for n in cfg.search.morphisms]
        except SpnasError as e:
            raise ConfigError(f"search.morphisms: {e}") from None
        if jpath.exists() and not resume:
            raise ConfigError(f"{self.out}: holds a run already; pass --resume to continue it or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        resolved = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        if resume and cfg_file.is_file() and cfg_file.read_text() != resolved:
            raise ConfigError(f"{cfg_file}: the run was started with another config; resume without changing it")
        cfg_file.write_text(resolved)
        self.journal = Journal(jpath)
        s = cfg.search
        self.space = Space(min_blocks=s.min_blocks, max_blocks=s.max_blocks, max_stages=s.max_stages, max_subnets=cfg.parallel.K)
        self.rng = np.random.default_rng(cfg.seed)
        self.seen: set[str] = set()
        self.candidates: dict[str, Candidate] = {}
        self.toolbox = base.Toolbox()
        self.toolbox.register("mutate", self._mutate)
        self.toolbox.register("evaluate", self._evaluate_batch)
        self.logbook = tools.Logbook()
        self.logbook.header = ["gen", "phase", "evals", "best", "parent"]
        self.hof = tools.HallOfFame(3, similar=lambda a, b: a["fingerprint"] == b["fingerprint"])
        self.phase_seconds: dict[str, float] = {"serial": 0.0, "reignite": 0.0, "parallel": 0.0}
        self.pool = None
        self.tb = None

    # ------------------------------------------------------------------------------ set-up
    def _data_request(self) -> dict[str, Any]:
        return resolve_data(self.cfg, self.out)

    def _start_arch(self) -> Arch:
        st = self.cfg.start
        arch = load(self.cfg.path(st.ir)) if st.ir else parse(st.code, stem=st.stem, seed=self.cfg.seed)
        if st.weights:
            arch = _with_weights(arch, self.cfg.path(st.weights))
        return arch

    def _request(self, c: Candidate) -> dict[str, Any]:
        parent = self.candidates.get(c.parent) if c.parent else None
        pd = self.out / "candidates" / parent.id / HEAD_FILE if parent is not None and parent.ok else None
        det = self.cfg.detector
        return {
            "id": c.id,
            "dir": str(self.out / "candidates" / c.id),
            "parent_head": str(pd) if pd is not None and pd.is_file() else None,
            "data": self.data,
            "detector": {"head": det.head, "preset": det.preset, "options": dict(det.options)},
            "train": dict(self.cfg.train),
            "metric": self.cfg.search.metric,
            "seed": candidate_seed(self.cfg.seed, c.id),
            "reignite": _asdict(self.cfg.reignite) if c.reignite else None,
        }

    def _input_size(self) -> tuple[int, int]:
        from spnas.detect.detector import resolve_options

        o = resolve_options(self.cfg.detector.preset, **self.cfg.detector.options)
        return (o.max_size, o.max_size)

    # ------------------------------------------------------------------------------ candidates
    def _propose(self, c: Candidate) -> Candidate:
        size = self._input_size()
        d = self.out / "candidates" / c.id / "input"
        if not (d / "arch.yaml").is_file() or c.id not in self.journal.proposed:
            save(c.arch, d)
        self.journal.append_once(
            "proposed",
            id=c.id,
            phase=c.phase,
            generation=c.generation,
            parent=c.parent,
            encoding=_code(c.arch),
            fingerprint=c.arch.fingerprint(),
            morphisms=c.morphisms,
            gmacs=round(c.arch.flops(size) / 1e9, 4),
            params_m=round(c.arch.params() / 1e6, 4),
        )
        self.seen.add(c.arch.fingerprint())
        self.candidates[c.id] = c
        return c

    def _cached(self, c: Candidate) -> dict[str, Any] | None:
        r = self.journal.results.get(c.id)
        if r is None:
            return None
        if r.get("event") == "evaluated":
            w = self.out / r["weights"]
            from spnas.ir.io import sha256_file

            if not w.is_file() or sha256_file(w) != r.get("sha256") or not (self.out / "candidates" / c.id / HEAD_FILE).is_file():
                return None  # the files are gone or damaged: evaluate again
        return r

    def _evaluate_batch(self, cands: list[Candidate]) -> list[Candidate]:
        todo = []
        for c in cands:
            r = self._cached(c)
            if r is not None:
                c.result = r
            else:
                todo.append(c)
        if todo:
            if self.pool is None:
                self.pool = make_pool(self.cfg.workers.backend, list(self.cfg.workers.devices), self.cfg.workers.n,
                                      self.cfg.workers.threads, self.cfg.workers.timeout_s)
            for c in todo:  # a resumed candidate may have had its input weights dropped
                d = self.out / "candidates" / c.id / "input"
                if not (d / WEIGHTS_FILE).is_file():
                    save(c.arch, d)
            results = self.pool.map([self._request(c) for c in todo])
            for c, r in zip(todo, results):
                body = {k: v for k, v in r.items() if k not in ("id", "status")}
                c.result = self.journal.append("evaluated" if r["status"] == "ok" else "failed", id=c.id, phase=c.phase, **body)
                if c.ok and not self.cfg.search.keep_inputs:
                    # the input is the parent's trained weights under the journaled morphisms: rebuilt on demand
                    (self.out / "candidates" / c.id / "input" / WEIGHTS_FILE).unlink(missing_ok=True)
                self._log_candidate(c)
        for c in cands:
            self.phase_seconds[c.phase] = self.phase_seconds.get(c.phase, 0.0) + float(c.result.get("seconds") or 0.0)
            ind = creator.SpnasIndividual(id=c.id, fingerprint=c.arch.fingerprint(), encoding=_code(c.arch))
            ind.fitness.values = (c.metric,)
            if c.ok:
                self.hof.update([ind])
        return cands

    def _mutate(self, parent: Candidate, cid: str, generation: int) -> Candidate | None:
        """1..3 random morphisms (a rule, then one of its sites, uniformly); bounded retries."""
        lo, hi = self.cfg.search.mutations
        s = self.cfg.search
        size = self._input_size()
        for _ in range(s.max_tries):
            k = int(self.rng.integers(lo, hi + 1))
            cur, ops = parent.arch, []
            for _ in range(k):
                options = [(m, m.sites(cur, self.space)) for m in self.rules]
                options = [(m, st) for m, st in options if st]
                if not options:
                    break
                m, sites = options[int(self.rng.integers(len(options)))]
                site = sites[int(self.rng.integers(len(sites)))]
                cur = m.apply(cur, site, self.rng, self.space)
                ops.append({"rule": m.name, "site": _plain_site(site), "exact": m.exact})
            if not ops:
                return None
            n_blocks = len(cur.main_chain())
            if not (s.min_blocks <= n_blocks <= s.max_blocks):
                continue
            if s.flops_budget is not None and cur.flops(size) / 1e9 > s.flops_budget:
                continue
            if s.params_budget is not None and cur.params() / 1e6 > s.params_budget:
                continue
            if cur.fingerprint() in self.seen:
                continue
            return Candidate(cid, "serial", parent.id, cur, ops, generation)
        return None

    def _child_base(self, c: Candidate) -> Candidate:
        """A candidate carrying its trained backbone weights (what children inherit)."""
        if not c.ok:
            return c
        trained = load(self.out / "candidates" / c.id / "trained")
        return Candidate(c.id, c.phase, c.parent, trained, c.morphisms, c.generation, c.reignite, c.result)

    def _check_rng(self, generation: int, phase: str) -> None:
        state = json.loads(json.dumps(self.rng.bit_generator.state))
        prior = [e for e in self.journal.events if e.get("event") == "generation" and e.get("generation") == generation and e.get("phase") == phase]
        if prior and prior[0].get("rng") != state:
            raise ConfigError(f"{self.journal.path}: generation {generation} of {phase} began from another random state; "
                              "the journal belongs to a different run")
        self.journal.append_once("generation", id=None, generation=generation, phase=phase, rng=state)

    # ------------------------------------------------------------------------------ the loops
    def run(self) -> dict[str, Any]:
        t_start = time.time()
        self.journal.append_once("start", id=None, seed=self.cfg.seed, generation=None, phase=None)
        self.data = self._data_request()
        self._open_tb()
        try:
            best = self._serial()
            best = self._parallel(best) if self.cfg.parallel.enabled else best
            summary = self._finish(best, time.time() - t_start)
        finally:
            if self.pool is not None:
                self.pool.close()
            if self.tb is not None:
                self.tb.close()
            self.journal.close()
        return summary

    def _serial(self) -> Candidate:
        s = self.cfg.search
        start = self._propose(Candidate("start", "serial", None, self._start_arch()))
        self._evaluate_batch([start])
        if not start.ok:
            raise SpnasError(f"the start network failed to train: {start.result.get('reason')}")
        self.start = start
        parent = self._child_base(start)
        self._accept(parent, generation=0)
        stuck = reignites = 0
        bar = tqdm(total=s.max_generations, desc="serial", disable=self.quiet)
        for gen in range(1, s.max_generations + 1):
            self._check_rng(gen, "serial")
            children = []
            for i in range(s.lam):
                c = self.toolbox.mutate(parent, f"g{gen:03d}c{i}", gen)
                if c is not None:
                    children.append(self._propose(c))
            if not children:
                self.journal.append_once("stopped", id=None, generation=gen, phase="serial", reason="no new child within the bounds")
                break
            self.toolbox.evaluate(children)
            best = max(children, key=lambda c: c.metric)
            improved = best.ok and best.metric > parent.metric
            self.logbook.record(gen=gen, phase="serial", evals=len(children), best=best.metric, parent=parent.metric)
            if improved:
                parent = self._child_base(best)
                self._accept(parent, generation=gen)
                stuck = 0
            else:
                stuck += 1
                self.journal.append_once("rejected", id=best.id, generation=gen, phase="serial", parent=parent.id)
            bar.update(1)
            bar.set_postfix(best=f"{parent.metric:.4f}")
            if stuck >= s.n_stuck:
                if reignites >= s.n_reignite:
                    self.journal.append_once("stopped", id=None, generation=gen, phase="serial", reason=f"stuck for {stuck} generations")
                    break
                reignites += 1
                r = self._propose(Candidate(f"r{reignites}", "reignite", parent.id, parent.arch, [], gen, reignite=True))
                self._evaluate_batch([r])
                self.journal.append_once("reignited", id=r.id, generation=gen, phase="reignite", parent=parent.id, metric=r.metric)
                if r.ok:  # the reignited net is the new parent, and its metric the new bar
                    parent = self._child_base(r)
                    self._accept(parent, generation=gen)
                stuck = 0
        bar.close()
        return parent

    def _accept(self, c: Candidate, generation: int) -> None:
        if self.journal.append_once("accepted", id=c.id, generation=generation, phase=c.phase, metric=c.metric, encoding=_code(c.arch)):
            self._log_accept(c)

    def _parallel(self, serial_best: Candidate) -> Candidate:
        p = self.cfg.parallel
        base = serial_best
        best = serial_best
        size = self._input_size()
        flops = stage_flops(base.arch, size)
        stuck = n = 0
        bar = tqdm(total=p.max_candidates, desc="parallel", disable=self.quiet)
        add = get_morphism("add_subnet")
        while stuck < p.n_stuck_p and n < p.max_candidates:
            self._check_rng(n, "parallel")
            cand = None
            for _ in range(self.cfg.search.max_tries):
                n_add = int(self.rng.integers(1, p.max_additions + 1))
                counts = sample_parallel_code(flops, [0] * len(flops), p.K, n_add, self.rng)
                arch, ops = base.arch, []
                for stage, k in enumerate(counts):
                    for _ in range(k):
                        arch = add.apply(arch, stage, self.rng, self.space)
                        ops.append({"rule": "add_subnet", "site": stage, "exact": True})
                if arch.fingerprint() not in self.seen:
                    cand = Candidate(f"p{n:03d}", "parallel", base.id, arch, ops, n)
                    break
            if cand is None:
                break
            self._propose(cand)
            self.toolbox.evaluate([cand])
            n += 1
            bar.update(1)
            if cand.ok and cand.metric > best.metric:
                best = self._child_base(cand)
                self._accept(best, generation=n)
                stuck = 0
            else:
                stuck += 1
        bar.close()
        return best

    # ------------------------------------------------------------------------------ reporting
    def _open_tb(self) -> None:
        from spnas.search.tb import TBLogger

        self.tb = TBLogger(self.out / "tb")

    def _log_candidate(self, c: Candidate) -> None:
        if self.tb is not None:
            best = max([x.metric for x in self.candidates.values() if x.ok], default=c.metric)
            self.tb.candidate(c, self._input_size(), best=best, step=len(self.journal.results))

    def _log_accept(self, c: Candidate) -> None:
        if self.tb is not None:
            self.tb.accepted(c)

    def _finish(self, best: Candidate, seconds: float) -> dict[str, Any]:
        size = self._input_size()
        best_dir = self.out / "best"
        if best_dir.exists():
            shutil.rmtree(best_dir)
        shutil.copytree(self.out / "candidates" / best.id / "trained", best_dir / "arch")
        head = load_file(str(self.out / "candidates" / best.id / HEAD_FILE))
        body = load_file(str(best_dir / "arch" / WEIGHTS_FILE))
        save_file(detector_state(body, head), str(best_dir / "detector.safetensors"))
        evaluated = [c for c in self.candidates.values() if c.result is not None]
        summary = {
            "best_id": best.id,
            "best_code": _code(best.arch),
            "best_metric": best.metric,
            "metric": self.cfg.search.metric,
            "start_code": _code(self.start.arch),
            "start_metric": self.start.metric,
            "improved": best.metric > self.start.metric,
            "gmacs": round(best.arch.flops(size) / 1e9, 4),
            "params_m": round(best.arch.params() / 1e6, 4),
            "candidates": len(evaluated),
            "failed": sum(1 for c in evaluated if not c.ok),
            "device_hours": {k: round(v / 3600, 5) for k, v in self.phase_seconds.items()},
            "wall_seconds": round(seconds, 1),
            "metrics": best.result.get("metrics", {}),
        }
        (best_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        self.journal.append_once("done", id=best.id, generation=None, phase=None, **{k: v for k, v in summary.items() if k not in ("wall_seconds", "device_hours")})
        if self.tb is not None:
            self.tb.finish(self.cfg, summary, list(self.candidates.values()), self.journal.events)
        return summary


def resolve_data(cfg: SearchConfig, out: Path) -> dict[str, Any]:
    """The data section as a plain request for the evaluators; writes the generated set if asked."""
    c = cfg.data
    if c.format == "shapes":
        from spnas.detect.data import generate_shapes

        root = cfg.path(c.root) if c.root else out / "data"
        tr = generate_shapes(root, n_images=c.n_train, size=c.size, seed=cfg.seed, split="train")
        va = generate_shapes(root, n_images=c.n_val, size=c.size, seed=cfg.seed + 1, split="val")
        return {"format": "shapes", "train": {"json": str(tr)}, "val": {"json": str(va)}, "strict": c.strict, "tile": c.tile}

    def res(d: dict[str, Any]) -> dict[str, Any]:
        return {k: str(cfg.path(v)) if isinstance(v, str) else v for k, v in d.items()}

    return {"format": c.format, "train": res(c.train), "val": res(c.val), "classes": list(c.classes), "strict": c.strict, "tile": c.tile}


def _code(arch: Arch) -> str:
    try:
        return arch.encode()
    except SpnasError:
        return "<custom>"


def _asdict(x: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(x)


def _with_weights(arch: Arch, path: Path) -> Arch:
    """Start weights: a torchvision checkpoint (weights_only) or an spnas safetensors store."""
    import torch

    from spnas.ir import from_torchvision

    if not path.is_file():
        raise ConfigError(f"start.weights: {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        new = arch.clone()
        tensors = load_file(str(path))
        if set(tensors) != set(new.weights):
            missing = sorted(set(new.weights) ^ set(tensors))[:1]
            raise ConfigError(f"start.weights: {path}: keys differ from the start architecture's (e.g. {missing})")
        new.weights = dict(tensors)
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
        raise ConfigError(f"start.weights: {path} holds {_code(imported)}, but start.code is {_code(arch)}")
    return imported
