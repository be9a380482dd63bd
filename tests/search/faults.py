"""Faults injected through the evaluator parameter (``Search(cfg, out, evaluate=...)``), for real worker processes.

Module-level functions, so spawned workers can import them; the real evaluation runs unless the
candidate's id is listed.
"""

from __future__ import annotations

import os

from spnas.search.evaluator import evaluate_candidate
from spnas.search.records import EvalRequest, EvalResult, Outcome

FAULTS = {"g001c0": "raise", "g001c1": "nan", "g002c0": "kill"}


def stopping_evaluate(req: EvalRequest) -> EvalResult:
    """Candidate g001c0's worker stops itself (SIGSTOP) the first time: a hung worker, not a dead one."""
    import signal

    marker = f"{req.dir}/stopped-once"
    if req.id == "g001c0" and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGSTOP)
    return evaluate_candidate(req)


def faulty_evaluate(req: EvalRequest) -> EvalResult:
    fault = FAULTS.get(req.id)
    if fault == "kill":  # the worker process dies mid-candidate, the first time only (a lost worker, not the candidate's fault)
        marker = f"{req.dir}/killed-once"
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)
    if fault == "raise":
        raise RuntimeError("injected fault")
    if fault == "nan":  # NaN weights: training meets a non-finite loss
        import torch

        from spnas.ir import load, save

        arch = load(f"{req.dir}/input")
        arch = arch.with_weights({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in arch.weights.items()})
        save(arch, f"{req.dir}/input")
    return evaluate_candidate(req)


def node_marking_evaluate(req: EvalRequest) -> EvalResult:
    """For the Ray cluster test: candidate g001c0's first attempt names its node in ``$SPNAS_TEST_MARKS`` and waits there,
    so the test can remove that node mid-candidate; a later attempt (on another node) evaluates at once."""
    import time

    marks = os.environ.get("SPNAS_TEST_MARKS")
    mark = os.path.join(marks, req.id) if marks else None
    if mark and req.id == "g001c0" and not os.path.exists(mark):
        import ray

        with open(mark + ".tmp", "w") as f:
            f.write(ray.get_runtime_context().get_node_id())
        os.replace(mark + ".tmp", mark)
        time.sleep(120)
    return evaluate_candidate(req)


class _StopsItself:
    """A data set whose loader worker stops itself (SIGSTOP) at the second item: a stopped worker runs no watchdog,
    so it outlives its killed parent unless it is killed too."""

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> int:
        import signal

        if i == 1:
            os.kill(os.getpid(), signal.SIGSTOP)
        return i


def hang_with_loader_worker(req: EvalRequest) -> EvalResult:
    """A candidate whose training hangs on a stopped DataLoader worker (a forked child, holding stderr)."""
    import torch
    from torch.utils.data import DataLoader

    for _ in DataLoader(_StopsItself(), batch_size=1, num_workers=1, multiprocessing_context="fork"):
        pass
    return EvalResult(req.id, Outcome.OK, metric=float(torch.zeros(1)))


def loader_killing_evaluate(req: EvalRequest) -> EvalResult:
    """The first attempt of each candidate named in ``$SPNAS_TEST_LOADER_KILLS`` (comma-separated ids)
    loses a DataLoader worker mid-candidate: a thread SIGKILLs the first child process of this
    evaluator once the training has started one, as the kernel's OOM killer does. A later attempt runs clean."""
    import threading

    wanted = set(filter(None, os.environ.get("SPNAS_TEST_LOADER_KILLS", "").split(",")))
    marker = f"{req.dir}/loader-killed-once"
    if req.id in wanted and not os.path.exists(marker):
        open(marker, "w").close()
        threading.Thread(target=_kill_first_child, daemon=True).start()
    return evaluate_candidate(req)


def _children(parent: int) -> list[tuple[int, bytes]]:
    """The child processes of ``parent`` with their command lines, in /proc's order."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                out.append((int(name), f.read()))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _kill_first_child(timeout: float = 300.0) -> None:
    import signal
    import time

    me, deadline = os.getpid(), time.time() + timeout
    while time.time() < deadline:
        for pid, cmd in _children(me):
            if b"resource_tracker" in cmd or b"forkserver" in cmd:  # multiprocessing's helpers, not a loader worker
                continue
            time.sleep(0.3)  # let it start serving batches: mid-epoch, not at its birth
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            return
        time.sleep(0.02)


def rank_killing_evaluate(req: EvalRequest) -> EvalResult:
    """Candidate g001c0 trains as several ranks; the first time, its last rank is SIGKILLed mid-candidate
    (a lost rank: the machine's failure, which the search retries)."""
    import threading

    marker = f"{req.dir}/rank-killed-once"
    if req.id == "g001c0" and "," in str(req.device) and not os.path.exists(marker):
        open(marker, "w").close()
        threading.Thread(target=_kill_last_rank, args=(os.getpid(), f"{req.dir}/rank-killed-pid"), daemon=True).start()
    return evaluate_candidate(req)


def _kill_last_rank(parent: int, note: str) -> None:
    """SIGKILL the newest spawned child of ``parent`` once two exist and have run a few seconds."""
    import signal
    import time

    deadline = time.time() + 300
    while time.time() < deadline:
        pids = sorted(pid for pid, cmd in _children(parent) if b"spawn_main" in cmd)
        if len(pids) >= 2:
            # a second in: alive for certain (a rank's imports alone take longer), whatever the machine's speed.
            # Six seconds (into the training) let a fast machine finish the candidate first: CI's did, and the
            # kill then hit a rank that had already exited
            time.sleep(1)
            with open(note, "w") as f:
                f.write(str(pids[-1]))
            os.kill(pids[-1], signal.SIGKILL)
            return
        time.sleep(0.1)
