"""Failures go to the right party, told by what happened: real faults, not names of types.

A CPU allocation refused under a memory limit and a DataLoader worker killed under the training are
the machine's failures (retried, never deciding anything); they were counted as the candidate's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from spnas.search.records import Outcome

ROOT = Path(__file__).resolve().parents[2]


def run_in_child(body: str) -> dict:
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from types import SimpleNamespace
        from spnas.search.evaluator import _call
        {textwrap.indent(textwrap.dedent(body), '        ').strip()}
        print(json.dumps(_call(fn, SimpleNamespace(id="g001c0")).as_dict()))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux's")
def test_a_real_cpu_out_of_memory_is_the_machines():
    r = run_in_child("""
        import resource, torch
        torch.zeros(1)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), hard))
        def fn(req):
            return torch.ones(4 << 30, dtype=torch.uint8)  # 4 GiB under a 512 MiB allowance: the allocator refuses
    """)
    assert r["status"] == "failed" and r["kind"] == "machine" and r["cause"] == "out of memory", r
    assert "allocate" in r["reason"] or "memory" in r["reason"]


def test_a_killed_data_loader_worker_is_the_machines():
    r = run_in_child("""
        import os, signal, torch
        from torch.utils.data import DataLoader, Dataset
        class Deadly(Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                if i == 3:
                    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does to a loader worker
                return torch.zeros(2)
        def fn(req):
            for _ in DataLoader(Deadly(), batch_size=1, num_workers=1):
                pass
    """)
    assert r["status"] == "failed" and r["kind"] == "machine" and r["cause"] == "data loader worker lost", r


def test_the_candidates_own_errors_stay_its_own():
    from spnas.errors import EvalError
    from spnas.search.evaluator import failure, machine_cause

    assert machine_cause(EvalError("non-finite loss at epoch 1")) is None
    assert machine_cause(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert machine_cause(RuntimeError("DataLoader worker raised ValueError: bad box")) is None  # the data's, not the machine's
    req = SimpleNamespace(id="x")  # a failure reads only the request's id
    assert failure(req, RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), 0.0).outcome is Outcome.MACHINE
    assert failure(req, RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), 0.0).cause == "out of memory"
    assert failure(req, EvalError("non-finite loss at epoch 1"), 0.0).outcome is Outcome.CANDIDATE


def test_a_connection_reset_read_from_the_data_loader_is_the_machines():
    """A loader worker killed while it sends a batch can reach the training loop as a bare
    ConnectionResetError (torch re-raises it when the dead worker is not yet seen dead); found under load
    by test_a_killed_data_loader_worker_is_the_machines, which it made count as the candidate's failure."""
    from torch.utils.data import DataLoader, Dataset

    from spnas.search.evaluator import machine_cause

    class Reset(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(ConnectionResetError) as info:
        next(iter(DataLoader(Reset(), batch_size=1)))
    assert machine_cause(info.value) == "data loader worker lost"
    try:
        raise ConnectionResetError(104, "Connection reset by peer")  # the candidate's own code, outside the loader
    except ConnectionResetError as e:
        assert machine_cause(e) is None
