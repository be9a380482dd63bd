"""Evaluating candidates: the one evaluation function, and the pools that run it.

:func:`evaluate_candidate` takes an :class:`~spnas.search.records.EvalRequest` (the candidate's
directory, the parent's head weights, the data request, the detector, the schedule, device, seed)
and returns an :class:`~spnas.search.records.EvalResult`; it never raises for a candidate's own
failure (an error or a non-finite loss comes back as a result of outcome ``candidate``). It is the
search's default ``evaluate``; any function of the same contract can stand in (``Search(cfg, out,
evaluate=fn)``: a fake one in tests, a faulty one to inject failures). Every pool has
``map(fn, requests, on_result=None)``, which returns the
results in request order and calls ``on_result(i, result)`` as each one finishes, so the search
journals a result the moment it exists. :class:`LocalPool` runs ``fn`` in worker processes, one
per device slot, spawned once (``fn`` must be importable: a module-level function); a worker that
dies is reported as a failed candidate and replaced. :class:`InlinePool` runs it in the search's
own process; :class:`RayPool` runs it as Ray tasks.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import hashlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import socket
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spnas.detect.datasets import load_datasets  # noqa: F401  (re-exported: the evaluators' data)
from spnas.rundir import RunDir
from spnas.search.records import EvalRequest, EvalResult, Outcome

__all__ = ["evaluate_candidate", "load_plugins", "pack_request", "run_portable", "unpack_result", "scratch_root", "failure", "detector_state", "HEAD_FILE", "LocalPool", "InlinePool", "RayPool", "make_pool", "candidate_seed"]

HEAD_FILE = "head.safetensors"  # a candidate's detector weights outside the backbone body
BODY = "backbone.body."


def candidate_seed(run_seed: int, cid: str) -> int:
    return (run_seed * 1_000_003 + zlib.crc32(cid.encode())) % (2**31)


def detector_state(weights: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """The whole detector's state dict: the body from an Arch's ``weights`` (IR keys), the rest from ``head``."""
    from spnas.detect.compile import module_key

    return {**head, **{BODY + module_key(k): v for k, v in weights.items()}}


# What the machine did, told by what happened (the error's text), not by a list of type names: torch raises an
# allocation failure as OutOfMemoryError, as a plain RuntimeError (the CPU allocator, cuDNN, cuBLAS), or as MemoryError;
# a DataLoader worker killed under the training (the OOM killer, a signal) as a RuntimeError of the loader.
_MACHINE_TEXT = (
    ("out of memory", "out of memory"),
    ("can't allocate memory", "out of memory"),  # DefaultCPUAllocator
    ("CUDNN_STATUS_ALLOC_FAILED", "out of memory"),
    ("CUBLAS_STATUS_ALLOC_FAILED", "out of memory"),
    ("CUDNN_STATUS_NOT_ENOUGH_WORKSPACE", "out of memory"),
    ("DataLoader worker", "data loader worker lost"),  # "... (pid N) is killed by signal" / "exited unexpectedly"
)


def machine_cause(e: BaseException | None) -> str | None:
    """The machine's failure ``e`` is (out of disk, out of memory, a lost loader worker), or None: the candidate's own."""
    if e is None:
        return None
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "out of disk"
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return "out of memory"
    if isinstance(e, (ConnectionResetError, BrokenPipeError, EOFError)) and _through_data_loader(e):
        return "data loader worker lost"  # a worker killed mid-send: the loader's queue reads a reset, not "killed by signal"
    if isinstance(e, RuntimeError):
        text = str(e)
        for needle, cause in _MACHINE_TEXT:
            if needle in text and not (needle == "DataLoader worker" and "killed by signal" not in text and "exited unexpectedly" not in text):
                return cause
    return None


def _through_data_loader(e: BaseException) -> bool:
    """Whether ``e`` was raised inside torch's DataLoader (reading from its workers)."""
    tb = e.__traceback__
    while tb is not None:
        if "torch/utils/data" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


def one_line(e: BaseException | None) -> str:
    """An exception as one line: a DataLoader worker's wrapped error as its original last line ("DataError: ..."),
    else the first line of the message, with the type unless it is spnas's own."""
    from spnas.errors import SpnasError

    text = str(e)
    if "Original Traceback" in text:  # torch's ExceptionWrapper: the worker's traceback, the error on its last line
        last = [ln.strip() for ln in text.splitlines() if ln.strip()][-1]
        return f"{last} (in a DataLoader worker)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if isinstance(e, SpnasError) else f"{type(e).__name__}: {first}"


def failure(req: EvalRequest, e: BaseException | None, seconds: float, *, kind: Outcome | None = None,
            reason: str | None = None) -> EvalResult:
    """A failed result. ``kind`` is :attr:`Outcome.CANDIDATE` (its own: it diverged, or its code raised) or
    :attr:`Outcome.MACHINE` (out of disk, out of memory, worker lost, timeout): a resume re-runs the
    machine's failures, bounded. Without ``kind``, the exception ``e`` tells which."""
    if kind is None:
        machine = machine_cause(e)
        if machine is not None:
            kind, cause = Outcome.MACHINE, machine
        else:
            kind, cause = Outcome.CANDIDATE, "diverged" if type(e).__name__ == "EvalError" else "error"
    else:
        cause = reason or kind.value
    return EvalResult.failure(req.id, kind, reason or one_line(e), cause, seconds)


def load_plugins(req: EvalRequest) -> None:
    """Import the search's plugin files (their node kinds and rules) in this worker, once per process."""
    from spnas.ops import load_plugin

    for path in req.plugins:
        load_plugin(path)


def evaluate_candidate(req: EvalRequest) -> EvalResult:
    """Train the candidate in ``req.dir`` with its schedule and measure it; see the module doc.

    ``req.device`` names one device, or several joined by commas (``cuda:0,cuda:1``, ``cpu,cpu``):
    then the candidate trains as that many ranks of DistributedDataParallel (:func:`evaluate_ranks`)."""
    t0 = time.perf_counter()
    devices = str(req.device or "cpu").split(",")
    if len(devices) > 1:
        return evaluate_ranks(req, devices, t0)
    try:
        return _evaluate(req, t0)
    except Exception as e:  # the candidate failed, not the search
        tb = traceback.format_exc(limit=6)
        try:
            (Path(req.dir) / "error.txt").write_text(tb)
        except OSError:
            pass
        return failure(req, e, time.perf_counter() - t0)


def evaluate_ranks(req: EvalRequest, devices: list[str], t0: float) -> EvalResult:
    """The candidate trained as ``len(devices)`` ranks of torch.distributed (NCCL on CUDA, gloo on the CPU):
    one spawned process per device, a free port on this machine for the rendezvous. Rank 0 writes the
    candidate's files and its result. A rank that dies (a signal, an exit without a result) is the
    machine's failure, and the other ranks are ended with it; a rank's own error is the candidate's."""
    from spnas.detect.distributed import free_port

    n, d = len(devices), Path(req.dir)
    outs = [d / f"rank{r}.json" for r in range(n)]
    for f in outs:
        f.unlink(missing_ok=True)
    threads = max(1, req.threads // n) if req.threads else 0
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, n, port, req.on(devices[r], threads), str(outs[r])))
             for r in range(n)]
    for p in procs:
        p.start()
    lost: str | None = None
    try:
        while any(p.is_alive() for p in procs):
            for r, p in enumerate(procs):
                if not p.is_alive() and (p.exitcode != 0 or not outs[r].is_file()):
                    lost = f"rank {r} of {n} lost (exit code {p.exitcode})"
                elif not p.is_alive() and not EvalResult.of(json.loads(outs[r].read_text())).ok:
                    lost = ""  # a rank failed on its own: the others wait in a collective for it forever
            if lost is not None:
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    results = [EvalResult.of(json.loads(f.read_text())) if f.is_file() else None for f in outs]
    own = [r for r in results if r is not None and not r.ok]
    if own:
        return own[0].with_seconds(time.perf_counter() - t0)
    if lost or results[0] is None:
        return failure(req, None, time.perf_counter() - t0, kind=Outcome.MACHINE, reason=lost or "rank 0 wrote no result")
    return results[0]


def _rank_main(rank: int, ranks: int, port: int, req: EvalRequest, out: str) -> None:
    """One rank of a data-parallel candidate: join the group, train (rank 0 writes the files), write its result."""
    import torch

    from spnas.detect.distributed import process_group

    dev = str(req.device)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
    t0 = time.perf_counter()
    try:
        with process_group(rank, ranks, f"127.0.0.1:{port}", dev):
            res = _evaluate(req, t0)
    except Exception as e:
        if rank == 0:
            try:
                (Path(req.dir) / "error.txt").write_text(traceback.format_exc(limit=6))
            except OSError:
                pass
        res = failure(req, e, time.perf_counter() - t0)
    tmp = Path(out + ".tmp")
    tmp.write_text(json.dumps(res.as_dict()))
    os.replace(tmp, out)


def _evaluate(req: EvalRequest, t0: float) -> EvalResult:
    import torch
    from safetensors.torch import load_file

    from spnas.detect import lift
    from spnas.detect.detector import build_detector, carry_over
    from spnas.detect.distributed import describe, world
    from spnas.detect.train import train_detector
    from spnas.errors import EvalError
    from spnas.ir import load, save
    from spnas.ir.io import sha256_file, write_tensors

    if req.threads:
        torch.set_num_threads(req.threads)
    load_plugins(req)
    d = Path(req.dir)
    seed = req.seed
    torch.manual_seed(seed)
    arch = load(d / "input")
    train_ds, val_ds = load_datasets(dict(req.data))
    if req.reignite:
        from spnas.detect.pretrain import reignite

        arch = reignite(arch, dict(req.reignite), device=req.device, seed=seed)
    model = build_detector(arch, train_ds.num_classes, req.detector.head, **req.detector.build_kwargs())
    if req.parent_head:
        carry_over(load_file(req.parent_head), model)
    cfg = req.train.for_inherited() if req.inherits else req.train  # a morphed child, a continued parent, a noise run
    res = train_detector(model, train_ds, val_ds, cfg, device=req.device, quiet=True)
    rank, ranks = world()
    training = describe(ranks, cfg.batch_size, cfg.accumulate, model.spnas_options.norm)
    if rank != 0:  # rank 0 measures and writes the candidate's files
        return EvalResult(req.id, Outcome.OK, rank=rank)
    metric = res.metrics.get(req.metric)
    if metric is None or metric != metric:
        raise EvalError(f"metric {req.metric!r} is missing or NaN: {res.metrics}")
    trained = lift(arch, model.backbone.body)
    save(trained, d / "trained")
    # the body's weights are in trained/; the head file holds the rest (what a child carries over)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if not k.startswith(BODY)}
    write_tensors(state, d / (HEAD_FILE + ".tmp"))
    os.replace(d / (HEAD_FILE + ".tmp"), d / HEAD_FILE)  # a new file: best/top/ may hold a hard link to the old one
    out = EvalResult(
        req.id, Outcome.OK,
        metric=float(metric),
        metrics={k: round(float(v), 6) for k, v in res.metrics.items()},
        loss=round(float(res.history[-1]["loss"]), 6) if res.history else None,
        iterations=res.iterations,
        curve=res.curve,  # the loss and learning rate along the training: TensorBoard's per-candidate curves
        training=training,  # ranks, batch per device, accumulation, normalisation
        seconds=round(time.perf_counter() - t0, 3),
        weights=str((d / "trained" / "weights.safetensors").relative_to(d.parent.parent)),
        sha256=sha256_file(d / "trained" / "weights.safetensors"),
    )
    tmp = d / "metrics.json.tmp"  # whole or absent: a kill mid-write never leaves a half file that reads as a result
    tmp.write_text(json.dumps(out.as_dict(), indent=1))
    os.replace(tmp, d / "metrics.json")
    return out


# --------------------------------------------------------------------------------------- pools
def _orphan_watchdog(parent: int) -> None:
    """End this worker when the search process is gone (killed), so no orphan keeps writing."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


Evaluate = Callable[[EvalRequest], EvalResult]


def _call(fn: Evaluate, req: EvalRequest) -> EvalResult:
    """``fn(req)`` as a record, with an exception turned into the candidate's failure (the search goes on)."""
    t0 = time.perf_counter()
    try:
        return EvalResult.of(fn(req))
    except Exception as e:
        return failure(req, e, time.perf_counter() - t0)


def _kill_tree(p: Any) -> None:
    """End a worker and every process it started (its process group: DataLoader workers fork into it)."""
    import signal

    if p.pid is not None:
        try:
            if os.getpgid(p.pid) == p.pid:  # a group of its own (set when the worker started)
                os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
    if p.is_alive():
        p.kill()
    p.join()


def _worker(fn: Callable, device: str, threads: int, tasks: mp.Queue, results: mp.Queue) -> None:
    import threading

    try:
        os.setpgid(0, 0)  # its own process group, so the pool can end it with all its children
    except OSError:
        pass
    threading.Thread(target=_orphan_watchdog, args=(os.getppid(),), daemon=True).start()
    while True:
        item = tasks.get()
        if item is None:
            return
        tid, req = item
        results.put((tid, _call(fn, req.on(device, threads))))


OnResult = Callable[[int, EvalResult], None] | None


class InlinePool:
    """Runs ``fn`` in the calling process, one request after another (``workers.backend: inline``)."""

    def __init__(self, devices: list[str], *, threads: int = 0) -> None:
        self.device = devices[0]
        self.threads = threads

    def map(self, fn: Evaluate, requests: list[EvalRequest], on_result: OnResult = None) -> list[EvalResult]:
        out = []
        for i, r in enumerate(requests):
            res = _call(fn, r.on(self.device, self.threads))
            if on_result is not None:
                on_result(i, res)
            out.append(res)
        return out

    def close(self) -> None:
        pass


class LocalPool:
    """Worker processes, one per device slot, spawned once; ``map`` keeps the request order."""

    def __init__(self, devices: list[str], *, threads: int = 0, timeout_s: float = 0.0) -> None:
        self.devices = list(devices)
        # per slot; a slot of N devices shares its threads among its N ranks
        self.threads = threads or max(1, (os.cpu_count() or 1) // len(self.devices))
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._results: mp.Queue = self._ctx.Queue()
        self._procs: list[Any] = [None] * len(self.devices)
        self._tasks: list[Any] = [None] * len(self.devices)
        self._fn: Callable | None = None
        atexit.register(self.close)  # before multiprocessing's own exit handler, which would wait on the workers

    def _spawn(self, i: int) -> None:
        self._tasks[i] = self._ctx.Queue()
        # not daemonic: an evaluator starts DataLoader worker processes of its own (a daemonic process may have
        # no children); close() and the orphan watchdog end it instead
        p = self._ctx.Process(target=_worker, args=(self._fn, self.devices[i], self.threads, self._tasks[i], self._results))
        p.start()
        self._procs[i] = p

    def map(self, fn: Evaluate, requests: list[EvalRequest], on_result: OnResult = None) -> list[EvalResult]:
        if fn is not self._fn:  # workers are spawned once per evaluation function
            self.close()
            self._fn = fn
            for i in range(len(self.devices)):
                self._spawn(i)
        out: list[EvalResult | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        busy: dict[int, tuple[int, float]] = {}  # worker -> (request index, start time)
        while pending or busy:
            for w in range(len(self._procs)):
                if w not in busy and pending:
                    r = pending.pop(0)
                    self._tasks[w].put((r, requests[r]))
                    busy[w] = (r, time.time())
            try:
                r, res = self._results.get(timeout=0.5)
                out[r] = res
                for w, (rr, _) in list(busy.items()):
                    if rr == r:
                        del busy[w]
                if on_result is not None:
                    on_result(r, res)
                continue
            except queue.Empty:
                pass
            for w, (r, started) in list(busy.items()):
                p = self._procs[w]
                timed_out = self.timeout_s and time.time() - started > self.timeout_s
                if not p.is_alive() or timed_out:
                    _kill_tree(p)  # its DataLoader workers too: they hold the search's stderr open (`| tee` never ends)
                    reason = f"timed out after {self.timeout_s:.0f} s" if timed_out else f"worker process died (exit code {p.exitcode})"
                    out[r] = failure(requests[r], None, time.time() - started, kind=Outcome.MACHINE, reason=reason)
                    del busy[w]
                    self._spawn(w)
                    if on_result is not None:
                        on_result(r, out[r])
        return out  # type: ignore[return-value]

    def close(self) -> None:
        for q in self._tasks:
            try:
                if q is not None:
                    q.put(None)
            except (OSError, ValueError):
                pass
        for p in self._procs:
            if p is None:
                continue
            p.join(timeout=5)
            _kill_tree(p)
        self._procs = [None] * len(self.devices)
        self._tasks = [None] * len(self.devices)


# ------------------------------------------------------------------------- Ray: portable candidates
# What a candidate reads and writes in its directory. Over the object store these files travel as bytes:
# the driver packs the inputs, a worker unpacks them into its own scratch directory, evaluates, and returns
# the outputs; the driver alone writes the run directory.
_INPUTS = ("input/arch.yaml", "input/weights.safetensors")
_OUTPUTS = ("trained/arch.yaml", "trained/weights.safetensors", HEAD_FILE, "metrics.json", "error.txt")


def pack_request(req: EvalRequest) -> dict[str, Any]:
    """The bytes a worker without the run directory needs: the input net, the parent's head, the plugins' source."""
    d = Path(req.dir)
    files = {name: (d / name).read_bytes() for name in _INPUTS}
    head = Path(req.parent_head).read_bytes() if req.parent_head else None
    plugins = {Path(p).name: Path(p).read_text() for p in req.plugins}
    return {"files": files, "parent_head": head, "plugins": plugins}


def scratch_root() -> Path:
    """Where a worker unpacks candidates and generates data: ``SPNAS_SCRATCH``, else the system's temp dir."""
    return Path(os.environ.get("SPNAS_SCRATCH") or tempfile.gettempdir()) / "spnas-worker"


def _portable_data(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """The data request as this worker can read it: a generated set is made here (the same bytes: it is seeded)."""
    gen = data.get("generate")
    if not gen:
        for split in ("train", "val"):  # a user's data must be at the same path on every node (say so, not "candidate failed")
            for key in ("json", "xml", "labels", "images"):
                path = (data.get(split) or {}).get(key)
                if path and not Path(path).exists():
                    raise _NodeCannotRead(f"data.{split}.{key}: {path} is not readable on this node "
                                          f"({socket.gethostname()}); every node needs the data at the same path")
        return data
    from spnas.detect.data import generate_shapes

    key = hashlib.sha256(json.dumps(gen, sort_keys=True).encode()).hexdigest()[:12]
    out = dict(data)
    for split in ("train", "val"):
        g = gen[split]
        with _lock_file(root / f"data-{key}.lock"):
            path = generate_shapes(root / f"data-{key}", n_images=g["n_images"], size=g["size"], seed=g["seed"], split=split)
        out[split] = {"json": str(path)}
    return out


class _NodeCannotRead(OSError):
    """The node lacks something the search needs (data, not the candidate): a machine failure."""


@contextlib.contextmanager
def _lock_file(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


Portable = tuple[EvalResult, dict[str, bytes]]  # a result and the candidate's output files, as bytes


def run_portable(fn: Evaluate, req: EvalRequest, payload: dict[str, Any]) -> Portable:
    """Evaluate a packed candidate in this worker's scratch directory; return the result and the output files as bytes."""
    t0 = time.perf_counter()
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{req.id}-", dir=root))
    try:
        d = RunDir(work).candidate(req.id)  # the run directory's layout, in scratch
        for name, data in payload["files"].items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
        head = None
        if payload.get("parent_head") is not None:
            head = work / "parent-head.safetensors"
            head.write_bytes(payload["parent_head"])
        plugins = []
        for name, text in (payload.get("plugins") or {}).items():
            p = root / "plugins" / hashlib.sha256(text.encode()).hexdigest()[:12] / name
            if not p.is_file():
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
            plugins.append(str(p))
        try:
            local = dataclasses.replace(req, dir=str(d), parent_head=str(head) if head else None, plugins=tuple(plugins),
                                        data=_portable_data(dict(req.data), root))
        except _NodeCannotRead as e:
            return failure(req, e, time.perf_counter() - t0, kind=Outcome.MACHINE, reason=str(e)), {}
        res = _call(fn, local)
        return res, {name: (d / name).read_bytes() for name in _OUTPUTS if (d / name).is_file()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ray_call(fn: Evaluate, req: EvalRequest, payload: list[Any] | None) -> Portable:
    """A Ray task's body. ``payload`` is ``[ObjectRef]``: fetched here with ``ray.get``, not as a task argument
    (a nested reference is no dependency the raylet pins for the task: see RayPool). Without one
    (``transport: files``) the worker wrote the run directory itself: no files come back."""
    if payload is None:
        return _call(fn, req), {}
    import ray

    return run_portable(fn, req, ray.get(payload[0]))


def _ray_rendezvous() -> tuple[str, int]:
    """Run in a data-parallel candidate's first bundle: this node's address and a free port for rank 0."""
    import ray

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("", 0))
    port = s.getsockname()[1]
    s.close()
    return ray.util.get_node_ip_address(), int(port)


def _ray_rank(fn: Evaluate, req: EvalRequest, payload: list[Any] | None, rank: int, ranks: int, addr: str) -> Portable:
    """One rank of a data-parallel candidate on Ray: join the process group, evaluate (rank 0 returns the files)."""
    from spnas.detect.distributed import process_group

    device = str(req.device)
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(0)  # Ray gives each rank one GPU (CUDA_VISIBLE_DEVICES)
    with process_group(rank, ranks, addr, device):
        return _ray_call(fn, req, payload)


def _ray_ranks(fn: Evaluate, req: EvalRequest, payload: list[Any] | None, ranks: int, bundle: dict[str, float],
               rank_options: dict[str, Any]) -> Portable:
    """A candidate on ``ranks`` devices through Ray's own machinery: a placement group of one bundle per rank
    (packed onto as few nodes as fit), a rendezvous address from the first bundle's node, one task per rank.
    A rank lost (its worker or node) is the machine's failure: the other ranks are cancelled."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    t0 = time.perf_counter()
    pg = placement_group([dict(bundle) for _ in range(ranks)], strategy="PACK")
    try:
        ray.get(pg.ready())
        at = [PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r) for r in range(ranks)]
        ip, port = ray.get(ray.remote(num_cpus=0, max_retries=0)(_ray_rendezvous).options(scheduling_strategy=at[0]).remote())
        task = ray.remote(max_retries=0, **rank_options)(_ray_rank)
        refs = [task.options(scheduling_strategy=at[r]).remote(fn, req, payload, r, ranks, f"{ip}:{port}") for r in range(ranks)]
        results: dict[int, Portable] = {}
        while len(results) < ranks:
            ready, _ = ray.wait([x for i, x in enumerate(refs) if i not in results], num_returns=1)
            r = refs.index(ready[0])
            try:
                results[r] = ray.get(ready[0])
            except Exception as e:  # the rank's worker or node was lost
                results[r] = failure(req, None, time.perf_counter() - t0, kind=Outcome.MACHINE,
                                     reason=f"rank {r} of {ranks} lost: {type(e).__name__}"), {}
            if not results[r][0].ok:  # the others wait for it in a collective: end them
                for x in refs:
                    ray.cancel(x, force=True)
                return results[r][0].with_seconds(time.perf_counter() - t0), {}
        return results[0]
    finally:
        remove_placement_group(pg)


def unpack_result(req: EvalRequest, portable: Portable) -> EvalResult:
    """Write a portable result's files into the candidate's directory (each file whole: tmp + rename); return the result."""
    res, files = portable
    d = Path(req.dir)
    for name, data in files.items():
        dst = d / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dst)  # a new file: best/top/ may hold a hard link to the old one
    return res


class RayPool:
    """Candidates as Ray tasks (``workers.backend: ray``): one GPU each (``gpus_per_task``) or ``threads`` CPUs.

    ``transport: object_store`` (default) sends each candidate's input net and parent head as bytes
    through Ray's object store and gets the trained net and head back the same way, so workers need
    no shared file system and only the driver writes the run directory. ``files`` hands workers
    paths into the run directory (every node must mount it at the same path). At most ``slots``
    candidates are in flight; results are taken as they complete (``ray.wait``); a task past
    ``timeout_s`` is cancelled. A task whose worker or node is lost comes back as a *machine*
    failure (Ray's own retries are off), which the search retries, bounded by ``workers.retries``,
    and journals.
    """

    def __init__(self, devices: list[str], *, threads: int = 0, address: str | None = None, gpus_per_task: float = 1.0,
                 transport: str = "object_store", timeout_s: float = 0.0, runtime_env: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError:
            from spnas.errors import ConfigError

            raise ConfigError("workers.backend: ray needs the 'ray' package: pip install 'spnas[cluster]'") from None
        self.ray = ray
        if not ray.is_initialized():  # an address (or RAY_ADDRESS) names a running cluster; without one a local one starts
            # runtime_env: what Ray sets up on every node for this job (pip packages such as spnas and torch, env_vars)
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True, runtime_env=dict(runtime_env) if runtime_env else None)
        self.slots = len(devices)
        self.gpu = any(d.startswith("cuda") for d in devices)
        self.threads = threads or 1
        self.transport = transport
        self.timeout_s = timeout_s
        opts = {"num_gpus": gpus_per_task, "num_cpus": 1} if self.gpu else {"num_cpus": self.threads}
        self._task = ray.remote(max_retries=0, **opts)(_ray_call)
        # a slot of N devices: N ranks, each in its own bundle of a placement group (see _ray_ranks)
        self.ranks = len(devices[0].split(",")) if devices else 1
        self._bundle = {"GPU": gpus_per_task, "CPU": 1} if self.gpu else {"CPU": self.threads}
        self._rank_options = opts
        self._ranks_task = ray.remote(num_cpus=0, max_retries=0)(_ray_ranks)

    def _submit(self, fn: Evaluate, req: EvalRequest) -> Any:
        device = "cuda" if self.gpu else "cpu"
        # The payload travels as a reference inside a list, which the task fetches itself. As a plain argument,
        # the raylet would pin it for the task's lease, and a driver killed mid-candidate leaks those pins
        # (ray-project/ray#64627: the lease cleanup of a worker killed because its owner died is skipped), until
        # the node's pull budget reaches zero and no candidate's input can reach it: a resumed search stalled so.
        payload = [self.ray.put(pack_request(req))] if self.transport == "object_store" else None
        if self.ranks > 1:
            return self._ranks_task.remote(fn, req.on(device, self.threads), payload, self.ranks, self._bundle, self._rank_options)
        return self._task.remote(fn, req.on(device, self.threads), payload)

    def map(self, fn: Evaluate, requests: list[EvalRequest], on_result: OnResult = None) -> list[EvalResult]:
        from ray.exceptions import RayTaskError

        out: list[EvalResult | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        inflight: dict[Any, tuple[int, float]] = {}
        while pending or inflight:
            while pending and len(inflight) < self.slots:
                i = pending.pop(0)
                inflight[self._submit(fn, requests[i])] = (i, time.time())
            ready, _ = self.ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                i, started = inflight.pop(ref)
                try:
                    res = unpack_result(requests[i], self.ray.get(ref))
                except RayTaskError as e:  # the evaluation function itself could not run (it catches its own errors)
                    res = failure(requests[i], None, time.time() - started, kind=Outcome.CANDIDATE, reason=f"ray task raised: {e}")
                except Exception as e:  # the worker, its node or the result object was lost: the machine's failure
                    res = failure(requests[i], None, time.time() - started, kind=Outcome.MACHINE,
                                  reason=f"ray task lost: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
                out[i] = res
                if on_result is not None:
                    on_result(i, res)
            for ref, (i, started) in list(inflight.items()):
                if self.timeout_s and time.time() - started > self.timeout_s:
                    self.ray.cancel(ref, force=True)
                    del inflight[ref]
                    out[i] = failure(requests[i], None, time.time() - started, kind=Outcome.MACHINE,
                                     reason=f"timed out after {self.timeout_s:.0f} s")
                    if on_result is not None:
                        on_result(i, out[i])
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.ray.shutdown()


def make_pool(backend: str, devices: list[str], n: int, threads: int, timeout_s: float = 0.0, *, address: str | None = None,
              gpus_per_task: float = 1.0, transport: str = "object_store", runtime_env: dict[str, Any] | None = None,
              devices_per_candidate: int = 1):  # timeout 0: none
    """``n`` slots over ``devices`` (round-robin): local processes, the search's own process, or Ray. With
    ``devices_per_candidate`` N > 1 a slot is N devices (joined by commas): its candidate trains as N ranks."""
    k = devices_per_candidate
    slots = [",".join(devices[(i * k + j) % len(devices)] for j in range(k)) for i in range(n)]
    if backend == "ray":
        return RayPool(slots, threads=threads, address=address, gpus_per_task=gpus_per_task, transport=transport, timeout_s=timeout_s,
                       runtime_env=runtime_env)
    if backend == "inline":
        return InlinePool(slots, threads=threads)
    return LocalPool(slots, threads=threads, timeout_s=timeout_s)
