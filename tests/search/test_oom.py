"""Issue 26, item 3: out of memory never dead-ends a search (injected failures, the formula evaluator).

An allocation failure is the machine's first (retried as it is); when it repeats at the same size,
the candidate is retried at half the per-device batch with twice the accumulation (the same images a
step); if that fails too, it is the candidate's own failure, "too large for this device at batch B"."""

from __future__ import annotations

import pytest

from tests.search.fake import FakeEvaluator
from tests.search.test_loop import Killed, of, run

KW = dict(train={"batch_size": 4}, search={"max_generations": 2})


def test_a_repeated_out_of_memory_halves_the_batch(tmp_path):
    ev = FakeEvaluator(fail={"g001c0": "oom-above-2"})
    summary, evs, _ = run(tmp_path, "run", ev, **KW)
    failed = of(evs, "failed", id="g001c0")
    assert len(failed) == 2 and all(f["kind"] == "machine" and f["cause"] == "out of memory" for f in failed)
    retried = of(evs, "retried", id="g001c0")
    assert retried[0]["attempt"] == 1 and "batch_size" not in retried[0]  # the first: as it was (the machine may recover)
    assert retried[1]["batch_size"] == 2 and retried[1]["accumulate"] == 2  # the repeat: half the batch, twice the steps
    assert [r.train.batch_size for r in [ev.requests["g001c0"]]] == [2] and ev.requests["g001c0"].train.accumulate == 2
    assert of(evs, "evaluated", id="g001c0") and ev.calls.count("g001c0") == 3
    assert ev.requests["g001c1"].train.batch_size == 4  # only that candidate


def test_out_of_memory_at_half_the_batch_is_the_candidates_own_and_the_search_goes_on(tmp_path):
    ev = FakeEvaluator(fail={"g001c0": "oom"})
    summary, evs, _ = run(tmp_path, "run", ev, **KW)
    last = of(evs, "failed", id="g001c0")[-1]
    assert last["kind"] == "candidate" and last["cause"] == "too large"
    assert last["reason"].startswith("too large for this device at batch 2 (out of memory: ")
    assert of(evs, "done") and ev.calls.count("g001c0") == 3  # at batch 4, 4 again (the repeat), then 2 (it still fails)
    # a resume never dead-ends: the candidate's own failure comes from the journal
    _, again, ev2 = run(tmp_path, "run", FakeEvaluator(fail={"g001c0": "oom"}), resume=True, **KW)
    assert ev2.calls == [] and again == evs


def test_a_batch_of_one_cannot_halve(tmp_path):
    _, evs, ev = run(tmp_path, "run", FakeEvaluator(fail={"g001c0": "oom"}), train={"batch_size": 1}, search={"max_generations": 1})
    assert of(evs, "failed", id="g001c0")[-1]["reason"].startswith("too large for this device at batch 1")
    assert ev.calls.count("g001c0") == 2


def test_a_resume_keeps_the_halving(tmp_path):
    def kill(e):
        if e["event"] == "retried" and e.get("batch_size"):
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path, "run", FakeEvaluator(fail={"g001c0": "oom-above-2"}), listeners=(kill,), **KW)
    _, evs, ev = run(tmp_path, "run", FakeEvaluator(fail={"g001c0": "oom-above-2"}), resume=True, **KW)
    assert ev.calls[0] == "g001c0" and ev.requests["g001c0"].train.batch_size == 2  # at once at half: no more failures
    assert of(evs, "evaluated", id="g001c0") and of(evs, "done")
