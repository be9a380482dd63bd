"""The proxy study's shipped table (benchmarks/tables/proxy_trees_quick.json) read back: real nets, consistent figures.

The table is the study's result on the real tree data (benchmarks/proxy.py): a small benchmark of the
search space that later policies can replay without training. These checks hold for a table that is
still growing (its long measurement runs in resumable chunks) as for a finished one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import proxy
from spnas.ops import Space

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "proxy_trees_quick.json"


@pytest.fixture(scope="module")
def table():
    return json.loads(TABLE.read_text())


def test_at_least_30_real_nets_of_the_search_space(table):
    nets = table["nets"]
    assert len(nets) >= 30 and len({n["code"] for n in nets}) == len(nets)
    names = {n["name"]: n for n in nets}
    image = 256
    sp = Space(**table["space"])
    for n in nets:
        arch = proxy.replay(table["start"]["code"], names, n["name"], sp)  # the walk rebuilds the recorded architecture
        assert arch.code() == n["code"] and arch.fingerprint() == n["fingerprint"]
        assert arch.flops((image, image)) / 1e9 == pytest.approx(n["gmacs"], abs=1e-4)
        assert arch.params() / 1e6 == pytest.approx(n["params_m"], abs=1e-4)
        assert 1 <= len(n["morphisms"]) <= 2 and set(n["morphisms"]) <= set(table_rules())
        if n["level"] == 2:  # 1-4 morphisms from the start in all
            assert names[n["parent"]]["level"] == 1
        else:
            assert n["parent"] == "start"
    assert len({round(n["gmacs"], 1) for n in nets}) >= 10  # spread over GMACs


def table_rules():
    return list(proxy.SERIAL_RULES) + ["add_subnet"]


def test_every_metric_is_a_measured_fraction(table):
    for n in table["nets"]:
        vals = [v for arm in n["arms"].values() for v in arm.values()]
        vals += [v for kind in n["truth"].values() for seed in kind.values() for v in seed.values()]
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in vals), n["name"]
        assert set(n["arms"]) <= set(proxy.ARMS)
        assert all(s > 0 for s in n["seconds"].values())


def test_the_summary_is_what_the_rows_give(table):
    again = proxy.summarize(table)
    assert again == table["summary"]
    for key, a in table["summary"]["agreement"].items():
        assert a["tau"] is None or -1 <= a["tau"] <= 1
        assert a["tau"] is None or a["tau_ci95"][0] is None or a["tau_ci95"][0] <= a["tau"] + 1e-9 or math.isnan(a["tau"])


def test_the_readme_shows_the_shipped_table(table):
    import re

    readme = (TABLE.parents[2] / "README.md").read_text()
    block = re.search(r"<!-- evidence:proxy -->\n(.*?)<!-- /evidence:proxy -->", readme, re.S)
    assert block and block.group(1).rstrip("\n") == proxy.markdown(table).rstrip("\n")


def test_every_child_applies_to_its_parent_after_training(table):
    """A child inherits its parent after the parent's fast training: its walk must apply to trained weights too
    (add_subnet offers no site on a trained parallel net; the first plan drew such children and crashed)."""
    import zlib

    import numpy as np
    import torch

    from spnas.ops import get_morphism

    names = {n["name"]: n for n in table["nets"]}
    sp = Space(**table["space"])
    for n in table["nets"]:
        if n["level"] != 2:
            continue
        parent = proxy.replay(table["start"]["code"], names, n["parent"], sp)
        g = torch.Generator().manual_seed(0)
        trained = parent.with_weights({k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                                       for k, v in parent.weights.items()})
        cur = trained
        rng = np.random.default_rng(zlib.crc32(n["name"].encode()))
        for op in n["ops"]:
            site = tuple(op["site"]) if isinstance(op["site"], list) else op["site"]
            cur = get_morphism(op["rule"]).apply(cur, site, rng, sp)
        assert cur.fingerprint() == n["fingerprint"], n["name"]


def test_a_new_machine_trains_only_what_the_table_lacks_and_what_that_needs():
    """--from-table: the shipped results are held; a missing job comes back with the jobs whose weights it needs."""
    from benchmarks.evidence import Job

    table = json.loads(TABLE.read_text())
    held = proxy.held_keys(table)
    n = len(table["nets"])
    arms = sum(len(v) for r in table["nets"] for v in r["arms"].values())
    truths = sum(len(v) for r in table["nets"] for v in r["truth"].values())
    assert "start" in held and len(held) == 1 + arms + truths
    child = next(r for r in table["nets"] if r["parent"] != "start")
    jobs = [Job("start", None, ()), Job(f"arm:{child['parent']}:a:0", None, (), deps=("start",)),
            Job(f"truth:{child['name']}:inherited:0", None, (), deps=(f"arm:{child['parent']}:a:0",)),
            Job(f"truth:{child['name']}:scratch:0", None, ())]
    assert [j.key for j in proxy.still_to_train(jobs, {j.key for j in jobs})] == []
    # its inherited truth lost: the parent's arm-a weights and the start come back with it, the scratch truth does not
    lost = held - {jobs[2].key}
    assert [j.key for j in proxy.still_to_train(jobs, lost & {j.key for j in jobs})] == [j.key for j in jobs[:3]]
    assert n >= 30
