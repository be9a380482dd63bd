"""``train.inherited``: how a net that starts from trained weights trains (restart the schedule, or continue).

The proxy study (benchmarks/proxy.py) measures both; these tests check that the option does what it
says at every level: the schedule itself, which candidates it reaches, and a real training's rate.
"""

from __future__ import annotations

import dataclasses

import pytest

from spnas.detect.train import FAST, TrainConfig
from spnas.errors import ConfigError
from tests.search.fake import FakeEvaluator
from tests.search.test_loop import config, run


def test_restart_keeps_the_schedule_and_continue_lowers_the_rate_without_warmup():
    cfg = dataclasses.replace(FAST, batch_size=16, base_lr=0.02, min_lr=1e-4, warmup_iters=10)
    assert cfg.for_inherited() is cfg  # restart: the default, today's behaviour
    assert cfg.lr_at(0, 100) < 0.001  # warm-up starts low
    cont = dataclasses.replace(cfg, inherited="continue", inherited_lr=0.1).for_inherited()
    assert cont.warmup_iters == 0 and cont.base_lr == pytest.approx(0.002)
    assert cont.lr_at(0, 100) == pytest.approx(0.002)  # the first step already runs at the lowered rate
    assert cont.lr_at(99, 100) < cont.lr_at(50, 100) < cont.lr_at(0, 100)  # then the cosine as before
    low = dataclasses.replace(cfg, inherited="continue", inherited_lr=0.001).for_inherited()
    assert low.min_lr <= low.base_lr  # the floor never rises above the lowered rate
    with pytest.raises(ValueError, match="inherited"):
        dataclasses.replace(cfg, inherited="resume").for_inherited()


def test_the_config_validates_the_option():
    assert config(train={"inherited": "continue", "inherited_lr": 0.3}).train.inherited == "continue"
    with pytest.raises(ConfigError, match="train.inherited"):
        config(train={"inherited": "sometimes"})
    with pytest.raises(ConfigError, match="train.inherited_lr"):
        config(train={"inherited_lr": 0.0})


class Recorder(FakeEvaluator):
    def __init__(self) -> None:
        super().__init__()
        self.requests: dict = {}

    def __call__(self, req):
        self.requests[req.id] = req
        return super().__call__(req)


def test_every_candidate_that_starts_from_trained_weights_is_marked_and_only_those(tmp_path):
    ev = Recorder()
    run(tmp_path, evaluator=ev, search={"noise_seeds": 2, "n_reignite": 1, "n_stuck": 2, "max_generations": 3},
        parallel={"enabled": True, "K": 1, "n_stuck_p": 1, "max_candidates": 1})
    roles = {cid: (req.inherits, cid) for cid, req in ev.requests.items()}
    assert roles["start"][0] is False
    assert any(cid.startswith("n") for cid in roles) and all(v for cid, (v, _) in roles.items() if cid.startswith(("n", "g", "p")))
    assert all(not v for cid, (v, _) in roles.items() if cid.startswith("r"))  # reignite: pre-trained anew, then trained


def test_a_real_child_continues_at_the_lowered_rate(tmp_path):
    """The evaluator applies the option: the journaled learning-rate curve of a child starts at the lowered rate."""
    import numpy as np
    import torch

    from spnas.detect.data import generate_shapes
    from spnas.ir import parse, save
    from spnas.detect.detector import resolve_options
    from spnas.search.evaluator import evaluate_candidate
    from spnas.search.records import DetectorSpec, EvalRequest

    tr = generate_shapes(tmp_path / "data", n_images=4, size=64, seed=0, split="train")
    va = generate_shapes(tmp_path / "data", n_images=2, size=64, seed=1, split="val")
    images = str(tmp_path / "data" / "images")
    data = {"format": "coco", "train": {"json": str(tr), "images": images}, "val": {"json": str(va), "images": images}}
    arch = parse("BB(1,1,1,1)", seed=0)
    train = TrainConfig(epochs=1, batch_size=2, base_lr=0.08, warmup_iters=5, loader_workers=0, inherited="continue",
                        inherited_lr=0.1)
    detector = DetectorSpec("faster", resolve_options("lean", min_size=64, max_size=64))
    lrs = {}
    for cid, inherits in (("start", False), ("g001c0", True)):
        save(arch, tmp_path / "run" / "candidates" / cid / "input")
        req = EvalRequest(id=cid, dir=str(tmp_path / "run" / "candidates" / cid), data=data, detector=detector, train=train,
                          inherits=inherits, metric="AP", device="cpu", threads=1)
        torch.manual_seed(0)
        res = evaluate_candidate(req)
        assert res.ok, res
        lrs[cid] = res.curve["lr"]
    scale = 2 / 16
    assert lrs["g001c0"][0] == pytest.approx(0.08 * 0.1 * scale, rel=1e-5)  # no warm-up, a tenth of the rate
    assert lrs["start"][0] < 0.08 * scale * 0.01  # the start warms up from ~0
    assert np.all(np.diff(lrs["g001c0"]) <= 0)


def test_a_free_proxy_prefilter_trains_only_the_best_drawn_children(tmp_path):
    """search.prefilter: each generation draws prefilter_draw children and trains the lam with the most GMACs."""
    from tests.search.test_loop import events, of

    summary, evs, ev = run(tmp_path, search={"prefilter": "gmacs", "prefilter_draw": 6, "max_generations": 3})
    pre = of(evs, "prefiltered")
    assert len(pre) == 3
    for e in pre:
        drawn = {d["id"]: d["gmacs"] for d in e["drawn"]}
        assert 2 < len(drawn) <= 6 and len(e["kept"]) == 2
        assert min(drawn[k] for k in e["kept"]) >= max(v for k, v in drawn.items() if k not in e["kept"])
        trained = {x["id"] for x in of(evs, "proposed", generation=e["generation"], role="child")}
        assert trained == set(e["kept"])  # only the kept ones were proposed and trained
    assert set(ev.calls) >= {k for e in pre for k in e["kept"]}
    assert not set(ev.calls) & {d["id"] for e in pre for d in e["drawn"] if d["id"] not in e["kept"]}
    # fewer first, and the same seed gives the same journal again (resume replays the draw)
    _, evs_low, _ = run(tmp_path, name="low", search={"prefilter": "-gmacs", "prefilter_draw": 6, "max_generations": 1})
    e = of(evs_low, "prefiltered")[0]
    drawn = {d["id"]: d["gmacs"] for d in e["drawn"]}
    assert max(drawn[k] for k in e["kept"]) <= min(v for k, v in drawn.items() if k not in e["kept"])
    _, again, _ = run(tmp_path, name="again", search={"prefilter": "gmacs", "prefilter_draw": 6, "max_generations": 3})
    assert again == evs
    assert events(tmp_path / "run") == evs
