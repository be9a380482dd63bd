"""Hardening of the journal and the config (issue: no error is a dead end, nothing is lost, nothing silent).

Each test failed on the code before its fix: a last event without its newline had the next event
written onto it; lines that parse but lack a replay's fields gave tracebacks; a resume whose
config.yaml was deleted trained foreign candidates; a key given twice in start.yaml was dropped silently.
"""

from __future__ import annotations

import json

import pytest

from spnas.errors import ConfigError
from spnas.search import Search
from spnas.search.config import load_config
from tests.search.fake import FakeEvaluator
from tests.search.test_loop import config, events, run


def test_a_last_event_without_its_newline_is_kept_and_ended(tmp_path):
    _, ref, _ = run(tmp_path, name="ref")
    out = tmp_path / "run"
    run(tmp_path, search={"max_generations": 1})
    j = out / "journal.jsonl"
    raw = j.read_bytes()
    j.write_bytes(raw.rstrip(b"\n"))  # the kill came between the event's bytes and its newline
    kept = len(raw.rstrip(b"\n").split(b"\n"))
    s = Search(config(search={"max_generations": 1}), out, evaluate=FakeEvaluator(), quiet=True, resume=True, tensorboard=False)
    s.run()
    lines = j.read_text().splitlines()
    assert all(json.loads(ln) for ln in lines)  # every line parses: nothing was written onto the last one
    assert len(lines) >= kept
    Search(config(search={"max_generations": 1}), out, evaluate=FakeEvaluator(), quiet=True, resume=True, tensorboard=False).run()


@pytest.mark.parametrize("line", [
    '{"event": "evaluated", "id": "g001c0"}',
    '{"event": "evaluated", "id": "g001c0", "metric": "abc", "weights": "candidates/g001c0/trained/weights.safetensors", "sha256": "0"}',
    '{"event": "evaluated", "id": "g001c0", "metric": 0.1, "weights": null, "sha256": "0"}',
    '{"event": "proposed", "id": 7, "fingerprint": "x", "encoding": "BB(1,1,1,1)"}',
    '{"event": "failed", "id": "g001c0"}',
])
def test_an_event_a_replay_cannot_use_is_a_damaged_line_named(tmp_path, line):
    out = tmp_path / "run"
    run(tmp_path)
    j = out / "journal.jsonl"
    lines = j.read_text().splitlines()
    lines.insert(3, line)
    j.write_text("\n".join(lines) + "\n")
    before = j.read_bytes()
    with pytest.raises(ConfigError, match=r"journal.jsonl: line 4 is damaged \(ValueError: a '(evaluated|proposed|failed)' event whose"):
        Search(config(), out, evaluate=FakeEvaluator(), quiet=True, resume=True, tensorboard=False)
    assert j.read_bytes() == before


def test_a_resume_without_config_yaml_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    run(tmp_path, search={"max_generations": 1})
    (out / "config.yaml").unlink()
    before = (out / "journal.jsonl").read_bytes()
    ev = FakeEvaluator()
    with pytest.raises(ConfigError, match="config.yaml: missing"):
        Search(config(search={"max_generations": 3, "lam": 3}), out, evaluate=ev, quiet=True, resume=True, tensorboard=False)
    assert (out / "journal.jsonl").read_bytes() == before and not (out / "config.yaml").exists() and ev.calls == []


def test_the_same_run_resumes_after_the_fixes(tmp_path):
    """The checks refuse nothing a real run writes: a finished run resumes to the same journal."""
    _, evs, _ = run(tmp_path)
    _, again, _ = run(tmp_path, resume=True)
    assert again == evs == events(tmp_path / "run")


@pytest.mark.parametrize("text,key,line,first", [
    ("search:\n  lam: 2\n  metric: AP\n  lam: 5\n", "lam", 4, 2),
    ("search:\n  lam: 2\nseed: 1\nsearch:\n  lam: 5\n", "search", 4, 1),
])
def test_a_key_given_twice_in_the_config_is_refused(tmp_path, text, key, line, first):
    f = tmp_path / "start.yaml"
    f.write_text("start: {code: 'BB(1,1,1,1)'}\n" + text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert f"line {line + 1}" in msg and f"'{key}' is given twice (first on line {first + 1})" in msg and "\n" not in msg


def test_a_start_net_outside_the_searchs_bounds_is_refused_before_the_run(tmp_path):
    with pytest.raises(ConfigError, match=r"start: the start net has 4 blocks .* outside search.min_blocks..max_blocks \(6..9\)"):
        Search(config(search={"min_blocks": 6}), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False)
    assert not (tmp_path / "run").exists()


def test_a_reignite_source_that_cannot_be_had_is_refused_before_the_run(tmp_path, monkeypatch):
    import spnas.detect.pretrain as pretrain

    monkeypatch.setattr(pretrain, "FASHION_DIRS", (str(tmp_path / "nothing"),))
    with pytest.raises(ConfigError, match="reignite.data: fashion-mnist: no IDX files .* and the search reignites"):
        Search(config(search={"final_reignite": True}, reignite={"data": "fashion-mnist"}), tmp_path / "run",
               evaluate=FakeEvaluator(), quiet=True, tensorboard=False)
    with pytest.raises(ConfigError, match="no such ImageFolder directory"):
        Search(config(search={"n_reignite": 1}, reignite={"data": str(tmp_path / "imagenet")}), tmp_path / "run",
               evaluate=FakeEvaluator(), quiet=True, tensorboard=False)
    assert not (tmp_path / "run").exists()
    # without a reignite the source is never needed, so it is not checked
    Search(config(search={"final_reignite": False, "n_reignite": 0}, reignite={"data": "fashion-mnist"}), tmp_path / "ok",
           evaluate=FakeEvaluator(), quiet=True, tensorboard=False).run()


def test_a_metric_that_is_minus_one_for_every_candidate_is_refused(tmp_path):
    from spnas.detect.data import generate_shapes

    tr = generate_shapes(tmp_path / "d", n_images=4, size=64, seed=0, split="train")
    va = generate_shapes(tmp_path / "d", n_images=2, size=64, seed=1, split="val")
    images = str(tmp_path / "d" / "images")
    data = {"format": "coco", "train": {"json": str(tr), "images": images}, "val": {"json": str(va), "images": images}}
    with pytest.raises(ConfigError, match=r"search.metric: APl: the validation split has no large \(area > 96²\) object"):
        Search(config(data=data, search={"metric": "APl"}), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False)
    assert not (tmp_path / "run").exists()
    Search(config(data=data, search={"metric": "APs"}), tmp_path / "ok", evaluate=FakeEvaluator(), quiet=True, tensorboard=False)


def test_a_failed_start_resumes_once_its_cause_is_fixed(tmp_path):
    """A start that failed (a corrupt image, a bug fixed since) decided nothing: --resume trains it again (it was a dead end)."""
    from spnas.errors import SpnasError

    out = tmp_path / "run"
    with pytest.raises(SpnasError, match="the start network failed to train: .*fix it and --resume"):
        Search(config(), out, evaluate=FakeEvaluator(fail={"start": "raise"}), quiet=True, tensorboard=False).run()
    ev = FakeEvaluator()
    s = Search(config(), out, evaluate=ev, quiet=True, resume=True, tensorboard=False).run()
    assert ev.calls[0] == "start" and s["candidates"] > 1


def test_configs_that_failed_after_the_journal_are_refused_before_it(tmp_path):
    with pytest.raises(ConfigError, match="data.tile: .*at least 32 px, got 1"):
        config(data={"tile": 1})
    f = tmp_path / "afile"
    f.write_text("x")
    from spnas.search.config import config_from_dict
    from tests.search.test_loop import BASE

    d = json.loads(json.dumps(BASE))
    d["data"]["root"] = str(f)
    with pytest.raises(ConfigError, match="data.root: .*is a file; expected a directory"):
        config_from_dict(d)


def test_a_data_loader_workers_error_is_one_line():
    from spnas.errors import DataError
    from spnas.search.evaluator import one_line

    class Wrapped(RuntimeError):
        pass

    e = Wrapped("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File \"x.py\", "
                "line 1, in f\n    raise DataError('a.png: cannot decode image')\nspnas.errors.DataError: a.png: cannot decode image\n")
    assert one_line(e) == "spnas.errors.DataError: a.png: cannot decode image (in a DataLoader worker)"
    assert one_line(DataError("b.png: bad\nmore")) == "b.png: bad"
