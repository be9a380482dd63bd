"""The search on a multi-node Ray cluster simulated on this machine (``ray.cluster_utils.Cluster``).

Each worker node has its own scratch directory (``SPNAS_SCRATCH``); candidates travel through Ray's
object store. Slow (about a minute each): run with ``pytest -m slow tests/search/test_ray_cluster.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tests.procs import kill_group
from tests.search.test_search import ROOT, TINY, journal, run_search

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
ENV = {"RAY_ADDRESS": "", "RAY_DISABLE_USAGE_STATS": "1"}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head runs no candidate
    nodes = []
    for i in range(2):
        env = {"SPNAS_SCRATCH": str(tmp_path / f"node{i}"), "SPNAS_TEST_MARKS": str(tmp_path / "marks")}
        nodes.append(c.add_node(num_cpus=1, env_vars=env))
    (tmp_path / "marks").mkdir()
    c.wait_for_nodes()
    yield c, nodes
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    run_search(out, "--workers", "2")
    return out


def _sorted(events):
    return sorted(json.dumps(e, sort_keys=True) for e in events)


def _decisions(events):
    return [(e["event"], e["id"]) for e in events if e["event"] in ("accepted", "rejected", "best", "done")]


def test_cluster_without_the_run_directory_writes_the_local_journal(cluster, local, tmp_path):
    """Workers cannot see the run directory at all: it is a tmpfs mounted in the driver's own mount namespace."""
    c, _ = cluster
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -m) to hide the run directory from the workers")
    hidden, copy = tmp_path / "hidden", tmp_path / "copy"
    hidden.mkdir()
    script = ('mount -t tmpfs -o size=1g spnas-run "$0" || exit 97; '
              '"$1" -m spnas.search --ir "$2" --out "$0/run" --quiet --backend ray --address "$3" --workers 2; rc=$?; '
              'cp -a "$0/run" "$4"; exit $rc')
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(hidden), sys.executable, str(TINY),
                        c.address, str(copy)], cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **ENV})
    if p.returncode == 97:
        pytest.skip("mounting a tmpfs was refused")
    assert p.returncode == 0, p.stderr[-3000:]
    assert not any(hidden.iterdir())  # what the workers see where the run directory is: nothing
    got, want = journal(copy), journal(local)
    assert _sorted(got) == _sorted(want)  # the same events (completion order may differ with 2 in flight)
    assert _decisions(got) == _decisions(want)
    for i in range(2):  # every node worked in its own scratch directory, and left no candidate behind
        scratch = tmp_path / f"node{i}" / "spnas-worker"
        assert any(scratch.glob("data-*/train-*.json")), f"node {i} ran no candidate"
        assert not [p for p in scratch.iterdir() if p.name.startswith(("g0", "start", "r", "p0"))]


def test_a_lost_node_mid_candidate_is_retried_on_another(cluster, local, tmp_path):
    from spnas.search import Search, load_config
    from tests.search.faults import node_marking_evaluate

    c, nodes = cluster
    cfg = load_config(TINY).replace(workers={"backend": "ray", "address": c.address, "n": 2})
    out = tmp_path / "run"
    s = Search(cfg, out, evaluate=node_marking_evaluate, quiet=True, tensorboard=False)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(summary=s.run()), daemon=True)
    t.start()
    mark = tmp_path / "marks" / "g001c0"
    deadline = time.time() + 600
    while not mark.exists() and time.time() < deadline and t.is_alive():
        time.sleep(0.2)
    assert mark.exists(), "candidate g001c0 never started"
    node_id = mark.read_text()
    lost = [n for n in nodes if n.node_id == node_id]
    assert len(lost) == 1
    c.remove_node(lost[0], allow_graceful=False)  # the machine goes away in the middle of the candidate
    t.join(timeout=900)
    assert not t.is_alive() and result.get("summary"), "the search did not complete"
    events = journal(out)
    failed = [e for e in events if e["event"] == "failed"]
    assert [(e["id"], e["kind"]) for e in failed] == [("g001c0", "machine")] and "NodeDiedError" in failed[0]["reason"]
    assert [e["id"] for e in events if e["event"] == "retried"] == ["g001c0"]
    evaluated = [e["id"] for e in events if e["event"] == "evaluated"]
    assert len(evaluated) == len(set(evaluated))  # nothing evaluated twice
    clean = [e for e in events if e["event"] not in ("failed", "retried")]
    assert _sorted(clean) == _sorted(journal(local))  # nothing lost: the decisions of the run without the fault
    assert _decisions(events) == _decisions(journal(local))


def test_a_killed_driver_resumes_on_the_same_cluster(tmp_path, local, monkeypatch):
    """SIGKILL the driver with candidates in flight, then resume on the same cluster (small object stores, so
    leaked pins of the killed driver's task arguments would exhaust them: ray-project/ray#64627)."""
    from ray.cluster_utils import Cluster

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    store = 100 * 1024 * 1024
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": store})
    try:
        for i in range(2):
            c.add_node(num_cpus=1, object_store_memory=store, env_vars={"SPNAS_SCRATCH": str(tmp_path / f"node{i}")})
        c.wait_for_nodes()
        out = tmp_path / "run"
        cfg = tmp_path / "tiny.yaml"  # a stalled candidate times out in 2 minutes, not the automatic 10
        cfg.write_text(TINY.read_text().replace("  threads: 1", "  threads: 1\n  timeout_s: 120"))
        cmd = [sys.executable, "-m", "spnas.search", "--ir", str(cfg), "--out", str(out), "--quiet", "--backend", "ray",
               "--address", c.address, "--workers", "2"]
        env = {**os.environ, **ENV}
        first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None:
            done = [e for e in journal(out) if e["event"] == "evaluated"] if (out / "journal.jsonl").exists() else []
            proposed = [e for e in journal(out) if e["event"] == "proposed"] if done else []
            if len(done) >= 3 and len(proposed) > len(done):  # candidates in flight
                break
            time.sleep(0.2)
        assert first.poll() is None, "the first driver ended before it could be killed"
        kill_group(first.pid)
        first.wait()
        p = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert p.returncode == 0, p.stderr[-3000:]
        events = journal(out)
        assert not [e for e in events if e["event"] in ("failed", "retried")], [e for e in events if e["event"] in ("failed", "retried")]
        evaluated = [e["id"] for e in events if e["event"] == "evaluated"]
        assert len(evaluated) == len(set(evaluated))  # nothing journaled was trained again
        assert _decisions(events) == _decisions(journal(local))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def test_workers_runtime_env_reaches_every_task(tmp_path):
    """Issue 27, item 7: workers.runtime_env is Ray's runtime_env for the search's job (here env_vars; on a real
    cluster, pip packages such as spnas and torch), so nodes need not be set up by hand."""
    import ray

    from spnas.search.config import config_from_dict
    from spnas.search.evaluator import make_pool

    w = config_from_dict({"workers": {"backend": "ray", "runtime_env": {"env_vars": {"SPNAS_RUNTIME_ENV_TEST": "on every node"}}}}).workers
    if ray.is_initialized():
        ray.shutdown()
    pool = make_pool(w.backend, list(w.devices), w.n, w.threads, runtime_env=w.runtime_env)
    try:
        @ray.remote(num_cpus=0.1)
        def read() -> str | None:
            return os.environ.get("SPNAS_RUNTIME_ENV_TEST")

        assert ray.get(read.remote(), timeout=300) == "on every node"
    finally:
        pool.close()
        ray.shutdown()


def test_a_two_rank_candidate_across_two_nodes(cluster, tmp_path):
    """Issue 26: each candidate trains as 2 ranks in a Ray placement group of 2 bundles of 1 CPU; each node has
    1 CPU, so the ranks run on two nodes (gloo over TCP between them). The decisions and the first
    generation's metrics are those of one local rank with the doubled batch."""
    from spnas.search import Search, config_from_dict
    from tests.search.test_loop import events, of
    from tests.search.test_ranks import config, decisions, start_net

    c, _ = cluster
    net = start_net(tmp_path)
    one = config(net, 1, 4).to_dict()
    one["search"]["max_generations"] = 1
    Search(config_from_dict(one), tmp_path / "one", quiet=True, tensorboard=False).run()
    two = config(net, 2, 2).to_dict()
    two["search"]["max_generations"] = 1
    two["workers"].update(backend="ray", address=c.address, threads=1)
    Search(config_from_dict(two), tmp_path / "two", quiet=True, tensorboard=False).run()
    ref, evs = events(tmp_path / "one"), events(tmp_path / "two")
    assert decisions(evs) == decisions(ref)
    metric = {e["id"]: e["metric"] for e in of(ref, "evaluated")}
    for e in of(evs, "evaluated"):
        assert e["training"]["ranks"] == 2 and e["training"]["global_batch"] == 4
        assert e["metric"] == pytest.approx(metric[e["id"]], abs=1e-6), e["id"]

