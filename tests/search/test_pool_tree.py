"""A timed-out candidate ends with all its processes: its DataLoader workers held the search's stderr open, so
`spnas search ... | tee` never returned (a timed-out evaluator was killed alone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_timed_out_candidate_leaves_no_process_holding_the_output(tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from spnas.detect.detector import resolve_options
        from spnas.detect.train import FAST
        from spnas.search.evaluator import LocalPool
        from spnas.search.records import DetectorSpec, EvalRequest
        from tests.search.faults import hang_with_loader_worker
        pool = LocalPool(["cpu"], threads=1, timeout_s=8)
        req = EvalRequest(id="g001c0", dir={str(tmp_path)!r}, data={{}}, detector=DetectorSpec("faster", resolve_options("lean")),
                          train=FAST, metric="AP")
        res = pool.map(hang_with_loader_worker, [req])
        pool.close()
        print(json.dumps([r.as_dict() for r in res]))
    """)
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=120)  # EOF on both pipes: nothing the pool started outlives it
    finally:  # a failed run leaves a stopped loader worker behind: end the whole session
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    res = json.loads(out.strip().splitlines()[-1])
    assert res[0]["kind"] == "machine" and "timed out" in res[0]["reason"], (res, err[-2000:])
